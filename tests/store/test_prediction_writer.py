"""FeatureStore.prediction_writer: a prediction run written block by block equals one written at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from store import FeatureStore
from store import errors as E


def _store(path, n=9000, c=5):
    fs = FeatureStore.create(path, classes=[f"c{i}" for i in range(c)])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(n)], "path": "x", "split": "train"}))
    return fs


def test_blocks_equal_the_whole_and_unwritten_rows_are_nan(tmp_path):
    fs = _store(tmp_path / "s.zarr")
    rng = np.random.default_rng(0)
    scores = rng.random((fs.n_videos, 5), dtype=np.float32)
    fold = rng.integers(-1, 3, fs.n_videos).astype(np.int16)
    fs.write_predictions("whole", scores, attrs={"a": 1}, fold=fold)
    with fs.prediction_writer("blocks", attrs={"a": 1}) as w:
        for a in range(0, 8000, 1000):  # rows 8000.. never written
            w.write(a, scores[a : a + 1000], fold[a : a + 1000])
        w.attrs["b"] = 2
    got, attrs = fs.read_predictions("blocks")
    np.testing.assert_array_equal(got[:8000], fs.read_predictions("whole")[0][:8000])
    assert np.isnan(got[8000:]).all() and attrs == {"a": 1, "b": 2}
    np.testing.assert_array_equal(fs.read_prediction_folds("blocks")[:8000], fold[:8000])
    assert (fs.read_prediction_folds("blocks")[8000:] == -1).all()


def test_a_failed_writer_leaves_the_old_run_and_no_debris(tmp_path):
    fs = _store(tmp_path / "s.zarr", n=100)
    fs.write_predictions("run", np.zeros((100, 5), np.float32))
    with pytest.raises(RuntimeError, match="boom"):
        with fs.prediction_writer("run") as w:
            w.write(0, np.ones((50, 5), np.float32))
            raise RuntimeError("boom")
    assert (fs.read_predictions("run")[0] == 0).all()
    assert sorted(p.name for p in (fs.path / "predictions").iterdir() if p.name.startswith(".tmp")) == []
    with pytest.raises(E.ShapeMismatch):
        with fs.prediction_writer("other") as w:
            w.write(90, np.ones((20, 5), np.float32))
    assert "other" not in fs.prediction_runs()
