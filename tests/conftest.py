"""Shared test settings: one torch thread (the CI machine has 2 cores), no GPU assumptions."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_START_ENV = {k: os.environ.get(k) for k in _ENV}


@pytest.fixture(autouse=True)
def _one_thread_again():
    """Commands run in-process set their --threads (default: the free cores) for the whole
    process (store.threads.set_threads): put one torch thread and the environment back after each test."""
    yield
    if torch.get_num_threads() != 1 or any(os.environ.get(k) != v for k, v in _START_ENV.items()):
        from store.threads import set_threads

        set_threads(1)
        for k, v in _START_ENV.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
