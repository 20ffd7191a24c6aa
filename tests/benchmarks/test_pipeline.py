"""Smoke test of ``python -m benchmarks.pipeline`` on the tiny preset (24 videos of 1 s at 48 px).

One module-scoped run goes through every stage (demo, three backbones trained for one epoch,
one-pass extraction, head sweep with out-of-fold folds, kNN, fusion); the tests then check
what it left in the store, that the summary's numbers are the stored predictions' mAP
(against scikit-learn), that a rerun is all cached with the same summary, that a changed
setting reruns only the stages downstream of it, and the one-line errors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from benchmarks import pipeline
from benchmarks.pipeline.steps import MODALITIES
from extract.demo import DemoConfig, make_demo
from store import FeatureStore
from store.errors import SettingsError
from store.testing import make_synthetic_store
from store.verify import verify_store

TINY = pipeline.PipelineConfig(**pipeline.SIZES["tiny"])
STAGES = ["demo", "train_rgb", "train_flow", "train_audio", "extract", "sweep", "knn", "fusion"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    return work, pipeline.run_pipeline(TINY, work)


def _status(summary) -> dict[str, str]:
    return {t["stage"]: t["status"] for t in summary["stages"]}


def _sk_map(scores: np.ndarray, labels: np.ndarray, classes: list[int] | None = None) -> float:
    """Mean scikit-learn AP over the given classes that have a positive."""
    classes = range(labels.shape[1]) if classes is None else classes
    aps = [average_precision_score(labels[:, c], scores[:, c]) for c in classes if labels[:, c].any()]
    return float(np.mean(aps))


def test_first_run_fills_a_valid_store_with_every_stage(first):
    work, summary = first
    assert _status(summary) == dict.fromkeys(STAGES, "ran")
    assert verify_store(work / "demo.zarr").ok
    fs = FeatureStore.open(work / "demo.zarr")
    assert fs.n_videos == 24
    for m in MODALITIES:  # one feature set per modality, every row done, from the trained weights
        fset = fs.feature_set(TINY.set_name(m))
        assert fset.done().all() and fset.spec.modality == m and fset.spec.clips == TINY.clips
        weights = work / summary["results"][f"train_{m}"]["weights"]
        assert weights.is_file() and fset.spec.weights_sha256 == summary["results"][f"train_{m}"]["sha256"]
    runs = set(fs.prediction_runs())
    heads = summary["results"]["sweep"]["runs"]
    assert len(heads) == len(MODALITIES) * len(TINY.heads) and all(r["status"] == "ok" for r in heads)
    train, held_out = fs.split_rows("train"), np.concatenate([fs.split_rows("val"), fs.split_rows("test")])
    for r in heads + summary["results"]["knn"]["runs"]:  # out-of-fold train rows, for fusion
        assert r["run"] in runs
        fold = fs.read_prediction_folds(r["run"])
        assert set(fold[train]) == set(range(TINY.folds)) and (fold[held_out] == -1).all()
    assert summary["results"]["fusion"]["fused_run"] in runs
    assert (work / summary["results"]["fusion"]["report"]).is_file()
    on_disk = json.loads((work / "pipeline_summary.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(summary["results"]))
    md = (work / "pipeline_summary.md").read_text()
    assert "## Time per stage" in md and "fused_xgboost" in md


def test_summary_numbers_are_the_stored_predictions_map(first):
    work, summary = first
    fs = FeatureStore.open(work / "demo.zarr")
    labels, results = fs.labels(), summary["results"]
    family = results["demo"]["families"]
    sound = [i for i, c in enumerate(results["demo"]["classes"]) if family[c] == "sound"]
    for r in results["sweep"]["runs"] + results["knn"]["runs"]:
        scores, _ = fs.read_predictions(r["run"])
        for split in ("val", "test"):
            rows = fs.split_rows(split)
            assert r["scores"][split]["class_map"] == pytest.approx(_sk_map(scores[rows], labels[rows]), abs=1e-6)
        rows = fs.split_rows("test")
        if labels[rows][:, sound].any():
            assert r["scores"]["test"]["sound"] == pytest.approx(
                _sk_map(scores[rows], labels[rows], sound), abs=1e-6)
    fused, _ = fs.read_predictions(results["fusion"]["fused_run"])
    rows = fs.split_rows("test")
    assert results["fusion"]["methods"][TINY.fusion]["class_map"] == pytest.approx(
        _sk_map(fused[rows], labels[rows]), abs=1e-6)
    # fusion inputs: the best head of each modality by val class mAP
    for m, run in results["fusion"]["inputs"].items():
        heads = [r for r in results["sweep"]["runs"] if r["modality"] == m]
        assert run == max(heads, key=lambda r: r["scores"]["val"]["class_map"])["run"]


def test_rerun_is_all_cached_and_prints_the_same_summary(first, capsys):
    work, summary = first
    assert pipeline.main(["--tiny", "--workdir", str(work), "-q"]) == 0
    out = capsys.readouterr().out
    again = json.loads((work / "pipeline_summary.json").read_text())
    assert _status(again) == dict.fromkeys(STAGES, "cached")
    assert again["results"] == json.loads(json.dumps(summary["results"]))
    assert "| fusion | cached |" in out
    assert f"| rgb | knn k={TINY.knn_k} | `knn_{TINY.set_name('rgb')}`" in out


def test_a_changed_setting_reruns_only_what_depends_on_it(first, tmp_path):
    work = shutil.copytree(first[0], tmp_path / "work")  # a copy: the other tests read the first run's files
    summary = first[1]
    shutil.rmtree(work / "demo.zarr" / "predictions" / summary["results"]["fusion"]["fused_run"])  # a lost output
    changed = pipeline.run_pipeline(dataclasses.replace(TINY, knn_k=3), work)
    expected = dict.fromkeys(STAGES, "cached") | {"knn": "ran", "fusion": "resumed"}
    assert _status(changed) == expected
    assert all(r["head"] == "knn k=3" for r in changed["results"]["knn"]["runs"])
    assert changed["results"]["fusion"] == summary["results"]["fusion"]  # same inputs, same fused scores


def test_the_rgb_net_sees_its_own_crop_in_training_and_extraction(first, tmp_path):
    """rgb_crop: the RGB recipe and the RGB set take it (a pass of its own), flow keeps ``crop``."""
    work = shutil.copytree(first[0], tmp_path / "work")
    changed = pipeline.run_pipeline(dataclasses.replace(TINY, rgb_crop=40), work)
    assert _status(changed) == dict.fromkeys(STAGES, "cached") | dict.fromkeys(
        ["train_rgb", "extract", "sweep", "knn", "fusion"], "ran")
    assert changed["results"]["train_rgb"]["recipe"]["crop"] == 40
    assert changed["results"]["train_flow"]["recipe"]["crop"] == TINY.crop == 32
    fs = FeatureStore.open(work / "demo.zarr")
    crops = {m: fs.feature_set(TINY.set_name(m)).spec.sampling["views"]["crop"] for m in ("rgb", "flow")}
    assert crops == {"rgb": 40, "flow": 32} and verify_store(work / "demo.zarr").ok
    assert all(fs.feature_set(TINY.set_name(m)).done().all() for m in MODALITIES)
    assert "at 32 px (RGB 40) per video" in (work / "pipeline_summary.md").read_text()


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    make_demo(tmp_path / "demo", DemoConfig(videos=21, size=48, seconds=1.0), progress=False)
    assert pipeline.main(["--tiny", "--workdir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--workdir" in err[0] and "videos=21" in err[0]
    assert pipeline.main(["--tiny", "--folds", "1", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "folds" in err[0]
    other = tmp_path / "other"  # a demo.zarr of other classes is refused before any training
    make_synthetic_store(other / "demo.zarr", n_videos=10, n_classes=3)
    assert pipeline.main(["--tiny", "--workdir", str(other), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "demo.zarr holds a store with other classes" in err[0]
    assert not (other / "runs" / "pipeline" / "backbones").exists()


def test_rgb_and_audio_train_with_their_own_epochs_and_audio_with_its_own_batch_size():
    config = pipeline.PipelineConfig()
    audio, rgb, flow = (config.recipe(m) for m in ("audio", "rgb", "flow"))
    assert (audio.epochs, audio.batch_size) == (config.audio_epochs, config.audio_batch_size) == (30, 16)
    assert (rgb.epochs, rgb.batch_size) == (config.rgb_epochs, config.batch_size) == (30, 8)
    assert (rgb.crop, flow.crop) == (config.rgb_crop, config.crop) == (112, 56)  # RGB: the 64-px demo at 2x
    assert {TINY.recipe(m).crop for m in ("rgb", "flow")} == {TINY.crop}  # rgb_crop None: the shared crop
    assert (flow.epochs, flow.batch_size) == (config.epochs, config.batch_size) == (60, 8)  # the shared counts
    assert {(TINY.recipe(m).epochs, TINY.recipe(m).batch_size) for m in MODALITIES} == {(TINY.epochs, TINY.batch_size)}
    # --epochs sets every backbone's, audio's included
    typed = pipeline.job.config_from_args(pipeline.job._parser().parse_args(["--epochs", "7"]))
    assert {typed.recipe(m).epochs for m in MODALITIES} == {7}
    for name in ("rgb_epochs", "audio_epochs", "rgb_crop"):
        with pytest.raises(SettingsError, match=name):
            pipeline.PipelineConfig(**{name: 0})
