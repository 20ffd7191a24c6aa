"""RGB, optical flow and audio feature sets from one decode per video (``extract.run``):
three sets in one pass, hand-built flow and audio references, a video without audio, one
with a silent (all-zero) track,
``--head-logits``, resume of a multi-set run, the ``--backbone`` syntax and its errors.

Tiny demo videos (48 px, 1 s, 25 frames) and tiny backbones (resnet_tiny for RGB and for
flow with 2 input channels, resnet_audio_tiny / vggish_tiny / envnet_tiny for audio)."""

import shutil

import numpy as np
import pytest
import torch

from extract.backbones import RANDOM, file_sha256, get_backbone
from extract.backbones.batchnorm_fold import fold_batchnorm
from extract.demo import DemoConfig, make_demo
from extract.dump import pipeline, worker
from extract.dump.makers import NO_AUDIO, SILENT_AUDIO, AudioWindows, audio_input_for
from extract.dump.producers import AudioProducer
from extract.dump.settings import BackboneChoice, ExtractSettings
from extract.media.audio import AudioSettings, log_mel
from extract.media.decode import decode_video
from extract.media.flow import FlowSettings, compute_flow
from extract.media.sampling import ClipSampling
from extract.media.video_writer import write_video
from extract.run import main
from extract.train import main as train_main
from store import FeatureStore
from store.verify import verify_store

FPS, N_FRAMES, CLIPS = 25.0, 25, 3
STARTS = np.array([4, 12, 20])  # TSN, 3 segments of 1 frame in 25: floor((i + 1/2) * 25 / 3)
THREE = (
    BackboneChoice("resnet_tiny", weights="random"),
    BackboneChoice("resnet_tiny", "flow", weights="random"),
    BackboneChoice("resnet_audio_tiny", "audio", weights="random"),
)
SETS = ["rgb_resnet_tiny", "flow_resnet_tiny", "audio_resnet_audio_tiny"]
BASE = {"crop": 32, "clips": CLIPS, "threads": 1, "chunk_rows": 4, "batch_size": 8}
CLI = ["--crop", "32", "--clips", str(CLIPS), "--workers", "1", "--threads", "1"]
CLI += ["--chunk-rows", "4", "--batch-size", "8", "-q"]
CLI3 = ["--backbone", "rgb:resnet_tiny@random", "--backbone", "flow:resnet_tiny@random"]
CLI3 += ["--backbone", "audio:resnet_audio_tiny@random", *CLI]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """6 demo videos plus one without an audio track (the last row), in one list."""
    demo = make_demo(
        tmp_path_factory.mktemp("demo"), DemoConfig(videos=6, size=48, seconds=1.0), progress=False
    )
    frames = decode_video(demo.root / "videos" / "demo_00001.mp4", np.arange(N_FRAMES)).frames
    write_video(demo.root / "videos" / "silent.mp4", frames, FPS, audio=None)
    csv = demo.root / "with_silent.csv"
    csv.write_text(demo.videos_csv.read_text() + f"videos/silent.mp4,{demo.classes[0]},train\n")
    return csv


@pytest.fixture(scope="module")
def three(videos, tmp_path_factory):
    """One run filling three sets (decoding in this process, with decode_video counted)."""
    store = tmp_path_factory.mktemp("three") / "m.zarr"
    calls = []
    real = worker.decode_video

    def counting(*args, **kwargs):
        calls.append(kwargs.get("audio_rate"))
        return real(*args, **kwargs)

    settings = ExtractSettings(backbones=THREE, workers=0, **BASE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(worker, "decode_video", counting)
        stats = pipeline.extract(videos, store, settings)
    return store, stats, calls


def _read(store, name, rows=None):
    fset = FeatureStore.open(store).feature_set(name)
    data, valid = fset.read(rows)
    return data, valid, fset.read_times(rows), fset.done(), fset.spec


def test_three_sets_one_decode_per_video(three):
    store, stats, calls = three
    assert verify_store(store).ok
    assert stats.videos_done == 7 and stats.videos_failed == 0
    assert stats.decode_calls == 7 and len(calls) == 7 and stats.decodes_per_video == 1.0
    assert calls == [16000] * 7  # the audio came from the same open as the frames
    assert stats.notes == {NO_AUDIO: 1} and stats.set_names == SETS
    fs = FeatureStore.open(store)
    assert sorted(fs.feature_sets()) == sorted(SETS)
    rgb, flow, audio = (_read(store, n) for n in SETS)
    for data, valid, times, done, spec in (rgb, flow, audio):
        assert data.shape == (7, CLIPS, 64) and done.all() and spec.clips == CLIPS
        # the same clips in every modality: K = clips (one view, one window per clip)
        np.testing.assert_allclose(times, rgb[2])
    np.testing.assert_allclose(
        rgb[2][0], np.stack([STARTS / FPS, (STARTS + 1) / FPS], 1), rtol=1e-6
    )
    assert rgb[1].all() and flow[1].all()
    assert audio[1][:6].all() and not audio[1][6].any()  # the silent video: done, all masked
    assert not audio[0][6].any()  # and never run through the model
    assert not np.allclose(rgb[0], flow[0])
    assert [s.modality for *_, s in (rgb, flow, audio)] == ["rgb", "flow", "audio"]
    fspec, aspec = flow[4], audio[4]
    assert fspec.extra["flow"] == {**FlowSettings(size=37).to_dict()}
    assert fspec.extra["flow_backend"] == "cpu" and fspec.extra["backbone"]["mean"] == [0.5, 0.5]
    assert fspec.sampling == rgb[4].sampling
    assert aspec.extra["audio"] == AudioSettings().to_dict() and aspec.extra["input"] == "log_mel"
    assert aspec.sampling == {"clips": rgb[4].sampling["clips"]}
    assert fs.videos()["has_audio"].tolist() == [True] * 6 + [False]


def test_flow_features_match_a_hand_reference(three):
    store, _, _ = three
    data, *_ = _read(store, "flow_resnet_tiny")
    path = FeatureStore.open(store).videos()["path"][2]
    decoded = decode_video(path, np.concatenate([STARTS, STARTS + 1]), 37)  # short side 37 for 32
    stacks = []
    for s in STARTS:  # flow from each sampled frame to the next, Farneback, at the decoded size
        flow = compute_flow(decoded.take(np.array([s, s + 1])), FlowSettings())[0]  # (37, 37, 2)
        x = np.clip(flow[2:34, 2:34], -20.0, 20.0) / 20.0  # centre crop 32, bound 20 -> [-1, 1]
        stacks.append(x.astype(np.float16).astype(np.float32).transpose(2, 0, 1))  # (2, 32, 32)
    x = torch.from_numpy(np.stack(stacks))[:, :, None]  # (3, 2, 32, 32) -> (3, 2, 1, 32, 32)
    torch.manual_seed(0)
    model = get_backbone("resnet_tiny", in_channels=2).eval()
    std = float(np.mean([0.229, 0.224, 0.225]))
    assert model.info.mean == (0.5, 0.5) and model.info.std == pytest.approx((std, std))
    with torch.no_grad():
        ref = model.forward_features(((x + 1) / 2 - 0.5) / std)  # (3, 2, 1, 32, 32) -> (3, 64)
    assert np.abs(x.numpy()).max() > 0.02  # the demo moves (~0.8 px/frame): a real flow
    np.testing.assert_allclose(data[2], ref.numpy(), rtol=2e-3, atol=2e-3)


def test_audio_features_match_a_hand_reference(three):
    store, _, _ = three
    data, *_ = _read(store, "audio_resnet_audio_tiny")
    path = FeatureStore.open(store).videos()["path"][3]
    track = decode_video(path, [], audio_rate=16000).audio
    windows = np.zeros((CLIPS, 32000), np.float32)
    for i, s in enumerate(STARTS):  # 2 s centred on the frame's centre, zero-padded
        first = round(16000 * (s + 0.5) / FPS) - 16000
        lo, hi = max(first, 0), min(first + 32000, len(track))
        windows[i, lo - first : hi - first] = track[lo:hi]
    torch.manual_seed(0)
    model = get_backbone("resnet_audio_tiny").eval()
    with torch.no_grad():
        ref = model.forward_features(log_mel(windows, AudioSettings()).unsqueeze(1))  # (3, 64)
    np.testing.assert_allclose(data[3], ref.numpy(), rtol=2e-3, atol=2e-3)


def test_a_silent_track_is_valid_input_in_every_audio_backbone(videos, tmp_path, capsys):
    """An all-zero track: valid rows equal to the backbone on log(0.01) (or zero samples)."""
    path = videos.parent / "videos" / "demo_00001.mp4"
    frames = decode_video(path, np.arange(N_FRAMES)).frames
    silent = tmp_path / "zeros.mp4"
    write_video(silent, frames, FPS, audio=np.zeros(16000, np.float32), sample_rate=16000)
    assert np.all(decode_video(silent, [], audio_rate=16000).audio == 0)
    csv = tmp_path / "list.csv"
    csv.write_text(f"{path}\n{silent}\n")
    store = tmp_path / "s.zarr"
    names = ["resnet_audio_tiny", "vggish_tiny", "envnet_tiny"]
    args = [a for n in names for a in ("--backbone", f"audio:{n}@random")]
    assert main(["--videos", str(csv), "--store", str(store), *args, *CLI]) == 0
    assert "silent audio track: 1" in capsys.readouterr().out
    assert verify_store(store).ok
    for name in names:
        data, valid, _, done, spec = _read(store, f"audio_{name}")
        assert done.all() and valid.all() and np.isfinite(data).all()
        torch.manual_seed(0)
        model = get_backbone(name).eval()
        kind = spec.extra["input"]
        maker = AudioWindows(ClipSampling.from_dict(spec.sampling["clips"]),
                             AudioSettings.from_dict(spec.extra["audio"]), kind, model.info.clip_len)
        item = maker.make(decode_video(silent, [], audio_rate=16000), N_FRAMES, FPS)
        assert item.note == SILENT_AUDIO and item.valid.all() and np.isfinite(item.inputs).all()
        if kind != "waveform":  # log-mel of silence: log(log_offset) everywhere
            np.testing.assert_allclose(item.inputs, np.log(0.01), rtol=1e-6)
        with torch.no_grad():
            x = torch.from_numpy(item.inputs)
            x = x.reshape(-1, 1, *x.shape[-2:]) if kind == "vggish_patches" else x[:, None]
            ref = model.forward_features(x).view(CLIPS, -1, data.shape[-1]).mean(1)  # (K, D)
        np.testing.assert_allclose(data[1], ref.numpy(), rtol=2e-3, atol=2e-3)
        assert not np.allclose(data[0], data[1], atol=1e-3)  # sound and silence differ


@pytest.mark.parametrize(
    "name,inputs", [("vggish_tiny", "vggish_patches"), ("envnet_tiny", "waveform")]
)
def test_vggish_averages_patches_and_envnet_takes_samples(name, inputs, three):
    store, _, _ = three
    path = FeatureStore.open(store).videos()["path"][0]
    torch.manual_seed(0)
    model = get_backbone(name).eval()
    settings, kind = audio_input_for(model.info)
    assert kind == inputs and settings.window_s == 2.0
    maker = AudioWindows(
        ClipSampling("tsn", CLIPS, 1), settings, kind, patch_frames=model.info.clip_len
    )
    made = maker.make(decode_video(path, [], audio_rate=16000), N_FRAMES, FPS)
    got = AudioProducer(model, maker).embed(made.inputs)
    with torch.no_grad():
        if kind == "vggish_patches":
            assert made.inputs.shape == (CLIPS, 2, 96, 64)  # a 2 s window holds two 0.96 s patches
            mel = log_mel(
                AudioWindows(maker.sampling, settings, "waveform")
                .make(decode_video(path, [], audio_rate=16000), N_FRAMES, FPS)
                .inputs,
                settings,
            )
            np.testing.assert_array_equal(made.inputs[:, 1], mel[:, 96:192].numpy())
            x = torch.from_numpy(made.inputs)
            ref = torch.stack([model.forward_features(x[:, p, None]) for p in range(2)]).mean(0)
        else:
            assert made.inputs.shape == (CLIPS, 32000)
            ref = model.forward_features(torch.from_numpy(made.inputs)[:, None])  # (3, 1, 32000)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert made.valid.all()


def _save_backbone(path, classes, dim=64, **kw):
    torch.manual_seed(1)
    model = get_backbone("resnet_tiny", num_classes=classes, **kw)
    torch.nn.init.normal_(model.fc.weight, 0, 0.5)  # logits far from 0: sigmoid is not flat
    torch.save(model.state_dict(), path)
    return model.eval()


def test_head_logits_write_the_backbone_scores(three, videos, tmp_path, capsys):
    store = tmp_path / "h.zarr"
    shutil.copytree(three[0], store)
    c = len(FeatureStore.open(store).classes)
    model = _save_backbone(tmp_path / "w.pt", c)
    args = ["--videos", str(videos), "--store", str(store), "--backbone", "resnet_tiny"]
    args += ["--weights", str(tmp_path / "w.pt"), "--set", "rgb_trained", "--head-logits", *CLI]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "predictions/rgb_trained_logits" in out and "7 rows scored" in out and ": OK" in out
    fs = FeatureStore.open(store)
    scores, attrs = fs.read_predictions("rgb_trained_logits")
    assert scores.shape == (7, c) and (fs.read_prediction_folds("rgb_trained_logits") == -1).all()
    assert attrs["head"] == "backbone" and attrs["score_type"] == "sigmoid"
    assert attrs["features"] == ["rgb_trained"] and attrs["backbone"] == "resnet_tiny"
    assert attrs["weights_sha256"] == fs.feature_set("rgb_trained").spec.weights_sha256 is not None
    logits, valid, *_ = _read(store, "rgb_trained__logits")
    assert logits.shape == (7, CLIPS, c) and valid.all()
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits.mean(axis=1))), rtol=1e-6)
    feats, *_ = _read(store, "rgb_trained")
    with torch.no_grad():  # the classifier of the checkpoint on the stored features
        ref = model.fc(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(logits, ref, rtol=2e-2, atol=2e-2)
    assert np.ptp(scores) > 0.2  # not all 0.5
    # a rerun resumes: nothing to do, the prediction run is written again from the set
    assert main(args) == 0 and "skipped 7 already done" in capsys.readouterr().out
    np.testing.assert_array_equal(fs.read_predictions("rgb_trained_logits")[0], scores)


@pytest.mark.parametrize(
    "case,words",
    [
        ("no_fc", "has no classifier (fc.weight, fc.bias)"),
        ("wrong_classes", "expected ("),
        ("no_weights", "--head-logits needs the weights"),
    ],
)
def test_head_logits_refuses_unfit_weights(case, words, three, videos, tmp_path, capsys):
    c = len(FeatureStore.open(three[0]).classes)
    if case == "no_fc":
        torch.save(get_backbone("resnet_tiny").state_dict(), tmp_path / "w.pt")
    else:
        _save_backbone(tmp_path / "w.pt", c + 1)
    weights = [] if case == "no_weights" else ["--weights", str(tmp_path / "w.pt")]
    args = ["--videos", str(videos), "--store", str(tmp_path / "e.zarr"), "--head-logits"]
    assert main([*args, "--backbone", "resnet_tiny", *weights, *CLI]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "e.zarr").exists()


def test_multi_set_run_resumes_and_matches_one_pass(three, videos, tmp_path, capsys):
    store = tmp_path / "r.zarr"
    # first the RGB set alone, then part of the three-set run, then the rest
    assert (
        main(["--videos", str(videos), "--store", str(store), "--backbone", "resnet_tiny@random", *CLI])
        == 0
    )
    assert main(["--videos", str(videos), "--store", str(store), *CLI3, "--limit", "3"]) == 0
    capsys.readouterr()
    done = {n: _read(store, n)[3] for n in SETS}
    assert done["rgb_resnet_tiny"].all() and done["flow_resnet_tiny"].sum() == 3
    assert main(["--videos", str(videos), "--store", str(store), *CLI3]) == 0
    out = capsys.readouterr().out
    assert "done 4, failed 0; no audio track: 1" in out and "1.00 decodes per video" in out
    assert verify_store(store).ok
    for name in SETS:
        got, ref = _read(store, name), _read(three[0], name)
        assert got[3].all()
        np.testing.assert_allclose(got[0], ref[0], rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--backbone", "audio:resnet_tiny@random"], "audio needs an audio backbone"),
        (["--backbone", "rgb:vggish_tiny@random"], "rgb needs a video backbone"),
        (["--backbone", "video:resnet_tiny"], "the part before ':' must be one of"),
        (
            ["--backbone", "resnet_tiny", "--backbone", "flow:resnet_tiny", "--set", "a"],
            "one name per",
        ),
        (["--backbone", "resnet_tiny", "--backbone", "resnet_tiny"], "give each its own name"),
        (
            ["--backbone", "resnet_tiny", "--backbone", "flow:resnet_tiny", "--weights", "w.pt"],
            "NAME@PATH",
        ),
    ],
)
def test_backbone_flag_errors(extra, words, videos, tmp_path, capsys):
    assert main(["--videos", str(videos), "--store", str(tmp_path / "x.zarr"), *extra, *CLI]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and words in err
    assert not (tmp_path / "x.zarr").exists()


WEIGHTS_CASES = {
    "text": ("a text file (first line 'path,label')", lambda p: p.write_text("path,label\n")),
    "empty": ("an empty file", lambda p: p.write_bytes(b"")),
    "missing": ("does not exist", lambda p: None),
    "folder": ("is a folder", lambda p: p.mkdir()),
    "wrong_keys": ("does not fit backbone resnet_tiny: missing (45): conv1.weight, bn1.weight",
                   lambda p: torch.save(get_backbone("r3d_tiny").state_dict(), p)),
    "wrong_shapes": ("shape mismatch (1): conv1.weight (8, 1, 7, 7) != (8, 3, 7, 7)",
                     lambda p: torch.save(get_backbone("resnet_tiny", in_channels=1).state_dict(), p)),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS_CASES))
def test_a_bad_weights_file_is_one_error_line(case, videos, tmp_path, capsys):
    """``--backbone rgb:resnet_tiny@FILE`` (extract.run) and ``--weights FILE`` (extract.train)."""
    words, make = WEIGHTS_CASES[case]
    weights = tmp_path / "some.pt"
    make(weights)
    store = tmp_path / "x.zarr"
    assert main(["--videos", str(videos), "--store", str(store),
                 "--backbone", f"rgb:resnet_tiny@{weights}", *CLI]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: weights file {weights} ") and words in err
    if case not in ("wrong_keys", "wrong_shapes"):
        assert "expected a torch state dict" in err and "extract.train" in err
    assert not store.exists()
    out = tmp_path / "run"
    args = ["--videos", str(videos), "--backbone", "resnet_tiny", "--weights", str(weights)]
    assert train_main([*args, "--out", str(out), "--epochs", "1", "--crop", "32", "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"error: weights file {weights} ")
    assert words.split(":")[0] in err
    if case not in ("wrong_keys", "wrong_shapes"):  # refused before the run folder is made
        assert not out.exists()


def test_backbone_syntax():
    c = BackboneChoice.parse("flow:r2plus1d_18@/w/r21d@2.pt", set_name="f")
    assert c == BackboneChoice("r2plus1d_18", "flow", "/w/r21d@2.pt", "f")
    assert BackboneChoice.parse("vggish", modality="audio").default_set_name == "audio_vggish"
    s = ExtractSettings(backbones=THREE, flow_algorithm="tvl1", flow_bound=15.0, head_logits=True)
    assert ExtractSettings.from_dict(s.to_dict()) == s and s.choices() == THREE
    assert ExtractSettings(backbone="vggish", modality="audio").choices() == (
        BackboneChoice("vggish", "audio"),
    )
    with pytest.raises(ValueError, match="not both"):
        ExtractSettings(backbones=THREE, weights="w.pt")


@pytest.mark.parametrize(
    "spec,in_channels",
    [
        ("flow:resnet_tiny", 2),
        ("flow:resnet_tiny", 3),
        ("audio:vggish_tiny", 1),
        ("audio:envnet_tiny", 1),
        ("audio:resnet_audio_tiny", 1),
    ],
)
def test_every_modality_loads_weights(spec, in_channels, tmp_path):
    """Flow (a flow checkpoint, or an RGB one averaged over channels) and audio backbones
    take --weights: the producer runs the checkpoint's tensors (its BatchNorms after convolutions
    folded into them) and records its sha256."""
    name = spec.split(":")[1]
    torch.manual_seed(5)
    saved = get_backbone(name, in_channels=in_channels).state_dict()
    torch.save(saved, tmp_path / "w.pt")
    settings = ExtractSettings(backbones=(BackboneChoice.parse(f"{spec}@{tmp_path / 'w.pt'}"),))
    (producer,) = pipeline.build_producers(settings, "cpu")
    assert producer.spec.weights_sha256 == file_sha256(tmp_path / "w.pt")
    assert "random_init_seed" not in producer.spec.extra
    want = {}
    for key, value in saved.items():
        if key == "conv1.weight" and in_channels == 3:  # RGB kernel averaged for 2 channels
            value = value.mean(dim=1, keepdim=True).expand(-1, 2, -1, -1)
        want[key] = value
    expected = get_backbone(name, weights=RANDOM, **({"in_channels": 2} if spec.startswith("flow") else {}))
    expected.load_state_dict(want)
    fold_batchnorm(expected.eval())
    own = producer.model.state_dict()
    assert own.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(own[key].contiguous(), value.contiguous()), key
