"""Training an IVF index's coarse quantizer: one k-means, or two levels when there are many lists.

k-means of ``n`` points into ``nlist`` centroids costs ``O(n nlist d)`` per iteration, and
faiss wants at least 39 points per centroid, so the cost grows as ``nlist^2``: at 1M vectors
(``nlist`` 4000, 156k training points, 10 iterations, d 256) it is ~3 TFLOP, the largest part
of an index build on a 2-core machine. From :data:`TWO_LEVEL_MIN_NLIST` lists on, the
centroids come from two levels, as faiss's ``contrib.clustering.two_level_clustering`` makes
them: k-means into ``sqrt(nlist)`` groups, then each group's points into its share of the
``nlist`` centroids (shares proportional to the groups' sizes), ``O(n sqrt(nlist) d)`` per
iteration. The lists are then filled and searched with the exact (flat) quantizer as usual.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

logger = logging.getLogger(__name__)
TWO_LEVEL_MIN_NLIST = 1024  # below this, one k-means over all lists is cheap enough
FIRST_LEVEL_POINTS_PER_GROUP = 2000  # faiss contrib's max_points_per_centroid for the first level


def train_ivf(index: faiss.Index, sample: np.ndarray, *, seed: int) -> None:
    """Train an IVF ``index`` (coarse quantizer, then its codes) on ``sample`` ``(n, d)`` float32.

    With fewer than :data:`TWO_LEVEL_MIN_NLIST` lists this is ``index.train`` (one k-means);
    otherwise the quantizer is filled with :func:`two_level_centroids` first, and
    ``index.train`` only trains what follows it (SQ / PQ codes; nothing for IVF-Flat).
    """
    ivf = faiss.extract_index_ivf(index)
    if ivf.nlist >= TWO_LEVEL_MIN_NLIST and ivf.quantizer.ntotal == 0:
        centroids = two_level_centroids(sample, ivf.nlist, spherical=bool(ivf.cp.spherical), niter=ivf.cp.niter,
                                        seed=seed)
        ivf.quantizer.add(centroids)  # a full flat quantizer: IndexIVF.train skips its own k-means
    index.train(sample)


def _shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` centroids over groups of ``sizes`` points, proportionally (floors of the
    cumulative shares, so they sum to ``total``); a group never gets more centroids than points
    as long as ``total <= sizes.sum()``."""
    cum = np.cumsum(sizes, dtype=np.int64) * total // int(sizes.sum())
    return np.diff(cum, prepend=0)


def two_level_centroids(x: np.ndarray, nlist: int, *, spherical: bool, niter: int, seed: int) -> np.ndarray:
    """``(nlist, d)`` float32 centroids of ``x`` ``(n, d)`` by two-level k-means.

    Args:
        x: Training points, ``n >= nlist``.
        nlist: Centroids wanted.
        spherical: Normalise centroids (inner-product indexes, as faiss's IVF k-means does).
        niter: k-means iterations at each level.
        seed: Seed of the first level; group ``g`` uses ``seed + 1 + g``.
    """
    n, d = x.shape
    assert n >= nlist, "k-means needs a point per centroid"
    groups = max(2, round(math.sqrt(nlist)))
    top = faiss.Kmeans(d, groups, niter=niter, seed=seed, spherical=spherical,
                       max_points_per_centroid=FIRST_LEVEL_POINTS_PER_GROUP)
    top.train(x)
    _, assign = top.index.search(x, 1)  # (n, 1) nearest group of each point
    assign = assign[:, 0]
    sizes = np.bincount(assign, minlength=groups)
    shares = _shares(sizes, nlist)
    order = np.argsort(assign, kind="stable")  # points grouped, group 0 first
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = np.empty((nlist, d), np.float32)
    filled = 0
    for g in np.flatnonzero(shares):
        k = int(shares[g])
        pts = np.ascontiguousarray(x[order[bounds[g]:bounds[g + 1]]])  # (size_g, d)
        if k == len(pts):  # as many centroids as points: the points themselves
            out[filled:filled + k] = pts
        else:
            km = faiss.Kmeans(d, k, niter=niter, seed=seed + 1 + int(g), spherical=spherical,
                              min_points_per_centroid=1)  # shares keep ~n / nlist points a centroid
            km.train(pts)
            out[filled:filled + k] = km.centroids
        filled += k
    assert filled == nlist, "the shares sum to nlist"
    logger.debug("two-level k-means: %d groups of %d-%d points, %d centroids", groups, sizes.min(), sizes.max(),
                 nlist)
    return out
