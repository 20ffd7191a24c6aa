"""``python -m extract.train``: train or fine-tune a backbone on labelled videos.

Trains on the list's ``train`` rows, evaluates on its ``val`` rows (or ``--val-videos``) every
epoch (class and sample mAP, GAP@20, top-1/top-5), and writes into ``--out``: ``recipe.json``,
``metrics.json``, ``last.pt`` (resumable), ``best.pt``, ``backbone.pt`` and, with SWA,
``backbone_swa.pt`` (plain state_dicts for ``extract.run --weights``). Without ``--videos``
it trains on the demo set (``./demo``, made if missing), from a random init unless weights are
named. ``--backbone NAME@WEIGHTS`` starts from named weights (``r2plus1d_18@kinetics400``,
downloaded on first use), ``@random`` or a local file; the classifier is replaced by one for
the list's classes.

Examples::

    python -m extract.train --backbone r2plus1d_tiny --crop 32 --epochs 5 --out runs/demo
    python -m extract.train --videos trainingSet.csv --val-videos validationSet.csv \\
        --classes moments_categories.txt --backbone r2plus1d_18@kinetics400 \\
        --train-stages 2 --loss focal --class-weights sqrt --mixup-alpha 0.4 --swa-epochs 3 --out runs/r21d
    python -m extract.train --out runs/r21d --resume          # after an interruption
    python -m extract.run --videos all.csv --store mit.zarr --backbone r2plus1d_18 \\
        --weights runs/r21d/backbone.pt                        # features from the trained backbone

Recipe flags may also come from ``--config FILE.toml`` (keys as flag or field names, e.g.
``loss = "focal"``, ``loss_kwargs = {gamma = 2.0}``, ``scale = [1.0, 1.25]``); the command line wins.

Exit status: 0 done, 2 a usage error (one ``error: ...`` line), 130 interrupted (rerun with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from extract._config import read_toml_config
from extract._flow_flags import add_flow_param_arguments, flow_param_flags
from extract.backbones import RANDOM
from extract.dump.settings import BackboneChoice
from extract.errors import DemoError, ExtractError
from extract.inputs import TRIM_COLUMNS, VideoList, add_list_arguments
from extract.media.decode import DECODERS
from extract.media.flow import FLOW_CHOICES
from extract.training.recipe import CLASS_WEIGHTS, MODALITIES, OPTIMIZERS, SCHEDULES, TrainRecipe
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.errors import SettingsError
from store.threads import SAMPLE_S, add_threads_argument, free_cores, set_threads

log = logging.getLogger("extract.train")

DEMO_CROP = 112  # the demo's frames are 112 px
RUN_JSON = "run.json"  # the data arguments of a run, the defaults of its --resume
_R = TrainRecipe()
_RUN_KEYS = ("videos", "val_videos", "root", "classes", "demo_dir", "clip_cache")  # paths
_RUN_TEXT_KEYS = ("list_format", "kinetics_pattern")


def _scale(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 1.0,1.25), got {text!r}") from None
    return low, high


def _loss_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. gamma=2.0), got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _recipe_flags(p: argparse.ArgumentParser) -> None:
    """Flags of TrainRecipe fields; absent unless given (defaults: TrainRecipe, saved run, --config)."""
    S = argparse.SUPPRESS
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default=S, metavar="[MODALITY:]NAME[@WEIGHTS]",
                   help=f"registered backbone and its initial weights, as in extract.run (python -m extract.run "
                        f"--list-backbones): NAME@kinetics400 (a named weight; its classifier is replaced by one "
                        f"for the store's classes), NAME@random (from --seed) or NAME@PATH; no @ = the backbone's "
                        f"default weights (default: {_R.backbone}; on the demo set {_R.backbone}@random)")
    g.add_argument("--modality", choices=MODALITIES, default=S,
                   help="rgb clips, flow stacks (2-channel backbone) or audio windows (audio backbone) "
                        f"(default: {_R.modality})")
    g.add_argument("--weights", default=S, metavar="WEIGHTS",
                   help="initial weights, as after --backbone NAME@ (default: the backbone's default weights)")
    g.add_argument("--train-stages", dest="train_stages", type=non_negative_int, default=S, metavar="K",
                   help="fine-tune only the last K stages, the classifier counting as one; 0 = all (default: 0)")
    g.add_argument("--dropout", type=float, default=S, help=f"dropout before the classifier (default: {_R.dropout})")
    g = p.add_argument_group("loss and optimiser")
    g.add_argument("--loss", default=S, help=f"bce, scaled_bce, focal, focal_lc, lsep, ... (heads.losses; "
                                             f"default: {_R.loss})")
    g.add_argument("--loss-arg", dest="loss_kwargs", type=_loss_arg, action="append", default=S, metavar="KEY=VALUE",
                   help="a keyword of the loss, repeatable (e.g. --loss-arg gamma=2.0)")
    g.add_argument("--class-weights", dest="class_weights", choices=CLASS_WEIGHTS, default=S,
                   help="per-class loss weights from train label counts: 1/sqrt(n) or 1/n (default: none)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S, help=f"(default: {_R.optimizer})")
    g.add_argument("--lr", type=positive_float, default=S, help=f"peak learning rate (default: {_R.lr})")
    g.add_argument("--momentum", type=float, default=S, help=f"SGD momentum / AdamW beta1 (default: {_R.momentum})")
    g.add_argument("--weight-decay", dest="weight_decay", type=float, default=S,
                   help=f"on conv/linear weights (default: {_R.weight_decay})")
    g.add_argument("--schedule", choices=SCHEDULES, default=S,
                   help=f"cosine after warm-up, or cyclic cosine restarts (default: {_R.schedule})")
    g.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=S,
                   help=f"linear warm-up (default: {_R.warmup_epochs})")
    g.add_argument("--cycle-epochs", dest="cycle_epochs", type=positive_int, default=S,
                   help=f"cycle length of --schedule cyclic (default: {_R.cycle_epochs})")
    g.add_argument("--min-lr-ratio", dest="min_lr_ratio", type=float, default=S,
                   help=f"lowest rate as a fraction of --lr (default: {_R.min_lr_ratio})")
    g.add_argument("--grad-clip", dest="grad_clip", type=float, default=S,
                   help=f"clip the gradient norm; 0 = off (default: {_R.grad_clip})")
    g.add_argument("--swa-epochs", dest="swa_epochs", type=non_negative_int, default=S,
                   help="average the weights of the last N epochs -> backbone_swa.pt (default: 0, off)")
    g.add_argument("--swa-lr", dest="swa_lr", type=positive_float, default=S,
                   help="constant rate during the SWA epochs (default: keep the schedule)")
    g = p.add_argument_group("data and augmentation")
    g.add_argument("--epochs", type=positive_int, default=S, help=f"(default: {_R.epochs})")
    g.add_argument("--batch-size", dest="batch_size", type=positive_int, default=S,
                   help=f"clips per step (default: {_R.batch_size})")
    g.add_argument("--mixup-alpha", dest="mixup_alpha", type=float, default=S,
                   help="between-class mixing of clip pairs, ratio ~ Beta(a, a); 0 = off (default: 0)")
    g.add_argument("--crop", type=positive_int, default=S,
                   help=f"square crop side (default: the backbone's input size; {DEMO_CROP} on the demo set)")
    g.add_argument("--short-side", dest="short_side", type=positive_int, default=S,
                   help="evaluation resize before the centre crop (default: crop * 8/7, as extract.run)")
    g.add_argument("--scale", type=_scale, default=S, metavar="LOW,HIGH",
                   help="training short side = short side x U(LOW, HIGH), then a random crop (default: 1.0,1.25)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=S,
                   help="random horizontal flips (default: off; mirroring swaps left/right and cw/ccw motion "
                        "without swapping labels)")
    g.add_argument("--frames", type=positive_int, default=S,
                   help="frames per clip (default: the backbone's clip length)")
    g.add_argument("--stride", type=positive_int, default=S, help=f"frame step in a clip (default: {_R.stride})")
    g.add_argument("--train-segments", dest="train_segments", type=positive_int, default=S,
                   help="random clips per example, TSN consensus; frame backbones only (default: 3 for frame "
                        "backbones, else 1)")
    g.add_argument("--eval-clips", dest="eval_clips", type=positive_int, default=S,
                   help=f"deterministic clips per val video, scores averaged (default: {_R.eval_clips})")
    g.add_argument("--every", type=positive_float, default=S, metavar="SECONDS",
                   help="evaluate on time-based clips, one every SECONDS, as extract.run --every (not with "
                        "--eval-clips)")
    g.add_argument("--fps", type=positive_float, default=S, metavar="F",
                   help="take every clip's frames (training and evaluation) at F frames per second, resampled "
                        "from the video's rate, as extract.run --fps (default: the video's frames)")
    g.add_argument("--max-clips", dest="max_clips", type=positive_int, default=S, metavar="N",
                   help="at most N time-based evaluation clips per video, more evenly thinned (default: 128)")
    g.add_argument("--flow-algorithm", dest="flow_algorithm", choices=FLOW_CHOICES, default=S,
                   help=f"(--modality flow; default: {_R.flow_algorithm}; paper: TV-L1 fast, the flow is made "
                        "in the CPU data workers)")
    g.add_argument("--flow-bound", dest="flow_bound", type=positive_float, default=S,
                   help=f"clip flow to +-N px/frame (default: {_R.flow_bound})")
    add_flow_param_arguments(g, default=S)  # as extract.run's: the feature set's flow is the trained one's
    g.add_argument("--decode-every", dest="decode_every", type=positive_int, default=S, metavar="N",
                   help="decode each training video once per N epochs: one decode gives the clips of all N "
                        "(kept in --clip-cache), at one random short side per video and N epochs; positions, "
                        f"crops and flips stay random per epoch; 1 = decode every example (default: "
                        f"{_R.decode_every})")
    g.add_argument("--decoder", choices=DECODERS, default=S,
                   help=f"the video decoder (default: {_R.decoder}); torchcodec where it is installed (pip install "
                   "'videofeat[decoders]', with FFmpeg's shared libraries): the same frames at the coded size, resized "
                   "ones differ slightly (extract/README.md, Decoders)")
    g.add_argument("--seed", type=non_negative_int, default=S,
                   help=f"init, shuffles, clips, augmentation (default: {_R.seed})")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=S, help="(default: auto: CUDA if present)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=S,
                   help="float16 autocast on CUDA (default: on; never on CPU)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m extract.train", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="TOML file of defaults for these flags")
    g = p.add_argument_group("input and output")
    g.add_argument("--videos", type=Path, metavar="CSV|DIR",
                   help="labelled video list (Multi-MiT, MiT, Kinetics, mmaction2, a table with path,labels,split; "
                        "see --format); its 'train' rows "
                        "train, its 'val' rows validate (default: the demo set in --demo-dir, made if missing)")
    g.add_argument("--val-videos", dest="val_videos", type=Path, metavar="CSV",
                   help="validation list (default: the 'val' rows of --videos)")
    g.add_argument("--root", type=Path, help="folder the CSV paths are relative to (default: the CSV's folder)")
    add_list_arguments(g)
    g.add_argument("--classes", type=Path, metavar="FILE", help="class list (default: as extract.run finds it)")
    g.add_argument("--out", type=Path, required=False, help="run folder (default: runs/<backbone>_<modality>)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (its recipe and videos are the defaults)")
    g.add_argument("--demo-dir", dest="demo_dir", type=Path, default=Path("demo"),
                   help="where the demo set lives when --videos is not given (default: demo)")
    _recipe_flags(p)
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=non_negative_int,
                   help="decode worker processes (with the clip cache: they decode the next epoch's videos ahead "
                        "while a thread of this process reads the cached ones); 0 decodes in a thread of the main "
                        "process (default: "
                        "min(4, cores) on CPU, cores - 1 with CUDA)")
    add_threads_argument(g, help="torch, OpenMP and BLAS threads (default: free cores - workers on CPU, at least 1; "
                         "the free cores with CUDA)")
    g.add_argument("--clip-cache", dest="clip_cache", type=Path, metavar="DIR",
                   help="where decoded training clips (one file per video and --decode-every epochs) and the "
                        "validation clips are kept, keyed by the videos and the data flags; reused on --resume "
                        "(default: OUT/clip_cache; one run per DIR at a time)")
    g.add_argument("--no-clip-cache", dest="no_clip_cache", action="store_true",
                   help="keep nothing: each example decodes its own clip (the same batches, more decoding)")
    g.add_argument("--timeout", dest="timeout_s", type=positive_float, default=60.0,
                   help="seconds one video may take to decode (default: 60)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    return p


_RECIPE_FIELDS = set(TrainRecipe.__dataclass_fields__)


def parser_default(key: str) -> Any:
    """The parser's own default of a run flag (a saved run's value replaces it on --resume)."""
    return {"demo_dir": Path("demo"), "list_format": "auto"}.get(key)


def _read_config(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """TOML keys (flag or field names) -> values; recipe fields are returned, run flags become defaults."""
    values = read_toml_config(parser, path, extra_keys=_RECIPE_FIELDS)
    recipe = {k: v for k, v in values.items() if k in _RECIPE_FIELDS}
    parser.set_defaults(**{k: v for k, v in values.items() if k not in _RECIPE_FIELDS})
    return recipe


def _recipe(args: argparse.Namespace, config: dict[str, Any], saved: dict[str, Any] | None,
            demo: bool) -> TrainRecipe:
    values = dict(saved or {})
    values.update(config)
    given = {k: v for k, v in vars(args).items() if k in _RECIPE_FIELDS}
    flow_flags = flow_param_flags(args)
    if flow_flags:
        given["flow_params"] = tuple({**dict(given.get("flow_params", values.get("flow_params", ()))),
                                      **flow_flags}.items())
    if "loss_kwargs" in given:
        given["loss_kwargs"] = dict(given["loss_kwargs"])
    values.update(given)
    placed = {**config, **given}
    if placed.get("every") is not None and "eval_clips" in placed:
        raise ExtractError(f"--every {placed['every']:g} evaluates on a clip every {placed['every']:g} seconds and "
                           f"--eval-clips {placed['eval_clips']} on a fixed number per video; give one of them")
    if demo and "crop" not in values:
        values["crop"] = DEMO_CROP
    try:
        if "@" in str(values.get("backbone", "")) or ":" in str(values.get("backbone", "")):
            choice = BackboneChoice.parse(values["backbone"], modality=values.get("modality", "rgb"))
            if choice.weights and values.get("weights"):
                raise SettingsError("--weights and --backbone NAME@WEIGHTS both give weights; keep one")
            values.update(backbone=choice.backbone, modality=choice.modality,
                          weights=choice.weights or values.get("weights"))
        if demo and values.get("weights") is None:
            values["weights"] = RANDOM  # the demo runs offline: an explicit random init
        return TrainRecipe.from_dict(values)
    except (TypeError, ValueError) as err:
        raise ExtractError(str(err)) from None


def _whole_files(listed: VideoList) -> VideoList:
    """``listed``, unless it holds windows of untrimmed videos (which training does not cut)."""
    if TRIM_COLUMNS[0] in listed.videos:
        raise ExtractError(f"{listed.source}: extract.train takes whole files, not windows of untrimmed videos; "
                           "pass a --kinetics-pattern naming the trimmed files, or cut them with ffmpeg")
    return listed


def _data(args: argparse.Namespace, demo_manifest) -> Any:
    from extract.inputs import UNSPLIT, read_video_list
    from extract.training import TrainData

    videos = demo_manifest.videos_csv if demo_manifest else args.videos
    classes = demo_manifest.classes_path if demo_manifest else args.classes
    fmt = {"list_format": args.list_format, "kinetics_pattern": args.kinetics_pattern} if not demo_manifest else {}
    listed = _whole_files(read_video_list(videos, root=args.root, classes=classes, **fmt))
    if not listed.classes or not listed.labelled:
        raise ExtractError(f"{videos}: the videos have no labels; training needs a labelled CSV")
    table, labels = listed.videos.reset_index(drop=True), listed.label_matrix()
    split = table["split"].to_numpy()
    train = split == "train"
    if not train.any() and (split == UNSPLIT).all():
        train[:] = True  # a list without splits: all of it trains
    if not train.any():
        raise ExtractError(f"{videos}: no row is in the 'train' split (splits: {sorted(set(split))}); add a split "
                           "column or name the file after its split (e.g. trainingSet.csv)")
    if args.val_videos:
        val_list = _whole_files(read_video_list(args.val_videos, root=args.root, classes=listed.classes, **fmt))
        val_table, val_labels = val_list.videos.reset_index(drop=True), val_list.label_matrix()
    else:
        val = split == "val"
        val_table, val_labels = table[val].reset_index(drop=True), labels[val]
    if not len(val_table):
        log.warning("no validation videos: no per-epoch metrics and no best.pt (pass --val-videos)")
    return TrainData(table[train].reset_index(drop=True), labels[train], val_table, val_labels, list(listed.classes))


def _summary(result) -> str:
    last = result.history[-1] if result.history else {}
    lines = [f"train: {result.out_dir}: {result.recipe.backbone} ({result.recipe.modality}), "
             f"{len(result.history)} epochs"]
    if "class_map" in last:
        lines.append(f"  last epoch: val class mAP {last['class_map']:.4f}, sample mAP {last['sample_map']:.4f}, "
                     f"GAP@20 {last['gap20']:.4f}, top-1 {last['top1']:.4f}, top-5 {last['top5']:.4f}")
    if result.best:
        lines.append(f"  best: epoch {result.best['epoch']}, val class mAP {result.best['class_map']:.4f} -> best.pt")
    if result.swa and "class_map" in result.swa:
        lines.append(f"  SWA of {result.swa['snapshots']} epochs: val class mAP {result.swa['class_map']:.4f}")
    waits = [e["data_wait_fraction"] for e in result.history if math.isfinite(e.get("data_wait_fraction", math.nan))]
    if waits:
        later = f", {100 * sum(waits[1:]) / len(waits[1:]):.1f}% after the first epoch" if len(waits) > 1 else ""
        lines.append(f"  data wait: {100 * waits[0]:.1f}% of step time in the first epoch{later}")
    r, weights = result.recipe, result.swa_path or result.backbone_path
    clips = f" --crop {r.crop} --frames {r.frames} --stride {r.stride}" if r.modality != "audio" else ""
    lines.append(f"  features: python -m extract.run --backbone {r.backbone}{clips} --weights {weights} "
                 "--videos ... --store ...")
    return "\n".join(lines)


def run(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """Run the command on parsed arguments; returns the exit status."""
    import torch
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from extract.backbones import DEFAULT, PretrainedWeights, list_backbones, read_torch_file, resolve_weights
    from extract.demo import load_demo, make_demo
    from extract.media.torchcodec_decode import require_torchcodec
    from extract.training import fit
    from extract.training.checkpoint import RECIPE_JSON, save_json
    from extract.training.loop import AUTO_CACHE, default_workers
    from store.device import resolve_device

    named = {**config, **{k: v for k, v in vars(args).items() if k in _RECIPE_FIELDS}}
    out = args.out or Path("runs") / f"{named.get('backbone', _R.backbone)}_{named.get('modality', _R.modality)}"
    saved_recipe = None
    if args.resume and (out / RECIPE_JSON).is_file():
        saved_recipe = json.loads((out / RECIPE_JSON).read_text())
        saved_run = json.loads((out / RUN_JSON).read_text()) if (out / RUN_JSON).is_file() else {}
        for key in (*_RUN_KEYS, *_RUN_TEXT_KEYS):
            if getattr(args, key) in (None, parser_default(key)) and saved_run.get(key) is not None:
                setattr(args, key, Path(saved_run[key]) if key in _RUN_KEYS else saved_run[key])
    demo = args.videos is None
    recipe = _recipe(args, config, saved_recipe, demo)
    manifest = None
    if demo:
        try:
            manifest = load_demo(args.demo_dir)
        except DemoError:
            print(f"making the demo set in {args.demo_dir} ...", file=sys.stderr)
            manifest = make_demo(args.demo_dir, progress=not args.quiet)
    data = _data(args, manifest)
    device = torch.device(resolve_device(recipe.device))
    workers = default_workers(device) if args.workers is None else args.workers
    set_threads(args.threads or (max(1, free_cores(sample_s=SAMPLE_S) - workers) if device.type == "cpu" else None))
    # an unknown backbone is refused by get_backbone, with the list of names
    known = recipe.backbone in list_backbones()
    weights = resolve_weights(recipe.backbone, recipe.weights or DEFAULT) if known else None
    if isinstance(weights, PretrainedWeights):
        weights.fetch(progress=not args.quiet)  # download (or fail) before --out is made
    elif isinstance(weights, Path):
        read_torch_file(weights)  # a file that is no checkpoint fails before --out is made
    if recipe.decoder == "torchcodec":
        require_torchcodec()  # one line saying how to install it, before --out is made
    out.mkdir(parents=True, exist_ok=True)
    save_json({**{k: str(Path(getattr(args, k)).resolve()) if getattr(args, k) is not None else None
                  for k in _RUN_KEYS}, **{k: getattr(args, k) for k in _RUN_TEXT_KEYS}}, out / RUN_JSON)
    bar = tqdm(unit="step", disable=args.quiet, dynamic_ncols=True)

    def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
        if step == 0:
            bar.reset(total=steps)
            bar.set_description(f"epoch {epoch + 1}/{recipe.epochs}")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch_end(epoch: int, model, entry: dict[str, Any]) -> None:
        val = f", val class mAP {entry['class_map']:.4f}" if "class_map" in entry else ""
        tqdm.write(f"epoch {epoch}: train loss {entry['train_loss']:.4f}{val}, data wait "
                   f"{100 * entry['data_wait_fraction']:.1f}%, {entry['train_seconds']:.1f} s", file=sys.stderr)

    with logging_redirect_tqdm():
        try:
            cache = None if args.no_clip_cache else (args.clip_cache or AUTO_CACHE)
            result = fit(recipe, data, out, resume=args.resume, workers=workers, timeout_s=args.timeout_s,
                         cache_dir=cache, on_step=on_step, on_epoch_end=None if args.quiet else on_epoch_end)
        finally:
            bar.close()
    print(_summary(result))
    return 0


@run_command(interrupted="the last finished epoch is in last.pt; rerun with --resume to continue")
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    known, _ = parser.parse_known_args(argv)
    config = _read_config(parser, known.config) if known.config else {}
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return run(args, config)


if __name__ == "__main__":
    sys.exit(main())
