"""benchmarks.run --only scale at a small size: every step runs in its own process and reports figures.

The issue asks for 20,000 rows; on the shared 2-core test machine the fixed cost of the nine
child processes (torch / xgboost start-up, 313 classes) already takes ~2 minutes at 2,000
rows, so the test uses 2,000.
"""

import json

from benchmarks.run import main
from benchmarks.scale_bench import DEFAULT_ROWS, STEPS
from store import FeatureStore


def test_scale_benchmark_reports_every_step(tmp_path):
    out = tmp_path / "scale.jsonl"
    assert main(["--only", "scale", "--rows", "2000", "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    m = record["metrics"]
    assert m["rows"] == 2000 and DEFAULT_ROWS == 1_000_000 and m["failed_steps"] == 0
    for step in ("build", *STEPS):
        assert m[f"{step}_s"] > 0, step
        assert 0.01 < m[f"{step}_peak_rss_gb"] < 16, (step, m[f"{step}_peak_rss_gb"])
        if step != "build":
            assert 0 < m[f"{step}_cpu_s"] < 10 * m[f"{step}_s"] + 60, step  # user + system CPU of the child
    assert m["train_nextvlad_peak_rss_gb"] > m["verify_peak_rss_gb"]  # torch in one, not the other: per-child figures
    assert m["search_recall_at_10"] >= 0.95  # 1,400 train vectors: an exact index
    assert m["search_qps"] > 0 and m["exact_qps"] > 0
    assert m["search_speedup_vs_exact"] == m["search_qps"] / m["exact_qps"]
    store = tmp_path / "w" / "scale" / "rows_2000" / "store.zarr"
    assert (store.parent / "build.json").is_file()  # the cache a second run reuses
    fs = FeatureStore.open(store)
    assert {"mean_mlp", "nextvlad", "knn", "fused_xgboost", "fused_logistic"} <= set(fs.prediction_runs())
