"""The feature dump as a library: video list -> store rows -> decode workers -> models -> writes.

::

    open_video_list(source, store)          the list, with the store's classes when it has some
    prepare_store(path, videos)             create or extend the store (headers probed in workers;
                                            both live in extract.dump._prepare)
    build_producers(settings, device)       one FeatureProducer per backbone of the run
                                            (rgb / flow / audio, settings.choices())
    extract(source, store, settings)        all of the above and run_extraction, in one call
    run_extraction(fs, targets, producers, settings)
        one FeatureSetJob per producer (extract.dump.jobs) -> a RunPlan of PlannedJobs:
        pending rows (not done in some set, in the shard) -> DecodeTask per video
        DecodePool (processes): ONE decode per video for every producer; each producer's
            maker builds its inputs there (crops, optical flow, log-mel)
                                            --results--> ClipBatcher per producer
        models in this process              --features--> ChunkedRowWriter per feature set
        head logits (settings.head_logits)  --> prediction run <set>_logits at the end

Each video is opened and decoded once for every producer that still needs it
(``RunStats.decodes_per_video`` is 1 with any number of backbones and modalities). A video
that cannot be decoded gets an error row (``write_errors``) in every set that needed it and
the run goes on; a video without audio is not an error: its audio rows are written with an
all-False mask and counted (``RunStats.notes``). Resuming is rerunning: only ``pending()``
rows are processed, per set. ``ExtractSettings.shard = (i, n)`` restricts a run to the i-th
of n chunk-aligned row ranges, so n processes (machines, Dask workers) can fill one store
side by side.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from extract.backbones import DEFAULT, Backbone, BackboneInfo, get_backbone
from extract.dump._assembly import extract_rows
from extract.dump._logits import check_classifier, write_logit_predictions
from extract.dump._prepare import (
    UNLABELLED_CLASSES,
    check_feature_sets,
    fix_max_clips,
    open_video_list,
    prepare_store,
    probe_table,
)
from extract.dump.jobs import PendingSet, PlannedJob, RunPlan, make_jobs
from extract.dump.makers import AudioWindows, FlowClips, RGBClips, audio_input_for
from extract.dump.producers import (
    LOGITS_SUFFIX,
    AudioProducer,
    BackboneProducer,
    FeatureProducer,
    FlowProducer,
    RGBProducer,
)
from extract.dump.settings import BackboneChoice, ExtractSettings, set_name_for
from extract.errors import ExtractError
from extract.media.flow import flow_backend
from extract.media.raft import RAFT_MODELS, raft_weights_file
from extract.media.sampling import ClipSampling
from extract.media.torchcodec_decode import require_torchcodec
from store import FeatureSetSpec, FeatureStore

__all__ = [
    "UNLABELLED_CLASSES",
    "RunStats",
    "build_producers",
    "check_feature_sets",
    "default_set_name",
    "extract",
    "open_video_list",
    "output_set_names",
    "prepare_run",
    "prepare_store",
    "probe_table",
    "run_extraction",
    "timeline",
    "write_logit_predictions",
]

log = logging.getLogger(__name__)

Progress = Callable[["RunStats"], None]
_VIDEO_KINDS = ("frame2d", "clip3d")


# ---------------------------------------------------------------------------- producers
def build_producers(
    settings: ExtractSettings, device: str, *, num_classes: int | None = None
) -> list[FeatureProducer]:
    """One producer per backbone of the run (``settings.choices()``), in order.

    Every backbone is built under ``torch.manual_seed(settings.seed)`` on its own, so a
    random init is the same in every shard, every resume, and whatever other backbones
    share the run. Audio producers follow the run's :func:`timeline`.

    Args:
        settings: the run settings.
        device: ``"cpu"`` or ``"cuda"``.
        num_classes: the store's class count; needed with ``settings.head_logits`` (each
            backbone is then built with a classifier of that size, loaded from its weights).

    Raises:
        ExtractError: unknown backbone, a backbone that does not fit its modality, clips or
            views that do not fit it, weights that do not fit, (``head_logits``) weights
            without a classifier for ``num_classes`` classes, or ``decoder="torchcodec"``
            where torchcodec cannot be imported.
    """
    choices = settings.choices()
    if settings.decoder == "torchcodec":
        require_torchcodec()  # one line saying how to install it, before the store is touched
    try:
        backbones = [_backbone(c, settings, num_classes) for c in choices]
        line = timeline(settings, [b.info for b in backbones], [c.modality for c in choices])
        return [_producer(c, b, settings, device, line) for c, b in zip(choices, backbones)]
    except ValueError as err:  # unknown backbone, clips or views that do not fit it
        if isinstance(err, ExtractError):
            raise
        raise ExtractError(str(err)) from None


def _backbone(
    choice: BackboneChoice, settings: ExtractSettings, num_classes: int | None
) -> Backbone:
    """Build (and load) one backbone; check it fits its modality and, for logits, its classes."""
    where = f"--backbone {choice.modality}:{choice.backbone}"
    if settings.head_logits:
        if choice.weights is None:
            raise ExtractError(
                f"--head-logits needs the weights of a backbone trained by extract.train for "
                f"every backbone; {where} has none (give it as NAME@PATH or --weights PATH)"
            )
        if num_classes is None:
            raise ValueError("build_producers(..., num_classes=C) is needed with head_logits")
    kwargs = {"in_channels": 2} if choice.modality == "flow" else {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            backbone = get_backbone(
                choice.backbone,
                weights=choice.weights or DEFAULT,  # no @: the default weights, never a silent random init
                num_classes=num_classes if settings.head_logits else None,
                **kwargs,
            )
    except ValueError as err:
        if isinstance(err, ExtractError) or "unknown backbone" in str(err):
            raise
        raise ExtractError(f"{where}: {err}") from None
    video = backbone.info.kind in _VIDEO_KINDS
    if video == (choice.modality == "audio"):
        want = (
            "an audio backbone (resnet18_audio, vggish, envnet_v2, ...)"
            if choice.modality == "audio"
            else "a video backbone (resnet18, r2plus1d_18, tsm_resnet50, ...)"
        )
        info = backbone.info
        raise ExtractError(f"{where}: {info.name} is {info.kind}; {choice.modality} needs {want}")
    if settings.head_logits:
        check_classifier(choice.weights, num_classes, backbone.info.feature_dim)
    return backbone


def timeline(
    settings: ExtractSettings, infos: Sequence[BackboneInfo], modalities: Sequence[str]
) -> ClipSampling:
    """The clips every audio set of the run follows: those of its first video backbone
    (``settings.clip_sampling``), else ``settings.sampling or "tsn"`` with
    ``settings.frames or 1`` frames per clip (the timeline of the default TSN RGB set)."""
    for info, modality in zip(infos, modalities):
        if modality != "audio":
            return settings.clip_sampling(info)
    return settings.clip_sampling(None)


def _producer(
    choice: BackboneChoice,
    backbone: Backbone,
    settings: ExtractSettings,
    device: str,
    line: ClipSampling,
) -> BackboneProducer:
    info = backbone.info
    common = {
        "device": device,
        "amp": settings.use_amp(device),
        "amp_dtype": settings.amp_dtype,
        "seed": settings.seed,
        "chunk_rows": settings.chunk_rows,
        "head_logits": settings.head_logits,
    }
    if choice.modality == "audio":
        audio, kind = audio_input_for(info)
        maker = AudioWindows(line, audio, kind, patch_frames=info.clip_len, decoder=settings.decoder)
        return AudioProducer(backbone, maker, **common)
    sampling, view = settings.clip_sampling(info), settings.view_spec(info)
    if choice.modality == "flow":
        flow, why = settings.flow_settings(device, size=view.decode_short_side)
        raft = flow.algorithm in RAFT_MODELS  # torch's device, the run's; OpenCV's own GPU check otherwise
        if raft:
            raft_weights_file(flow.algorithm)  # a missing checkpoint is a user error before the store is touched
        maker = FlowClips(sampling, view, flow, backend=flow_backend(device if raft else "auto", flow.algorithm),
                          choice=why, decoder=settings.decoder)
        return FlowProducer(backbone, maker, **common)
    return RGBProducer(backbone, RGBClips(sampling, view, decoder=settings.decoder), **common)


def default_set_name(producer: FeatureProducer) -> str:
    """``<modality>_<backbone>``, e.g. ``rgb_resnet18`` (:func:`~extract.dump.settings.set_name_for`)."""
    return set_name_for(producer.spec.modality, producer.spec.backbone)


def output_set_names(
    producers: Sequence[FeatureProducer], names: Sequence[str]
) -> list[tuple[str, FeatureSetSpec]]:
    """``(set name, spec)`` of every feature set the producers fill (``names``: one per
    producer; a producer's second output, the logits, is ``<name>__logits``)."""
    return [out for job in make_jobs(producers, names) for out in job.outputs]


def base_set_names(settings: ExtractSettings, producers: Sequence[FeatureProducer]) -> list[str]:
    """One feature set name per producer: the ``--set`` names given, else ``<modality>_<backbone>``."""
    choices = settings.choices()
    if len(choices) == len(producers):
        return [c.set_name or default_set_name(p) for c, p in zip(choices, producers)]
    return [settings.set_name or default_set_name(p) for p in producers]


# ---------------------------------------------------------------------------- the run
@dataclass
class PreparedRun:
    """A run ready to extract: the store's rows made, the models built, the sets' names checked.

    Attributes:
        fs: the store, open writable; ``targets``: the list's rows (index) and their ``path``.
        producers: one per backbone; ``jobs``: their feature sets (``make_jobs``).
        settings: the run's settings with a time-based K-max fixed (``fix_max_clips``).
        num_classes: classes of the list (1 for an unlabelled one); ``list_format``: how it was read.
    """

    fs: FeatureStore
    targets: pd.DataFrame
    producers: list[FeatureProducer]
    jobs: list
    settings: ExtractSettings
    num_classes: int
    list_format: str


def prepare_run(
    source: str | os.PathLike,
    store: str | os.PathLike,
    settings: ExtractSettings,
    *,
    device: str,
    workers: int,
    root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    list_format: str = "auto",
    kinetics_pattern: str | None = None,
    on_probe: Callable[[int, int], None] | None = None,
) -> PreparedRun:
    """Read the list, fix K-max, build the producers on ``device``, check the feature sets and
    create or extend the store (headers probed by ``workers`` processes): what :func:`extract`
    and the cluster client (``extract.dump.cluster``) do before any row is extracted."""
    videos = open_video_list(source, store=store, root=root, classes=classes, list_format=list_format,
                             kinetics_pattern=kinetics_pattern)
    num_classes = len(videos.classes) or len(UNLABELLED_CLASSES)
    probe = {"workers": workers, "timeout_s": settings.timeout_s, "progress": on_probe}
    settings, probed = fix_max_clips(settings, store, videos, **probe)  # time-based K-max
    producers = build_producers(settings, device, num_classes=num_classes)
    jobs = make_jobs(producers, base_set_names(settings, producers))
    check_feature_sets(store, [out for job in jobs for out in job.outputs])
    fs, targets = prepare_store(store, videos, probed=probed, **probe)
    return PreparedRun(fs, targets, producers, jobs, settings, num_classes, videos.format)


def extract(
    source: str | os.PathLike,
    store: str | os.PathLike,
    settings: ExtractSettings,
    *,
    root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    list_format: str = "auto",
    kinetics_pattern: str | None = None,
    on_probe: Callable[[int, int], None] | None = None,
    on_progress: Progress | None = None,
) -> RunStats:
    """The whole dump in one call (what ``python -m extract.run`` does, minus the demo and
    the printing): read the list, build the producers, check the feature sets, prepare the
    store, extract. With ``settings.shard = (i, n)`` it is one of n shard jobs, e.g. one
    Dask task per shard: ``client.map(lambda i: extract(csv, store, replace(s, shard=(i, n))), range(n))``.
    """
    device = settings.resolved_device()
    run = prepare_run(source, store, settings, device=device, workers=settings.parallelism(device)[0], root=root,
                      classes=classes, list_format=list_format, kinetics_pattern=kinetics_pattern, on_probe=on_probe)
    stats = run_extraction(
        run.fs,
        run.targets,
        run.producers,
        run.settings,
        set_names=[job.name for job in run.jobs],
        device=device,
        on_progress=on_progress,
    )
    stats.list_format = run.list_format
    return stats


@dataclass
class RunStats:
    """Counters of one run (live during it, final in the summary).

    ``decode_calls / videos_decoded`` is the number of decodes per video (1: every clip,
    view, modality and feature set comes from one open); ``probe_calls`` counts header-only
    opens. ``notes`` counts videos by what the makers noted (``"no audio track"``: a video
    whose audio rows were written with an all-False mask; ``"silent audio track"``: a track
    of zeros, whose rows are valid features of silence; neither is a failure). ``outputs``
    holds ``(set name, spec)`` of every set filled; ``producer_sets[i]`` and
    ``make_seconds[i]`` belong to job ``i`` (its features' set name, its makers' time in the
    decode workers). ``workers``, ``threads``, ``batch_size`` are the run's resource plan,
    ``plan`` its full record (the plan, the measured costs, the budget: what the feature
    sets' ``extraction`` attrs hold); all empty when nothing was pending.
    """

    planned: int = 0
    videos_done: int = 0
    videos_failed: int = 0
    clips: int = 0
    failed_by_reason: collections.Counter = field(default_factory=collections.Counter)
    notes: collections.Counter = field(default_factory=collections.Counter)
    skipped_done: int = 0
    skipped_failed_before: int = 0
    outside_shard: int = 0
    decode_calls: int = 0
    probe_calls: int = 0
    rows_written: int = 0
    errors_written: int = 0
    writes: int = 0
    decode_seconds: float = 0.0
    make_seconds: list[float] = field(default_factory=list)
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    seconds: float = 0.0
    workers: int = 0
    threads: int = 0
    batch_size: int = 0
    plan: dict = field(default_factory=dict)
    device: str = "cpu"
    store: str = ""
    outputs: list[tuple[str, FeatureSetSpec]] = field(default_factory=list)
    producer_sets: list[str] = field(default_factory=list)
    predictions: dict[str, dict] = field(default_factory=dict)
    list_format: str = ""  # the video list's format (VideoList.format) when extract() read one

    @property
    def set_names(self) -> list[str]:
        """Every feature set the run fills, in ``outputs`` order."""
        return [name for name, _ in self.outputs]

    @property
    def decodes_per_video(self) -> float:
        n = self.videos_done + self.videos_failed
        return self.decode_calls / n if n else 0.0


def run_extraction(
    fs: FeatureStore,
    targets: pd.DataFrame,
    producers: Sequence[FeatureProducer],
    settings: ExtractSettings,
    *,
    set_names: Sequence[str] | None = None,
    device: str = "cpu",
    on_progress: Progress | None = None,
    row_range: tuple[int, int] | None = None,
    logit_runs: bool = True,
) -> RunStats:
    """Extract the pending rows of ``targets`` into the feature sets of every producer.

    Args:
        fs: a store opened writable.
        targets: rows to consider (index) and their ``path``; see :func:`prepare_store`.
        producers: from :func:`build_producers`.
        settings: run settings (batch size, workers, threads, memory budget, shard, limit, ...);
            the resource plan is fitted on the first videos (:mod:`extract.dump.resources`).
        set_names: one feature set name per producer (default: the choice's ``set_name``,
            else :func:`default_set_name`); a producer with head logits also fills
            ``<name>__logits`` and, at the end, the prediction run ``<name>_logits``.
        device: ``"cpu"`` or ``"cuda"`` (where the producers' models are).
        on_progress: called with the live stats after every video and every write.
        row_range: a chunk-aligned ``(start, stop)`` to fill instead of ``settings.shard``'s
            range (one Dask task of ``extract.dump.cluster``); its writers lock only that range.
        logit_runs: write the head-logit prediction runs at the end (a cluster's client does it
            once, after every task, instead).

    Raises:
        FeatureSetExists: a set of that name was made with other settings.
        StoreLocked: another writer holds the feature set (or an overlapping shard).
    """
    names = list(set_names) if set_names is not None else base_set_names(settings, producers)
    jobs = make_jobs(producers, names)
    outputs = [out for job in jobs for out in job.outputs]
    stats = RunStats(
        device=device,
        store=str(fs.path),
        outputs=outputs,
        producer_sets=names,
        make_seconds=[0.0] * len(jobs),
    )
    opened = [[fs.create_feature_set(name, spec) for name, spec in job.outputs] for job in jobs]
    fsets = [f for sets in opened for f in sets]
    rows = np.sort(targets.index.to_numpy(dtype=np.int64))
    shard_rows = row_range
    if shard_rows is None and settings.shard is not None:
        shard_rows = fs.shard_range(*settings.shard, chunk_rows=fsets[0].chunk_rows)
    if shard_rows is not None:
        inside = (rows >= shard_rows[0]) & (rows < shard_rows[1])
        stats.outside_shard = int((~inside).sum())
        rows = rows[inside]
    planned = tuple(
        PlannedJob(job, tuple(PendingSet(f, f.pending(rows, retry_errors=settings.retry_errors)) for f in sets))
        for job, sets in zip(jobs, opened)
    )
    pending = [s.pending for p in planned for s in p.sets]
    todo = np.unique(np.concatenate(pending)) if pending else np.zeros(0, np.int64)
    done_any = np.zeros(fs.n_videos, bool)
    for f in fsets:
        done_any |= f.done()
    stats.skipped_done = int(done_any[rows].sum()) if len(rows) else 0
    stats.skipped_failed_before = len(rows) - stats.skipped_done - len(todo)
    if settings.limit is not None:
        todo = todo[: settings.limit]
    stats.planned = len(todo)
    if len(todo):
        extract_rows(fs, targets["path"], RunPlan(planned, todo, shard_rows), settings, stats, on_progress)
    for job in jobs if logit_runs else ():
        if job.head_logits:
            stats.predictions[f"{job.name}_logits"] = write_logit_predictions(
                fs, job.name, f"{job.name}{LOGITS_SUFFIX}"
            )
    return stats
