"""Training the per-class boosters of ``xgboost`` fusion on a Dask cluster (``xgboost.dask``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import xgboost as xgb

if TYPE_CHECKING:
    from fusion.xgb import XGBoostFusion

log = logging.getLogger(__name__)


def train_classes_on_dask(fuser: XGBoostFusion, logits: np.ndarray, avail: np.ndarray, labels: np.ndarray,
                          margin: np.ndarray, parts: tuple[np.ndarray, np.ndarray],
                          ) -> list[tuple[xgb.Booster | None, int]]:
    """Train one booster per class with ``xgboost.dask.train`` on ``fuser.client``.

    The rows of each class's training and held-out matrices are split into one partition per
    worker, so every worker builds histograms on its share and XGBoost all-reduces them. The
    classes are trained one after another (each call already uses every worker).

    Returns:
        ``[(booster sliced to its best round, or None for a class without positives; rounds)]``.
    """
    import dask.array as da
    from xgboost import dask as dxgb

    client, s = fuser.client, fuser.settings
    n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    params = s.params(fuser.device_, 0)  # nthread 0: each worker uses its own threads
    tr, va = parts
    out: list[tuple[xgb.Booster | None, int]] = []

    def darr(a: np.ndarray):  # one row-partition per worker
        return da.from_array(a, chunks=(max(1, -(-len(a) // n_workers)),) + a.shape[1:])

    for c in range(labels.shape[1]):
        if not labels[tr, c].any():
            out.append((None, 0))
            continue
        feats = fuser._class_matrix(logits, avail, c)
        dtrain = dxgb.DaskQuantileDMatrix(client, darr(feats[tr]), darr(labels[tr, c]),
                                          base_margin=darr(margin[tr, c]), max_bin=s.max_bin)
        dvalid = dxgb.DaskQuantileDMatrix(client, darr(feats[va]), darr(labels[va, c]),
                                          base_margin=darr(margin[va, c]), max_bin=s.max_bin, ref=dtrain)
        result = dxgb.train(client, params, dtrain, s.n_rounds, evals=[(dvalid, "valid")],
                            early_stopping_rounds=s.early_stopping_rounds, verbose_eval=False)
        booster = result["booster"]
        best = booster.best_iteration + 1
        out.append((booster[:best], best))
        log.debug("class %d trained on dask: %d rounds", c, best)
    return out
