"""Challenge recipes: a published pipeline, scaled down, as one TOML file run end to end.

``benchmarks/recipes/NAME.toml`` describes what a challenge solution did, in the formats the
commands already read::

    [recipe]           title, the report it follows, what is scaled down, the table layout
    [demo]             extract.demo's settings (DemoConfig fields)
    [backbones.KEY]    one backbone training each: extract.train's recipe (TrainRecipe fields) + a label
    [[extract]]        one extract.run pass each (one decode per video for all its sets):
                       sets = {SET = "KEY", ...} and ExtractSettings fields (clips, crops, scales, ...)
    [heads]            a heads.sweep grid ([heads.base], [[heads.grid]], [[heads.runs]]) over the sets
    [knn]              optional: kNN label transfer on some sets (sets, k, folds)
    [fusion]           inputs (run names, "best:SET" = the best head on SET by val mAP), methods
                       (the first is written), fit_split / eval_split
    [analyses.NAME]    optional analyses of the layout (thresholds, per-class comparison, confusion, ...)

``python -m benchmarks.run --recipe NAME`` (or ``python -m benchmarks.recipes NAME``,
:mod:`benchmarks.recipes.runner`) runs it in
``<workdir>/recipes/NAME/`` with the resumable stages of :mod:`benchmarks.pipeline.stages` (a rerun
skips what is done), prints the recipe's table in the layout of the original report and writes
it to ``RESULT.md`` (+ ``result.json``) there. ``--tiny`` shrinks everything (24-48 videos, one
epoch) for the smoke test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extract.demo import DemoConfig
from extract.dump.settings import BackboneChoice, ExtractSettings
from extract.training import TrainRecipe
from store.errors import VideoFeatError

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent
#: ExtractSettings fields a recipe's ``[[extract]]`` pass may set (what the features are).
EXTRACT_KEYS = ("sampling", "clips", "frames", "stride", "short_side", "crop", "crops", "scales",
                "flow_algorithm", "flow_bound", "head_logits", "chunk_rows")
SPLITS = ("train", "val", "test")


class RecipeError(VideoFeatError):
    """A recipe file that cannot run (the message names the file and the key)."""


@dataclass(frozen=True)
class BackboneSpec:
    """One trained backbone of a recipe: its table label and its extract.train recipe."""

    key: str
    label: str
    recipe: TrainRecipe


@dataclass(frozen=True)
class ExtractPass:
    """One extract.run pass: ``{feature set: backbone key}`` and the clip / view settings."""

    sets: dict[str, str]
    settings: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated recipe file (see the module docstring for the sections)."""

    name: str
    title: str
    follows: str
    scaled_down: str
    layout: str
    demo: DemoConfig
    backbones: dict[str, BackboneSpec]
    extract: tuple[ExtractPass, ...]
    heads: dict[str, Any]
    fusion: dict[str, Any]
    knn: dict[str, Any] | None = None
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    def set_backbone(self, set_name: str) -> BackboneSpec:
        """The backbone a feature set comes from."""
        for p in self.extract:
            if set_name in p.sets:
                return self.backbones[p.sets[set_name]]
        raise KeyError(set_name)

    def set_names(self) -> list[str]:
        return [s for p in self.extract for s in p.sets]

    def logits_sets(self) -> list[str]:
        """Sets extracted with ``head_logits``: each has the prediction run ``<set>_logits``."""
        return [s for p in self.extract if p.settings.get("head_logits") for s in p.sets]


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``benchmarks/recipes/``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def _section(cfg: dict[str, Any], key: str, where: str, *, required: bool = True) -> Any:
    if key not in cfg:
        if required:
            raise RecipeError(f"{where}: missing [{key}]")
        return None
    return cfg[key]


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and check a recipe: a name from :func:`list_recipes` or a path to a TOML file.

    Raises:
        RecipeError: unknown name, bad TOML, a missing section, a bad value (the message says which).
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = RECIPES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise RecipeError(f"unknown recipe {str(name_or_path)!r}; choose from {', '.join(list_recipes())} "
                              "or give a path to a .toml file")
    where = str(path)
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise RecipeError(f"{where}: cannot read the recipe ({err})") from None
    unknown = sorted(set(cfg) - {"recipe", "demo", "backbones", "extract", "heads", "knn", "fusion", "analyses"})
    if unknown:
        raise RecipeError(f"{where}: unknown section(s) {unknown}")
    try:
        return _build(cfg, path)
    except (ValueError, TypeError, KeyError) as err:
        raise RecipeError(f"{where}: {' '.join(str(err).split())}") from None


def _build(cfg: dict[str, Any], path: Path) -> Recipe:
    from heads import expand_grid

    where = str(path)
    meta = _section(cfg, "recipe", where)
    missing = [k for k in ("title", "follows", "scaled_down", "layout") if not meta.get(k)]
    extra = sorted(set(meta) - {"title", "follows", "scaled_down", "layout"})
    if extra:
        raise ValueError(f"[recipe]: unknown keys {extra}; it takes title, follows, scaled_down, layout")
    if missing:
        raise ValueError(f"[recipe] needs {', '.join(missing)} (what it is, the report it follows, what is "
                         "scaled down, the table layout)")
    demo = DemoConfig.from_dict(dict(_section(cfg, "demo", where)))
    backbones = {}
    for key, table in _section(cfg, "backbones", where).items():
        table = dict(table)
        label = table.pop("label", key)
        table.setdefault("weights", "random")  # demo-sized recipes train from scratch, offline
        backbones[key] = BackboneSpec(key, label, TrainRecipe.from_dict(table))
    passes = []
    for i, table in enumerate(_section(cfg, "extract", where)):
        table = dict(table)
        sets = dict(table.pop("sets", {}))
        bad = sorted(set(table) - set(EXTRACT_KEYS))
        if bad or not sets:
            raise ValueError(f"[[extract]] #{i + 1}: {'unknown keys ' + str(bad) if bad else 'no sets'}; "
                             f"give sets = {{SET = \"BACKBONE KEY\"}} and any of {', '.join(EXTRACT_KEYS)}")
        for s, b in sets.items():
            if b not in backbones:
                raise ValueError(f"[[extract]] #{i + 1}: set {s!r} names backbone {b!r}, which has no "
                                 f"[backbones.{b}] table")
        choices = tuple(BackboneChoice(backbones[b].recipe.backbone, backbones[b].recipe.modality, set_name=s)
                        for s, b in sets.items())
        ExtractSettings(backbones=choices, **{**table, "scales": tuple(table.get("scales", ()))})  # checks values
        passes.append(ExtractPass(sets, table))
    names = [s for p in passes for s in p.sets]
    if len(set(names)) != len(names):
        raise ValueError(f"a feature set is extracted twice: {sorted(n for n in names if names.count(n) > 1)}")
    heads = _section(cfg, "heads", where)
    configs = expand_grid(heads, name=f"{path.name} [heads]")
    missing = sorted({f for c in configs for f in c.features} - set(names))
    if missing:
        raise ValueError(f"[heads] trains on feature sets no [[extract]] pass makes: {missing}")
    fusion = dict(_section(cfg, "fusion", where))
    extra = sorted(set(fusion) - {"inputs", "methods", "fit_split", "eval_split"})
    if extra or not fusion.get("inputs") or not fusion.get("methods"):
        raise ValueError("[fusion] needs inputs = [...] and methods = [...] (and may give fit_split, eval_split)"
                         + (f"; unknown keys {extra}" if extra else ""))
    from fusion import list_fusions

    unknown = [m for m in fusion["methods"] if m not in list_fusions()]
    if unknown:
        raise ValueError(f"[fusion] unknown methods {unknown}; choose from {list_fusions()}")
    for split in (fusion.setdefault("fit_split", "train"), fusion.setdefault("eval_split", "test")):
        if split not in SPLITS:
            raise ValueError(f"[fusion] splits must be one of {SPLITS}, got {split!r}")
    knn = cfg.get("knn")
    if knn is not None and set(knn) - {"sets", "k", "folds"}:
        raise ValueError(f"[knn] takes sets, k, folds; unknown keys {sorted(set(knn) - {'sets', 'k', 'folds'})}")
    if knn is not None and set(knn.get("sets", [])) - set(names):
        raise ValueError(f"[knn] sets must be extracted sets; unknown {sorted(set(knn['sets']) - set(names))}")
    from benchmarks.recipes.analyses import list_analyses
    from benchmarks.recipes.tables import get_layout

    get_layout(meta["layout"])  # KeyError names the layouts
    analyses = dict(cfg.get("analyses", {}))
    unknown = sorted(set(analyses) - set(list_analyses()))
    if unknown:
        raise ValueError(f"unknown analyses {unknown}; choose from {list_analyses()}")
    return Recipe(name=path.stem, title=meta["title"], follows=meta["follows"], scaled_down=meta["scaled_down"],
                  layout=meta["layout"], demo=demo, backbones=backbones, extract=tuple(passes), heads=heads,
                  fusion=fusion, knn=knn, analyses=analyses, path=path)


def shrink(recipe: Recipe) -> Recipe:
    """The recipe at smoke-test size: 40 short small videos, 1-2 epochs, 2 folds, few clips."""
    demo = dataclasses.replace(recipe.demo, videos=40, size=48, seconds=1.0)
    backbones = {}
    for k, b in recipe.backbones.items():
        swa = min(b.recipe.swa_epochs, 1)
        r = dataclasses.replace(b.recipe, epochs=1 + swa, swa_epochs=swa, batch_size=4, eval_clips=1,
                                cycle_epochs=min(b.recipe.cycle_epochs, 1 + swa))
        backbones[k] = dataclasses.replace(b, recipe=r)
    passes = tuple(dataclasses.replace(p, settings={**p.settings, "clips": min(p.settings.get("clips", 8), 2),
                                                    "scales": list(p.settings.get("scales", []))[:1]})
                   for p in recipe.extract)
    heads = json.loads(json.dumps(recipe.heads))
    heads.setdefault("base", {}).update(epochs=2, folds=2 if heads.get("base", {}).get("folds") else 0)
    knn = None if recipe.knn is None else {**recipe.knn, "k": 3, "folds": 2}
    return dataclasses.replace(recipe, demo=demo, backbones=backbones, extract=passes, heads=heads, knn=knn)
