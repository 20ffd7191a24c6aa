"""Backbone training (``extract.training``, ``python -m extract.train``) on tiny demo videos
(48 px, 1 s) with tiny backbones at 32 px: recipe, schedule, augmentation, data keys and bad
videos, overfitting a fixed batch, SWA = mean of snapshots, resume (with mixup) = uninterrupted
run, frozen stages, checkpoints loading into ``extract.run``, the CLI."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from extract.backbones import file_sha256, get_backbone, load_weights
from extract.demo import DemoConfig, make_demo
from extract.train import main
from extract.training import TrainData, TrainError, TrainRecipe, fit, predict_videos
from extract.training.augment import ClipAugment
from extract.training.data import EvalClips, TrainClips, collate_train, eval_loader, train_loader
from extract.training.modality import make_inputs
from store import FeatureStore

TINY = dict(backbone="r2plus1d_tiny", weights="random", crop=32, epochs=2, batch_size=4, warmup_epochs=0.5,
            eval_clips=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=12, size=48, seconds=1.0), progress=False)


@pytest.fixture(scope="module")
def data(demo):
    tr, va = demo.video_list("train"), demo.video_list("val")
    return TrainData(tr.videos, tr.label_matrix(), va.videos, va.label_matrix(), list(demo.classes))


def _resolved(**kw):
    recipe = TrainRecipe(**{**TINY, **kw})
    channels = {"rgb": 3, "flow": 2, "audio": 1}[recipe.modality]
    model = get_backbone(recipe.backbone, num_classes=21, in_channels=channels)
    return model, recipe.resolve(model.info)


# ---------------------------------------------------------------------------- recipe & schedule
def test_recipe_round_trip_validation_and_resolution():
    r = TrainRecipe(loss="focal", loss_kwargs={"gamma": 1.5}, scale=(0.9, 1.3), swa_epochs=2, swa_lr=0.002)
    assert TrainRecipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    for bad in (dict(swa_epochs=11), dict(loss="nope"), dict(modality="depth"), dict(scale=(1.3, 1.0)),
                dict(lr=0), dict(dropout=1.0), dict(warmup_epochs=-1), dict(batch_size=0), dict(flip="yes")):
        with pytest.raises(ValueError):
            TrainRecipe(**bad)
    with pytest.raises(ValueError, match="unknown keys"):
        TrainRecipe.from_dict({"lr": 0.1, "learning_rate": 0.1})
    # frame models: TSN segments; eval short side and crop as extract.run (round(32 * 8 / 7) = 37)
    _, frame = _resolved(backbone="resnet_tiny")
    assert (frame.train_segments, frame.frames, frame.crop, frame.short_side) == (3, 1, 32, 37)
    _, clip = _resolved()
    assert (clip.train_segments, clip.frames) == (1, 4)
    with pytest.raises(ValueError, match="only frame"):
        _resolved(train_segments=2)
    with pytest.raises(ValueError, match="audio2d or audio1d"):
        _resolved(modality="audio")


def test_recipe_lr_schedule_by_hand():  # heads.schedule itself: tests/heads/test_toolkit.py
    r = TrainRecipe(lr=1.0, epochs=4, warmup_epochs=1, min_lr_ratio=0.1)
    s = r.lr_schedule(steps_per_epoch=2)  # 8 steps, 2 of warm-up, cosine over 6
    assert [s(0), s(1)] == [0.5, 1.0]
    assert s(2) == pytest.approx(1.0) and s(5) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    cyc = TrainRecipe(lr=1.0, epochs=4, warmup_epochs=0, schedule="cyclic", cycle_epochs=1).lr_schedule(2)
    assert [cyc(k) for k in range(4)] == pytest.approx([1.0, 0.5, 1.0, 0.5])  # restarts every 2 steps
    swa = TrainRecipe(lr=1.0, epochs=4, warmup_epochs=0, swa_epochs=1, swa_lr=0.05).lr_schedule(2)
    assert [swa(6), swa(7)] == [0.05, 0.05] and swa(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))


# ---------------------------------------------------------------------------- augmentation
def test_augment_crop_flip_and_flow_sign():
    aug = ClipAugment(short_side=37, scale=(1.0, 1.25), crop=32, flip=True)
    sides = {aug.draw_short_side(np.random.default_rng(i)) for i in range(200)}
    assert min(sides) >= 37 and max(sides) <= round(37 * 1.25) and len(sides) > 3
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 50, 3), dtype=np.uint8)
    crops = [aug.crop_flip_rgb(frames, np.random.default_rng(i)) for i in range(40)]
    assert all(c.shape == (4, 32, 32, 3) for c in crops)
    flow = np.random.default_rng(1).uniform(-1, 1, (2, 4, 40, 50)).astype(np.float32)
    plain = ClipAugment(short_side=37, scale=(1.0, 1.25), crop=32, flip=False)
    seen = set()
    for i in range(20):  # same draws, same crop; a mirrored flow crop has its x negated
        ref = plain.crop_flip_flow(flow, np.random.default_rng(i))  # (2, 4, 32, 32)
        out = aug.crop_flip_flow(flow, np.random.default_rng(i))
        flipped = not np.array_equal(out, ref)
        if flipped:
            np.testing.assert_array_equal(out[0], -ref[0, ..., ::-1])
            np.testing.assert_array_equal(out[1], ref[1, ..., ::-1])
            np.testing.assert_array_equal(aug.crop_flip_rgb(frames, np.random.default_rng(i)),
                                          plain.crop_flip_rgb(frames, np.random.default_rng(i))[:, :, ::-1])
        seen.add(flipped)
    assert seen == {True, False}


# ---------------------------------------------------------------------------- data
def test_examples_are_keyed_and_bad_videos_are_skipped(data, tmp_path):
    model, recipe = _resolved()
    inputs = make_inputs(model, recipe)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video" * 100)
    videos = pd.concat([data.train[["path"]], pd.DataFrame({"path": [str(tmp_path / "missing.mp4"), str(corrupt)]})],
                       ignore_index=True)
    labels = np.vstack([data.train_labels, np.zeros((2, 21), np.uint8)])
    ds = TrainClips(videos, labels, inputs, seed=3)
    a, b = ds[(1, 0)], ds[(1, 0)]
    assert a[0].shape == (4, 32, 32, 3) and a[0].dtype == np.uint8 and np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], ds[(2, 0)][0])  # another epoch, another clip
    assert ds[(0, len(videos) - 1)] is None and ds[(0, len(videos) - 2)] is None
    batch = collate_train([ds[(0, i)] for i in range(len(videos))])
    assert batch["skipped"] == 2 and batch["x"].shape == (8, 4, 32, 32, 3) and batch["y"].shape == (8, 21)
    # the batches of an epoch do not depend on the number of worker processes
    runs = []
    for workers in (0, 1):
        loader = train_loader(ds, batch_size=5, workers=workers)  # 10 videos: 2 whole batches
        loader.sampler.set_epoch(5)
        runs.append([(b["x"], b["skipped"]) for b in loader])
    assert len(runs[0]) == 2 and sum(s for _, s in runs[0]) == 2
    for (x0, s0), (x1, s1) in zip(*runs):
        assert s0 == s1 and torch.equal(x0, x1)


def test_video_scores_are_the_mean_of_clip_logits(data, tmp_path):
    torch.manual_seed(0)
    model, recipe = _resolved(eval_clips=3)
    model.eval()
    inputs = make_inputs(model, recipe)
    videos = pd.concat([data.val[["path"]], pd.DataFrame({"path": [str(tmp_path / "gone.mp4")]})], ignore_index=True)
    ds = EvalClips(videos, np.zeros((len(videos), 21)), inputs)
    scores, ok, skipped = predict_videos(model, eval_loader(ds, videos_per_batch=2, workers=0), inputs, len(ds),
                                         device=torch.device("cpu"), chunk=4)
    assert ok.tolist() == [True] * len(data.val) + [False] and skipped == 1 and np.isnan(scores[-1]).all()
    for i in range(len(data.val)):
        with torch.no_grad():
            ref = model(inputs.to_model(torch.from_numpy(ds[i][1]))).mean(0)  # (K, C) -> (C,)
        np.testing.assert_allclose(scores[i], ref.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- learning
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(data):
    torch.manual_seed(0)
    model, recipe = _resolved(dropout=0.0)
    inputs = make_inputs(model, recipe)
    ds = TrainClips(data.train, data.train_labels, inputs, seed=0)
    batch = collate_train([ds[(0, i)] for i in range(len(ds))])
    x, y = inputs.to_model(batch["x"]), batch["y"]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_swa_weights_are_the_mean_of_the_epoch_snapshots(data, tmp_path):
    snaps = {}

    def keep(epoch, model, entry):
        snaps[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    result = fit(TrainRecipe(**{**TINY, "epochs": 3, "swa_epochs": 2, "swa_lr": 0.005}), data, tmp_path, workers=0,
                 on_epoch_end=keep)
    swa = torch.load(result.swa_path, weights_only=True)
    model = get_backbone("r2plus1d_tiny", num_classes=21)
    params = {n for n, _ in model.named_parameters()}
    for name in params:  # parameters: the arithmetic mean of the epoch 2 and 3 weights
        torch.testing.assert_close(swa[name], (snaps[2][name] + snaps[3][name]) / 2, rtol=0, atol=1e-6)
    bn = "stem.1.running_mean"  # BN statistics recomputed for the averaged weights
    assert not torch.allclose(swa[bn], snaps[3][bn]) and result.swa["bn_batches"] == 2
    assert result.swa["snapshots"] == 2 and [e.get("swa_snapshots") for e in result.history] == [None, 1, 2]


def test_resume_gives_the_uninterrupted_result(data, tmp_path):
    recipe = TrainRecipe(**{**TINY, "mixup_alpha": 0.4, "swa_epochs": 1, "loss": "focal"})
    straight = fit(recipe, data, tmp_path / "a", workers=1)

    def interrupt(epoch, model, entry):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(recipe, data, tmp_path / "b", workers=0, on_epoch_end=interrupt)
    with pytest.raises(TrainError, match="--resume"):
        fit(recipe, data, tmp_path / "b", workers=0)
    with pytest.raises(TrainError, match="lr: 0.5 != 0.01"):
        fit(TrainRecipe(**{**recipe.to_dict(), "lr": 0.5}), data, tmp_path / "b", workers=0, resume=True)
    resumed = fit(recipe, data, tmp_path / "b", workers=0, resume=True)
    for name in ("backbone.pt", "backbone_swa.pt"):
        sa = torch.load(tmp_path / "a" / name, weights_only=True)
        sb = torch.load(tmp_path / "b" / name, weights_only=True)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (name, key)
    assert [e["train_loss"] for e in straight.history] == [e["train_loss"] for e in resumed.history]
    assert json.loads((tmp_path / "b" / "recipe.json").read_text()) == straight.recipe.to_dict()


def test_train_stages_freezes_all_but_the_last(data, tmp_path):
    torch.manual_seed(0)
    init = get_backbone("r2plus1d_tiny", num_classes=21)
    torch.save(init.state_dict(), tmp_path / "init.pt")
    fit(TrainRecipe(**{**TINY, "weights": str(tmp_path / "init.pt"), "train_stages": 2, "epochs": 1}), data,
        tmp_path / "run", workers=0)
    after = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    for key, before in init.state_dict().items():
        trained = key.startswith(("layer4.", "fc."))  # the last 2 stages: layer4 and the classifier
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(after[key], before) != trained, key  # frozen BN statistics stay too


# ---------------------------------------------------------------------------- modalities
@pytest.mark.parametrize("backbone,modality,shape", [
    ("resnet_tiny", "flow", (2, 2, 3, 32, 32)),  # TSN: 3 segments of 1 frame, 2 flow channels
    ("resnet_audio_tiny", "audio", (2, 1, 198, 64)),  # 2 s log-mel windows
    ("envnet_tiny", "audio", (2, 1, 32000)),  # raw 2 s waveforms
])
def test_flow_and_audio_inputs_reach_the_backbone(data, backbone, modality, shape):
    model, recipe = _resolved(backbone=backbone, modality=modality)
    inputs = make_inputs(model, recipe)
    ds = TrainClips(data.train, data.train_labels, inputs, seed=0)
    batch = collate_train([ds[(0, 0)], ds[(0, 1)]])
    x = inputs.to_model(batch["x"])
    assert tuple(x.shape) == shape and torch.isfinite(x).all()
    assert model(x).shape == (2, 21)
    clips = EvalClips(data.val, data.val_labels, inputs)[0][1]
    ev = inputs.to_model(torch.from_numpy(clips))  # frame nets: one frame per eval clip (T = 1)
    assert len(clips) == recipe.eval_clips and ev.shape[1] == shape[1] and ev.shape[-1] == shape[-1]
    assert model(ev).shape == (2, 21)


@pytest.mark.parametrize("backbone,modality", [("resnet_tiny", "rgb"), ("resnet_tiny", "flow"),
                                               ("resnet_audio_tiny", "audio")])
def test_time_based_evaluation_clips(data, backbone, modality):
    """--every: evaluation takes extract.run's time-based clips; --fps: training clips on the resampled grid."""
    model, recipe = _resolved(backbone=backbone, modality=modality, every=0.25, fps=10.0, max_clips=3)
    inputs = make_inputs(model, recipe)
    clips = EvalClips(data.val, data.val_labels, inputs)[0][1]
    # 1 s at 25 fps, one-frame clips at 10 fps (0.1 s): W = floor((1 - 0.1) / 0.25) + 1 = 4 windows, thinned to 3
    assert len(clips) == 3
    ds = TrainClips(data.train, data.train_labels, inputs, seed=0)
    x = inputs.to_model(collate_train([ds[(0, 0)], ds[(0, 1)]])["x"])
    assert torch.isfinite(x).all() and model(x).shape == (2, 21)
    if modality == "rgb":  # a training clip's frames lie on the 10 fps grid: source frames floor(g * 2.5)
        assert set(inputs.sampling.to_dict()) >= {"fps"} and inputs.sampling.fps == 10.0
    with pytest.raises(ValueError, match="--max-clips caps"):
        TrainRecipe(**{**TINY, "max_clips": 3})


# ---------------------------------------------------------------------------- checkpoints -> extract.run
def test_checkpoint_loads_into_extract_run(data, demo, tmp_path):
    from extract.run import main as run_main

    result = fit(TrainRecipe(**TINY), data, tmp_path / "run", workers=0)
    for name in ("backbone.pt", "last.pt", "best.pt"):  # all load into a features-only backbone
        assert load_weights(get_backbone("r2plus1d_tiny"), tmp_path / "run" / name) == file_sha256(
            tmp_path / "run" / name)
    store = tmp_path / "s.zarr"
    assert run_main(["--videos", str(demo.video_list("val").source), "--store", str(store), "--backbone",
                     "r2plus1d_tiny", "--weights", str(result.backbone_path), "--crop", "32", "--clips", "2",
                     "--workers", "0", "--threads", "1", "--limit", "2", "-q", "--no-verify"]) == 0
    fset = FeatureStore.open(store).feature_set("rgb_r2plus1d_tiny")
    assert fset.spec.weights_sha256 == file_sha256(result.backbone_path) and fset.done().sum() == 2
    # the same clips as training's evaluation: extract.run's features are our model's
    model = get_backbone("r2plus1d_tiny", weights=result.backbone_path).eval()
    inputs = make_inputs(model, result.recipe)
    clips = EvalClips(data.val, data.val_labels, inputs)[0][1]
    with torch.no_grad():
        ours = model.forward_features(inputs.to_model(torch.from_numpy(clips))).numpy()
    np.testing.assert_allclose(fset.read(rows=np.array([0]))[0][0], ours, rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------------------- the command
def test_cli_flow_flags_go_into_the_recipes_flow_params():
    from extract.train import _parser, _recipe

    args = _parser().parse_args(["--modality", "flow", "--flow-gap", "3", "--fb-winsize", "7"])
    recipe = _recipe(args, {"flow_params": [["fb_winsize", 9], ["fb_levels", 2]]}, None, demo=True)
    assert recipe.flow_params == (("fb_levels", 2), ("fb_winsize", 7), ("gap", 3))  # the flags win over the file
    assert recipe.extract_settings().flow_settings("cpu")[0].gap == 3
    assert TrainRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert _recipe(_parser().parse_args([]), {}, None, demo=True).flow_params == ()


def test_cli_trains_resumes_and_refuses(demo, tmp_path, capsys):
    cfg = tmp_path / "recipe.toml"
    cfg.write_text('loss = "focal"\nloss_kwargs = {gamma = 1.5}\nscale = [1.0, 1.2]\nepochs = 1\n')
    out = tmp_path / "run"
    args = ["--videos", str(demo.videos_csv), "--backbone", "r2plus1d_tiny@random", "--crop", "32", "--batch-size", "4",
            "--eval-clips", "2", "--config", str(cfg), "--out", str(out), "--workers", "0", "-q"]
    assert main([*args, "--class-weights", "sqrt"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["loss"] == "focal" and recipe["loss_kwargs"] == {"gamma": 1.5} and recipe["scale"] == [1.0, 1.2]
    assert recipe["class_weights"] == "sqrt" and recipe["short_side"] == 37
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and 0 <= metrics["epochs"][0]["class_map"] <= 1
    assert "val class mAP" in capsys.readouterr().out
    cut = args.index("--out")
    assert main([*args[:cut], "--every", "0.5", "--out", str(tmp_path / "x"), *args[cut + 2:]]) == 2  # + --eval-clips
    assert "--every 0.5 evaluates on a clip every 0.5 seconds" in capsys.readouterr().err
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main(["--out", str(out), "--resume", "--lr", "0.5", "-q"]) == 2
    assert "lr: 0.5 != 0.01" in capsys.readouterr().err
    assert main(["--out", str(out), "--resume", "-q"]) == 0  # its videos and recipe come from the run
    shutil.rmtree(out)
    assert main(["--videos", str(demo.videos_csv), "--out", str(out), "--backbone", "nope", "-q"]) == 2
    assert "unknown backbone" in capsys.readouterr().err
