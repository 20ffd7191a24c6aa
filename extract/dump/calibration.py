"""Measuring a run's work on its first videos, for :func:`extract.dump.resources.choose_plan`.

::

    first videos --process_task (main process, one decode thread)--> DecodeResult
        decode_s      = the fastest of them (the first decode of a process also loads codecs)
        for each job, on the clips of its first video:
            one clip with forward hooks     -> the largest activation -> clip_bytes (warm-up too)
            n clips on every free core      -> model_s_all   (n: about CALIBRATION_S of work)
            the same n clips on one thread  -> model_s_one   (only if decode_s > DECODE_SHARE
                                                              x model_s_all; else cores x model_s_all)
    -> WorkCosts

Nothing measured is thrown away: the calibration videos' results go on to the models like
any other (their features come from the normal batches); only the few timed forward passes
are extra work (one clip plus about ``CALIBRATION_S`` seconds per backbone, twice that when
the one-thread pass runs).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from extract.dump.producers import BackboneProducer
from extract.dump.resources import ACTIVATION_FACTOR, WorkCosts
from extract.dump.worker import DecodeResult
from store.threads import set_threads

__all__ = ["CALIBRATION_S", "DECODE_SHARE", "calibrate", "largest_activation", "measure_model"]

log = logging.getLogger(__name__)

#: Seconds of model work timed per thread count and backbone.
CALIBRATION_S = 0.3
#: Decoding below this share of the models' time: the one-thread pass is skipped.
DECODE_SHARE = 0.05


def largest_activation(producer: BackboneProducer, inputs: np.ndarray) -> int:
    """Bytes of the largest tensor a leaf module of the producer's model outputs on ``inputs``."""
    sizes = [0]

    def hook(_module: torch.nn.Module, _args: object, out: object) -> None:
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                sizes.append(o.numel() * o.element_size())

    leaves = [m for m in producer.model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        producer.embed_outputs(inputs)
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def _timed(producer: BackboneProducer, inputs: np.ndarray) -> float:
    t = time.perf_counter()
    producer.embed_outputs(inputs)
    return time.perf_counter() - t


def measure_model(producer: BackboneProducer, inputs: np.ndarray, threads: int) -> tuple[float, int, int]:
    """``(seconds per clip on `threads` threads, clips timed, host bytes per clip in a batch)``.

    One clip runs first with forward hooks (the largest activation; also the warm-up of
    oneDNN's kernels), then about :data:`CALIBRATION_S` seconds of clips are timed.

    Args:
        producer: the model (and its input conversion).
        inputs: ``(K, ...)`` clips of one video as its maker made them.
        threads: torch threads to measure with.
    """
    set_threads(threads)
    t = time.perf_counter()
    biggest = largest_activation(producer, inputs[:1])
    first = time.perf_counter() - t
    n = int(min(len(inputs), max(1, math.ceil(CALIBRATION_S / max(first, 1e-6)))))
    seconds = _timed(producer, inputs[:n]) / n
    clip_in = inputs[:1].nbytes
    if producer.device.type == "cuda":  # activations live on the GPU; the host holds inputs (+ pinned copy)
        return seconds, n, 2 * clip_in
    return seconds, n, int(ACTIVATION_FACTOR * biggest) + clip_in


def calibrate(results: Sequence[DecodeResult], producers: Sequence[BackboneProducer],
              cores: int) -> WorkCosts | None:
    """The run's :class:`WorkCosts` from its first decoded videos (None if all failed).

    The models are timed on ``cores`` threads, and again on one thread only when decoding
    costs more than :data:`DECODE_SHARE` of the models' time: below that, no split with
    decode processes can beat decoding between batches by more than that share, and perfect
    scaling is recorded (``model_s_one = cores x model_s_all``, the case least favourable to
    decode processes), which saves a slow one-thread pass of a costly model.

    Args:
        results: the first videos, decoded in this process (``DecodeResult.seconds`` timed).
        producers: job ``i``'s producer is ``producers[i]`` (``DecodeResult.makers`` index them).
        cores: the free cores the models may use.
    """
    good = [r for r in results if not r.error]
    if not good:
        return None
    first: dict[int, np.ndarray] = {}
    for res in good:
        for i, item in zip(res.makers, res.inputs):
            first.setdefault(i, item.inputs)
    decode_s = min(r.seconds for r in good)
    timed = {i: measure_model(producers[i], x, cores) for i, x in sorted(first.items())}
    s_all = sum(timed[i][0] * len(x) for i, x in first.items())
    s_one = cores * s_all
    if cores > 1 and decode_s > DECODE_SHARE * s_all:
        set_threads(1)
        s_one = sum(_timed(producers[i], x[: timed[i][1]]) / timed[i][1] * len(x) for i, x in first.items())
        set_threads(cores)
    costs = WorkCosts(
        decode_s=decode_s,
        model_s_all=s_all,
        model_s_one=s_one,
        cores=cores,
        clip_bytes=max(t[2] for t in timed.values()),
        input_bytes=max(x[:1].nbytes for x in first.values()),
        clips_per_video=min(len(x) for x in first.values()),
        model_bytes=sum(t.numel() * t.element_size() for p in producers
                        for t in (*p.model.parameters(), *p.model.buffers())),
    )
    log.info("measured per video: decode %.3f s, models %.3f s on %d thread(s), %.3f s on 1; %.1f MB per clip",
             costs.decode_s, s_all, cores, s_one, costs.clip_bytes / 2**20)
    return costs
