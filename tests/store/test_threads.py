"""store.threads: one thread count for torch, faiss, OpenMP and BLAS; the default never oversubscribes."""

from __future__ import annotations

import argparse
import collections
import os

import faiss
import numpy as np  # noqa: F401  (loads the BLAS threadpoolctl must see)
import pytest
import torch
from threadpoolctl import threadpool_info

from store import threads
from store.threads import add_threads_argument, available_cores, current_threads, free_cores, set_threads, thread_map


@pytest.fixture
def restore_threads():
    before, count = torch.get_num_threads(), threads._set_count
    env = {k: os.environ.get(k) for k in threads._ENV_VARS}
    yield
    set_threads(before)
    threads._set_count = count
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("n", [1, 3])
def test_set_threads_sets_every_library(n, restore_threads):
    assert set_threads(n) == n
    assert torch.get_num_threads() == n
    assert faiss.omp_get_max_threads() == n
    pools = threadpool_info()
    assert pools, "threadpoolctl sees no OpenMP/BLAS library"
    assert all(p["num_threads"] == n for p in pools), pools
    assert all(os.environ[k] == str(n) for k in threads._ENV_VARS)
    assert current_threads() == n


def test_current_threads_is_none_until_a_command_sets_them(monkeypatch):
    monkeypatch.setattr(threads, "_set_count", None)
    assert current_threads() is None


@pytest.mark.parametrize("n", [1, 3])
def test_thread_map_keeps_the_order_of_the_items(n):
    import threading
    import time

    seen = set()

    def slow_first(i: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.05 if i == 0 else 0)  # the first item finishes last
        return i * i

    assert list(thread_map(slow_first, range(7), n)) == [i * i for i in range(7)]
    assert (seen == {threading.get_ident()}) == (n == 1)  # one thread: the caller's own


def test_default_is_the_free_cores_within_the_affinity(monkeypatch, restore_threads):
    cores = len(os.sched_getaffinity(0))
    assert available_cores() == cores
    for load, expect in [(0.0, cores), (0.4, cores), (cores - 0.6, 1), (10.0 * cores, 1)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert free_cores() == expect


def test_the_default_measures_the_cpu_instead_of_the_trailing_load_average(monkeypatch, restore_threads):
    """A job that just ended still holds the load average up: the default samples the CPU instead."""
    import psutil

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # the trailing average says "all busy"
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [2.0, 1.0])  # idle now
    assert set_threads(None) == 2 == torch.get_num_threads()
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [100.0, 3.0])  # one core busy now
    assert set_threads(None) == 1 == torch.get_num_threads()


def test_sampled_free_cores_count_the_busy_cpus_of_the_affinity(monkeypatch):
    import psutil

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})  # two of four CPUs are ours
    for per_cpu, expect in [([0, 100, 3, 100], 2), ([100, 0, 4, 0], 1), ([100, 0, 90, 0], 1), ([40, 100, 30, 100], 1),
                            ([20, 100, 20, 100], 2)]:
        monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu, v=per_cpu: v)
        assert threads.busy_cores(0.1) == pytest.approx((per_cpu[0] + per_cpu[2]) / 100)
        assert free_cores(sample_s=0.1) == expect  # 2 - round(busy), at least 1
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # the load average is not asked
    assert free_cores(sample_s=0.1) == 2


def test_other_load_counts_the_machine_s_busy_cpu_minus_this_process_s(monkeypatch):
    import psutil

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})  # two of four CPUs are ours
    cpu = collections.namedtuple("scputimes", "user system idle iowait guest")
    ticks = iter([
        # start: per CPU (user, system, idle, iowait, guest); guest time is inside user time
        [cpu(10, 5, 100, 1, 4), cpu(50, 0, 0, 0, 0), cpu(20, 0, 50, 0, 0), cpu(50, 0, 0, 0, 0)],
        # 2 s later: CPUs 0 and 2 ran 1.5 + 1.5 s more (CPUs 1 and 3 are not ours)
        [cpu(11, 5.5, 100.5, 1, 4.5), cpu(90, 0, 0, 0, 0), cpu(21.5, 0, 50.5, 0, 0), cpu(90, 0, 0, 0, 0)],
    ])
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: next(ticks))
    own = iter([(1.0, 0.0, 0.0, 0.0), (1.8, 0.2, 0.0, 0.0)])  # this process: 1 s of the 3
    proc = collections.namedtuple("pcputimes", "user system children_user children_system")
    monkeypatch.setattr(psutil.Process, "cpu_times", lambda self: proc(*next(own)))
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    load = threads.OtherLoad()
    assert load.busy_cores() == pytest.approx((3.0 - 1.0) / 2.0)  # one core's worth of other work
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(load, "busy_cores", lambda: 1.0)
    assert load.free_cores() == 1
    monkeypatch.setattr(load, "busy_cores", lambda: 0.4)
    assert load.free_cores() == 2
    monkeypatch.setattr(load, "busy_cores", lambda: 5.0)
    assert load.free_cores() == 1  # never below one


def test_bad_counts_are_refused():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            set_threads(bad)


def test_argument_and_aliases():
    p = argparse.ArgumentParser()
    add_threads_argument(p, "--n-jobs")
    assert p.parse_args([]).threads is None
    assert p.parse_args(["--threads", "2"]).threads == 2
    assert p.parse_args(["--n-jobs", "3"]).threads == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--threads", "0"])
