"""``python -m extract.run`` end to end on tiny demo videos (48 px, 1 s, 25 frames) with tiny
backbones: stored features against a hand-built reference, masks and times, bad files,
SIGKILL and resume, shards, user errors, the decode pool's time limit."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from extract.backbones import get_backbone
from extract.demo import DemoConfig, make_demo
from extract.dump import pipeline
from extract.dump.producers import RGBClips
from extract.dump.settings import ExtractSettings
from extract.dump.worker import DecodePool, DecodeTask
from extract.media.decode import decode_video
from extract.media.sampling import ClipSampling, ViewSpec
from extract.media.transforms import IMAGENET_MEAN, IMAGENET_STD
from extract.media.video_writer import write_video
from extract.run import main
from store import FeatureStore
from store.verify import verify_store

REPO = Path(__file__).resolve().parents[2]
N_VIDEOS, N_FRAMES, FPS = 10, 25, 25.0
TINY = ["--backbone", "resnet_tiny@random", "--crop", "32", "--clips", "4", "--workers", "1"]
TINY += ["--threads", "1", "--chunk-rows", "4", "--batch-size", "8", "-q"]
SET = "rgb_resnet_tiny"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(
        tmp_path_factory.mktemp("demo"),
        DemoConfig(videos=N_VIDEOS, size=48, seconds=1.0),
        progress=False,
    )


@pytest.fixture(scope="module")
def ref_store(demo, tmp_path_factory):
    """One uninterrupted run over the demo: the reference for resume and shard runs."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), *TINY]) == 0
    return store


def _features(store, name=SET):
    fset = FeatureStore.open(store).feature_set(name)
    data, valid = fset.read()
    return data, valid, fset.read_times(), fset.done()


def test_run_matches_a_hand_built_reference(ref_store, demo, capsys):
    fs = FeatureStore.open(ref_store)
    assert verify_store(ref_store).ok
    assert fs.n_videos == N_VIDEOS and fs.classes == list(demo.classes)
    np.testing.assert_array_equal(fs.labels(), demo.video_list().label_matrix())
    assert (fs.videos()["n_frames"] == N_FRAMES).all() and np.allclose(fs.videos()["fps"], FPS)
    data, valid, times, done = _features(ref_store)
    assert data.shape == (N_VIDEOS, 4, 64) and done.all() and valid.all()
    # TSN, 4 segments of 1 frame in 25 frames: start_i = floor((i + 1/2) * 25 / 4) = 3, 9, 15, 21
    starts = np.array([3, 9, 15, 21])
    np.testing.assert_allclose(times[0], np.stack([starts / FPS, (starts + 1) / FPS], 1), rtol=1e-6)
    spec = fs.feature_set(SET).spec
    assert spec.sampling["clips"] == {
        "mode": "tsn",
        "num_clips": 4,
        "frames_per_clip": 1,
        "stride": 1,
        "random": False,
    }
    assert spec.sampling["views"]["crop"] == 32 and spec.extra["precision"] == "fp32"
    assert spec.weights_sha256 is None and spec.extra["random_init_seed"] == 0
    # Reference: decode at short side round(32 * 8 / 7) = 37, centre crop at offset 2,
    # normalise by hand, NCHW model (the pipeline runs it channels-last).
    torch.manual_seed(0)
    model = get_backbone("resnet_tiny").eval()
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    for row in (0, 7):
        path = fs.videos()["path"][row]
        frames = decode_video(path, starts, 37).frames[:, 2:34, 2:34]  # (4, 32, 32, 3)
        x = (torch.from_numpy(frames).float() / 255 - mean) / std
        clips = x.permute(0, 3, 1, 2)[:, :, None]  # (4, 32, 32, 3) -> (4, 3, 1, 32, 32)
        with torch.no_grad():
            ref = model.forward_features(clips)  # (4, 3, 1, 32, 32) -> (4, 64)
        np.testing.assert_allclose(data[row], ref.numpy(), rtol=2e-3, atol=2e-3)
    # A rerun has nothing left to do.
    assert main(["--videos", str(demo.videos_csv), "--store", str(ref_store), *TINY]) == 0
    out = capsys.readouterr().out
    assert f"skipped {N_VIDEOS} already done" in out and "verify: " in out and ": OK" in out


def test_clip_backbone_views_and_short_video_mask(demo, tmp_path):
    """R(2+1)D-tiny, 3 clips of 16 frames at stride 2 (31 frames > 25), three crops: K = 9."""
    settings = ExtractSettings(
        backbone="r2plus1d_tiny",
        weights="random",
        crop=32,
        clips=3,
        frames=16,
        stride=2,
        crops="three",
        workers=1,
        threads=1,
        chunk_rows=4,
        batch_size=5,
    )
    videos = pipeline.open_video_list(demo.videos_csv)
    fs, targets = pipeline.prepare_store(tmp_path / "s.zarr", videos, workers=1)
    producers = pipeline.build_producers(settings, "cpu")
    stats = pipeline.run_extraction(fs, targets, producers, settings)
    assert stats.videos_done == N_VIDEOS and stats.probe_calls == 0  # headers read at creation
    assert stats.decode_calls == N_VIDEOS
    assert stats.decodes_per_video == 1.0  # 9 views per video, one decode
    data, valid, times, done = _features(tmp_path / "s.zarr", "rgb_r2plus1d_tiny")
    assert data.shape == (N_VIDEOS, 9, 64) and done.all()
    # slack 0: all three clips start at frame 0, only the first is real; its 3 views come first
    np.testing.assert_array_equal(valid, np.tile([True] * 3 + [False] * 6, (N_VIDEOS, 1)))
    np.testing.assert_allclose(times[:, 0], [[0.0, 1.0]] * N_VIDEOS)  # frames 0..24 (clamped)
    assert not np.allclose(data[:, 0], data[:, 1])  # left and centre crops differ
    assert verify_store(tmp_path / "s.zarr").ok


def _write_faststart(path, frames):
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_bad_files_get_error_rows_and_the_run_goes_on(demo, tmp_path, capsys):
    d = tmp_path / "videos"
    d.mkdir()
    good = demo.root / "videos" / "demo_00000.mp4"
    shutil.copy(good, d / "good.mp4")
    noise = np.random.default_rng(0).integers(0, 256, 5000, np.uint8)
    (d / "corrupt.mp4").write_bytes(noise.tobytes())
    # the demo's mp4 index (moov) is at the end: the first half has none
    (d / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("not a video\n" * 50)
    frames = np.random.default_rng(1).integers(0, 256, (N_FRAMES, 48, 48, 3), np.uint8)
    write_video(d / "noaudio.mp4", frames, FPS)
    _write_faststart(tmp_path / "full.mp4", frames)
    data = (tmp_path / "full.mp4").read_bytes()
    (d / "cut_faststart.mp4").write_bytes(data[: len(data) // 2])  # index first: frames survive
    names = ["good", "corrupt", "truncated", "empty", "text", "noaudio", "cut_faststart"]
    label = demo.classes[0]
    (d / "list.csv").write_text("".join(f"{n}.mp4,{label}\n" for n in names))
    shutil.copy(demo.classes_path, d / "classes.txt")
    assert main(["--videos", str(d / "list.csv"), "--store", str(tmp_path / "b.zarr"), *TINY]) == 0
    fs = FeatureStore.open(tmp_path / "b.zarr")
    fset = fs.feature_set(SET)
    row = {i: r for r, i in enumerate(fs.videos()["id"])}
    errors, done = fset.errors(), fset.done()
    expect = {
        "corrupt": "corrupt or unreadable video",
        "truncated": "corrupt or unreadable video",
        "empty": "empty video",
        "text": "corrupt or unreadable video",
    }
    assert {row[n] for n in expect} == set(errors)
    for name, kind in expect.items():
        assert errors[row[name]].startswith(kind) and f"{name}.mp4" in errors[row[name]]
        assert not done[row[name]]
    assert done[[row["good"], row["noaudio"], row["cut_faststart"]]].all()
    assert not fs.videos()["has_audio"][row["noaudio"]] and fs.videos()["has_audio"][row["good"]]
    _, valid = fset.read([row["cut_faststart"]])
    assert valid[0, 0] and not valid[0].all()  # clips past the cut are masked, not invented
    out = capsys.readouterr().out
    assert "failed 4 (corrupt or unreadable video: 3, empty video: 1)" in out and ": OK" in out
    assert fset.pending().size == 0 and fset.pending(retry_errors=True).size == 4


KILL_AFTER_WRITE = """
import os, signal, sys, json
from extract.dump import pipeline
from extract.dump.settings import ExtractSettings
def kill(stats):
    if stats.rows_written >= 4:  # the first chunk is durable: die before the rest
        os.kill(os.getpid(), signal.SIGKILL)
settings = ExtractSettings.from_dict(json.loads(sys.argv[3]))
pipeline.extract(sys.argv[1], sys.argv[2], settings, on_progress=kill)
"""


def test_sigkill_then_resume_equals_an_uninterrupted_run(demo, ref_store, tmp_path, capsys):
    store = tmp_path / "k.zarr"
    cfg = ExtractSettings(
        backbone="resnet_tiny", weights="random", crop=32, clips=4, workers=1, threads=1, chunk_rows=4, batch_size=3
    ).to_dict()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", KILL_AFTER_WRITE, str(demo.videos_csv), str(store)]
    argv.append(json.dumps(cfg))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert verify_store(store).ok
    done = FeatureStore.open(store).feature_set(SET).done()
    assert 4 <= done.sum() < N_VIDEOS  # killed mid-run
    # Resume with the CLI (other batch size: batching must not change the features).
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), *TINY]) == 0
    assert f"skipped {done.sum()} already done" in capsys.readouterr().out
    assert verify_store(store).ok
    got, ref = _features(store), _features(ref_store)
    assert got[3].all()  # no row lost
    np.testing.assert_allclose(got[0], ref[0], rtol=2e-3, atol=2e-3)
    for a, b in zip(got[1:], ref[1:]):
        np.testing.assert_array_equal(a, b)


def test_two_shards_fill_one_store(demo, ref_store, tmp_path):
    store = str(tmp_path / "sh.zarr")
    config = tmp_path / "tiny.toml"  # the same settings as TINY, half of them from a config file
    config.write_text(
        'backbone = "resnet_tiny@random"\ncrop = 32\nclips = 4\nbatch-size = 5\nchunk_rows = 4\n'
    )
    args = ["--videos", str(demo.videos_csv), "--store", store, "--config", str(config)]
    args += ["--workers", "1", "--threads", "1", "-q"]
    assert main([*args, "--shard", "1/2"]) == 0  # rows 8:10 (chunks of 4: [0, 2) and [2, 3))
    np.testing.assert_array_equal(_features(store)[3], np.arange(N_VIDEOS) >= 8)
    assert main([*args, "--shard", "0/2"]) == 0
    got, ref = _features(store), _features(ref_store)
    assert got[3].all() and verify_store(store).ok
    np.testing.assert_allclose(got[0], ref[0], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "case,words",
    [
        ("unknown_label", "unknown label 'no_such_class'"),
        ("missing_file", "listed videos not found"),
        ("missing_csv", "no such file or folder"),
        ("bad_shard", "--shard must be i/n"),
        ("bad_backbone", "unknown backbone 'nope'"),
        ("other_settings", "exists with a different spec"),
        ("other_classes", "the video list has 2 classes"),
        ("bad_config", "unknown key 'batchsize'"),
        ("config_zero_limit", "--limit / limit must be a whole number >= 1, got 0"),
        ("crop_over_short_side", "--crop 32 is larger than the short side 16; lower --crop or raise"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(case, words, demo, ref_store, tmp_path, capsys):
    csv = tmp_path / "list.csv"
    shutil.copy(demo.classes_path, tmp_path / "classes.txt")
    video = demo.root / "videos" / "demo_00000.mp4"
    csv.write_text(f"{video},{demo.classes[0]}\n")
    store = str(tmp_path / "e.zarr")
    source, target = str(csv), store
    if case == "missing_csv":
        source = str(tmp_path / "nope.csv")
    if case in ("other_settings", "other_classes"):  # an existing store, refused before any write
        source, target = str(demo.videos_csv if case == "other_settings" else csv), str(ref_store)
    extra = {
        "bad_shard": ["--shard", "2/2"],
        "bad_backbone": ["--backbone", "nope"],
        "other_settings": ["--clips", "3"],
        "other_classes": ["--classes", str(tmp_path / "c2.txt")],
        "bad_config": ["--config", str(tmp_path / "c.toml")],
        "config_zero_limit": ["--config", str(tmp_path / "zero.toml")],
        "crop_over_short_side": ["--short-side", "16"],
    }.get(case, [])
    argv = ["--videos", source, "--store", target, *extra]
    if case == "unknown_label":
        csv.write_text(f"{video},no_such_class\n")
    if case == "other_classes":
        csv.write_text(f"{video},x\n")
    if case == "missing_file":
        csv.write_text(f"{tmp_path / 'gone.mp4'},{demo.classes[0]}\n")
    (tmp_path / "c2.txt").write_text("x\ny\n")
    (tmp_path / "c.toml").write_text("batchsize = 3\n")
    (tmp_path / "zero.toml").write_text("limit = 0\n")  # a file's value: the settings check it
    before = sorted(p.name for p in Path(ref_store).rglob("*"))
    assert main([*TINY, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and words in err[-1], err
    assert sorted(p.name for p in Path(ref_store).rglob("*")) == before  # nothing half-written
    assert not Path(store).exists()


HANG, CRASH = 23, 24  # frame counts a task can claim to make _TroubleClips misbehave


class _TroubleClips(RGBClips):
    """RGBClips that hangs when told a video has HANG frames and dies when told CRASH."""

    def make(self, video, n_frames, fps):
        if n_frames == HANG:
            time.sleep(600)
        if n_frames == CRASH:
            os._exit(3)
        return super().make(video, n_frames, fps)


def test_pool_kills_hung_and_replaces_dead_workers(demo):
    path = str(demo.root / "videos" / "demo_00000.mp4")
    counts = [N_FRAMES, HANG, N_FRAMES, CRASH, N_FRAMES]
    tasks = [DecodeTask(i, path, n, FPS, (0,)) for i, n in enumerate(counts)]
    maker = _TroubleClips(ClipSampling("tsn", 2, 1), ViewSpec(37, 32))
    # 2 s: the healthy decodes of a tiny clip must stay far inside it even on a loaded machine
    with DecodePool([maker], 1, timeout_s=2.0) as pool:
        results = {r.row: r for r in pool.imap_unordered(tasks)}
        assert pool.replaced == 2
    assert results[1].reason == "decode timed out" and "worker killed" in results[1].error
    assert results[3].reason == "decoder process died" and "exit code 3" in results[3].error
    for ok in (0, 2, 4):
        assert results[ok].error is None and results[ok].inputs[0].inputs.shape == (2, 1, 32, 32, 3)
        assert results[ok].decode_calls == 1


def test_demo_default_is_rgb_flow_and_audio_and_one_backbone_is_unchanged():
    from extract.run import DEMO_BACKBONES, _parser, _settings

    demo = _settings(_parser().parse_args([]), demo=True)
    assert [f"{c.modality}:{c.backbone}@{c.weights}" for c in demo.choices()] == list(DEMO_BACKBONES)
    assert all(c.weights == "random" for c in demo.choices())  # the demo says so: it runs offline
    assert [c.default_set_name for c in demo.choices()] == [
        "rgb_resnet18",
        "flow_resnet18",
        "audio_resnet18_audio",
    ]
    assert demo.crop == 112 and demo.flow_algorithm == "farneback"
    one = _settings(_parser().parse_args([*TINY, "--videos", "x.csv", "--set", "s"]), demo=False)
    assert one == ExtractSettings(
        backbone="resnet_tiny",
        weights="random",
        set_name="s",
        crop=32,
        clips=4,
        workers=1,
        threads=1,
        chunk_rows=4,
        batch_size=8,
    )
