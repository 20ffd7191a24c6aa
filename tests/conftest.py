"""Shared test settings: one torch thread (the CI machine has 2 cores), no GPU assumptions."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
