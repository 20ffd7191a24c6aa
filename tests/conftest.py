"""Shared test settings: one torch thread (the CI machine has 2 cores), no GPU assumptions, no hub:
an empty TORCH_HOME of the session's own and torch.hub downloads that fail loudly."""

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


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path_factory):
    """Tests never reach a hub: TORCH_HOME is an empty folder of the test session (tests that need
    weights fill their own), and a torch.hub download raises instead of going to the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}; fill a temporary TORCH_HOME instead")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
