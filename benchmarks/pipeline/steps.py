"""The stages of ``python -m benchmarks.pipeline``: their shared context and helpers, one function each.

Each stage function takes the :class:`Context` and ``fresh`` (True: the stage's settings or
inputs changed since it last started, so its old outputs are dropped first; False: it
continues what an interrupted run left) and returns a JSON-able result that describes what
is now on disk (no timings: those live in the pipeline's state file), so a cached rerun
reproduces the same summary. :mod:`benchmarks.pipeline.job` decides which stages run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from store.errors import VideoFeatError

if TYPE_CHECKING:
    from benchmarks.pipeline.job import PipelineConfig

log = logging.getLogger(__name__)

MODALITIES = ("rgb", "flow", "audio")
SPLITS = ("val", "test")


class PipelineError(VideoFeatError):
    """A problem the user can fix (the message says how); the command prints it on one line."""


@dataclass(frozen=True)
class Workdir:
    """Where the pipeline's files live: ``demo/``, ``demo.zarr``, ``runs/pipeline/``, summaries."""

    root: Path

    @property
    def demo(self) -> Path:
        return self.root / "demo"

    @property
    def store(self) -> Path:
        return self.root / "demo.zarr"

    @property
    def runs(self) -> Path:
        return self.root / "runs" / "pipeline"

    @property
    def state(self) -> Path:
        return self.runs / "state.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "pipeline_summary.md"

    @property
    def summary_json(self) -> Path:
        return self.root / "pipeline_summary.json"


@dataclass
class Context:
    """What the stages share: the settings, the folders, and the results of earlier stages."""

    config: PipelineConfig
    work: Workdir
    progress: bool = False
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def parallelism(config: PipelineConfig) -> tuple[str, int, int]:
    """``(device, decode workers, torch threads)`` for training and extraction."""
    import torch

    from store.threads import available_cores

    device = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
    cores = available_cores()
    if config.workers is not None:
        workers = config.workers
    else:
        workers = min(8, max(1, cores - 1)) if device == "cuda" else max(1, min(4, cores // 2))
    threads = 1 if device == "cuda" else max(1, cores - workers)
    return device, workers, threads


def family_ap(per_class: np.ndarray, families: dict[str, list[int]]) -> dict[str, float | None]:
    """Mean AP of each class family (classes without positives left out)."""
    out: dict[str, float | None] = {}
    for family, idx in families.items():
        ap = per_class[idx]
        ap = ap[np.isfinite(ap)]
        out[family] = float(ap.mean()) if ap.size else None
    return out


def score_run(fs: Any, run: str, families: dict[str, list[int]]) -> dict[str, Any]:
    """Metrics of a prediction run on the val and test rows (:func:`heads.metrics.evaluate`: class
    and sample mAP, GAP@20, top-1/5...), and class mAP per class family."""
    from heads.metrics import class_map, evaluate

    scores, _ = fs.read_predictions(run)
    labels = fs.labels()
    out: dict[str, Any] = {}
    for split in SPLITS:
        rows = fs.split_rows(split)
        if not len(rows) or not labels[rows].any():
            out[split] = None
            continue
        res = class_map(scores[rows], labels[rows])
        out[split] = {**evaluate(scores[rows], labels[rows]), "class_map": res.value,
                      **family_ap(res.per_class, families)}
    return clean(out)


def families_of(ctx: Context) -> dict[str, list[int]]:
    """Class family -> class ids, from the demo's manifest result."""
    return families_from(ctx.results["demo"])


def families_from(demo: dict[str, Any]) -> dict[str, list[int]]:
    """Class family -> class ids, from a demo stage's result (:func:`demo_record`)."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(demo["classes"]):
        out.setdefault(demo["families"][c], []).append(i)
    return out


def demo_record(manifest: Any) -> dict[str, Any]:
    """A demo stage's result: video count, split counts, classes, families, the demo's settings."""
    meta = json.loads(manifest.config_path.read_text(encoding="utf-8"))
    return {"videos": manifest.n_videos, "splits": meta["split_counts"], "classes": list(manifest.classes),
            "families": manifest.families, "config": manifest.config.to_dict()}


def demo_matches(demo_dir: Path, result: dict[str, Any]) -> bool:
    """Is the demo in ``demo_dir`` still the one a demo stage's result describes?"""
    from extract.demo import load_demo
    from extract.errors import DemoError

    try:
        return load_demo(demo_dir).config.to_dict() == result["config"]
    except (DemoError, ValueError, OSError):
        return False


def weights_intact(root: Path, result: dict[str, Any]) -> bool:
    """Are the weights a training stage's result names (relative to ``root``) still there, unchanged?"""
    path = root / result["weights"]
    return path.is_file() and file_sha256(path) == result["sha256"]


def fusion_metrics(result: Any, families: dict[str, list[int]],
                   keys: tuple[str, ...]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(per method, per input run)``: ``keys`` of a FusionResult's metrics and AP per class family."""
    methods = {name: {**{k: o.metrics.get(k) for k in keys}, **family_ap(o.per_class_ap, families)}
               for name, o in result.methods.items()}
    inputs = {run: {**{k: result.input_metrics[run].get(k) for k in keys}, **family_ap(result.input_ap[run], families)}
              for run in result.inputs}
    return methods, inputs


# ------------------------------------------------------------------------------------ stages
def demo_step(ctx: Context, fresh: bool) -> dict[str, Any]:
    """Stage 1: the demo videos (``extract.demo.make_demo`` reuses every finished file)."""
    from extract.demo import make_demo
    from extract.errors import DemoConfigMismatch, DemoError

    try:
        manifest = make_demo(ctx.work.demo, ctx.config.demo_config(), progress=ctx.progress)
    except (DemoConfigMismatch, DemoError) as err:
        raise PipelineError(f"{err} -- the pipeline keeps demo/, demo.zarr and runs/pipeline/ in --workdir; "
                            "give it another --workdir, or delete those to start over") from None
    check_store(ctx, manifest)  # before the backbones train, not after
    return demo_record(manifest)


def check_store(ctx: Context, demo: Any) -> None:
    """Refuse a ``demo.zarr`` made from other videos (other classes, other rows or splits)."""
    if not (ctx.work.store / "zarr.json").is_file():
        return
    fs = _open_store(ctx)
    listed = demo.video_list().videos.set_index("id")["split"]
    have = fs.videos(["id", "split"]).set_index("id")["split"]
    common = have.index.intersection(listed.index)
    if fs.classes != list(demo.classes):
        problem = f"a store with other classes ({len(fs.classes)}, the first {fs.classes[0]!r})"
    elif len(common) < len(have) or (have[common] != listed[common]).any():
        problem = "the videos of another demo (other rows or splits)"
    else:
        return
    raise PipelineError(f"{ctx.work.store} holds {problem}, not this demo's; give the pipeline another --workdir, "
                        f"or delete {ctx.work.store}")


def demo_is_intact(ctx: Context, result: dict[str, Any]) -> bool:
    return demo_matches(ctx.work.demo, result)


def train_dir(ctx: Context, modality: str) -> Path:
    return ctx.work.runs / "backbones" / f"{modality}_{ctx.config.backbone(modality)}"


def train_step(ctx: Context, modality: str, fresh: bool) -> dict[str, Any]:
    """Stage 2: train one backbone briefly on the demo's train split (``extract.training.fit``)."""
    out = train_dir(ctx, modality)
    return train_backbone(ctx.work.demo, ctx.config.recipe(modality), out, ctx.work.root, par=ctx.config,
                          progress=ctx.progress, fresh=fresh, label=modality)


def train_backbone(demo_dir: Path, recipe: Any, out: Path, root: Path, *, par: Any, progress: bool, fresh: bool,
                   label: str) -> dict[str, Any]:
    """Train ``recipe`` on a demo's train split into ``out`` (resuming ``last.pt``); its JSON record.

    ``par`` has ``device`` and ``workers`` (:func:`parallelism`); paths in the record are relative
    to ``root``.
    """
    from tqdm.auto import tqdm

    from extract.demo import load_demo
    from extract.training import TrainData, fit

    if fresh and out.exists():
        log.info("%s: the recipe or the videos changed; training again from scratch", out)
        shutil.rmtree(out)
    demo = load_demo(demo_dir)
    tr, va = demo.video_list("train"), demo.video_list("val")
    data = TrainData(tr.videos, tr.label_matrix(), va.videos, va.label_matrix(), list(demo.classes))
    _, workers, threads = parallelism(par)
    bar = tqdm(unit="step", disable=not progress, leave=False, dynamic_ncols=True)

    def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
        if step == 0:
            bar.reset(total=steps)
            bar.set_description(f"train {label} epoch {epoch + 1}/{recipe.epochs}")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    try:
        with torch_threads(threads):
            result = fit(recipe, data, out, resume=True, workers=workers, on_step=on_step)
    finally:
        bar.close()
    last = result.history[-1] if result.history else {}
    return clean({"modality": recipe.modality, "backbone": recipe.backbone,
                  "weights": str(result.backbone_path.relative_to(root)),
                  "sha256": file_sha256(result.backbone_path), "epochs": len(result.history),
                  "val_class_map": last.get("class_map"), "train_loss": last.get("train_loss"),
                  "recipe": result.recipe.to_dict()})


def backbone_is_intact(ctx: Context, result: dict[str, Any]) -> bool:
    return weights_intact(ctx.work.root, result)


def _open_store(ctx: Context, mode: str = "r") -> Any:
    from store import FeatureStore

    return FeatureStore.open(ctx.work.store, mode)


def extract_step(ctx: Context, fresh: bool) -> dict[str, Any]:
    """Stage 3: RGB, flow and audio features (``extract.dump.pipeline.extract``): one decode per video, or
    two when the RGB net sees a larger crop than the flow net (``rgb_crop``)."""
    from extract.demo import load_demo
    from extract.dump.settings import BackboneChoice

    cfg = ctx.config
    demo = load_demo(ctx.work.demo)
    check_store(ctx, demo)
    weights = {m: str(ctx.work.root / ctx.results[f"train_{m}"]["weights"]) for m in MODALITIES}
    choices = {m: BackboneChoice(cfg.backbone(m), m, weights=weights[m], set_name=cfg.set_name(m)) for m in MODALITIES}
    by_crop: dict[int, list[str]] = {}  # one pass (one decode per video) per crop: RGB may see a larger one
    for m in MODALITIES:
        by_crop.setdefault(cfg.picture_crop(m), []).append(m)
    sets: dict[str, dict[str, Any]] = {}
    for crop, group in by_crop.items():
        sets |= extract_sets(demo, ctx.work.store, tuple(choices[m] for m in group),
                             {"seed": cfg.seed, "clips": cfg.clips, "frames": cfg.frames, "stride": cfg.stride,
                              "crop": crop, **cfg.flow_settings()},
                             par=cfg, progress=ctx.progress, fresh=fresh, desc=f"extract {'+'.join(group)}")
    fs = _open_store(ctx)
    return {"rows": fs.n_videos, "sets": {m: sets[c.set_name] for m, c in choices.items()}}


def extract_sets(demo: Any, store: Path, choices: tuple[Any, ...], settings: dict[str, Any], *, par: Any,
                 progress: bool, fresh: bool, desc: str) -> dict[str, dict[str, Any]]:
    """One ``extract.dump.pipeline.extract`` pass of ``choices`` over a demo (one decode per video).

    ``settings`` are the ExtractSettings fields of what the features are; ``fresh`` deletes the
    choices' sets first (their backbone changed). Returns ``{set name: record}``.
    """
    from tqdm.auto import tqdm

    from extract.dump import pipeline as xp
    from extract.dump.settings import ExtractSettings
    from store import FeatureStore

    if (store / "zarr.json").is_file():
        fs = FeatureStore.open(store, "a")
        for c in choices:
            if fresh and c.set_name in fs.feature_sets():
                log.info("%s: the backbone changed; extracting %s again", store, c.set_name)
                fs.delete_feature_set(c.set_name)
    # --workers given: it and the threads by machine, as training; else extract.run's planner fits both to
    # the measured costs and the memory budget
    workers, threads = (None, None) if par.workers is None else parallelism(par)[1:]
    xs = ExtractSettings(backbones=choices, device=par.device, workers=workers, threads=threads, **settings)
    bar = tqdm(desc=desc, unit="video", disable=not progress, leave=False)

    def on_progress(stats: Any) -> None:
        bar.total, bar.n = stats.planned, stats.videos_done + stats.videos_failed
        bar.update(0)

    try:
        stats = xp.extract(demo.videos_csv, store, xs, classes=demo.classes_path, on_progress=on_progress)
    finally:
        bar.close()
    log.info("extracted %d videos (%d failed), %.2f decodes per video", stats.videos_done, stats.videos_failed,
             stats.decodes_per_video)
    fs = FeatureStore.open(store, "r")
    out = {}
    for c in choices:
        fset = fs.feature_set(c.set_name)
        out[c.set_name] = {"name": c.set_name, "clips": fset.spec.clips, "dim": fset.spec.dim,
                           "done": int(fset.done().sum()), "errors": len(fset.errors()),
                           "weights_sha256": fset.spec.weights_sha256}
    return out


def store_is_intact(ctx: Context, result: dict[str, Any]) -> bool:
    from store.errors import StoreError

    try:
        fs = _open_store(ctx)
        return fs.n_videos == result["rows"] and all(
            s["name"] in fs.feature_sets() and int(fs.feature_set(s["name"]).done().sum()) == s["done"]
            for s in result["sets"].values())
    except StoreError:
        return False


def sweep_step(ctx: Context, fresh: bool) -> dict[str, Any]:
    """Stage 4: every head on every modality, k-fold out-of-fold (``heads.sweep.run_sweep``)."""
    from heads.sweep import local_cluster, run_sweep
    from store.threads import available_cores

    cfg = ctx.config
    configs = cfg.head_configs()
    cores = available_cores()
    if cfg.sweep_workers:
        from distributed import Client

        logging.getLogger("distributed").setLevel(logging.WARNING)
        with local_cluster(cfg.sweep_workers) as cluster, Client(cluster) as client:
            table = run_sweep(ctx.work.store, configs, client=client, resume=not fresh, progress=ctx.progress,
                              torch_threads=max(1, cores // cfg.sweep_workers))
    else:
        table = run_sweep(ctx.work.store, configs, torch_threads=cores, resume=not fresh, progress=ctx.progress)
    fs, fams = _open_store(ctx), families_of(ctx)
    modality_of = {cfg.set_name(m): m for m in MODALITIES}
    runs = []
    for row in table.to_dict("records"):
        ok = row["status"] != "failed"
        runs.append({"modality": modality_of[row["features"]], "features": row["features"], "head": row["head"],
                     "run": row["run"], "status": "ok" if ok else "failed", "error": row["error"] or None,
                     "scores": score_run(fs, row["run"], fams) if ok else None})
    order = {(m, h): i for i, (m, h) in enumerate((m, h) for m in MODALITIES for h in cfg.heads)}
    runs.sort(key=lambda r: order[(r["modality"], r["head"])])
    failed = [r for r in runs if r["status"] == "failed"]
    for r in failed:
        log.warning("head %s on %s failed: %s", r["head"], r["features"], r["error"])
    if len(failed) == len(runs):
        raise PipelineError(f"every head of the sweep failed; the first: {failed[0]['error']}")
    return clean({"runs": runs})


def runs_are_intact(ctx: Context, result: dict[str, Any]) -> bool:
    runs = set(_open_store(ctx).prediction_runs())
    listed = result.get("runs", [])
    return all(r["status"] == "ok" and r["run"] in runs for r in listed) and bool(listed)


def knn_step(ctx: Context, fresh: bool) -> dict[str, Any]:
    """Stage 5: kNN label transfer per modality, train rows out-of-fold (``heads.knn.write_knn_run``)."""
    from heads.knn import write_knn_run

    cfg = ctx.config
    fs, fams = _open_store(ctx, "a"), families_of(ctx)
    runs = []
    for m in MODALITIES:
        name = cfg.set_name(m)
        knn = write_knn_run(fs, name, run=f"knn_{name}", k=cfg.knn_k, folds=cfg.folds, seed=cfg.seed)
        runs.append({"modality": m, "features": name, "head": f"knn k={cfg.knn_k}", "run": knn.run, "status": "ok",
                     "scores": score_run(fs, knn.run, fams)})
    return clean({"runs": runs})


def fusion_step(ctx: Context, fresh: bool) -> dict[str, Any]:
    """Stage 6: stack the best head of each modality (by val class mAP) on out-of-fold train scores."""
    from fusion import fuse_runs, write_report

    cfg = ctx.config
    best: dict[str, tuple[str, float]] = {}
    for r in ctx.results["sweep"]["runs"]:
        val = ((r["scores"] or {}).get("val") or {}).get("class_map")
        if r["status"] == "ok" and val is not None and (r["modality"] not in best or val > best[r["modality"]][1]):
            best[r["modality"]] = (r["run"], val)
    if not best:
        raise PipelineError("no head run has a val class mAP to choose by; the demo needs val videos (--videos)")
    inputs = {m: best[m][0] for m in MODALITIES if m in best}
    fused = f"fused_{cfg.fusion}"
    result = fuse_runs(ctx.work.store, list(inputs.values()), method=cfg.fusion,
                       compare=[c for c in cfg.compare if c != cfg.fusion], fit_split="train", eval_split="test",
                       write_as=fused, overwrite=True)
    report = write_report(result, ctx.work.runs / "fusion")
    methods, input_metrics = fusion_metrics(result, families_of(ctx), ("class_map", "sample_map", "gap20"))
    return clean({"inputs": inputs, "fused_run": fused, "fit_split": "train", "eval_split": "test",
                  "fit_rows": len(result.plan.fit_rows), "eval_rows": len(result.plan.eval_rows),
                  "methods": methods, "input_metrics": input_metrics,
                  "report": str(report.relative_to(ctx.work.root))})


def fusion_is_intact(ctx: Context, result: dict[str, Any]) -> bool:
    return result["fused_run"] in _open_store(ctx).prediction_runs() and (ctx.work.root / result["report"]).is_file()
