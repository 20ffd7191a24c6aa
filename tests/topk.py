"""Top-k checks that do not rest on ties: neighbour lists compared with a brute-force reference."""

import numpy as np


def assert_top_k_equal(rows: np.ndarray, ref_scores: np.ndarray, atol: float = 1e-5) -> None:
    """Check that ``rows`` (found by the code under test) are a top k of the exact ``ref_scores``.

    Each query's found rows must be distinct and their exact scores must equal the k best exact scores
    in order, to ``atol``. Rows whose scores tie (or nearly tie: another BLAS kernel may round them
    the other way) may come in either order or swap with the first row left out, so this check does
    not rest on a tie, yet any wrong neighbour or wrong order beyond rounding fails it.

    Args:
        rows: ``(Q, k)`` column indices into ``ref_scores``.
        ref_scores: ``(Q, N)`` exact scores, larger is nearer; ``-inf`` marks excluded columns.
        atol: rounding allowed between the two computations.
    """
    k = rows.shape[1]
    got = np.take_along_axis(ref_scores, rows, axis=1)  # (Q, k)
    best = -np.sort(-ref_scores, axis=1)[:, :k]  # (Q, N) -> (Q, k)
    np.testing.assert_allclose(got, best, atol=atol)
    assert all(len(set(r)) == k for r in rows.tolist()), "a row came back twice"
