"""The benchmark report and the result saving of ``benchmarks.run``, on fabricated results.

No benchmark really runs: ``write_report`` gets small hand-made records with the keys the
benchmarks return (ratios and target verdicts computed by hand below), and ``main`` runs
fake benchmarks put in the registry with monkeypatch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import registry, report
from benchmarks import run as bench_run

PNG = b"\x89PNG\r\n\x1a\n"


def _record(name: str, metrics: dict, **extra) -> dict:
    return {"benchmark": name, "description": f"{name} benchmark", "date": "2025-01-02T03:04:05+00:00",
            "command": f"python -m benchmarks.run --only {name}", "machine": "CPU: test; cores: 2; GPU: none",
            "gpu": None, "seconds": 12.0, "metrics": metrics, **extra}


STORE = {"write_MBps": 400.0, "scan_MBps": 1200.0, "epoch_rows_per_s": 150_000.0, "compression_ratio": 1.1,
         "npy_per_video_rows_per_s": 7500.0, "memmap_rows_per_s": 500_000.0}
SEARCH = {"n_vectors": 20000.0, "dim": 512.0, "exact_build_s": 0.1, "exact_qps": 2000.0, "auto_build_s": 5.0,
          "auto_qps": 40_000.0, "auto_recall10": 0.97, "numpy_qps": 500.0, "numpy_recall10": 1.0,
          "auto_bytes_per_vector": 2100.0, "numpy_bytes_per_vector": 2048.0, "auto_nprobe": 4.0,
          "curve_nprobe": [1.0, 2.0, 4.0, 8.0], "curve_recall10": [0.8, 0.9, 0.97, 0.99],
          "curve_qps": [90_000.0, 60_000.0, 40_000.0, 20_000.0]}
PIPELINE = {"videos": 24, "classes": 12, "rgb_backbone_val_map": 0.3, "rgb_mean_mlp_val_map": 0.4,
            "rgb_mean_mlp_test_map": 0.42, "rgb_knn_test_map": 0.35, "flow_mean_mlp_test_map": 0.31,
            "audio_mean_mlp_test_map": None, "fusion_xgboost_test_map": 0.6, "fusion_mean_test_map": 0.5,
            "fusion_weighted_test_map": 0.55, "fusion_logistic_test_map": 0.62, "best_single_input": "rgb",
            "best_single_test_map": 0.42, "stage_demo_s": 3.5, "stage_fusion_s": 1.25, "total_computed_s": 4.75}
EXTRACT = {"decode_clips_per_s": 100.0, "model_clips_per_s": 100.0, "pipeline_clips_per_s": 48.0,
           "naive_clips_per_s": 30.0, "decodes_per_video": 1.0}  # the rest missing


def _lines(md: str, start: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith(start)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    results = {"store": _record("store", STORE), "search": _record("search", SEARCH),
               "pipeline": _record("pipeline", PIPELINE), "extract": _record("extract", EXTRACT),
               "mystery": _record("mystery", {"speed": 3.0, "note": "x"})}
    recipe = "# MiT small\n\nsome text\n\n## Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\n# a comment\n```\n"
    out = report.write_report(results, tmp_path / "docs" / "REPORT.md", machine="CPU: test; cores: 2; GPU: none",
                              recipes={"mit_small": recipe}, command="python -m benchmarks.run")
    return out, out.read_text()


def test_tables_ratios_and_target_verdicts(written):
    _, md = written
    # 150,000 / 7,500 = 20x (target >= 10x: met); / 500,000 = 0.3x (>= 0.25x: met); scan 1,200 < 1,500: missed
    assert "| shuffled epoch (rows/s) | 150,000 | .npy per video | 7,500 | 20x | >= 10x |" in md
    assert "| shuffled epoch (rows/s) | 150,000 | np.memmap (near-limit) | 500,000 | 0.3x | >= 0.25x |" in md
    assert "- **met**: shuffled epoch vs .npy per video: 20x (target >= 10x)" in md
    assert "- **MISSED**: full scan: 1,200 (target >= 1,500 MB/s)" in md
    # search: 40,000 / 2,000 = 20x exact; recall 0.97 >= 0.95
    assert "| queries/s (q/s) | 40,000 | exact faiss Flat | 2,000 | 20x | >= 10x |" in md
    assert "- **met**: recall@10, held-out queries: 0.97 (target >= 0.95)" in md
    assert "| 4 | 0.97 | 40,000 |" in md  # the curve table
    # pipeline fusion: xgb 60.0 vs best single 42.0 = +18.0 pts (>= +5: met); vs logistic 62.0: -2.0 (missed)
    assert "| fusion: xgboost (%) | 60.0 | best single input | 42.0 | +18.0 pts | >= +5 pts |" in md
    assert "- **MISSED**: fusion: xgboost vs logistic: -2.0 pts (target >= +0 pts)" in md
    assert "| rgb | knn | - | 35.0 |" in md and "| audio | mean_mlp | - | - |" in md
    assert "| rgb | backbone's own classifier (training) | 30.0 | - |" in md
    assert "| demo | 3.50 |" in md
    # summary: store 2 of 3 targets met; search 2 of 2
    assert "| [store](#store) | store benchmark | 2025-01-02T03:04:05+00:00 | 12 | 2 / 3 met |" in md
    assert "| [search](#search) | search benchmark | 2025-01-02T03:04:05+00:00 | 12 | 2 / 2 met |" in md


def test_missing_keys_devices_and_unknown_benchmarks(written):
    _, md = written
    # extract: R(2+1)D keys absent -> "-"; serial bound 1 / (1/100 + 1/100) = 50 -> 48 / 50 = 0.96x (CPU: met)
    assert "| R(2+1)D-18, 2 x 16 frames (clips/s) | - | per-video script | - | - | >= 2x |" in md
    assert "- **met**: pipeline vs serial bound 1/(1/decode + 1/model) vs serial bound: 0.96x (target >= 0.9x " \
           "(on CPU))" in md
    assert "- **not applicable**: pipeline vs the slower stage vs min(decode, model): 0.48x" in md
    assert "- **not measured**: R(2+1)D-18, 2 x 16 frames vs per-video script (target >= 2x)" in md
    assert "- **MISSED**: ResNet-18 TSN, 112 px vs per-video script: 1.60x (target >= 2x)" in md
    assert "## mystery: mystery benchmark" in md and "| `speed` | 3 |" in md and "| `note` | x |" in md
    assert "Not run yet: flow, decode, heads, sweep, scale, fusion, train" in md
    assert "Machine of that run" not in md  # same machine as the report's
    assert _lines(md, "- CPU: test") and _lines(md, "- GPU: none")


def test_plots_are_png_files_linked_from_the_report(written):
    out, md = written
    for name in ("throughput", "pipeline_map", "search_recall_qps"):
        png = out.parent / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
        assert f"(report/{name}.png)" in md


def test_recipe_sections_keep_the_report_structure(written):
    _, md = written
    body = md[md.index("## Recipe: mit_small"):]
    assert "### MiT small" in body and "#### Results" in body and "| 1 | 2 |" in body
    assert "\n# a comment\n" in body  # inside a code fence: untouched
    assert [ln for ln in md.splitlines() if ln.startswith("# ")] == ["# Benchmark report", "# a comment"]


def test_no_results_and_stale_plots(tmp_path):
    plots = tmp_path / "report"
    plots.mkdir()
    (plots / "throughput.png").write_bytes(PNG)
    failed = _record("sweep", {}, last_failure={"date": "2025-02-01", "error": "RuntimeError: boom"})
    md = report.write_report({"sweep": failed}, tmp_path / "REPORT.md", machine="m", recipes={}).read_text()
    assert not (plots / "throughput.png").exists() and not list(plots.iterdir())
    assert "**The latest try (2025-02-01) failed**: `RuntimeError: boom`; no figures saved." in md
    assert "- **not measured**: head configurations, 2 workers vs one after another (target >= 1.7x)" in md
    assert "Machine of that run: CPU: test; cores: 2; GPU: none." in md


def test_formatting_and_heading_demotion():
    assert [report.fmt(v) for v in (None, "x", 1234.5, 123.4, 12.34, 1.234, 0.01234, 7, float("nan"))] == [
        "-", "x", "1,234", "123", "12.3", "1.23", "0.0123", "7", "nan"]
    assert report.fmt(0.4567, percent=True) == "45.7"
    assert report.demote_headings("# a\n###### b\n```\n# c\n```\n#d", 2) == "### a\n###### b\n```\n# c\n```\n#d"


@pytest.fixture()
def fake_suite(monkeypatch):
    calls = {"fake": 0, "boom": 0}

    def fake(args):
        calls["fake"] += 1
        if calls["fake"] > 1 and getattr(args, "size", None) == 13:
            raise ValueError("second try broke")
        return {"epoch_rows_per_s": np.float32(2.5), "sizes": np.arange(3)}

    def boom(args):
        calls["boom"] += 1
        raise RuntimeError("it crashed")

    def recipe(name, workdir, **kwargs):  # the recipes' own run is tested in test_recipes.py
        calls[f"recipe {name}"] = calls.get(f"recipe {name}", 0) + 1
        (workdir / "recipes" / name).mkdir(parents=True, exist_ok=True)
        (workdir / "recipes" / name / "RESULT.md").write_text(f"# {name}\n\n| y |\n|---|\n| 7 |\n")
        return 0

    monkeypatch.setattr(registry, "_BENCHMARKS", {"fake": (fake, "a fake"), "boom": (boom, "crashes")})
    monkeypatch.setattr(bench_run, "list_recipes", lambda: ["r1"])
    monkeypatch.setattr(bench_run, "recipe_command", recipe)
    return calls


def test_run_saves_results_and_writes_the_report(tmp_path, fake_suite, capsys):
    work, out = tmp_path / "work", tmp_path / "R.md"
    assert bench_run.main(["--workdir", str(work), "--report", str(out)]) == 1  # boom failed, fake still ran
    saved = json.loads((work / "results" / "fake.json").read_text())
    assert saved["metrics"] == {"epoch_rows_per_s": 2.5, "sizes": [0, 1, 2]}
    assert saved["command"] == f"python -m benchmarks.run --workdir {work} --report {out}"
    assert saved["machine"].startswith("CPU: ") and "torch " in saved["machine"] and saved["date"]
    boom = json.loads((work / "results" / "boom.json").read_text())
    assert boom["metrics"] == {} and boom["last_failure"]["error"] == "RuntimeError: it crashed"
    md = out.read_text()
    assert "## fake: a fake" in md and "**The latest try" in md and (tmp_path / "report").is_dir()
    assert fake_suite["recipe r1"] == 1 and "## Recipe: r1" in md  # a run of everything runs the recipes

    out.unlink()  # --only: saves, writes no report
    assert bench_run.main(["--only", "fake", "--workdir", str(work), "--report", str(out), "--size", "13"]) == 1
    assert not out.exists() and fake_suite == {"fake": 2, "boom": 1, "recipe r1": 1}
    kept = json.loads((work / "results" / "fake.json").read_text())  # the failed retry kept the figures
    assert kept["metrics"] == saved["metrics"] and kept["last_failure"]["error"] == "ValueError: second try broke"

    (work / "recipes" / "mit").mkdir(parents=True)
    (work / "recipes" / "mit" / "RESULT.md").write_text("# MiT\n\n| x |\n|---|\n| 9 |\n")
    assert bench_run.main(["--report-only", "--workdir", str(work), "--report", str(out)]) == 0
    assert fake_suite == {"fake": 2, "boom": 1, "recipe r1": 1}  # nothing ran
    md = out.read_text()
    assert "## Recipe: mit" in md and "### MiT" in md and "| 9 |" in md
    assert "by `python -m benchmarks.run --report-only" in md and "## boom: crashes" in md


def test_pipeline_benchmark_sizes_and_flat_metrics():
    from benchmarks.pipeline.job import SIZES
    from benchmarks.pipeline_bench import pipeline_size, summary_metrics

    assert pipeline_size(None) == ("small", SIZES["small"])
    assert pipeline_size(24) == ("tiny", {**SIZES["tiny"], "videos": 24})
    assert pipeline_size(300) == ("small", {"videos": 300})
    scores = {"val": {"class_map": 0.5}, "test": {"class_map": 0.4}}
    summary = {
        "results": {
            "demo": {"videos": 24, "classes": ["a", "b"]},
            **{f"train_{m}": {"val_class_map": 0.3} for m in ("rgb", "flow", "audio")},
            "sweep": {"runs": [{"modality": "rgb", "head": "netvlad", "scores": scores},
                               {"modality": "flow", "head": "netvlad", "scores": None}]},
            "knn": {"runs": [{"modality": "audio", "head": "knn k=5",
                              "scores": {"val": None, "test": scores["test"]}}]},
            "fusion": {"inputs": {"rgb": "r1", "audio": "r2"}, "methods": {"xgboost": {"class_map": 0.7}},
                       "input_metrics": {"r1": {"class_map": 0.4}, "r2": {"class_map": 0.45}}},
        },
        "stages": [{"stage": "demo", "status": "cached", "seconds": 0.0, "computed_seconds": 2.0},
                   {"stage": "fusion", "status": "ran", "seconds": 3.0, "computed_seconds": 3.0}],
        "total_seconds": 3.1,
    }
    m = summary_metrics(summary)
    assert m["rgb_netvlad_val_map"] == 0.5 and m["rgb_netvlad_test_map"] == 0.4
    assert m["flow_netvlad_test_map"] is None and m["audio_knn_val_map"] is None and m["audio_knn_test_map"] == 0.4
    assert m["rgb_backbone_val_map"] == 0.3 and m["fusion_xgboost_test_map"] == 0.7
    assert (m["best_single_input"], m["best_single_test_map"]) == ("audio", 0.45)
    assert (m["stage_demo_s"], m["stage_fusion_s"], m["total_computed_s"], m["stages_cached"]) == (2.0, 3.0, 5.0, 1)
