"""Measuring a run's work on its first videos, for :func:`extract.dump.resources.choose_plan`.

::

    first videos --process_task (main process, one decode thread)--> queued for the models
        decode_s      = the fastest of them (the first decode of a process also loads codecs)
        for each job, on its first queued clips (real work: their features are kept):
            1 clip with forward hooks, every core -> the largest activation -> clip_bytes,
                                                     and a first model_s_all (with oneDNN's warm-up)
        busy          = the other processes' CPU meanwhile (store.threads.OtherLoad)
        idle (busy < BUSY_CORE):
            decode_s <= DECODE_SHARE x model_s_all: nothing more (model_s_one = cores x model_s_all)
            else:
              n clips on every core           -> model_s_all   (n: about CALIBRATION_S of work)
              the next n clips on one thread  -> model_s_one
              the next n on every core again  -> model_s_all (now on a batch shape oneDNN knows)
        a core busy (more threads may stall each other: no long pass on them):
            1 clip on one thread            -> model_s_one
            1 clip on every core            -> model_s_all (the faster of it and the hook clip)
        --threads given (only their time is used): nothing more (model_s_one = cores x model_s_all)
    -> WorkCosts

Every pass of a single clip costs more per clip than the run's batches do (R(2+1)D-18: about
twice the CPU per clip at batch 1 as at batch 8), and a clip on one thread about twice the
wall time of one on two: so a 3D model on an idle machine runs one clip alone (the hook clip),
on a busy one three, and every other clip in the plan's batches.

Nothing measured is thrown away: the timed clips are the run's own first clips (``run``
pushes them through the model and keeps their features, like any batch), so calibrating
costs no extra model work unless the first videos have fewer clips than the passes need
(then the one-thread pass times the first clips again).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from extract.dump.producers import BackboneProducer
from extract.dump.resources import ACTIVATION_FACTOR, WorkCosts
from extract.dump.worker import DecodeResult
from store.threads import set_threads

__all__ = ["BUSY_CORE", "CALIBRATION_S", "DECODE_SHARE", "calibrate", "largest_activation"]

log = logging.getLogger(__name__)

#: Seconds of model work timed per thread count and backbone.
CALIBRATION_S = 0.3
#: Decoding below this share of the models' time: the one-thread pass is skipped ...
DECODE_SHARE = 0.05
#: ... unless other processes keep at least this many cores busy (then more threads may be slower).
BUSY_CORE = 0.5

#: ``run(job, n)``: push the next ``n`` queued clips of job ``job`` through its model, keeping
#: their features; returns the clips it ran (fewer when fewer are queued).
RunClips = Callable[[int, int], int]


def largest_activation(model: torch.nn.Module, forward: Callable[[], object]) -> int:
    """Bytes of the largest tensor a leaf module of ``model`` outputs while ``forward()`` runs."""
    sizes = [0]

    def hook(_module: torch.nn.Module, _args: object, out: object) -> None:
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                sizes.append(o.numel() * o.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def _timed_clips(run: RunClips, i: int, n: int, inputs: np.ndarray, producer: BackboneProducer) -> float:
    """Seconds per clip of the next ``n`` queued clips of job ``i``; once its queue is used up,
    of the first ``n`` of ``inputs`` again (work thrown away: only when the first videos are short)."""
    t = time.perf_counter()
    ran = run(i, n)
    if not ran:
        ran = min(n, len(inputs))
        t = time.perf_counter()
        producer.embed_outputs(inputs[:ran])
    return (time.perf_counter() - t) / ran


def _hook_pass(i: int, producer: BackboneProducer, inputs: np.ndarray, run: RunClips) -> tuple[float, int]:
    """``(seconds, host bytes per clip in a batch)``: job ``i``'s next clip with forward hooks
    (the largest activation; also oneDNN's warm-up)."""
    t = time.perf_counter()
    biggest = largest_activation(producer.model, lambda: run(i, 1))
    seconds = time.perf_counter() - t
    clip_in = inputs[:1].nbytes
    if producer.device.type == "cuda":  # activations live on the GPU; the host holds inputs (+ pinned copy)
        return seconds, 2 * clip_in
    return seconds, int(ACTIVATION_FACTOR * biggest) + clip_in


def calibrate(results: Sequence[DecodeResult], producers: Sequence[BackboneProducer], threads: int,
              run: RunClips, busy: Callable[[], float], *, one_thread: bool = True) -> WorkCosts | None:
    """The run's :class:`WorkCosts` from its first decoded videos (None if all failed).

    The models are timed on ``threads`` threads and on one thread when other processes keep
    :data:`BUSY_CORE` or more busy (``busy()``, measured while the first videos decoded and their hook clips ran: then
    more threads may well be slower) or decoding costs more than :data:`DECODE_SHARE` of the
    models' time. Otherwise no split with decode processes can beat decoding between batches
    by more than that share, and perfect scaling is recorded (``model_s_one = threads x
    model_s_all``, the case least favourable to decode processes).

    Args:
        results: the first videos, decoded in this process (``DecodeResult.seconds`` timed)
            and already queued for the models (``run`` takes its clips from that queue).
        producers: job ``i``'s producer is ``producers[i]`` (``DecodeResult.makers`` index them).
        threads: the threads to measure with: every core the process may use.
        run: pushes a job's next queued clips through its model (features kept).
        busy: cores other processes kept busy so far (:meth:`store.threads.OtherLoad.busy_cores`).
        one_thread: whether a one-thread time can matter; False when ``--threads`` fixes the
            threads (the plan then only uses ``threads``' time): no one-thread pass runs.
    """
    good = [r for r in results if not r.error]
    if not good:
        return None
    first: dict[int, np.ndarray] = {}
    for res in good:
        for i, item in zip(res.makers, res.inputs):
            if len(item.inputs):
                first.setdefault(i, item.inputs)
    if not first:  # nothing valid to time (e.g. audio sets of videos without a track)
        return None
    decode_s = min(r.seconds for r in good)
    per_job = {i: [len(item.inputs) for r in good for j, item in zip(r.makers, r.inputs) if j == i] for i in first}
    clips = {i: min(k) for i, k in per_job.items()}
    jobs = sorted(first)
    set_threads(threads)  # the hook clips on every thread: the first all-thread time too (one clip is short)
    hooked = {i: _hook_pass(i, producers[i], first[i], run) for i in jobs}
    s_all = sum(hooked[i][0] * clips[i] for i in jobs)
    s_one = threads * s_all
    measured = threads == 1
    one_thread = one_thread and threads > 1  # --threads given: the hook clip ran on them; nothing more to time
    if one_thread and busy() >= BUSY_CORE:
        # a core is busy: more threads may stall each other (a frame model's OpenMP threads ran
        # 3-10x slower per clip), so no long pass on them: one clip on a single thread, then every
        # thread again (the first clip on a new thread count also starts its thread pool): all on
        # the batch shape the hook clip built, the faster all-thread time kept
        set_threads(1)
        s_one = sum(_timed_clips(run, i, 1, first[i], producers[i]) * clips[i] for i in jobs)
        set_threads(threads)
        s_all = min(s_all, sum(_timed_clips(run, i, 1, first[i], producers[i]) * clips[i] for i in jobs))
        measured = True
    elif one_thread and decode_s > DECODE_SHARE * s_all:
        n = {i: int(max(1, min(len(first[i]), math.ceil(CALIBRATION_S / max(hooked[i][0], 1e-6)),
                               (sum(per_job[i]) - 1) // 3))) for i in jobs}
        s_all = sum(_timed_clips(run, i, n[i], first[i], producers[i]) * clips[i] for i in jobs)
        s_one = threads * s_all
        if decode_s > DECODE_SHARE * s_all:
            # one thread, then every thread again: both on a batch shape oneDNN has seen (the first
            # timed pass of a new shape also builds its kernels)
            set_threads(1)
            s_one = sum(_timed_clips(run, i, n[i], first[i], producers[i]) * clips[i] for i in jobs)
            set_threads(threads)
            s_all = sum(_timed_clips(run, i, n[i], first[i], producers[i]) * clips[i] for i in jobs)
            measured = True
    costs = WorkCosts(
        decode_s=decode_s,
        model_s_all=s_all,
        model_s_one=s_one,
        cores=threads,
        clip_bytes=max(h[1] for h in hooked.values()),
        input_bytes=max(x[:1].nbytes for x in first.values()),
        clips_per_video=min(clips.values()),
        model_bytes=sum(t.numel() * t.element_size() for p in producers
                        for t in (*p.model.parameters(), *p.model.buffers())),
        one_thread_measured=measured,
    )
    log.info("measured per video: decode %.3f s, models %.3f s on %d thread(s), %.3f s on 1%s; %.1f MB per clip",
             costs.decode_s, s_all, threads, s_one, "" if costs.one_thread_measured else " (assumed)",
             costs.clip_bytes / 2**20)
    return costs
