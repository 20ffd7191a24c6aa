"""``--decoder torchcodec`` against the PyAV path: the same DecodedVideo for the same request.

Frames at the coded size must be identical to PyAV's (lossless test files and the demo's H.264
videos); resized frames are compared within the tolerance measured on the demo (torchcodec
converts to RGB, then scales; PyAV does both in one libswscale call). The tests that need
torchcodec skip where it (or FFmpeg's shared libraries) cannot be loaded; the command-line
error for a missing torchcodec runs everywhere.
"""

import logging
import sys
import types

import numpy as np
import pytest

from extract.demo import DemoConfig, make_demo
from extract.dump.producers import DECODER_RECORDS
from extract.dump.settings import ExtractSettings
from extract.errors import ExtractError
from extract.media.decode import CorruptVideo, DecodeError, DecodeTimeout, decode_video, probe_video
from extract.media.sampling import ClipSampling, clip_frame_indices
from extract.media.torchcodec_decode import require_torchcodec
from extract.run import main
from store import FeatureStore
from store.errors import SettingsError
from tests.extract.test_decode import N, _bad_file, _write

TINY = ["--backbone", "resnet_tiny@random", "--crop", "32", "--clips", "4", "--workers", "0"]
TINY += ["--threads", "1", "--chunk-rows", "4", "--batch-size", "8", "-q"]
FIELDS = ("frame_numbers", "n_frames", "has_audio", "audio_rate", "truncated", "n_decoded")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Six demo videos (112 px, 2 s at 25 fps, AAC at 22.05 kHz so the audio is resampled)."""
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=6, seconds=2.0, sample_rate=22050),
                     progress=False)


@pytest.fixture(scope="module")
def torchcodec():
    pytest.importorskip("torchcodec", reason="torchcodec is not installed (pip install 'videofeat[decoders]')")
    try:
        require_torchcodec()
    except ExtractError as err:  # installed, but FFmpeg's shared libraries do not load
        pytest.skip(str(err))


def _same_except_frames(a, b) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.fps == pytest.approx(b.fps, rel=1e-12)  # a rate of 200/13 may differ in its last digit
    assert a.duration == (None if b.duration is None else pytest.approx(b.duration, rel=1e-12))


# ------------------------------------------------------------------ everywhere
def test_cli_without_torchcodec_is_one_line_exit_2(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec now raises ImportError
    store = tmp_path / "s.zarr"
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), "--decoder", "torchcodec", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --decoder torchcodec: torchcodec cannot be imported"), err
    assert "pip install 'videofeat[decoders]'" in err[0] and "--decoder pyav" in err[0]
    assert not store.exists()  # refused before the store is made


def test_unknown_decoder_is_refused():
    with pytest.raises(SettingsError, match="--decoder must be one of"):
        ExtractSettings(decoder="opencv")
    with pytest.raises(ValueError, match="decoder must be one of"):
        decode_video("any.mp4", [0], decoder="opencv")


def test_pyav_stays_the_default_with_its_old_record(demo, tmp_path):
    assert ExtractSettings().decoder == "pyav"
    store = tmp_path / "p.zarr"
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), *TINY]) == 0
    decode = FeatureStore.open(store).feature_set("rgb_resnet_tiny").spec.extra["decode"]
    assert decode == {"library": "pyav", "pass": "forward-only", "frame_numbering": "decoder output order",
                      "interpolation": "bilinear", "short_side": 37}  # what sets made before --decoder hold
    assert DECODER_RECORDS["pyav"].items() <= decode.items()


# ------------------------------------------------------------------ with torchcodec
@pytest.mark.parametrize("kind", ["plain", "faststart", "mkv", "vfr", "audio"])
def test_lossless_files_decode_identically(torchcodec, tmp_path, kind):
    frames = np.random.default_rng(0).integers(0, 256, (N, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / ("plain.mkv" if kind == "mkv" else f"{kind}.mp4")
    pts = [0, 30, 100, 110, 200, 250, 400, 410, 420, 500, 600, 610, 700, 800, 805, 900, 1000, 1100, 1150, 1200]
    audio = 0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) if kind == "audio" else None
    _write(path, frames, pts_ms=pts if kind == "vfr" else None, audio=audio,
           container_options={"movflags": "faststart"} if kind == "faststart" else None)
    for idx in (np.arange(N), [3, 7, 7, 1], [19]):  # all, sampled (any order, repeats), the last
        ours = decode_video(path, idx, decoder="torchcodec", audio_rate=16000)
        ref = decode_video(path, idx, audio_rate=16000)
        np.testing.assert_array_equal(ours.frames, frames[np.unique(idx)])  # numbered by output order (VFR too)
        _same_except_frames(ours, ref)
        if kind == "audio":
            np.testing.assert_allclose(ours.audio, ref.audio, atol=1e-5)


def test_demo_frames_match_pyav(torchcodec, demo):
    """Coded size: identical. Resized: within the tolerance measured on the demo (mean |diff|
    1.3-1.8 grey levels, 99th percentile 8-10, see extract/README.md)."""
    for path in sorted((demo.root / "videos").glob("*.mp4")):
        n = probe_video(path).n_frames
        tsn = clip_frame_indices(n, ClipSampling("tsn", 8, 1, 1))[0]  # (8, 1): extract.run's frame pattern
        uniform = clip_frame_indices(n, ClipSampling("uniform", 2, 16, 2))[0]  # (2, 16)
        for idx in (tsn, uniform, np.arange(n + 3)):  # the last: past the end, repeats the last frame
            for size in (None, 128, 64, (40, 56)):
                ours = decode_video(path, idx, size, decoder="torchcodec", audio_rate=16000)
                ref = decode_video(path, idx, size, audio_rate=16000)
                _same_except_frames(ours, ref)
                assert ours.frames.shape == ref.frames.shape and ours.frames.dtype == np.uint8
                diff = np.abs(ours.frames.astype(np.int16) - ref.frames)
                if size is None:
                    assert diff.max() == 0, path
                else:
                    assert diff.mean() < 3.0 and np.percentile(diff, 99) <= 20, (path, size, diff.mean())
                np.testing.assert_allclose(ours.audio, ref.audio, atol=1e-5)  # 22.05 kHz resampled to 16 kHz


def test_truncated_file_repeats_the_last_frame(torchcodec, tmp_path, caplog):
    frames = np.random.default_rng(1).integers(0, 256, (N, 48, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.mp4"
    _write(whole, frames, container_options={"movflags": "faststart"})
    data = whole.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="extract.media.torchcodec_decode"):
        ours = decode_video(path, [0, 2, 19], decoder="torchcodec")
    assert ours.truncated and 2 < ours.n_frames < N and "repeat the last one" in caplog.text
    np.testing.assert_array_equal(ours.frames[:2], frames[[0, 2]])
    np.testing.assert_array_equal(ours.frames[2], frames[ours.n_frames - 1])
    ref = decode_video(path, [0, 2, 19])
    assert abs(ours.n_frames - ref.n_frames) <= 1  # a half-written last packet may count on one side only


@pytest.mark.parametrize("kind", ["random", "empty", "text", "srt", "audio_only", "missing", "dir"])
def test_bad_files_raise_decode_errors(torchcodec, tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(DecodeError) as ours:
        decode_video(path, [0], decoder="torchcodec")
    with pytest.raises(DecodeError) as ref:
        decode_video(path, [0])
    message = str(ours.value)
    assert "\n" not in message and str(path) in message and ".cpp" not in message
    # torchcodec cannot list a file's streams: a subtitle file is unreadable to it, not "no video stream"
    want = CorruptVideo if kind == "srt" else type(ref.value)
    assert type(ours.value) is want


def test_timeout_between_frame_batches(torchcodec, demo, monkeypatch):
    import extract.media.torchcodec_decode as tc

    clock = iter(range(0, 10**6, 1))  # every reading of the clock is one second later
    monkeypatch.setattr(tc, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    monkeypatch.setattr(tc, "FRAMES_PER_CALL", 4)
    path = sorted((demo.root / "videos").glob("*.mp4"))[0]
    with pytest.raises(DecodeTimeout, match="no result after 5 s"):
        tc.decode_with_torchcodec(path, np.arange(40), None, threads=1, timeout_s=5, deadline=3, audio_rate=None)


def test_other_interpolations_are_refused(torchcodec, demo):
    path = sorted((demo.root / "videos").glob("*.mp4"))[0]
    with pytest.raises(ValueError, match="bilinearly only"):
        decode_video(path, [0], 64, interpolation="area", decoder="torchcodec")


def test_run_records_the_decoder_and_keeps_it(torchcodec, demo, tmp_path, capsys):
    """At the coded size (--short-side 112) both decoders give the same frames, so the same
    features; the set records torchcodec, a rerun with pyav is refused, search decodes with it."""
    common = ["--videos", str(demo.videos_csv), "--short-side", "112", "--backbone", "audio:resnet_audio_tiny@random"]
    stores = {d: tmp_path / f"{d}.zarr" for d in ("pyav", "torchcodec")}
    for decoder, store in stores.items():
        assert main([*common, "--store", str(store), "--decoder", decoder, *TINY]) == 0
    capsys.readouterr()
    sets = {d: FeatureStore.open(s) for d, s in stores.items()}
    for name in ("rgb_resnet_tiny", "audio_resnet_audio_tiny"):
        ours, ref = (sets[d].feature_set(name) for d in ("torchcodec", "pyav"))
        assert ours.spec.extra["decode"]["library"] == "torchcodec" and ref.spec.extra["decode"]["library"] == "pyav"
        (a, va), (b, vb) = ours.read(), ref.read()
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)  # same inputs (audio to ~1e-7), same model
        assert ours.done().all()
    assert "torchcodec AudioDecoder" in sets["torchcodec"].feature_set("audio_resnet_audio_tiny").spec.extra[
        "decode"]["audio"]
    assert main([*common, "--store", str(stores["torchcodec"]), *TINY]) == 2  # pyav on a torchcodec set
    assert "exists with a different spec (differs in: extra)" in capsys.readouterr().err

    from extract.search import producer_for

    assert producer_for(sets["torchcodec"].feature_set("rgb_resnet_tiny"), device="cpu").maker.decoder == "torchcodec"


# ------------------------------------------------------------------ extract.train --decoder
def test_train_cli_without_torchcodec_is_one_line_exit_2(demo, tmp_path, monkeypatch, capsys):
    from extract.train import main as train_main

    monkeypatch.setitem(sys.modules, "torchcodec", None)
    out = tmp_path / "run"
    args = ["--videos", str(demo.videos_csv), "--backbone", "r2plus1d_tiny@random", "--crop", "32", "--epochs", "1",
            "--out", str(out), "--workers", "0", "-q", "--decoder", "torchcodec"]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --decoder torchcodec: torchcodec cannot be imported"), err
    assert not out.exists()  # refused before --out is made


@pytest.mark.parametrize("modality", ["rgb", "audio"])
def test_train_examples_at_the_coded_size_match_pyav(torchcodec, demo, tmp_path, monkeypatch, modality):
    """--short-side 112 and --scale 1,1: training decodes at the coded size, where both decoders give the same
    frames, so the same (cached) examples and evaluation clips; the decoder is part of the cache's key."""
    import extract.media.torchcodec_decode as tc
    from extract.backbones import get_backbone
    from extract.training import TrainRecipe
    from extract.training.data import EvalClips, TrainClips
    from extract.training.modality import make_inputs

    calls = []
    real = tc.decode_with_torchcodec
    monkeypatch.setattr(tc, "decode_with_torchcodec", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    backbone = {"rgb": "r2plus1d_tiny", "audio": "resnet_audio_tiny"}[modality]
    model = get_backbone(backbone, num_classes=len(demo.classes), in_channels=3 if modality == "rgb" else 1)
    tr = demo.video_list("train")
    made = {}
    for decoder in ("pyav", "torchcodec"):
        recipe = TrainRecipe(backbone=backbone, modality=modality, weights="random", crop=32, short_side=112,
                             scale=(1.0, 1.0), eval_clips=2, decode_every=2, decoder=decoder)
        inputs = make_inputs(model, recipe.resolve(model.info))
        train = TrainClips(tr.videos, tr.label_matrix(), inputs, seed=3, cache_dir=tmp_path)
        val = EvalClips(tr.videos, tr.label_matrix(), inputs, cache_dir=tmp_path)
        made[decoder] = ([train[(e, i)][0] for e in range(3) for i in range(len(train))],
                         [val[i][1] for i in range(len(val))], train.cache.dir)
    assert calls  # the torchcodec run decoded with torchcodec
    (ours, ours_val, ours_dir), (ref, ref_val, ref_dir) = made["torchcodec"], made["pyav"]
    assert ours_dir != ref_dir
    for a, b in zip(ours + ours_val, ref + ref_val):
        assert a.shape == b.shape and a.dtype == b.dtype
        if modality == "rgb":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, atol=1e-5)  # the resampled track, as in extract.run
