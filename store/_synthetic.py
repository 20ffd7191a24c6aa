"""Seeded clustered vectors for index tests and benchmarks.

Isotropic random vectors have no neighbourhood structure: every approximate index fails
on them (the nearest neighbour is barely nearer than the thousandth). Real embeddings are
clustered, so tests and benchmarks of ``store.index`` use this generator instead.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(
    n: int,
    d: int,
    n_clusters: int,
    seed: int = 0,
    *,
    spread: float = 0.5,
    return_assignment: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """L2-normalised vectors drawn around random cluster centres, like embeddings.

    Centres are standard normal directions in ``d`` dimensions; each vector is its centre
    plus isotropic Gaussian noise whose norm is ``spread`` times the centre's norm, then
    L2-normalised. Cluster sizes are uneven (Dirichlet-distributed), as in real data.

    Args:
        n: Number of vectors.
        d: Dimension.
        n_clusters: Number of clusters (at least 1).
        seed: Seed of the generator; the same arguments always give the same vectors.
        spread: Noise norm relative to the centre norm; larger means looser clusters.
        return_assignment: Also return the cluster number of each vector.

    Returns:
        ``(n, d)`` float32 unit vectors, and with ``return_assignment`` the ``(n,)`` int64
        cluster of each.
    """
    if n < 0 or d < 1 or n_clusters < 1 or spread < 0:
        raise ValueError(
            f"need n >= 0, d >= 1, n_clusters >= 1, spread >= 0; got {n}, {d}, {n_clusters}, {spread}"
        )
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    assignment = rng.choice(n_clusters, size=n, p=weights)
    # Noise per coordinate spread/sqrt(d)*|c| ~ spread: its norm is ~spread x the centre's.
    out = rng.standard_normal((n, d), dtype=np.float32)
    out *= np.float32(spread)
    out += centres[assignment]  # (n, d) + (n, d)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    if return_assignment:
        return out, assignment.astype(np.int64)
    return out
