"""The run's resource plan: decode processes, model threads, batch size and queue bound,
fitted to the measured work, the free cores and a memory budget.

::

    WorkCosts (measured on the first videos, extract.dump.calibration)
      decode_s          seconds to decode one video and make its inputs, one thread
      model_s_all       seconds of every model on one video's clips, with all `cores` threads
                        (this process's cores, busy or not: measured under the load there is)
      model_s_one       the same with one thread
      clip_bytes        memory one clip costs in a model batch (activations + its input)
      input_bytes       memory of one clip's decoded input (what a queued result holds)
    + free cores + MemoryBudget (--max-memory, the process's resident memory now)
      -> choose_plan -> ResourcePlan(workers, threads, batch_size, max_ahead)

A decode process and the model run side by side, so with ``w`` processes and ``t`` threads
a video takes ``max(decode_s / w, model_s(t))``, slowed by ``free / (w + t)`` when that
oversubscribes the free cores; decoding in the main process (``w = 0``) runs between
batches and lets the model have every thread: ``decode_s + model_s(t)``. The model's time
on ``t`` threads is measured at 1 and at every core of the process *under the load there
is*, in between it follows Amdahl's law (:func:`model_seconds`). So ``t`` ranges over every
core, not only the free ones: with a core busy, a 3D model's two threads still beat one
(measured on the 2-core machines: 1.5 against 0.7 clips/s), while a frame model's OpenMP
threads stall each other and one thread wins; the measurement tells which. Every split is
scored and the fastest kept (ties, within 1%: fewer processes, then fewer threads); the
plan's ``reason`` says what it was chosen over. On the 2-core machines this gives the 3D
model both cores and in-process decoding (decode ~20 ms, model seconds per video), and a
cheap model with a slow decode a decode process.

The budget bounds the run's resident memory: the process as it is (freed heap handed back first; interpreter, torch,
weights), plus a second copy of the weights (oneDNN reorders them per batch shape), plus
``w`` decode processes and their fork server (:data:`WORKER_BYTES` each), plus the batch
(``batch_size x clip_bytes``), plus the decoded inputs of that batch and of the videos
queued behind it (``max_ahead`` videos, about two batches). The batch is the largest that fits, at most the
requested ``--batch-size``; a budget too small for one clip still runs (batch 1) with a
warning. ``--workers`` / ``--threads`` fix their part of the plan; the rest is still fitted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from extract.dump.settings import default_parallelism

__all__ = [
    "ACTIVATION_FACTOR",
    "FORK_SERVER_BYTES",
    "WORKER_BYTES",
    "MemoryBudget",
    "ResourcePlan",
    "WorkCosts",
    "choose_plan",
    "model_seconds",
]

#: Private memory of one decode process (PyAV buffers, the needed frames, its inputs).
WORKER_BYTES = 256 * 2**20
#: The fork server the decode processes start from: its own interpreter with torch imported
#: (measured: a run's peak grows by ~0.4 GB when it is running).
FORK_SERVER_BYTES = 512 * 2**20
#: Peak model memory per clip / the largest single activation of that clip. Measured on CPU
#: (ru_maxrss after batches of 1, 2, 4, 8 clips): R(2+1)D-18 at 16 x 112 x 112 adds 107-129 MB
#: per clip on 2 threads and 144 MB on 1 thread; its largest activation is 27.6 MB (3.9-5.2x).
#: The rest is the other live tensors (residual, normalised input, oneDNN buffers).
ACTIVATION_FACTOR = 5.5
_GB = 2**30
_ASSUMED = " (not measured: decode is cheap or --threads given; perfect scaling assumed)"


@dataclass(frozen=True)
class WorkCosts:
    """What one video costs, measured on the first videos of a run.

    Attributes:
        decode_s: seconds to decode one video and make every job's inputs, one thread.
        model_s_all: seconds of every model on one video's clips with ``cores`` threads.
        model_s_one: the same with one thread (equal to ``model_s_all`` when ``cores`` is 1).
        cores: the threads ``model_s_all`` was measured with.
        clip_bytes: host memory one clip adds to a model batch (largest over the jobs).
        input_bytes: memory of one clip's model input as decoded (largest over the jobs).
        clips_per_video: K, clips one video adds to a batch (smallest over the jobs).
        model_bytes: the models' parameters and buffers: reserved once more, for the copy
            of the weights oneDNN reorders for a batch shape it has not seen (measured: the
            first batch of a new size adds about the weights' size to R(2+1)D-18's peak).
        one_thread_measured: ``model_s_one`` was timed (else it is ``cores x model_s_all``,
            perfect scaling, recorded when decoding is too cheap for the split to matter and
            the machine was not busy, or when ``--threads`` fixes the threads).
    """

    decode_s: float
    model_s_all: float
    model_s_one: float
    cores: int
    clip_bytes: int
    input_bytes: int
    clips_per_video: int
    model_bytes: int = 0
    one_thread_measured: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a run may use (bytes) and what it uses before its first batch.

    Attributes:
        max_bytes: ``--max-memory``: the run's processes together.
        base_bytes: the main process's resident memory now (interpreter, torch, weights).
        worker_bytes: one decode process.
        server_bytes: the fork server of the decode processes (when there are any).
    """

    max_bytes: int
    base_bytes: int
    worker_bytes: int = WORKER_BYTES
    server_bytes: int = FORK_SERVER_BYTES


@dataclass(frozen=True)
class ResourcePlan:
    """How a run uses the machine (recorded in the log line and the feature sets' attrs).

    Attributes:
        workers: decode processes (0: decode in the main process, between batches).
        threads: torch / OpenMP / BLAS threads of the models.
        batch_size: clips per model batch.
        max_ahead: decoded videos allowed to wait for the models (the queue bound).
        cores: the free cores the plan was made for.
        reason: why this plan: the costs it rests on and the next best split.
        source: ``measured`` (fitted to :class:`WorkCosts`), ``given`` (``--workers`` and
            ``--threads`` both set) or ``default`` (nothing could be measured).
        videos_per_s: the throughput the cost model expects (0 when not measured).
        peak_bytes: the memory the plan expects at most.
        fits: whether ``peak_bytes`` is within the budget.
    """

    workers: int
    threads: int
    batch_size: int
    max_ahead: int
    cores: int
    source: str
    reason: str = ""
    videos_per_s: float = 0.0
    peak_bytes: int = 0
    fits: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: ``plan (measured): 0 decode processes (decode in the main process), ...``."""
        decode = "decode in the main process" if self.workers == 0 else f"{self.workers} decode process(es)"
        speed = f", ~{self.videos_per_s:.2f} videos/s expected" if self.videos_per_s else ""
        return (f"plan ({self.source}): {decode}, {self.threads} model thread(s), batch {self.batch_size}, "
                f"<= {self.max_ahead} videos queued, {self.cores} free core(s); "
                f"peak ~{self.peak_bytes / _GB:.2f} GB{'' if self.fits else ' (over --max-memory)'}{speed}"
                + (f"; {self.reason}" if self.reason else ""))


def model_seconds(costs: WorkCosts, threads: int) -> float:
    """The models' seconds per video on ``threads`` threads: the measured points at 1 and
    ``costs.cores`` threads as they are (more threads may be slower on a busy machine), Amdahl's
    law through them in between; more threads than measured give no further gain."""
    one, n = costs.model_s_one, costs.cores
    if threads <= 1 or one <= 0:
        return one
    if threads >= n:
        return costs.model_s_all
    parallel = min(1.0, max(0.0, (1 - costs.model_s_all / one) / (1 - 1 / n)))  # Amdahl's p
    t = min(threads, n)
    return one * ((1 - parallel) + parallel / t)


def _videos_per_s(costs: WorkCosts, workers: int, threads: int, cores: int) -> float:
    """Expected videos/s; the model's times were measured under the machine's load, so only
    the decode processes we add count against the free ``cores``."""
    model = model_seconds(costs, threads)
    if workers == 0:
        return 1 / max(costs.decode_s + model, 1e-9)
    rate = min(workers / max(costs.decode_s, 1e-9), 1 / max(model, 1e-9))
    return rate * min(1.0, cores / (workers + threads))  # oversubscribed cores stall OpenMP


def _split(workers: int, threads: int) -> str:
    decode = "in-process decode" if workers == 0 else f"{workers} decode process(es)"
    return f"{decode} + {threads} thread(s)"


def _memory(costs: WorkCosts, budget: MemoryBudget, workers: int, max_batch: int) -> tuple[int, int, int]:
    """``(batch_size, max_ahead, peak bytes)`` for ``workers`` decode processes: the largest
    batch whose clips, and about two batches of decoded inputs queued behind it, fit beside
    the processes."""
    processes = budget.server_bytes + workers * budget.worker_bytes if workers else 0
    fixed = budget.base_bytes + costs.model_bytes + processes
    k = max(1, costs.clips_per_video)

    def plan(batch: int) -> tuple[int, int, int]:
        max_ahead = max(1, 2 * workers, math.ceil(2 * batch / k))
        peak = fixed + batch * costs.clip_bytes + (max_ahead * k + batch) * costs.input_bytes
        return batch, max_ahead, int(peak)

    per_clip = costs.clip_bytes + 3 * costs.input_bytes  # in the batch + two batches queued
    batch = int(max(1, min(max_batch, (budget.max_bytes - fixed) // max(per_clip, 1))))
    while batch > 1 and plan(batch)[2] > budget.max_bytes:  # rounding of the queue to whole videos
        batch -= 1
    return plan(batch)


def choose_plan(costs: WorkCosts | None, cores: int, budget: MemoryBudget, *, max_batch: int,
                device: str = "cpu", workers: int | None = None, threads: int | None = None) -> ResourcePlan:
    """The fastest plan for the measured costs that fits the memory budget.

    Args:
        costs: measured on the first videos; None when none could be measured (every first
            video failed): then the old fixed rule (:func:`extract.dump.settings.default_parallelism`)
            with ``max_batch``.
        cores: free cores (:class:`store.threads.OtherLoad` over the calibration), >= 1: they
            bound the decode processes; the model may take up to ``costs.cores`` threads, as
            measured.
        budget: the memory budget.
        max_batch: ``--batch-size``, the largest batch allowed.
        device: ``cpu`` or ``cuda``; with CUDA the models take one thread and every other core
            may decode (the activations live on the GPU; ``costs.clip_bytes`` is host memory only).
        workers: ``--workers`` if given (fixes the decode processes).
        threads: ``--threads`` if given (fixes the model threads).

    Returns:
        The plan; ``fits`` is False when even a batch of one clip is over the budget.
    """
    cores = max(1, int(cores))
    if costs is None:
        w, t = default_parallelism(device, cores)
        w, t = (w if workers is None else workers), (t if threads is None else threads)
        return ResourcePlan(w, t, max_batch, max(8, 2 * w), cores, "default")
    candidates = []
    for w in ([workers] if workers is not None else range(cores if device == "cpu" else max(2, cores))):
        if threads is not None:
            options = [threads]
        elif device == "cuda":
            options = [1]
        else:  # every thread count the process's cores allow: the measurement says what a busy core costs
            options = list(range(1, max(1, costs.cores - w) + 1))
        for t in options:
            if workers is None and threads is not None and w and w + t > cores:
                continue  # never oversubscribe on our own choice
            candidates.append((w, t))
    scored = []
    for w, t in candidates:
        batch, ahead, peak = _memory(costs, budget, w, max_batch)
        fits = peak <= budget.max_bytes
        # fitting first, then throughput (to 1%: noise), then fewer processes and threads, then the bigger batch
        rate = _videos_per_s(costs, w, t, cores)
        scored.append(((fits, round(math.log(max(rate, 1e-12)) / math.log(1.01)), -w, -t, batch),
                       ResourcePlan(w, t, batch, ahead, cores, "measured", "", rate, peak, fits)))
    scored.sort(key=lambda s: s[0], reverse=True)
    best = scored[0][1]
    reason = (f"model {costs.model_s_all:.3g} s/video on {costs.cores} thread(s), {costs.model_s_one:.3g} s on 1"
              f"{'' if costs.one_thread_measured else _ASSUMED}"
              f", decode {costs.decode_s:.3g} s")
    if len(scored) > 1:
        nxt = scored[1][1]
        reason += f"; next best {_split(nxt.workers, nxt.threads)} ~{nxt.videos_per_s:.3g} videos/s"
    best = dataclasses.replace(best, reason=reason)
    if workers is not None and threads is not None:
        best = dataclasses.replace(best, source="given")
    return best

