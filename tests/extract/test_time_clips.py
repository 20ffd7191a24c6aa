"""Time-based clips (``--every``, ``--fps``, ``--max-clips``) end to end: ``extract.run`` on videos
of 1 s, 2 s and 60 s writes a feature set whose K varies per video (valid mask, clip times), and
``heads``, ``heads.knn`` and ``extract.search`` work on it through the mask."""

import numpy as np
import pytest
import torch

from extract.backbones import get_backbone
from extract.media.decode import decode_video
from extract.media.transforms import IMAGENET_MEAN, IMAGENET_STD
from extract.media.video_writer import write_video
from extract.run import main
from extract.search import main as search_main
from heads.knn import knn_neighbours, knn_predictions
from heads.knn import main as knn_main
from heads.registry import get_head, list_heads
from heads.train import main as train_main
from store import FeatureStore
from store.index import IndexSpec
from store.verify import verify_store
from tests.heads.test_knn import _reference

FPS = 10  # a 60 s video is 600 frames of 32 px: cheap to write and decode
SECONDS = [1, 2, 60, 2, 1, 2, 3, 2]  # one long video among short ones
SPLITS = ["train", "train", "train", "train", "train", "val", "val", "test"]
RUN = ["--backbone", "resnet_tiny@random", "--crop", "32", "--workers", "1", "--threads", "1", "--chunk-rows", "4",
       "--batch-size", "16", "-q"]
SET = "rgb_resnet_tiny"


def _frames(seconds: float, seed: int) -> np.ndarray:
    """Smooth random colour fields that drift over time (so every clip differs), (T, 32, 32, 3) uint8."""
    g = np.random.default_rng(seed)
    n = int(round(seconds * FPS))
    base = g.integers(0, 256, (n // 10 + 2, 4, 4, 3)).astype(np.float32)  # a new field every second
    t = np.arange(n) / 10.0
    i = np.floor(t).astype(int)
    w = (t - i)[:, None, None, None]
    small = (1 - w) * base[i] + w * base[i + 1]  # (T, 4, 4, 3)
    return np.repeat(np.repeat(small, 8, axis=1), 8, axis=2).astype(np.uint8)  # -> (T, 32, 32, 3)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("timed")
    rows = ["path,labels,split"]
    for i, (s, split) in enumerate(zip(SECONDS, SPLITS)):
        path = write_video(d / f"v{i}_{s}s.mp4", _frames(s, i), FPS, lossless=True)
        rows.append(f"{path},{'a' if i % 2 else 'b'};{'c' if s > 1 else 'a'},{split}")
    (d / "list.csv").write_text("\n".join(rows) + "\n")
    (d / "classes.txt").write_text("a\nb\nc\n")
    return d


@pytest.fixture(scope="module")
def sounding(tmp_path_factory):
    """Videos of 1 s, 2 s and 60 s with an audio track (the 2 s one without), for RGB + flow + audio."""
    d = tmp_path_factory.mktemp("sounding")
    rows = []
    for i, s in enumerate((1, 2, 60)):
        t = np.arange(s * 16000) / 16000
        audio = None if s == 2 else (0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t)).astype(np.float32)
        rows.append(f"{write_video(d / f'a{i}.mp4', _frames(s, 10 + i), FPS, audio)},a")
    (d / "list.csv").write_text("\n".join(rows) + "\n")
    (d / "classes.txt").write_text("a\n")
    return d


def test_rgb_flow_and_audio_follow_one_time_based_timeline(sounding, tmp_path):
    store = tmp_path / "s.zarr"
    sets = ["--backbone", "rgb:resnet_tiny@random", "--backbone", "flow:resnet_tiny@random", "--backbone",
            "audio:resnet_audio_tiny@random"]
    assert main(["--videos", str(sounding / "list.csv"), "--store", str(store), "--every", "0.5", *sets,
                 *RUN[2:]]) == 0
    fs = FeatureStore.open(store)
    names = ["rgb_resnet_tiny", "flow_resnet_tiny", "audio_resnet_audio_tiny"]
    times = [fs.feature_set(n).read_times() for n in names]
    valid = [fs.feature_set(n).read()[1] for n in names]
    assert [fs.feature_set(n).spec.clips for n in names] == [120, 120, 120]
    np.testing.assert_array_equal(valid[0].sum(1), [2, 4, 120])
    np.testing.assert_array_equal(valid[1], valid[0])  # flow: the same clips
    np.testing.assert_array_equal(valid[2].sum(1), [2, 0, 120])  # the 2 s video has no audio track
    for t in times[1:]:
        np.testing.assert_array_equal(t, times[0])  # one timeline: clip n covers the same seconds in every set


@pytest.fixture(scope="module")
def every_store(videos, tmp_path_factory):
    """``--every 0.5`` on the whole list; K-max is chosen from the longest video (60 s: 120 clips)."""
    store = tmp_path_factory.mktemp("every") / "t.zarr"
    assert main(["--videos", str(videos / "list.csv"), "--store", str(store), "--every", "0.5", *RUN]) == 0
    return store


def test_every_half_second_times_masks_and_features(every_store):
    fs = FeatureStore.open(every_store)
    assert verify_store(every_store).ok
    fset = fs.feature_set(SET)
    data, valid = fset.read()
    times = fset.read_times()
    # one-frame clips at 10 fps span 0.1 s: a video of S seconds has W = floor((S - 0.1) / 0.5) + 1 clips
    want = [int(np.floor((s - 0.1) / 0.5 + 1e-9)) + 1 for s in SECONDS]
    assert want[:3] == [2, 4, 120]
    assert fset.spec.clips == 120 and data.shape == (len(SECONDS), 120, 64)  # K-max: the longest video
    assert fset.spec.sampling["clips"] == {"mode": "every", "num_clips": 120, "frames_per_clip": 1, "stride": 1,
                                          "random": False, "every_s": 0.5}
    np.testing.assert_array_equal(valid.sum(1), want)
    assert all(valid[r, : want[r]].all() for r in range(len(SECONDS)))  # real clips first
    for r, s in enumerate(SECONDS):
        k = want[r]
        np.testing.assert_array_equal(times[r, :k, 0], 0.5 * np.arange(k))  # 0, 0.5, 1.0, ... exactly
        np.testing.assert_allclose(times[r, :k, 1], 0.5 * np.arange(k) + 0.1, rtol=0, atol=1e-5)  # float32
        assert times[r, k - 1, 1] <= s + 1e-6  # the last kept clip ends inside the video
        assert (data[r, k:] == 0).all()  # padded slots: zeros, never embedded
    assert (np.asarray(fs.videos()["n_frames"]) == np.array(SECONDS) * FPS).all()
    # Reference for the 2 s video: frames 0, 5, 10, 15 (the ones shown at 0, 0.5, 1.0, 1.5 s), decoded at
    # short side round(32 * 8 / 7) = 37, centre crop at offset 2, normalised, the tiny net from seed 0.
    torch.manual_seed(0)
    model = get_backbone("resnet_tiny").eval()
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    frames = decode_video(fs.videos()["path"][1], [0, 5, 10, 15], 37).frames[:, 2:34, 2:34]  # (4, 32, 32, 3)
    x = ((torch.from_numpy(frames).float() / 255 - mean) / std).permute(0, 3, 1, 2)[:, :, None]  # (4, 3, 1, 32, 32)
    with torch.no_grad():
        ref = model.forward_features(x)  # (4, 64)
    np.testing.assert_allclose(data[1, :4], ref.numpy(), rtol=2e-3, atol=2e-3)


def test_max_clips_thins_long_videos_and_fps_resamples(videos, tmp_path):
    """--max-clips 3 keeps the first, middle and last window of the 60 s video; --fps 5 with 4-frame clips
    (stride 1: 0.8 s) takes every second frame; the clip past the end of the 1 s video is dropped."""
    store = tmp_path / "m.zarr"
    argv = ["--videos", str(videos / "list.csv"), "--store", str(store), "--every", "0.5", "--max-clips", "3",
            "--fps", "5", "--frames", "4", "--backbone", "tsm_tiny@random", *RUN[2:]]
    assert main(argv) == 0
    fset = FeatureStore.open(store).feature_set("rgb_tsm_tiny")
    _, valid = fset.read()
    times = fset.read_times()
    assert fset.spec.clips == 3
    # W = floor((S - 0.8) / 0.5) + 1: 1 s -> 1, 2 s -> 3, 60 s -> 119 thinned to windows 0, 59, 118
    np.testing.assert_array_equal(valid.sum(1), [1, 3, 3, 3, 1, 3, 3, 3])
    np.testing.assert_allclose(times[2, :, 0], [0.0, 29.5, 59.0], atol=1e-6)
    np.testing.assert_allclose(times[2, :, 1], [0.8, 30.3, 59.8], atol=1e-5)
    np.testing.assert_allclose(times[0, 0], [0.0, 0.8], atol=1e-6)
    assert fset.spec.sampling["clips"]["fps"] == 5.0
    # A rerun keeps the set (same K-max) and has nothing to do; other time settings are refused.
    assert main(argv) == 0
    assert main([*argv[:-len(RUN[2:])], "--max-clips", "4", *RUN[2:]]) == 2


def test_variable_k_through_heads_knn_and_search(every_store, videos, tmp_path, capsys):
    fs = FeatureStore.open(every_store)
    fset = fs.feature_set(SET)
    data, valid = fset.read()
    # Every head gives a video the same output with its K-max slots (padding masked) as with its real
    # clips alone: the 1 s video's 2 clips count as 2, not as 120.
    for name in list_heads():
        torch.manual_seed(0)
        head = get_head(name, in_dim=64, num_classes=3).eval()
        with torch.no_grad():
            full = head(torch.from_numpy(data), torch.from_numpy(valid))  # (N, 120, 64) -> (N, 3)
            for r in (0, 1, 2):
                k = int(valid[r].sum())
                alone = head(torch.from_numpy(data[r : r + 1, :k]), torch.ones(1, k, dtype=torch.bool))
                np.testing.assert_allclose(full[r : r + 1].numpy(), alone.numpy(), rtol=1e-4, atol=1e-5,
                                           err_msg=name)
    # heads.train end to end on the mixed-length set
    out = tmp_path / "run"
    assert train_main(["--store", str(every_store), "--features", SET, "--head", "netvlad", "--epochs", "2",
                       "--batch-size", "4", "--out", str(out), "--run-name", "nv", "--quiet"]) == 0
    scores, _ = FeatureStore.open(every_store).read_predictions("nv")
    assert np.isfinite(scores).all() and scores.shape == (len(SECONDS), 3)
    # heads.knn: the video vectors are the means of the valid clips (brute force against the stored data)
    fs = FeatureStore.open(every_store)
    got, fold = knn_predictions(fs, SET, k=2, temperature=0.2, folds=0, index_spec=IndexSpec(kind="flat"))
    nb = knn_neighbours(fs, SET, k=2, folds=0, index_spec=IndexSpec(kind="flat"))
    np.testing.assert_allclose(got, _reference(fs, SET, 2, 0.2, fold, nb.rows), atol=1e-5)
    assert knn_main(["--store", str(every_store), "--features", SET, "--k", "2", "--folds", "0", "-q"]) == 0
    # extract.search: a new 5 s file is embedded with the set's time-based clips (9 valid of 120)
    query = write_video(tmp_path / "q.mp4", _frames(5, 99), FPS, lossless=True)
    capsys.readouterr()
    assert search_main(["--store", str(every_store), "--features", SET, "--video", str(query), "-k", "3",
                        "--device", "cpu", "-q"]) == 0
    assert "(10 of 120 clips valid" in capsys.readouterr().out  # floor((5 - 0.1) / 0.5) + 1 = 10


@pytest.mark.parametrize("args,words", [
    (["--every", "0.5", "--clips", "4"], "give one of them"),
    (["--every", "0.5", "--sampling", "tsn"], "--sampling tsn places a fixed number of clips"),
    (["--max-clips", "3"], "--max-clips caps the time-based clips of --every"),
    (["--every", "1", "--max-clips", "5000"], "above the limit of 4096"),
    (["--every", "0"], "argument --every: must be greater than 0"),
])
def test_time_flag_errors_are_one_line(args, words, videos, tmp_path, capsys):
    store = tmp_path / "e.zarr"
    argv = ["--videos", str(videos / "list.csv"), "--store", str(store), *args, *RUN]
    if args[-1] == "0":  # argparse refuses it: its usage line, then one error line, exit 2
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(("error: ", "python -m extract.run: error: ")) and words in err[-1], err
    assert not store.exists()


def test_help_lists_the_time_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--every SECONDS" in out and "--fps F" in out and "--max-clips N" in out
