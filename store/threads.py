"""One thread count for torch, faiss, OpenMP, BLAS and XGBoost: ``--threads`` on every command.

Oversubscription is the costly mistake on a shared machine: with one core busy, a torch
training with 2 threads ran 16x slower than with 1, because OpenMP threads spin waiting for
each other. So every command that runs torch, faiss or xgboost takes ``--threads N`` and sets
all the pools together, and its default is the *free* cores: the cores this process may run
on (its affinity mask) minus the cores other work keeps busy, at least 1, never more than
the affinity count::

    from store.threads import add_threads_argument, set_threads

    add_threads_argument(parser)                 # --threads N (default: the free cores)
    args = parser.parse_args()
    n = set_threads(args.threads)                # None -> free_cores(sample_s=SAMPLE_S); returns the count set

The default measures: the machine's CPU use over :data:`SAMPLE_S` seconds, not the 1-minute
load average, which trails by about a minute (a job that ended a moment ago still counts:
run right after another command, ``heads.knn`` at 1M rows got one thread of an idle 2-core
machine). A command that works meanwhile can count the others' CPU over that work with
:class:`OtherLoad` instead (``extract.run`` does, over its calibration).

XGBoost takes its thread count per call (``nthread``); pass it the value :func:`set_threads`
returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from store.cli import positive_int

log = logging.getLogger(__name__)

_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SAMPLE_S = 0.25  # seconds of CPU use that set_threads(None) measures the free cores over
_T = TypeVar("_T")
_R = TypeVar("_R")
_set_count: int | None = None  # what set_threads last set in this process


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def busy_cores(sample_s: float) -> float:
    """How many of this process's cores other work keeps busy: their CPU use over the next
    ``sample_s`` seconds (the caller sleeps meanwhile), summed over the affinity mask."""
    import psutil

    per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)  # % busy per logical CPU
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        mine = range(len(per_cpu))
    return sum(per_cpu[i] for i in mine if i < len(per_cpu)) / 100


class OtherLoad:
    """How many of this process's cores *other* processes keep busy, from construction on.

    What a command that works meanwhile measures instead of :func:`busy_cores` (which sleeps
    through its sample): the machine's busy CPU time on this process's cores minus this
    process's own (and its waited-for children's), over the wall time since construction.
    ``extract.run`` measures the load over its calibration this way, at no extra time.
    """

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._start = (time.monotonic(), self._machine_busy(), self._own())

    @staticmethod
    def _machine_busy() -> float:
        import psutil

        per_cpu = psutil.cpu_times(percpu=True)
        try:
            mine = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            mine = range(len(per_cpu))
        idle = ("idle", "iowait", "guest", "guest_nice")  # guest time is inside user time already
        return sum(sum(per_cpu[i]) - sum(getattr(per_cpu[i], f, 0.0) for f in idle)
                   for i in mine if i < len(per_cpu))

    def _own(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def busy_cores(self) -> float:
        """Cores other processes used on average since construction (>= 0)."""
        wall = time.monotonic() - self._start[0]
        if wall <= 0:
            return 0.0
        other = (self._machine_busy() - self._start[1]) - (self._own() - self._start[2])
        return max(0.0, other / wall)

    def free_cores(self) -> int:
        """:func:`available_cores` minus the rounded :meth:`busy_cores`, at least 1."""
        cores = available_cores()
        return max(1, min(cores, cores - round(self.busy_cores())))


def free_cores(sample_s: float | None = None) -> int:
    """The cores not busy right now: :func:`available_cores` minus the rounded 1-minute load
    average, between 1 and :func:`available_cores`.

    Args:
        sample_s: measure instead of trusting the load average: :func:`busy_cores` over this
            many seconds. The load average trails by about a minute (a job that just ended
            still counts), which a run that sizes its threads once at its start cannot afford.
    """
    cores = available_cores()
    if sample_s is not None:
        return max(1, min(cores, cores - round(busy_cores(sample_s))))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this OS
        return cores
    return max(1, min(cores, cores - round(load)))


def set_threads(n: int | None = None) -> int:
    """Set torch's, faiss's, every loaded OpenMP/BLAS pool's and child processes' thread counts to ``n``.

    Args:
        n: Threads, >= 1; None = :func:`free_cores` measured over :data:`SAMPLE_S` seconds.

    Returns:
        The count set (hand it to XGBoost as ``nthread``).
    """
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    if n is None:
        n = free_cores(sample_s=SAMPLE_S)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {n!r}")
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(limits=n)  # every OpenMP and BLAS library loaded so far (libgomp, OpenBLAS, MKL)
    for var in _ENV_VARS:  # Dask workers and other child processes start with the same limit
        os.environ[var] = str(n)
    global _set_count
    _set_count = n
    log.info("threads: %d (torch, faiss, OpenMP, BLAS)", n)
    return n


def current_threads() -> int | None:
    """The count :func:`set_threads` last set in this process (a command's ``--threads``), None
    before any call (a library caller that never chose one)."""
    return _set_count


def thread_map(fn: Callable[[_T], _R], items: Iterable[_T], threads: int) -> Iterator[_R]:
    """``map(fn, items)`` over ``threads`` threads, results in the order of ``items``.

    For work that spends its time in numpy or C calls which release the GIL (NumPy on large
    arrays, XGBoost): each item is computed exactly as alone, so a result summed in item order
    is bit-identical whatever ``threads`` is. ``threads`` <= 1 runs in the calling thread. With
    more, BLAS runs one thread per call meanwhile: the items are the parallelism, and BLAS
    threads beside them would oversubscribe the cores (spinning OpenBLAS threads doubled the
    system CPU time of the threaded logistic fit).
    """
    if threads <= 1:
        yield from map(fn, items)
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=threads) as pool:
        yield from pool.map(fn, items)


def add_threads_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *aliases: str,
                         help: str | None = None) -> None:  # noqa: A002 (argparse's own word)
    """Add ``--threads N`` (and old spellings such as ``--n-jobs``) to a command's parser.

    The value lands in ``args.threads`` (None when not given: then :func:`set_threads` uses the
    free cores).
    """
    names = sorted(["--threads", *aliases], key=len)  # argparse names the flags in this order in its errors
    parser.add_argument(*names, dest="threads", type=positive_int, default=None, metavar="N",
                        help=help or ("threads of torch, faiss, OpenMP and BLAS together "
                                      f"(default: the free cores, measured over {SAMPLE_S:g} s when the command "
                                      "starts)"))
