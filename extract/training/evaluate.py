"""Per-video scores on deterministic clips: the mean over a video's clips of the model's logits.

The loader gives batches of whole videos (``extract.training.data.collate_eval``: the clips
of several videos concatenated, with their row numbers and clip counts); the model runs on
chunks of clips, and each video's logits are averaged over its clips.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from extract.backbones import Backbone
from extract.training.modality import ModalityInputs


@torch.no_grad()
def predict_videos(model: Backbone, loader: Iterable[dict[str, Any]], inputs: ModalityInputs, n_videos: int, *,
                   device: torch.device, amp: bool = False, chunk: int = 64) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-video scores: the mean over a video's clips of the model's logits.

    Returns:
        ``(scores (N, C) float32, ok (N,) bool, skipped)``; rows that could not be decoded
        are not ok (their scores are NaN).
    """
    model.eval()
    scores: np.ndarray | None = None
    ok = np.zeros(n_videos, dtype=bool)
    skipped = 0
    for batch in loader:
        skipped += batch["skipped"]
        if batch["x"] is None:
            continue
        x = batch["x"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = torch.cat([model(inputs.to_model(x[i:i + chunk])).float()
                                for i in range(0, len(x), chunk)])  # (sum K, C)
        counts = torch.as_tensor(batch["counts"], device=device)
        owner = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)  # (sum K,)
        sums = torch.zeros(len(counts), logits.shape[1], device=device).index_add_(0, owner, logits)  # (b, C)
        mean = (sums / counts[:, None]).cpu().numpy()  # (b, C)
        if scores is None:
            scores = np.full((n_videos, mean.shape[1]), np.nan, dtype=np.float32)
        scores[batch["rows"]] = mean
        ok[batch["rows"]] = True
    if scores is None:
        scores = np.full((n_videos, model.num_classes or 0), np.nan, dtype=np.float32)
    return scores, ok, skipped
