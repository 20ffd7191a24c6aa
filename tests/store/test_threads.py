"""store.threads: one thread count for torch, faiss, OpenMP and BLAS; the default never oversubscribes."""

from __future__ import annotations

import argparse
import os

import faiss
import numpy as np  # noqa: F401  (loads the BLAS threadpoolctl must see)
import pytest
import torch
from threadpoolctl import threadpool_info

from store import threads
from store.threads import add_threads_argument, available_cores, free_cores, set_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in threads._ENV_VARS}
    yield
    set_threads(before)
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


def test_default_is_the_free_cores_within_the_affinity(monkeypatch, restore_threads):
    cores = len(os.sched_getaffinity(0))
    assert available_cores() == cores
    for load, expect in [(0.0, cores), (0.4, cores), (cores - 0.6, 1), (10.0 * cores, 1)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert free_cores() == expect
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert set_threads(None) == cores == torch.get_num_threads()


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
