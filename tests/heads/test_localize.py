"""heads.localize: per-clip scores, the CAM identity, finding the clip that shows a label, confusion."""

import numpy as np
import pandas as pd
import pytest
import torch

from heads.localize import (
    TrainedRun,
    confusion_matrix,
    confusion_report,
    is_cam_exact,
    main,
    most_confused,
    per_clip_logits,
)
from heads.registry import get_head
from heads.trainer import TrainConfig, train_head
from store import FeatureSetSpec, FeatureStore

N, C, K, D = 240, 4, 4, 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A store where each video's single label is carried by one clip only, and a linear head on it."""
    tmp = tmp_path_factory.mktemp("loc")
    rng = np.random.default_rng(0)
    label = rng.integers(0, C, N)
    signal_clip = rng.integers(0, K, N)
    fs = FeatureStore.create(tmp / "s.zarr", classes=[f"c{i}" for i in range(C)])
    split = np.where(np.arange(N) < 160, "train", "val")
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(N)], "path": "x", "split": split}),
                     np.eye(C, dtype=np.uint8)[label])
    protos = 3 * rng.standard_normal((C, D))
    data = 0.5 * rng.standard_normal((N, K, D))
    data[np.arange(N), signal_clip] += protos[label]
    times = np.stack([np.arange(K) * 0.5, np.arange(K) * 0.5 + 0.5], -1)[None].repeat(N, 0)
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=K, dim=D, chunk_rows=64))
    with fset.writer() as w:
        w.write_rows(np.arange(N), data, times=times)
    cfg = TrainConfig(features=("f",), head="mean_mlp", head_kwargs={"hidden_dim": None}, epochs=15, batch_size=32,
                      lr=3e-2, warmup=0, device="cpu", patience=0)
    train_head(fs, cfg, out_dir=tmp / "run", run_name="lin", progress=False)
    return TrainedRun.load(tmp / "run"), label, signal_clip


def test_per_clip_logits_score_each_clip_alone_with_nan_padding():
    torch.manual_seed(0)
    head = get_head("netvlad", in_dim=D, num_classes=C, num_clusters=3, hidden_dim=6).eval()
    x = torch.randn(3, K, D)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    got = per_clip_logits(head, x, mask)
    assert got.shape == (3, K, C) and torch.isnan(got[~mask]).all()
    with torch.no_grad():
        for b, k in mask.nonzero().tolist():
            alone = head(x[b, k][None, None], torch.ones(1, 1, dtype=torch.bool))[0]
            torch.testing.assert_close(got[b, k], alone, atol=1e-5, rtol=1e-5)


def test_linear_head_on_mean_is_the_cam_decomposition():
    torch.manual_seed(0)
    linear = get_head("mean_mlp", in_dim=D, num_classes=C, hidden_dim=None, dropout=0.3).eval()
    x, mask = torch.randn(5, K, D), torch.rand(5, K) > 0.3
    mask[:, 0] = True
    clip = per_clip_logits(linear, x, mask)
    with torch.no_grad():
        video = linear(x, mask)
    torch.testing.assert_close(clip.nanmean(1), video, atol=1e-5, rtol=1e-5)
    assert is_cam_exact(linear)
    assert not is_cam_exact(get_head("mean_mlp", in_dim=D, num_classes=C, hidden_dim=4))
    assert not is_cam_exact(get_head("netvlad", in_dim=D, num_classes=C, num_clusters=2))


def test_best_clip_is_the_clip_that_carries_the_label(run):
    trained, label, signal_clip = run
    rows, probs, mask = trained.clip_scores(np.arange(160, N))
    assert probs.shape == (80, K, C) and mask.all()
    best = probs[np.arange(80), :, label[rows]].argmax(1)
    assert (best == signal_clip[rows]).mean() > 0.9


def test_cli_prints_a_video_and_saves_npz(run, capsys):
    trained, label, signal_clip = run
    r = 200
    assert main(["--run", str(trained.run_dir), "--video", f"v{r}", "--top", "2", "--save"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"c{label[r]} "))
    k = signal_clip[r]
    assert line.split()[2] == str(k) and f"{0.5 * k:.2f}-{0.5 * k + 0.5:.2f}" in line
    assert "CAM decomposition" in out
    npz = np.load(trained.run_dir / "clip_scores_val.npz")
    assert npz["clip_scores"].shape == (80, K, C) and npz["times"].shape == (80, K, 2)
    assert list(npz["ids"][:2]) == ["v160", "v161"] and npz["video_scores"].shape == (80, C)


def test_confusion_matrix_by_hand():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.3], [0.1, 0.2, 0.9], [0.6, 0.1, 0.5]])
    labels = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1]])
    m = confusion_matrix(scores, labels)
    expected = np.zeros((3, 3), int)
    expected[0, 1] = 1  # video 1: labels {0, 2}, top-1 is 1
    expected[2, 1] = 2  # videos 1 and 2
    expected[1, 0] = expected[2, 0] = 1  # video 4: labels {1, 2}, top-1 is 0
    np.testing.assert_array_equal(m, expected)
    assert most_confused(m, 3) == [(0, 1, 1, 1), (1, 2, 0, 2), (0, 2, 0, 1)]  # ties: lower ids first
    text = confusion_report(scores, labels, ["run", "jump", "swim"], top=2)
    rows = [line.split() for line in text.splitlines()[2:]]
    assert [r[:6] for r in rows] == [["1", "run", "jump", "2", "1", "1"], ["2", "jump", "swim", "2", "0", "2"]]
    assert rows[1][6:] == ["0.0%", "50.0%"]  # 2 of the 4 videos labelled swim went to jump


def test_cli_confusion_from_a_model_and_from_a_prediction_run(run, capsys):
    trained, _, _ = run
    assert main(["--run", str(trained.run_dir), "--confusion", "--pairs", "3"]) == 0
    from_model = capsys.readouterr().out
    assert main(["--store", str(trained.store.path), "--predictions", "lin", "--confusion", "--pairs", "3"]) == 0
    assert capsys.readouterr().out == from_model
    assert "most confused class pairs on 80 labelled videos" in from_model
    assert main(["--run", str(trained.run_dir.parent)]) == 2
    assert capsys.readouterr().err.startswith("error: no checkpoint.pt")
