"""``python -m extract.run``: decode videos once, run backbones, write clip features to a store.

Each ``--backbone [MODALITY:]NAME[@WEIGHTS]`` (repeatable; MODALITY rgb (default), flow or
audio) fills its own feature set (``--set``, default <modality>_<backbone>), all from ONE
decode per video: RGB clips, their optical flow (computed in the decode workers) and the
audio windows of the same clips. WEIGHTS is a named weight of the backbone (kinetics400,
KINETICS400_V1 or torchvision:KINETICS400_V1; downloaded into $TORCH_HOME/hub/checkpoints
on first use, offline after), random (an explicit random init), or a local file; without
@ the backbone's default weights, or an error listing its weights (``--list-backbones``).
With no arguments it uses the demo set (``./demo``, generated if missing) with randomly
initialised ResNet-18s at 112 px (@random, so it runs offline), 8 segments: RGB
(rgb_resnet18), Farneback flow (flow_resnet18) and log-mel audio (audio_resnet18_audio),
and writes ``demo.zarr``; then it prints a summary and the ``store.verify`` result.
Rerunning resumes: rows already done are skipped. ``--shard i/n`` lets n processes fill
disjoint chunk-aligned row ranges of one store.

Examples::

    python -m extract.run
    python -m extract.run --list-backbones
    python -m extract.run --videos trainingSet.csv --classes moments_categories.txt \\
        --store mit.zarr --backbone r2plus1d_18@kinetics400 --crops three
    python -m extract.run --videos trainingSet.csv --store mit.zarr \\
        --backbone rgb:r2plus1d_18@r21d.pth --backbone flow:resnet18@flow.pth \\
        --backbone audio:vggish@vggish.pth --flow tvl1 --head-logits
    python -m extract.run --videos clips/ --store clips.zarr --shard 0/4     # on 4 machines
    python -m extract.run --videos movies/ --store movies.zarr --every 1 --fps 15 --max-clips 512
    python -m extract.run --videos kinetics400_train_list_videos.txt --classes k400_classes.txt \\
        --store k400.zarr --format mmaction                          # mmaction2's path label_id list
    python -m extract.run --videos kinetics_val.csv --root youtube/ --store k400_val.zarr \\
        --kinetics-pattern '{youtube_id}.mp4'        # untrimmed files: clips from [time_start, time_end)
    python -m extract.run --videos clips/ --store clips.zarr --cluster local  # on a Dask cluster
    python -m extract.run --videos list.csv --store /shared/s.zarr --cluster slurm --slurm slurm.toml

Exit status: 0 done (rows that could not be decoded are recorded, not fatal), 1 the store
failed verification, 2 a usage error (one ``error: ...`` line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from extract._config import read_toml_config
from extract._flow_flags import add_flow_param_arguments, flow_param_flags
from extract.dump.settings import AMP_DTYPES, DEVICES, MODALITIES, BackboneChoice, ExtractSettings, parse_shard
from extract.errors import DemoError, ExtractError
from extract.inputs import add_list_arguments
from extract.media.decode import DECODERS
from extract.media.flow import FLOW_CHOICES, TVL1_PARAMS, TVL1_PRESETS
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.cluster import CLUSTERS, check_choice
from store.errors import SettingsError
from store.threads import add_threads_argument

if TYPE_CHECKING:
    from extract.dump.pipeline import RunStats

log = logging.getLogger("extract.run")

DEFAULT_STORE = Path("demo.zarr")
DEFAULT_DEMO_DIR = Path("demo")
DEMO_CROP = 112  # the demo's frames are 112 px
#: What a run on the demo set extracts when no --backbone is given: RGB, flow and audio.
DEMO_BACKBONES = ("rgb:resnet18@random", "flow:resnet18@random", "audio:resnet18_audio@random")
_D = ExtractSettings()


class _Repeat(argparse.Action):
    """A repeatable flag whose command-line values replace (not extend) a config file's list."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = getattr(namespace, "_repeat_given", set())
        items = list(getattr(namespace, self.dest) or []) if self.dest in given else []
        namespace._repeat_given = given | {self.dest}
        setattr(namespace, self.dest, [*items, values])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m extract.run",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="\n\n".join(__doc__.split("\n\n")[1:]).replace("``", "").replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="TOML file of defaults for these flags (keys as flag names, e.g. batch_size = 32); "
        "flags on the command line win",
    )
    g = p.add_argument_group("input and output")
    g.add_argument(
        "--videos",
        type=Path,
        metavar="CSV|DIR",
        help="video list (Multi-MiT path,label,...; MiT; a table with a path column; Kinetics; mmaction2's "
        "path label_id ...; see --format) or a folder of videos (unlabelled). Default: the demo set in "
        "--demo-dir, made if missing",
    )
    g.add_argument(
        "--root",
        type=Path,
        help="folder the CSV's paths are relative to (default: the CSV's folder)",
    )
    add_list_arguments(g)
    g.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="class list, one name per line or name,index lines (default: classes.txt / "
        "moments_categories.txt beside the CSV, else the store's classes, else the labels "
        "found; an unlabelled folder gets the single placeholder class 'unlabelled')",
    )
    g.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        help=f"feature store (NAME.zarr); created if missing, else the list's new videos are "
        f"appended (default: {DEFAULT_STORE})",
    )
    g.add_argument(
        "--set",
        dest="set_name",
        metavar="NAME",
        action=_Repeat,
        help="feature set name; repeat it once per --backbone, in the same order (default: "
        "<modality>_<backbone>, e.g. rgb_resnet18, flow_resnet18, audio_vggish)",
    )
    g.add_argument(
        "--demo-dir",
        type=Path,
        default=DEFAULT_DEMO_DIR,
        help=f"where the demo set lives when --videos is not given (default: {DEFAULT_DEMO_DIR})",
    )
    g = p.add_argument_group("models (one feature set each, all from one decode per video)")
    g.add_argument(
        "--backbone",
        action=_Repeat,
        metavar="[MODALITY:]NAME[@WEIGHTS]",
        help="a registered backbone (--list-backbones) and what it looks at: rgb (default, or "
        "--modality), flow (a video backbone built with 2 input channels) or audio (resnet18_audio, "
        "vggish, envnet_v2, ...). @WEIGHTS: a named weight of the backbone (@kinetics400, "
        "@KINETICS400_V1, @torchvision:KINETICS400_V1; a known name wins over a file of that name), "
        "@random (random init from --seed), or a local checkpoint (@PATH: anything with a '/' or a "
        "suffix such as .pt); no @ = the backbone's default weights, an error if it has none. "
        "Pretrained image models as frame encoders, weights from the Hugging Face cache (HF_HOME, "
        "downloaded on first use): timm/MODEL[.TAG] (any timm model, e.g. timm/convnext_tiny.fb_in22k) "
        "and clip/ARCH@TAG (an open_clip image tower, e.g. clip/ViT-B-32@laion2b_s34b_b79k; rgb only). "
        "Repeat for several feature sets in one pass, e.g. --backbone rgb:r2plus1d_18@kinetics400 "
        "--backbone flow:resnet18@flow.pth --backbone audio:vggish@vggish.pt. Default: "
        f"{_D.backbone}; on the demo set {' '.join(DEMO_BACKBONES)}",
    )
    g.add_argument(
        "--modality",
        choices=MODALITIES,
        default=_D.modality,
        help=f"modality of a --backbone without a MODALITY: prefix (default: {_D.modality})",
    )
    g.add_argument(
        "--weights",
        metavar="WEIGHTS",
        help="weights of the one --backbone, as after its '@' (a named weight, random, or a local "
        "checkpoint in torchvision's state_dict layout); with several, write NAME@WEIGHTS. "
        "Default: the backbone's default weights",
    )
    g.add_argument(
        "--head-logits",
        action="store_true",
        help="also store each backbone's own class scores (its classifier fc, from weights "
        "trained by extract.train on the store's classes): per-clip logits in the feature "
        "set <set>__logits, and sigmoid(mean over valid clips) as the prediction run "
        "<set>_logits for fusion. Every backbone needs weights with such a classifier",
    )
    g.add_argument(
        "--seed", type=non_negative_int, default=_D.seed, help=f"seed of a @random init (default: {_D.seed})"
    )
    g.add_argument(
        "--list-backbones",
        action="store_true",
        help="list every backbone with its named weights (dataset, feature dim, clip length, source, "
        "whether the file is in the cache) and exit",
    )
    g = p.add_argument_group("clips and views")
    g.add_argument(
        "--sampling",
        choices=("uniform", "tsn", "dense"),
        help="clip placement (default: tsn for frame backbones, uniform for clip backbones)",
    )
    g.add_argument(
        "--clips",
        type=positive_int,
        help=f"a fixed number of clips (TSN segments) per video (default: {_D.clips}; not with --every)",
    )
    g.add_argument(
        "--every",
        type=positive_float,
        metavar="SECONDS",
        help="time-based clips for untrimmed video: one starting every SECONDS (0, SECONDS, 2 SECONDS, ...); "
        "a clip that would run past the end is dropped (a video shorter than one clip keeps one, padded). "
        "K varies per video: the set keeps up to K-max clips with a valid mask and each clip's start/end "
        "seconds. Not with --clips or --sampling",
    )
    g.add_argument(
        "--fps",
        type=positive_float,
        metavar="F",
        help="take the clips' frames at F frames per second, resampled from the video's own rate (default: "
        "the video's frames); --stride then counts resampled frames",
    )
    g.add_argument(
        "--max-clips",
        type=positive_int,
        metavar="N",
        help="K-max of --every: at most N clips per video, more are evenly thinned (default: the longest "
        "video's clip count when the set is created, at most 128; an existing set keeps its K-max; at most "
        "4096). Memory: every row stores K-max x D float16 values, valid or not",
    )
    g.add_argument(
        "--frames",
        type=positive_int,
        help="frames per clip (default: the backbone's clip length, 1 for frame nets)",
    )
    g.add_argument(
        "--stride",
        type=positive_int,
        default=_D.stride,
        help=f"frame step inside a clip (default: {_D.stride})",
    )
    g.add_argument(
        "--crop",
        type=positive_int,
        help=f"square crop side in px (default: the backbone's input size; {DEMO_CROP} on the demo set)",
    )
    g.add_argument(
        "--short-side", type=positive_int, help="resize the short side to this first (default: crop * 8/7)"
    )
    g.add_argument(
        "--crops",
        choices=("center", "three", "five", "ten"),
        default=_D.crops,
        help=f"crop positions per clip (default: {_D.crops}); K = clips x views",
    )
    g.add_argument(
        "--scales",
        default="",
        metavar="S1,S2",
        help="extra short sides for multi-scale views (default: none)",
    )
    g.add_argument(
        "--decoder",
        choices=DECODERS,
        default=_D.decoder,
        help=f"the video decoder (default: {_D.decoder}); torchcodec where it is installed (pip install "
        "'videofeat[decoders]', with FFmpeg's shared libraries): the same frames at the coded size, resized "
        "ones differ slightly, so a set keeps the decoder it was made with (extract/README.md, Decoders)",
    )
    g = p.add_argument_group("flow (--backbone flow:NAME)")
    g.add_argument(
        "--flow",
        dest="flow_algorithm",
        choices=FLOW_CHOICES,
        default=_D.flow_algorithm,
        help=f"optical flow algorithm, computed in the decode workers (default: {_D.flow_algorithm}). "
        "Per pair at 112 px on one core: farneback ~2 ms, tvl1 ~250 ms (--flow-preset fast ~55 ms), "
        "raft_small ~90 ms (on torch's GPU when --device is cuda); paper: what stands in for the papers' "
        "TV-L1 here (tvl1 fast on a CPU, full tvl1 with OpenCV CUDA or raft_large on a GPU), recorded in "
        "the set's attrs. RAFT uses torchvision's weights from $TORCH_HOME/hub/checkpoints",
    )
    g.add_argument(
        "--flow-bound",
        type=positive_float,
        default=_D.flow_bound,
        help=f"clip flows to +-this many pixels per frame, then scale to [-1, 1] (default: "
        f"{_D.flow_bound:g})",
    )
    add_flow_param_arguments(g)
    g.add_argument(
        "--flow-preset",
        choices=tuple(TVL1_PRESETS),
        default=_D.flow_preset,
        help="TV-L1 parameters: default (OpenCV's) or fast (nscales 3, warps 2, inner 10 x outer 2 "
        "iterations: ~4x the pairs/s, the same motion-probe score; extract/README.md) (default: default)",
    )
    for name in TVL1_PARAMS:
        default = TVL1_PRESETS["default"][f"tvl1_{name}"]
        g.add_argument(
            f"--tvl1-{name.replace('_', '-')}",
            dest=f"tvl1_{name}",
            type=positive_int if isinstance(default, int) else positive_float,
            help=f"TV-L1 {name} (cv2.optflow.DualTVL1OpticalFlow_create's; default: the preset's, {default:g} "
            "in default)",
        )
    g = p.add_argument_group("run")
    g.add_argument(
        "--device",
        choices=DEVICES,
        default=_D.device,
        help=f"where the model runs (default: {_D.device}: CUDA if torch sees a GPU)",
    )
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="autocast on CUDA (default: on with CUDA; never on CPU)",
    )
    g.add_argument(
        "--amp-dtype",
        choices=AMP_DTYPES,
        default=_D.amp_dtype,
        help=f"the autocast type: float16, or bfloat16 on Ampere and newer GPUs (default: {_D.amp_dtype})",
    )
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=_D.batch_size,
        help=f"the most clips per model batch, gathered across videos; --max-memory may take fewer "
        f"(default: {_D.batch_size})",
    )
    g.add_argument(
        "--workers",
        type=non_negative_int,
        help="decode processes; 0 decodes in the main process, between batches (default: fitted to the "
        "decode and model cost measured on the first videos and to the free cores; -v logs the plan)",
    )
    add_threads_argument(
        g,
        help="torch, OpenMP and BLAS threads of the model (default: fitted with --workers to the model's "
        "speed measured on 1 thread and on every core under the machine's load; 1 with CUDA)",
    )
    g.add_argument(
        "--max-memory",
        dest="max_memory_gb",
        type=positive_float,
        default=_D.max_memory_gb,
        metavar="GB",
        help="memory budget of the run's processes together, in GB: the model batch, the queue of "
        f"decoded videos and the decode processes are sized to fit it (default: {_D.max_memory_gb:g})",
    )
    g.add_argument(
        "--timeout",
        dest="timeout_s",
        type=positive_float,
        default=_D.timeout_s,
        help=f"seconds one video may take to decode; a worker past it is killed and the row gets a "
        f"'decode timed out' error (default: {_D.timeout_s:g})",
    )
    g.add_argument(
        "--shard",
        metavar="i/n",
        help="fill only the i-th of n chunk-aligned row ranges (default: all)",
    )
    g.add_argument("--limit", type=positive_int, help="process at most N pending rows (default: all)")
    g.add_argument(
        "--retry-errors", action="store_true", help="also retry rows that failed in an earlier run"
    )
    g.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=_D.chunk_rows,
        help=f"rows per storage chunk of a new feature set (default: {_D.chunk_rows})",
    )
    g.add_argument(
        "--flush-every",
        dest="flush_s",
        type=positive_float,
        default=_D.flush_s,
        help=f"write finished rows at least every this many seconds (default: {_D.flush_s:g})",
    )
    g.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run store.verify on the store at the end (default: on)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    c = p.add_argument_group(
        "on a Dask cluster (extract/README.md, store/cluster.py): tasks are chunk-aligned row ranges; "
        "a worker killed mid-task loses no finished row"
    )
    c.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the tasks on an existing Dask cluster")
    c.add_argument(
        "--cluster",
        choices=CLUSTERS,
        help="start a Dask cluster: local (one worker process per core, or --cluster-workers), cuda (one "
        "worker per GPU, dask-cuda), slurm (dask-jobqueue, from --slurm FILE.toml)",
    )
    c.add_argument("--slurm", metavar="FILE.toml", help="the Slurm cluster of --cluster slurm (store/cluster.py)")
    c.add_argument(
        "--cluster-workers", type=positive_int, help="worker processes of --cluster local (default: one per core)"
    )
    c.add_argument(
        "--task-chunks",
        type=positive_int,
        default=1,
        help="storage chunks (--chunk-rows rows each) per task (default: 1)",
    )
    return p


def _as_list(value) -> list[str]:
    """A repeatable flag's value (None, a string from a config file, or a list)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _choices(args: argparse.Namespace, demo: bool) -> dict:
    """The ExtractSettings fields that say which backbones the run has."""
    names = _as_list(args.backbone) or (list(DEMO_BACKBONES) if demo else [_D.backbone])
    sets = _as_list(args.set_name)
    if sets and len(sets) != len(names):
        raise SettingsError(
            f"--set: give one name per --backbone, in the same order ({len(names)} backbone(s), "
            f"{len(sets)} name(s)), or none for the defaults"
        )
    weights = str(args.weights) if args.weights else None
    if len(names) == 1:
        c = BackboneChoice.parse(names[0], modality=args.modality)
        if c.weights and weights:
            raise SettingsError("--weights and --backbone NAME@PATH both give weights; keep one")
        return {
            "backbone": c.backbone,
            "modality": c.modality,
            "weights": c.weights or weights,
            "set_name": sets[0] if sets else None,
        }
    if weights:
        raise SettingsError(
            "--weights is for a run with one --backbone; with several, give each its "
            "checkpoint as --backbone MODALITY:NAME@PATH"
        )
    return {
        "backbones": tuple(
            BackboneChoice.parse(n, modality=args.modality, set_name=sets[i] if sets else None)
            for i, n in enumerate(names)
        )
    }


def _settings(args: argparse.Namespace, demo: bool) -> ExtractSettings:
    raw = (
        args.scales if isinstance(args.scales, list) else str(args.scales).split(",")
    )  # TOML: a list
    try:
        scales = tuple(int(s) for s in raw if str(s).strip())
    except ValueError:
        raise SettingsError(
            f"--scales must be comma-separated integers, got {args.scales!r}"
        ) from None
    if args.every is not None and args.clips is not None:
        raise SettingsError(f"--every {args.every:g} places a clip every {args.every:g} seconds and --clips "
                            f"{args.clips} a fixed number per video; give one of them (--max-clips caps --every)")
    return ExtractSettings(
        **_choices(args, demo),
        seed=args.seed,
        sampling=args.sampling,
        clips=args.clips or _D.clips,
        every=args.every,
        fps=args.fps,
        max_clips=args.max_clips,
        frames=args.frames,
        stride=args.stride,
        short_side=args.short_side,
        crop=args.crop or (DEMO_CROP if demo else None),
        crops=args.crops,
        scales=scales,
        device=args.device,
        amp=args.amp,
        amp_dtype=args.amp_dtype,
        batch_size=args.batch_size,
        workers=args.workers,
        threads=args.threads,
        max_memory_gb=args.max_memory_gb,
        timeout_s=args.timeout_s,
        chunk_rows=args.chunk_rows,
        flush_s=args.flush_s,
        retry_errors=args.retry_errors,
        limit=args.limit,
        shard=parse_shard(args.shard) if args.shard else None,
        flow_algorithm=args.flow_algorithm,
        flow_bound=args.flow_bound,
        flow_preset=args.flow_preset,
        flow_params=tuple(flow_param_flags(args).items()) + tuple(
            (f"tvl1_{n}", getattr(args, f"tvl1_{n}")) for n in TVL1_PARAMS if getattr(args, f"tvl1_{n}") is not None
        ),
        head_logits=args.head_logits,
        decoder=args.decoder,
    )


def _summary(stats: RunStats, elapsed: float) -> str:
    """The end-of-run report: what was written, what failed and why, how fast."""
    lines = [f"extract: video list read as {stats.list_format}"] if stats.list_format else []
    for name, spec in stats.outputs:
        made = spec.describe_weights()
        lines.append(
            f"extract: {stats.store} features/{name}: K={spec.clips} x D={spec.dim} {spec.dtype}, "
            f"{spec.modality}, backbone {spec.backbone} ({made})"
        )
    reasons = ", ".join(f"{r}: {n}" for r, n in stats.failed_by_reason.most_common())
    notes = "".join(
        f"; {note}: {n} (rows written with an all-False mask, not failures)"
        for note, n in stats.notes.most_common()
    )
    lines.append(
        f"  done {stats.videos_done}, failed {stats.videos_failed}{f' ({reasons})' if reasons else ''}"
        f"{notes}; skipped {stats.skipped_done} already done, {stats.skipped_failed_before} failed "
        f"before (--retry-errors), {stats.outside_shard} outside this shard"
    )
    if stats.planned:
        n, dt = stats.videos_done + stats.videos_failed, max(stats.seconds, 1e-9)
        lines.append(
            f"  {stats.clips} clips from {n} videos in {dt:.1f} s: {n / dt:.2f} videos/s, "
            f"{stats.clips / dt:.1f} clips/s; {stats.decodes_per_video:.2f} decodes per video"
        )
        inputs = ", ".join(
            f"{name} {t:.1f} s" for name, t in zip(stats.producer_sets, stats.make_seconds)
        )
        lines.append(
            f"  {stats.workers} decode worker(s), {stats.threads} model thread(s), batch {stats.batch_size} "
            f"on {stats.device} ({stats.plan['plan']['source']} plan); "
            f"busy: decode {stats.decode_seconds:.1f} s (workers; inputs: {inputs}), "
            f"model {stats.model_seconds:.1f} s, writes {stats.write_seconds:.1f} s ({stats.writes} writes)"
        )
    for run, attrs in stats.predictions.items():
        lines.append(
            f"  predictions/{run}: sigmoid(mean clip logits) of {attrs['backbone']}, "
            f"{attrs['rows_scored']} rows scored, {attrs['missing_rows']} without logits (score 0)"
        )
    lines.append(f"  total {elapsed:.1f} s")
    return "\n".join(lines)


def backbones_table() -> str:
    """``--list-backbones``: every backbone, one line per named weight (``*`` marks the default),
    then well-known weights of the ``timm/`` and ``clip/`` families (examples: any timm model
    or open_clip tag works)."""
    from extract.backbones import list_backbones, list_family_weights, list_weights
    from extract.backbones.hf_hub import hf_cache_dir

    head = ("backbone", "weights (* default)", "aliases", "dataset", "D", "clip", "crop", "cached", "source")
    rows = [head]
    for name in list_backbones():
        entries = list_weights(name)
        for e in entries:
            rows.append((name, e.name + ("*" if e.default else ""), ", ".join(e.aliases), e.dataset,
                         str(e.feature_dim), str(e.clip_len), str(e.transforms.crop_size),
                         "yes" if e.is_cached() else "no", e.url))
        if not entries:
            rows.append((name, "(none: @random or @PATH)", "", "", "", "", "", "", ""))
    family = list_family_weights()
    for r in family:  # the weight is the name's tag (timm) or the @TAG (clip)
        rows.append((r["backbone"], r["weights"] or "(in the name)", "", r["dataset"], str(r["feature_dim"]),
                     str(r["clip_len"]), str(r["crop"]), "yes" if r["cached"] else "no", r["source"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    n = sum(len(list_weights(b)) for b in list_backbones())
    from torch.hub import get_dir

    lines.append(f"{n} named weights; cache: {Path(get_dir()) / 'checkpoints'} (TORCH_HOME)")
    lines.append(f"{len(family)} of the timm/ and clip/ families (any timm model or open_clip tag works); "
                 f"cache: {hf_cache_dir()} (HF_HOME)")
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; returns the exit status."""
    if args.list_backbones:
        print(backbones_table())
        return 0
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from extract.demo import load_demo, make_demo
    from extract.dump import pipeline

    t0 = time.perf_counter()
    demo = args.videos is None
    try:
        settings = _settings(args, demo)
    except ValueError as err:  # a flag value the settings refuse
        raise ExtractError(str(err)) from None
    if settings.amp and settings.resolved_device() != "cuda":
        log.warning("--amp is for CUDA; running in float32 on the CPU")
    if demo:
        try:
            manifest = load_demo(args.demo_dir)
        except DemoError:
            print(f"making the demo set in {args.demo_dir} ...", file=sys.stderr)
            manifest = make_demo(args.demo_dir, progress=not args.quiet)
        source, classes = manifest.videos_csv, manifest.classes_path
    else:
        source, classes = args.videos, args.classes
    if args.scheduler or args.cluster:
        return _run_on_cluster(args, settings, source, classes, t0)
    with logging_redirect_tqdm():
        probe_bar = tqdm(
            desc="reading video headers", unit="video", disable=args.quiet, leave=False
        )
        bar = tqdm(
            desc="extracting", unit="video", disable=args.quiet, dynamic_ncols=True, delay=0.5
        )
        t_run: list[float] = []  # when the first video came back

        def probed(done: int, total: int) -> None:
            probe_bar.total, probe_bar.n = total, done
            probe_bar.update(0)

        def progress(stats: RunStats) -> None:
            bar.total, bar.n = stats.planned, stats.videos_done + stats.videos_failed
            t_run[:] = t_run or [time.perf_counter(), stats.clips]  # the clock starts at the first report
            dt = time.perf_counter() - t_run[0]
            bar.set_postfix(
                clips_s=f"{(stats.clips - t_run[1]) / dt:.1f}" if dt > 0 else "-",
                failed=stats.videos_failed,
                written=stats.rows_written,
                refresh=False,
            )
            bar.update(0)

        try:
            stats = pipeline.extract(
                source,
                args.store,
                settings,
                root=args.root,
                classes=classes,
                list_format=args.list_format,
                kinetics_pattern=args.kinetics_pattern,
                on_probe=probed,
                on_progress=progress,
            )
        finally:
            probe_bar.close()
            bar.close()
    print(_summary(stats, time.perf_counter() - t0))
    if not args.verify:
        return 0
    from store.verify import verify_store

    report = verify_store(stats.store)
    print(
        f"verify: {stats.store}: " + ("OK" if report.ok else f"{len(report.problems)} problem(s)")
    )
    for problem in report.problems:
        print(f"  - {problem}")
    return 0 if report.ok else 1


def _run_on_cluster(args: argparse.Namespace, settings: ExtractSettings, source, classes, t0: float) -> int:
    """``run`` with ``--scheduler`` / ``--cluster``: the tasks on Dask, progress from this client."""
    from tqdm import tqdm

    from extract.dump.cluster import extract_on_cluster
    from store.cluster import SlurmConfig, connect, dashboard_link

    check_choice(args.scheduler, args.cluster, args.slurm)
    if settings.shard is not None:
        raise SettingsError("--shard splits rows between commands you start by hand; with --scheduler/--cluster "
                            "the cluster splits them: drop --shard")
    gpu = settings.device == "cuda" or args.cluster == "cuda" or (
        args.cluster == "slurm" and SlurmConfig.read(args.slurm).gpus)
    with connect(args.scheduler, args.cluster, workers=args.cluster_workers, slurm=args.slurm) as client:
        link = dashboard_link(client)
        print(f"dashboard: {link}" if link else "dashboard unavailable (pip install bokeh)", flush=True)
        bar = tqdm(desc="extracting", unit="video", disable=args.quiet, dynamic_ncols=True, delay=0.5)

        def progress(stats) -> None:
            bar.total, bar.n = stats.planned, stats.done + stats.failed
            bar.set_postfix(workers=len(stats.per_worker), failed=stats.failed, refresh=False)
            bar.update(0)

        try:
            stats = extract_on_cluster(client, source, args.store, settings, root=args.root, classes=classes,
                                       list_format=args.list_format, kinetics_pattern=args.kinetics_pattern,
                                       gpu=gpu, chunks_per_task=args.task_chunks, on_progress=progress)
        finally:
            bar.close()
    rate = (stats.done + stats.failed) / max(stats.seconds, 1e-9)
    print(f"{stats.store}: {stats.done} videos extracted, {stats.failed} failed, in {stats.tasks} task(s) "
          f"({rate:.2f} videos/s, {time.perf_counter() - t0:.1f} s in all)")
    for worker, n in sorted(stats.per_worker.items()):
        print(f"  {worker}: {n} videos")
    if stats.killed_rows:
        print(f"  {len(stats.killed_rows)} video(s) killed their worker twice and got error rows "
              "(python -m store.info STORE --errors)")
    if not args.verify:
        return 0
    from store.verify import verify_store

    report = verify_store(stats.store)
    print(f"verify: {stats.store}: " + ("OK" if report.ok else f"{len(report.problems)} problem(s)"))
    for problem in report.problems:
        print(f"  - {problem}")
    return 0 if report.ok else 1


@run_command(interrupted="finished rows were written; rerun the same command to resume")
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**read_toml_config(parser, known.config))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
