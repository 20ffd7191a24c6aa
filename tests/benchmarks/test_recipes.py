"""Challenge recipes: every shipped file loads; the smallest runs end to end at smoke-test size."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.recipes.recipe import RecipeError, list_recipes, load_recipe, shrink
from benchmarks.recipes.runner import recipe_command, run_recipe
from benchmarks.recipes.tables import get_layout

RECIPES = ("alibaba_aic", "qiniu", "ripple_snu", "sensetime", "stanford")


def test_the_five_recipes_ship_and_load():
    assert tuple(list_recipes()) == RECIPES
    for name in RECIPES:
        r = load_recipe(name)
        assert r.layout == name and r.follows and r.scaled_down
        assert set(r.heads) & {"grid", "runs"} and r.fusion["methods"]
        for ref in r.fusion["inputs"]:  # best:/all: name an extracted set
            if ":" in ref:
                assert ref.split(":", 1)[1] in r.set_names()


@pytest.fixture(scope="module")
def stanford_tiny(tmp_path_factory):
    """The smallest recipe at smoke-test size, plus a thresholds analysis (on its BCE heads), and the report
    files as the first run wrote them (test_rerun_resumes_every_stage rewrites them, in any test order)."""
    recipe = shrink(load_recipe("stanford"))
    recipe = dataclasses.replace(recipe, analyses={**recipe.analyses, "thresholds": {"loss": "bce"}})
    root = tmp_path_factory.mktemp("recipes") / "stanford_tiny"
    summary = run_recipe(recipe, root)
    written = {name: (root / name).read_text() for name in ("RESULT.md", "result.json")}
    return recipe, root, summary, written


def test_smallest_recipe_runs_end_to_end(stanford_tiny):
    recipe, root, summary, written = stanford_tiny
    res = summary["results"]
    assert res["demo"]["videos"] == 40
    assert {s["stage"] for s in summary["stages"]} >= {"demo", "train_r2d", "train_r3d", "extract_1", "extract_2",
                                                        "heads", "fusion", "analysis_per_class", "analysis_localize"}
    assert all(s["status"] == "ran" for s in summary["stages"])
    assert set(res["extract_1"]["runs"]) == {"rgb_r2d_logits"} and set(res["extract_2"]["runs"]) == {"rgb_r3d_logits"}
    assert len(res["heads"]["runs"]) == 2 and all(r["status"] == "ok" for r in res["heads"]["runs"])
    assert written["RESULT.md"] == summary["table"] + "\n"
    assert json.loads(written["result.json"])["recipe"]["name"] == "stanford"
    from store import FeatureStore

    fs = FeatureStore.open(root / "store.zarr")
    assert {"rgb_r2d_logits", "rgb_r3d_logits", "fused_weighted"} <= set(fs.prediction_runs())


def test_recipe_figures_are_the_runs_metrics(stanford_tiny):
    """The per-class analysis and the fused mAP agree with an independent computation from the store."""
    from sklearn.metrics import average_precision_score

    from store import FeatureStore

    _, root, summary, _ = stanford_tiny
    fs = FeatureStore.open(root / "store.zarr")
    rows = fs.split_rows("test")
    labels = fs.labels()[rows]
    pc = summary["results"]["analysis_per_class"]
    scores, _ = fs.read_predictions(pc["b"])
    for c in pc["classes"]:
        k = fs.classes.index(c["class"])
        assert c["b"] == pytest.approx(average_precision_score(labels[:, k], scores[rows, k]), abs=1e-6)
    fused, _ = fs.read_predictions("fused_weighted")
    has = labels.any(0)
    want = np.mean([average_precision_score(labels[:, k], fused[rows, k]) for k in np.flatnonzero(has)])
    assert summary["results"]["fusion"]["methods"]["weighted"]["class_map"] == pytest.approx(want, abs=1e-6)


def test_rerun_resumes_every_stage(stanford_tiny):
    recipe, root, summary, _ = stanford_tiny
    again = run_recipe(recipe, root)
    assert {s["status"] for s in again["stages"]} == {"cached"}
    figures = [t["table"].split("Time per stage")[0] for t in (again, summary)]
    assert figures[0] == figures[1]


@pytest.mark.parametrize("layout", RECIPES)
def test_every_layout_renders_from_the_results(stanford_tiny, layout):
    _, _, summary, _ = stanford_tiny
    text = get_layout(layout)({**summary, "recipe": {**summary["recipe"], "layout": layout}})
    assert text.startswith("# Recipe `stanford`") and "## Table 1." in text and "Time per stage" in text
    fused = summary["results"]["fusion"]["methods"]["weighted"]["class_map"]
    assert f"{100 * fused:.1f}" in text  # the ensemble row
    if layout == "ripple_snu":
        assert re.search(r"\| learned \(per_class\) \| [\d.]+ \|", text)
    if layout == "stanford":
        assert "Per-class test AP" in text and "Most-confused" in text and "Per-clip localisation" in text


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


BASE = (Path(__file__).resolve().parents[2] / "benchmarks" / "recipes" / "stanford.toml").read_text()


@pytest.mark.parametrize("change, message", [
    (lambda t: t + "\n[extras]\na = 1\n", "unknown section"),
    (lambda t: t.replace("follows = ", "source = "), "[recipe]: unknown keys ['source']"),
    (lambda t: re.sub(r"(?m)^follows = .*$", "", t), "[recipe] needs follows"),
    (lambda t: t.replace('methods = ["weighted"', 'methods = ["vote"'), "[fusion] unknown methods ['vote']"),
    (lambda t: t.replace('fit_split = "train"', 'fit_on = "train"'), "unknown keys ['fit_on']"),
    (lambda t: t.replace('sampling = "uniform"\nclips = 4', 'sampling = "uniform"\nclips = 0'), "clips must be"),
    (lambda t: t.replace('sets = { rgb_r3d = "r3d" }', 'sets = { rgb_r3d = "r4d" }'), "no [backbones.r4d]"),
    (lambda t: t.replace('features = ["rgb_r2d", "rgb_r3d"]', 'features = ["rgb_r2d", "flow"]'),
     "no [[extract]] pass makes"),
    (lambda t: t.replace('layout = "stanford"', 'layout = "kinetics"'), "unknown layout"),
    (lambda t: t.replace("[analyses.localize]", "[analyses.saliency]"), "unknown analyses"),
    (lambda t: t.replace("clips = 4\nframes = 8", "clips = 4\nframe_count = 8"), "unknown keys"),
    (lambda t: t.replace('backbone = "r3d_tiny"', 'backbone = "r3d_tiny"\nlearning_rate = 1'), "unknown keys"),
])
def test_bad_recipes_fail_with_one_line(tmp_path, change, message):
    with pytest.raises(RecipeError, match=re.escape(message)) as err:
        load_recipe(_write(tmp_path, change(BASE)))
    assert "\n" not in str(err.value) and "r.toml" in str(err.value)


def test_unknown_recipe_name_is_a_user_error(tmp_path, capsys):
    assert recipe_command("kinetics", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown recipe 'kinetics'") and "stanford" in err
