"""Head logits: a backbone's own class scores as a prediction run (``extract.run --head-logits``).

A backbone trained by ``extract.train`` keeps its classifier ``fc`` in its checkpoint. With
``--head-logits`` the run builds each backbone with ``num_classes = len(store classes)``,
loads the classifier with the trunk (:func:`check_classifier` refuses a checkpoint without
a fitting one), and stores the per-clip logits as an extra feature set ``<set>__logits``
(``K`` clips x ``C`` classes, float32; resumable like any set). At the end of the run
:func:`write_logit_predictions` turns it into the prediction run ``<set>_logits`` that
fusion reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from extract.backbones.weights import _read_state_dict
from extract.errors import ExtractError
from store import FeatureStore

__all__ = ["check_classifier", "write_logit_predictions"]

log = logging.getLogger(__name__)


def check_classifier(weights: str, num_classes: int, dim: int) -> None:
    """Refuse weights whose classifier ``fc`` is missing or not ``(num_classes, dim)``.

    Raises:
        ExtractError: no ``fc.weight``/``fc.bias`` in the checkpoint, or other sizes.
    """
    state = _read_state_dict(Path(weights))  # the same reading as load_weights
    w, b = state.get("fc.weight"), state.get("fc.bias")
    if w is None or b is None:
        raise ExtractError(
            f"--head-logits: {weights} has no classifier (fc.weight, fc.bias); use the "
            "backbone.pt of python -m extract.train, trained on this store's classes"
        )
    if tuple(w.shape) != (num_classes, dim) or tuple(b.shape) != (num_classes,):
        raise ExtractError(
            f"--head-logits: the classifier of {weights} is {tuple(w.shape)} but the store has "
            f"{num_classes} classes and the backbone {dim} features: expected "
            f"({num_classes}, {dim}); use a checkpoint trained on this store's class list"
        )


def write_logit_predictions(fs: FeatureStore, features: str, logits_set: str) -> dict:
    """Write the prediction run ``<features>_logits`` from the per-clip logits of a run.

    A row's score is ``sigmoid(mean of its valid clips' logits)``: the backbone's own
    multi-label prediction for the video (what ``extract.train`` evaluates). Rows without
    logits (not done, failed, or no valid clip) score 0, as the heads do, and are counted
    in the attrs. ``fold`` is -1 for every row.

    Returns:
        The run's attrs.
    """
    fset = fs.feature_set(logits_set)
    n, c = fs.n_videos, len(fs.classes)
    scores = np.zeros((n, c), np.float32)
    scored = np.zeros(n, bool)
    for first, data, valid in fset.iter_chunks():  # (r, K, C), (r, K)
        count = valid.sum(axis=1)  # (r,)
        sums = np.einsum("rkc,rk->rc", data, valid.astype(np.float32))  # (r, K, C) -> (r, C)
        ok = count > 0
        rows = np.arange(first, first + len(data))[ok]
        scores[rows] = 1.0 / (1.0 + np.exp(-sums[ok] / count[ok, None]))
        scored[rows] = True
    spec = fset.spec
    attrs = {
        "head": "backbone",
        "backbone": spec.backbone,
        "modality": spec.modality,
        "weights_sha256": spec.weights_sha256,
        "score_type": "sigmoid",
        "pooling": "sigmoid(mean over the video's valid clips of the classifier logits)",
        "features": [features],
        "logits_set": logits_set,
        "rows_scored": int(scored.sum()),
        "missing_rows": int(n - scored.sum()),
        "missing_score": 0.0,
    }
    fs.write_predictions(f"{features}_logits", scores, attrs=attrs)
    log.info(
        "%s: prediction run %s_logits, %d of %d rows scored",
        fs.path,
        features,
        attrs["rows_scored"],
        n,
    )
    return attrs
