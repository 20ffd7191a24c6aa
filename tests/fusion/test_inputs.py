"""Reading runs as probabilities with availability (fusion.inputs)."""

import logging

import numpy as np
import pandas as pd
import pytest

from fusion.errors import InputMismatch
from fusion.inputs import StackInputs, load_inputs, to_logit, to_probability
from store import FeatureSetSpec, FeatureStore


@pytest.fixture
def store(tmp_path):
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=["a", "b"])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(6)], "path": "x",
                                   "split": ["train"] * 4 + ["test"] * 2,
                                   "has_audio": [True, False, True, True, False, True]}),
                     np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0], [0, 1]], np.uint8))
    return fs


def test_logits_become_probabilities_and_unknown_types_are_refused():
    s = np.array([[0.0, 2.0], [-1.0, np.nan]], np.float32)
    p = to_probability(s, "logit", "r")
    np.testing.assert_allclose(p[0], [0.5, 1 / (1 + np.exp(-2))], rtol=1e-6)
    assert np.isnan(p[1, 1])
    with pytest.raises(InputMismatch, match="score_type='rank'"):
        to_probability(s, "rank", "r")
    with pytest.raises(InputMismatch, match="outside \\[0, 1\\]"):
        to_probability(s, "sigmoid", "r")


def test_missing_score_type_is_inferred_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        p = to_probability(np.array([[3.0, -3.0]]), None, "r")
    assert p[0, 0] > 0.9 and "read as logit" in caplog.text


def test_availability_from_has_audio_nan_and_feature_sets(store):
    n = store.n_videos
    store.write_predictions("audio", np.full((n, 2), 0.5), attrs={"modality": "audio", "score_type": "sigmoid"})
    nan_scores = np.full((n, 2), 0.3, np.float32)
    nan_scores[3, 1] = np.nan
    store.write_predictions("rgb", nan_scores, attrs={"score_type": "sigmoid"})
    fset = store.create_feature_set("mel", FeatureSetSpec(clips=2, dim=3, modality="audio"))
    with fset.writer() as w:  # row 0: no valid clip; rows 1, 2: written; rows 3-5: never written
        w.write_rows([0, 1, 2], np.zeros((3, 2, 3)), valid=np.array([[0, 0], [1, 0], [1, 1]], bool))
    store.write_predictions("head", np.zeros((n, 2)), attrs={"features": ["mel"], "score_type": "sigmoid"})
    x, records, _ = load_inputs(store, ["audio", "rgb", "head"])
    assert x.available[:, 0].tolist() == [True, False, True, True, False, True]  # has_audio
    assert x.available[:, 1].tolist() == [True, True, True, False, True, True]  # NaN row
    # features done with a valid clip, and an audio feature set also needs has_audio
    assert x.available[:, 2].tolist() == [False, False, True, False, False, False]
    assert records[2].available is not None and records[0].train_splits == ("train",)


def test_filled_averages_the_available_runs():
    probs = np.array([[[0.2], [0.6], [0.9]]], np.float32)  # (n=1, M=3, C=1)
    x = StackInputs(probs, np.array([[True, True, False]]), ("a", "b", "c"))
    np.testing.assert_allclose(x.filled()[0, :, 0], [0.2, 0.6, 0.4], rtol=1e-6)
    assert np.isnan(x.masked()[0, 2, 0])
    np.testing.assert_allclose(x.filled_logits()[0, 0, 0], np.log(0.2 / 0.8), rtol=1e-5)
    none = StackInputs(probs, np.zeros((1, 3), bool), ("a", "b", "c"))
    np.testing.assert_allclose(none.filled()[0, :, 0], [0.2, 0.6, 0.9])  # nothing available: raw scores
    assert np.isnan(to_logit(np.array([np.nan]))[0])
