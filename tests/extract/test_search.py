"""``python -m extract.search`` on tiny stores built by ``extract.run`` with tiny backbones: a stored
video's file finds itself first at similarity ~1 with the features extract.run stored, in RGB, flow
and audio sets; weights are checked by sha256; user errors are one line with exit 2."""

import numpy as np
import pytest
import torch

from extract.backbones import get_backbone
from extract.backbones.batchnorm_fold import fold_batchnorm
from extract.demo import DemoConfig, make_demo
from extract.run import main as extract_main
from extract.search import embed_video, main, producer_for, search_video
from store import FeatureStore
from store.testing import make_synthetic_store

TINY = ["--backbone", "resnet_tiny@random", "--crop", "32", "--clips", "3", "--workers", "0", "--threads", "1",
        "--chunk-rows", "4", "--batch-size", "8", "--no-verify", "-q"]
SET = "rgb_resnet_tiny"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Six 1-second 48 px demo videos (with sound)."""
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=6, size=48, seconds=1.0), progress=False)


@pytest.fixture(scope="module")
def built(demo, tmp_path_factory):
    """The demo extracted twice: random init (seed 3) and from a checkpoint."""
    root = tmp_path_factory.mktemp("search")
    store = root / "s.zarr"
    assert extract_main(["--videos", str(demo.videos_csv), "--store", str(store), "--seed", "3", *TINY]) == 0
    torch.manual_seed(11)
    weights = root / "tiny.pth"
    torch.save(get_backbone("resnet_tiny").state_dict(), weights)
    tiny = [a.replace("@random", "") for a in TINY]
    assert extract_main(["--videos", str(demo.videos_csv), "--store", str(store), "--weights", str(weights),
                         "--set", "ckpt", *tiny]) == 0
    return FeatureStore.open(store), weights


@pytest.mark.parametrize("features", [SET, "ckpt"])
def test_a_stored_video_finds_itself_first(built, features):
    fs, weights = built
    row = 4
    path = fs.videos()["path"][row]
    result, emb = search_video(fs, features, path, k=3, weights=weights if features == "ckpt" else None,
                               device="cpu")
    assert result.rows[0, 0] == row and result.sims[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert result.sims[0, 1] < 1 - 1e-3  # the others are other videos
    data, valid = fs.feature_set(features).read([row])
    np.testing.assert_array_equal(emb.valid, valid[0])
    np.testing.assert_allclose(emb.data, data[0], rtol=2e-3, atol=2e-3)  # the features extract.run stored


def test_random_init_is_rebuilt_from_the_recorded_seed(built):
    fs, _ = built
    fset = fs.feature_set(SET)
    assert fset.spec.extra["random_init_seed"] == 3
    producer = producer_for(fset, device="cpu")
    torch.manual_seed(3)
    reference = get_backbone("resnet_tiny").eval()
    fold_batchnorm(reference)  # as every producer holds its model
    reference = reference.state_dict()
    assert producer.model.state_dict().keys() == reference.keys()
    for key, value in producer.model.state_dict().items():
        torch.testing.assert_close(value, reference[key])
    emb = embed_video(producer, fs.videos()["path"][0], dtype=fset.spec.dtype)
    assert emb.data.shape == (3, fset.spec.dim) and emb.vector().shape == (1, fset.spec.dim)


def test_cli_prints_the_video_itself_first(built, capsys):
    fs, _ = built
    path = fs.videos()["path"][2]
    code = main(["--store", str(fs.path), "--features", SET, "--video", str(path), "-k", "2", "--device", "cpu",
                 "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("index: Flat over 6 video vectors")
    first = lines[3].split()
    assert first[:2] == ["1", fs.video_ids()[2]] and float(first[2]) == pytest.approx(1.0, abs=1e-3)
    assert lines[-1].startswith("propagated label scores (T=0.1): ")


MODALITY_SETS = ["rgb_resnet_tiny", "flow_resnet_tiny", "audio_resnet_audio_tiny"]


@pytest.fixture(scope="module")
def three(demo, tmp_path_factory):
    """RGB, flow and audio sets from one extract.run (the flow and audio sets as a user would add them)."""
    store = tmp_path_factory.mktemp("three") / "m.zarr"
    sets = ["--backbone", "rgb:resnet_tiny@random", "--backbone", "flow:resnet_tiny@random", "--backbone",
            "audio:resnet_audio_tiny@random"]
    args = [a for a in TINY if a not in ("--backbone", "resnet_tiny@random")]
    assert extract_main(["--videos", str(demo.videos_csv), "--store", str(store), "--seed", "5", *sets, *args]) == 0
    return FeatureStore.open(store)


def _brute_force_cosines(data, valid):
    """(n, n) cosine similarities of the videos' mean valid clip features, by numpy."""
    means = (data * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)  # (n, K, D) -> (n, D)
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize("features", MODALITY_SETS)
def test_every_modality_finds_its_own_video_first(three, features):
    fs = three
    fset = fs.feature_set(features)
    data, valid = fset.read()
    assert valid.all()
    cos = _brute_force_cosines(data.astype(np.float64), valid)
    np.fill_diagonal(cos, -np.inf)
    gaps = 1 - cos.max(axis=1)  # how far each video is from its nearest other video
    row = int(np.argmax(gaps))  # the most distinct video: the test never rests on a near tie
    gap = gaps[row]
    assert gap > 1e-4, f"{features}: the stored videos are all alike ({gap})"
    result, emb = search_video(fs, features, fs.videos()["path"][row], k=3, device="cpu")
    np.testing.assert_array_equal(emb.valid, valid[row])
    np.testing.assert_allclose(emb.data, data[row], rtol=2e-3, atol=2e-3)  # the features extract.run stored
    assert result.rows[0, 0] == row and result.sims[0, 0] > 1 - gap / 10  # itself, at distance ~0
    assert result.sims[0, 1] < result.sims[0, 0] - gap / 2  # then, clearly further, another video


@pytest.mark.parametrize("case, message", [
    ("no_weights", "pass --weights PATH"),
    ("wrong_weights", "has sha256"),
    ("unwanted_weights", "drop --weights"),
    ("missing_video", "file not found"),
    ("not_a_video", "tiny.pth"),
    ("unknown_set", "no feature set 'nope'"),
    ("synthetic_set", "not written by extract.run"),
])
def test_cli_errors_are_one_line_exit_2(built, tmp_path, capsys, case, message):
    fs, weights = built
    video = str(fs.videos()["path"][0])
    other = tmp_path / "other.pth"
    torch.save(get_backbone("resnet_tiny").state_dict(), other)
    store, features, extra = str(fs.path), SET, []
    if case == "no_weights":
        features = "ckpt"
    elif case == "wrong_weights":
        features, extra = "ckpt", ["--weights", str(other)]
    elif case == "unwanted_weights":
        extra = ["--weights", str(weights)]
    elif case == "missing_video":
        video = str(tmp_path / "nope.mp4")
    elif case == "not_a_video":
        video = str(weights)
    elif case == "unknown_set":
        features = "nope"
    elif case == "synthetic_set":
        store = str(make_synthetic_store(tmp_path / "syn.zarr", n_videos=8, dim=8).path)
        features = "synthetic"
    code = main(["--store", store, "--features", features, "--video", video, "--device", "cpu", "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
