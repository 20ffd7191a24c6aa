"""``python -m benchmarks.pipeline``: the main job -- the whole pipeline on the demo set, one summary.

::

    1 demo       make_demo: deterministic multi-label mp4s (labels in appearance, motion, sound)
    2 train_*    extract.training.fit: a small RGB clip net, a 2-channel flow net, a log-mel audio net
    3 extract    extract.dump.pipeline.extract: all three backbones from ONE decode per video -> demo.zarr
    4 sweep      heads.sweep.run_sweep: each head on each modality, k-fold out-of-fold predictions
    5 knn        heads.knn.write_knn_run: kNN label transfer per modality (out-of-fold on train)
    6 fusion     fusion.fuse_runs: XGBoost (and mean, weighted, logistic) over the best head per modality
    7 summary    class mAP per modality x head (overall and per class family), kNN, fusion, time per stage
                 -> printed, pipeline_summary.md and pipeline_summary.json next to the store

Rerunning resumes instead of redoing (:mod:`benchmarks.pipeline.stages`): every stage records a key (a
hash of its settings and of what the stages it reads from produced) in
``runs/pipeline/state.json``. A finished stage whose key is unchanged and whose outputs are
still on disk is skipped ("cached"); an interrupted one continues ("resumed"); one whose key
changed starts again ("ran"), and so does every stage downstream of it. A rerun with nothing
changed takes seconds.

Examples::

    python -m benchmarks.pipeline                      # --size small: 600 videos, ~8 min on 2 CPU cores
    python -m benchmarks.pipeline --size tiny --workdir /tmp/p   # the smoke test's recipe, ~30 s
    python -m benchmarks.pipeline --size full --device cuda      # 3000 videos at 112 px: for a GPU
    python -m benchmarks.pipeline --epochs 30 --heads mean_mlp,netvlad,nextvlad

Exit status: 0 done, 2 a problem the user can fix (one ``error: ...`` line), 130 interrupted
(rerun the same command to continue).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._markdown import pct, table
from benchmarks.pipeline import steps
from benchmarks.pipeline.stages import Stage, run_stages
from benchmarks.pipeline.steps import MODALITIES, Context, Workdir
from extract.demo import DemoConfig
from extract.training import TrainRecipe
from heads.trainer import TrainConfig
from store.cli import non_negative_int, positive_int, run_command, setting_name
from store.errors import SettingsError

log = logging.getLogger(__name__)

#: ``--size`` presets: overrides of :class:`PipelineConfig`'s defaults (which are ``small``).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"videos": 24, "size": 48, "seconds": 1.0, "crop": 32, "clips": 4, "epochs": 1, "batch_size": 4,
             "rgb_epochs": None, "audio_epochs": None, "audio_batch_size": None, "rgb_crop": None, "head_epochs": 3,
             "folds": 2, "knn_k": 5, "workers": 0},
    "small": {},
    "full": {"videos": 3000, "size": 112, "crop": 96, "rgb_crop": None, "epochs": 40, "rgb_epochs": None,
             "audio_epochs": None, "head_epochs": 40},
}
FAMILIES = ("appearance", "motion", "sound")
#: Keywords of the sweep's heads, sized for a few hundred videos of 64-dim clip features.
HEAD_KWARGS: dict[str, dict[str, Any]] = {
    "mean_mlp": {"hidden_dim": 128}, "max_mlp": {"hidden_dim": 128},
    "netvlad": {"num_clusters": 8, "hidden_dim": 128}, "nextvlad": {"num_clusters": 8, "hidden_dim": 128},
    "softdbof": {"num_clusters": 32, "hidden_dim": 128}, "nonlocal_netvlad": {"num_clusters": 8, "hidden_dim": 128},
}


#: PipelineConfig fields with a flag of ``python -m benchmarks.pipeline`` (the others come from --size).
_FLAGGED = ("videos", "epochs", "head_epochs", "folds", "knn_k", "seed", "workers", "sweep_workers", "heads")


def _setting(name: str) -> str:
    """A PipelineConfig field as the user sets it: its flag (if any) and its name."""
    return setting_name(name, None if name in _FLAGGED else "")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the demo pipeline does, from the demo videos to the fused predictions.

    Attributes:
        videos: demo videos (70% train, 15% val, 15% test).
        size: demo frame size in pixels.
        seconds: demo clip duration.
        difficulty: demo clutter and noise, 0 to 1.
        seed: seeds the demo, the backbones, the heads, the folds.
        rgb_backbone: RGB clip backbone (temporal, so the motion classes are learnable).
        flow_backbone: optical-flow backbone (built with 2 input channels; global max pooling, as an average
            over the frame cancels a rotation's curl and a zoom's divergence: issue 19).
        audio_backbone: log-mel audio backbone.
        crop: square crop the video backbones see (decoded at ``crop * 8/7``: 56 decodes the 64-px demo at
            its own size, so 1-px stripes and checks are not resampled away).
        rgb_crop: the RGB backbone's crop, training and extraction (None: ``crop``). 112: the 64-px demo
            decoded at 128 px, twice its size, so the small net's stride-2 stages subsample the 10-px objects
            after they have been filtered at two samples per pixel: the test appearance AP of its classifier
            (30 epochs) 86.2 at 56 px, 94.4 at 112 px; the colour-shape and texture-edge conjunctions the
            distractors test gain most (``yellow_cross`` 71.7 -> 97.5; issue 19, benchmarks/README.md).
        frames: frames per clip.
        stride: frame step inside a clip.
        clips: clips per video in the feature sets (K).
        epochs: training epochs of the flow backbone, and of the others where theirs is None. 60: the
            best flow head's motion AP 71.2 after 20 epochs, 81.7 after 60 (test, main job on a quiet machine).
        batch_size: training clips per step of the RGB and flow backbones.
        rgb_epochs: training epochs of the RGB backbone (None: ``epochs``). 30: at 112 px the best RGB
            head's test appearance AP is 88.0 after 20 epochs, 90.9 after 30 (56 px took 75 epochs to 86.3).
        audio_epochs: training epochs of the audio backbone (None: ``epochs``). Audio has its own: its
            sound AP fell from 96.8 to 92.8 when it shared the pictures' 20 epochs of batch 8 (issue 19).
        audio_batch_size: training clips per step of the audio backbone (None: ``batch_size``).
        lr: backbone peak learning rate (AdamW, warm-up then cosine, no flips; mixup 0.4 for audio only; RGB
            trains without zoom: random crop position only).
        heads: heads of the sweep, each trained on every modality's features.
        head_epochs: most epochs of a head (early stopping on val class mAP).
        folds: folds of the heads and the kNN runs (out-of-fold train predictions for fusion).
        knn_k: neighbours of the kNN label transfer.
        fusion: the fusion method written as the fused run.
        compare: fusion methods scored beside it.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        workers: decode worker processes for training and extraction (None: by machine; 0:
            decode in this process).
        sweep_workers: Dask LocalCluster workers for the head sweep (0: in this process).
    """

    videos: int = 600
    size: int = 64
    seconds: float = 3.0
    difficulty: float = 0.2
    seed: int = 0
    rgb_backbone: str = "tsm_small"
    flow_backbone: str = "tsm_small"
    audio_backbone: str = "resnet_audio_tiny"
    crop: int = 56
    rgb_crop: int | None = 112
    frames: int = 4
    stride: int = 6
    clips: int = 8
    epochs: int = 60
    batch_size: int = 8
    rgb_epochs: int | None = 30
    audio_epochs: int | None = 30
    audio_batch_size: int | None = 16
    lr: float = 3e-3
    heads: tuple[str, ...] = ("mean_mlp", "netvlad")
    head_epochs: int = 30
    folds: int = 5
    knn_k: int = 10
    fusion: str = "xgboost"
    compare: tuple[str, ...] = ("mean", "weighted", "logistic")
    device: str = "auto"
    workers: int | None = None
    sweep_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("heads", "compare"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        for name, low in (("crop", 8), ("frames", 1), ("stride", 1), ("clips", 1), ("epochs", 1),
                          ("batch_size", 2), ("head_epochs", 1), ("knn_k", 1), ("sweep_workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingsError(f"{_setting(name)} must be a whole number >= {low}, got {value!r}")
        for name, low in (("rgb_epochs", 1), ("audio_epochs", 1), ("audio_batch_size", 2), ("rgb_crop", 8)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise SettingsError(f"{_setting(name)} must be a whole number >= {low} (or left out), got {value!r}")
        if self.folds < 2:
            raise SettingsError(f"{_setting('folds')} must be >= 2 (fusion stacks out-of-fold predictions), "
                             f"got {self.folds}")
        if self.workers is not None and self.workers < 0:
            raise SettingsError(f"{_setting('workers')} must be >= 0 (or left out), got {self.workers}")
        if not self.heads:
            raise SettingsError(f"{_setting('heads')} must name at least one head")
        if not self.lr > 0:
            raise SettingsError(f"{_setting('lr')} must be > 0, got {self.lr}")
        from extract.backbones import list_backbones
        from fusion import list_fusions

        for m in MODALITIES:
            if self.backbone(m) not in list_backbones():
                raise SettingsError(f"unknown {m} backbone {self.backbone(m)!r}; choose one of {list_backbones()}")
        unknown = [f for f in (self.fusion, *self.compare) if f not in list_fusions()]
        if unknown:
            raise SettingsError(f"unknown fusion method {unknown[0]!r}; choose from {list_fusions()}")
        self.demo_config()  # the demo's, the recipes' and the heads' settings check themselves
        for m in MODALITIES:
            self.recipe(m)
        self.head_configs()

    def demo_config(self) -> DemoConfig:
        return DemoConfig(videos=self.videos, seed=self.seed, size=self.size, seconds=self.seconds,
                          difficulty=self.difficulty)

    def backbone(self, modality: str) -> str:
        return getattr(self, f"{modality}_backbone")

    def picture_crop(self, modality: str) -> int:
        """The square crop a modality's backbone sees: ``rgb_crop`` for RGB, else ``crop`` (audio has none: its
        feature set is extracted in the ``crop`` pass)."""
        return self.rgb_crop if modality == "rgb" and self.rgb_crop is not None else self.crop

    def set_name(self, modality: str) -> str:
        """The feature set of a modality: ``<modality>_<backbone>_trained``."""
        return f"{modality}_{self.backbone(modality)}_trained"

    def train_epochs(self, modality: str) -> int:
        """Training epochs of a modality's backbone."""
        own = {"rgb": self.rgb_epochs, "audio": self.audio_epochs}.get(modality)
        return self.epochs if own is None else own

    def train_batch_size(self, modality: str) -> int:
        """Training clips per step of a modality's backbone."""
        return self.batch_size if modality != "audio" or self.audio_batch_size is None else self.audio_batch_size

    def recipe(self, modality: str) -> TrainRecipe:
        """The backbone training recipe of a modality (clips and crops as the extraction's)."""
        picture = {} if modality == "audio" else {"crop": self.picture_crop(modality), "frames": self.frames}
        if modality == "flow":
            picture |= self.flow_settings()
        # No flips: a mirrored clip of "moves_right" or "rotates_cw" would carry the opposite label.
        # No mixup for pictures: a blend of two clips shows every object at part contrast in a mixed colour
        # (a red circle over a blue background turns purple) and averages two flow fields (issue 19).
        mixup = 0.4 if modality == "audio" else 0.0
        if modality == "rgb":  # no zoom: decoded at the eval size, only the crop's position moves (issue 19)
            # A zoom up to 1.25x upsampled the 64-px frames (resampling the 2-px stripes and checks), showed the
            # objects larger than extraction does, and its crop could cut an object off its label.
            picture["scale"] = (1.0, 1.0)
        return TrainRecipe(backbone=self.backbone(modality), weights="random", modality=modality, optimizer="adamw",
                           lr=self.lr,
                           weight_decay=0.01, warmup_epochs=1.0, mixup_alpha=mixup, dropout=0.2, flip=False,
                           epochs=self.train_epochs(modality), batch_size=self.train_batch_size(modality),
                           stride=self.stride,
                           eval_clips=min(self.clips, 2), seed=self.seed, device=self.device, **picture)

    def flow_settings(self) -> dict[str, Any]:
        """The flow of the flow net, in training and extraction (``flow_bound``, ``flow_params``).

        Farneback with a 7-px window between frames a twelfth of the clip apart (6 frames of the 3-s
        demo), divided by the gap and clipped to 2 px per frame. The carrier crosses 0.35-0.7 frame
        widths per clip, so a pair sees it move 2-4 px at 64 px, where Farneback is still exact; between
        consecutive frames a zoom moves its edge ~0.1 px, below the flow's noise, and OpenCV's 15-px
        window blurs the ~10-px carrier's rotation (issue 19, benchmarks/README.md).
        """
        gap = max(1, round(self.demo_config().n_frames / 12))
        return {"flow_bound": 2.0, "flow_params": (("fb_winsize", 7), ("gap", gap))}

    def head_configs(self) -> list[TrainConfig]:
        """The sweep: every head on every modality's feature set, with out-of-fold folds."""
        return [TrainConfig(features=(self.set_name(m),), head=h, head_kwargs=HEAD_KWARGS.get(h, {}),
                            epochs=self.head_epochs, batch_size=32, lr=3e-3, dropout=0.2,
                            patience=8, folds=self.folds, seed=self.seed, device=self.device)
                for m in MODALITIES for h in self.heads]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["heads"], d["compare"] = list(self.heads), list(self.compare)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingsError(f"PipelineConfig.from_dict: unknown keys {unknown}; "
                                f"expected a subset of {sorted(known)}")
        return cls(**d)


def build_stages(ctx: Context) -> list[Stage]:
    """The stages in order, bound to ``ctx``."""
    c = ctx.config

    def train(m: str) -> Stage:
        return Stage(f"train_{m}", ("demo",), {k: v for k, v in c.recipe(m).to_dict().items() if k != "device"},
                     lambda fresh: steps.train_step(ctx, m, fresh), lambda r: steps.backbone_is_intact(ctx, r))

    def bound(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda arg: fn(ctx, arg)

    return [
        Stage("demo", (), c.demo_config().to_dict(), bound(steps.demo_step), bound(steps.demo_is_intact)),
        *(train(m) for m in MODALITIES),
        Stage("extract", ("demo", *(f"train_{m}" for m in MODALITIES)),
              {"sets": [c.set_name(m) for m in MODALITIES], "clips": c.clips, "frames": c.frames,
               "stride": c.stride, "crop": c.crop, "rgb_crop": c.picture_crop("rgb"), "seed": c.seed,
               **c.flow_settings()},
              bound(steps.extract_step), bound(steps.store_is_intact)),
        Stage("sweep", ("demo", "extract"), [h.config_hash() for h in c.head_configs()],
              bound(steps.sweep_step), bound(steps.runs_are_intact)),
        Stage("knn", ("demo", "extract"), {"k": c.knn_k, "folds": c.folds, "seed": c.seed},
              bound(steps.knn_step), bound(steps.runs_are_intact)),
        Stage("fusion", ("demo", "sweep"), {"method": c.fusion, "compare": list(c.compare)},
              bound(steps.fusion_step), bound(steps.fusion_is_intact)),
    ]


def run_pipeline(config: PipelineConfig, workdir: str | os.PathLike = ".", *, progress: bool = False,
                 on_stage: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip) every stage and write the summary next to the store.

    Args:
        config: the pipeline settings.
        workdir: holds ``demo/``, ``demo.zarr``, ``runs/pipeline/`` and the summaries.
        progress: tqdm bars inside the stages.
        on_stage: called after each stage with ``{"stage", "status", "seconds", "computed_seconds"}``.

    Returns:
        The summary (also written as ``pipeline_summary.json``): ``config``, ``results`` (one
        JSON-able record per stage, the same whether it ran or was cached), ``stages`` (status
        and time of each) and ``total_seconds``.

    Raises:
        PipelineError, StoreError, ExtractError, KnnError, heads' TrainError: a problem the
        user can fix; the message says how.
    """
    work = Workdir(Path(workdir))
    work.root.mkdir(parents=True, exist_ok=True)
    ctx = Context(config, work, progress)
    start = time.perf_counter()
    timeline = run_stages(build_stages(ctx), work.state, ctx.results, on_stage=on_stage)
    summary = {"config": config.to_dict(), "workdir": str(work.root), "results": ctx.results, "stages": timeline,
               "total_seconds": time.perf_counter() - start}
    work.summary_json.write_text(json.dumps(steps.clean(summary), indent=1) + "\n", encoding="utf-8")
    work.summary_md.write_text(format_summary(summary) + "\n", encoding="utf-8")
    return summary


# ---------------------------------------------------------------------------------------- summary
def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _crops(cfg: dict[str, Any]) -> str:
    """``56 px`` or ``56 px (RGB 112)``: the crops the picture backbones saw."""
    rgb = cfg.get("rgb_crop")  # summaries written before rgb_crop have none
    return f"{cfg['crop']} px" + ("" if rgb in (None, cfg["crop"]) else f" (RGB {rgb})")


def _epochs(results: dict[str, Any]) -> str:
    """``20 epochs each`` or ``20 epochs (audio 30)``: what the training stages ran."""
    runs = {m: results[f"train_{m}"]["epochs"] for m in MODALITIES}
    first = runs[MODALITIES[0]]
    others = ", ".join(f"{m} {n}" for m, n in runs.items() if n != first)
    return f"{_plural(first, 'epoch')} " + (f"({others})" if others else "each")


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as Markdown: per modality x head, kNN, fusion, and the time per stage."""
    res, cfg = summary["results"], summary["config"]
    demo = res["demo"]
    fams = [f for f in FAMILIES if f in demo["families"].values()]
    counts = {f: sum(v == f for v in demo["families"].values()) for f in fams}
    splits = " / ".join(f"{demo['splits'].get(s, 0)} {s}" for s in ("train", "val", "test"))
    backbones = ", ".join(f"{m} {cfg[f'{m}_backbone']}" for m in MODALITIES)
    store = Path(summary["workdir"]) / "demo.zarr"
    lines = ["# Demo pipeline summary", "",
             (f"{demo['videos']} demo videos ({splits}), {cfg['size']} px, {cfg['seconds']:g} s, "
              f"{len(demo['classes'])} classes ({', '.join(f'{n} {f}' for f, n in counts.items())}); "
              f"store `{store}`. Backbones ({backbones}) trained {_epochs(res)}, "
              f"{cfg['clips']} clips of {cfg['frames']} frames at {_crops(cfg)} per video; heads and kNN "
              f"with {cfg['folds']} folds."), "",
             "## Class mAP (%) per modality and head", "",
             ("val and test: all classes; the family columns: test AP averaged over that family's classes "
              "(which modality carries which labels)."), ""]
    rows = []
    for m in MODALITIES:
        tr = res[f"train_{m}"]
        rows.append([m, f"{tr['backbone']} classifier (training, {_plural(tr['epochs'], 'epoch')})", "-",
                     pct(tr["val_class_map"]), "-", *("-" for _ in fams)])
        for r in [r for r in res["sweep"]["runs"] + res["knn"]["runs"] if r["modality"] == m]:
            if r["status"] != "ok":
                rows.append([m, r["head"], f"`{r['run']}`", "failed", (r["error"] or "")[:60], *("" for _ in fams)])
                continue
            val, test = r["scores"]["val"] or {}, r["scores"]["test"] or {}
            rows.append([m, r["head"], f"`{r['run']}`", pct(val.get("class_map")), pct(test.get("class_map")),
                         *(pct(test.get(f)) for f in fams)])
    lines += table(["modality", "head", "prediction run", "val mAP", "test mAP", *fams], rows)
    fu = res["fusion"]
    lines += ["", f"## Fusion of the best head per modality (%; fitted on {fu['fit_split']} out-of-fold "
                  f"predictions, {fu['fit_rows']} rows; scored on {fu['eval_split']}, {fu['eval_rows']} rows)", ""]
    modality_of = {run: m for m, run in fu["inputs"].items()}
    rows = [[f"input: {modality_of[run]} `{run}`", *(pct(v.get(k)) for k in ("class_map", "sample_map", "gap20")),
             *(pct(v.get(f)) for f in fams)] for run, v in fu["input_metrics"].items()]
    for i, (name, v) in enumerate(fu["methods"].items()):
        label = f"**{name}** -> `{fu['fused_run']}`" if i == 0 else name
        rows.append([label, *(pct(v.get(k)) for k in ("class_map", "sample_map", "gap20")),
                     *(pct(v.get(f)) for f in fams)])
    lines += table(["inputs and methods", "class mAP", "sample mAP", "GAP@20", *fams], rows)
    lines += ["", f"Report with per-class gains and reliance plots: `{fu['report']}`.", "",
              "## Time per stage (s)", ""]
    rows = [[t["stage"], t["status"], f"{t['seconds']:.1f}", f"{t['computed_seconds']:.1f}"]
            for t in summary["stages"]]
    rows.append(["total", "", f"{summary['total_seconds']:.1f}",
                 f"{sum(t['computed_seconds'] for t in summary['stages']):.1f}"])
    lines += table(["stage", "status", "this run", "when computed"], rows)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- command
def _parser() -> argparse.ArgumentParser:
    d = PipelineConfig()
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]).replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=tuple(SIZES), default="small",
                   help="preset: tiny (24 videos of 1 s at 48 px, 1 epoch: the smoke test, ~30 s), small (default: "
                        f"{d.videos} videos at {d.size} px, {d.rgb_epochs} / {d.epochs} / {d.audio_epochs} epochs for "
                        "rgb / flow / audio), full (3000 "
                        "videos at 112 px, 40 epochs: for a GPU)")
    p.add_argument("--tiny", dest="size", action="store_const", const="tiny", help="the same as --size tiny")
    p.add_argument("--workdir", type=Path, default=Path("."),
                   help="where demo/, demo.zarr, runs/pipeline/ and pipeline_summary.{md,json} go (default: .)")
    g = p.add_argument_group("overrides of the preset")
    g.add_argument("--videos", type=positive_int, help="demo videos")
    g.add_argument("--epochs", type=positive_int,
                   help=f"training epochs of every backbone (default: flow {d.epochs}, rgb {d.rgb_epochs}, "
                        f"audio {d.audio_epochs})")
    g.add_argument("--head-epochs", dest="head_epochs", type=positive_int, help="most epochs of a head")
    g.add_argument("--heads", help=f"comma-separated heads of the sweep (default: {','.join(d.heads)})")
    g.add_argument("--folds", type=positive_int, help=f"out-of-fold folds of heads and kNN (default: {d.folds})")
    g.add_argument("--knn-k", dest="knn_k", type=positive_int, help=f"kNN neighbours (default: {d.knn_k})")
    g.add_argument("--seed", type=non_negative_int, help=f"seed of everything (default: {d.seed})")
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA when present)")
    g.add_argument("--workers", type=non_negative_int,
                   help="decode worker processes (default: by machine; 0: in this process)")
    g.add_argument("--sweep-workers", dest="sweep_workers", type=non_negative_int,
                   help="Dask LocalCluster workers for the head sweep (default: 0, in this process)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    return p


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The preset of ``--size`` with the flags given on top."""
    values = dict(SIZES[args.size])
    for name in ("videos", "epochs", "head_epochs", "folds", "knn_k", "seed", "device", "workers", "sweep_workers"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.epochs is not None:  # one count for every backbone, audio's included
        values["rgb_epochs"] = values["audio_epochs"] = None
    if args.heads:
        values["heads"] = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    return PipelineConfig(**values)


@run_command(interrupted="finished work is kept; rerun the same command to continue")
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Training starts every backbone from random init on purpose: no "randomly initialised" warnings.
    logging.getLogger("extract.backbones.registry").setLevel(logging.ERROR)
    config = config_from_args(args)

    def on_stage(entry: dict[str, Any]) -> None:
        took = f"{entry['seconds']:.1f} s" + (f" (computed in {entry['computed_seconds']:.1f} s)"
                                              if entry["status"] == "cached" else "")
        print(f"stage {entry['stage']:<12} {entry['status']:<8} {took}", file=sys.stderr, flush=True)

    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        summary = run_pipeline(config, args.workdir, progress=not args.quiet, on_stage=on_stage)
    print(format_summary(summary))
    work = Workdir(args.workdir)
    print(f"\nwrote {work.summary_md} and {work.summary_json}")
    return 0

