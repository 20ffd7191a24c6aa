"""RAFT optical flow (torchvision ``raft_small`` / ``raft_large``), batched over frame pairs.

The learned alternative to TV-L1 (Teed & Deng 2020): on a GPU it is both faster and more
accurate; on a CPU ``raft_small`` is still usable at demo sizes. :func:`raft_pair_flows`
returns the same thing as OpenCV's estimators in :mod:`extract.media.flow`: pixels per
frame, channel 0 = x (right), 1 = y (down), ``frame_a(y, x) ~ frame_b(y + fy, x + fx)``,
so the clip to ``bound`` and the scaling to [-1, 1] that follow are the same for every
method.

* **Input.** RGB frames (RAFT is trained on colour), resized with ``cv2.INTER_AREA`` to the
  flow's short side like the gray frames of the OpenCV methods, scaled to [-1, 1] and
  padded (edge replicate) to a multiple of 8 of at least :data:`MIN_SIDE` pixels (RAFT's
  four-level correlation pyramid works at 1/8 of the input); the flow is cropped back.
* **Weights.** torchvision's default checkpoints (``Raft_Small_Weights.DEFAULT``,
  ``Raft_Large_Weights.DEFAULT``), read from torch.hub's cache,
  ``$TORCH_HOME/hub/checkpoints/<file>``, and downloaded there on first use. Offline and
  not cached, loading fails with one :class:`~extract.media.flow.FlowUnavailableError` line
  that names the file and where to put it.
* **Device.** ``"cpu"`` or ``"cuda"`` (:func:`store.device.resolve_device`); on CUDA the
  model runs in float32 (RAFT's iterative refinement drifts in float16).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import optical_flow

from extract.errors import ExtractError
from extract.media.transforms import short_side_size

log = logging.getLogger(__name__)

#: flow algorithm name -> torchvision weights enum (its ``DEFAULT`` is used).
RAFT_MODELS = {
    "raft_small": (optical_flow.raft_small, optical_flow.Raft_Small_Weights),
    "raft_large": (optical_flow.raft_large, optical_flow.Raft_Large_Weights),
}
MIN_SIDE = 128  # torchvision: feature maps (1/8 of the input) of at least 16 px for the correlation pyramid
#: frame pairs per forward pass (what the benchmark found to fill a CPU; a GPU takes more).
DEFAULT_BATCH = 8


class RaftWeightsMissing(ExtractError):
    """RAFT's checkpoint is not in torch.hub's cache and could not be downloaded."""


def raft_checkpoint(name: str) -> tuple[str, Path]:
    """``(url, cache path)`` of the default torchvision weights of ``name``."""
    if name not in RAFT_MODELS:
        raise ValueError(f"RAFT model must be one of {tuple(RAFT_MODELS)}, got {name!r}")
    url = RAFT_MODELS[name][1].DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def raft_weights_file(name: str) -> Path:
    """The cached checkpoint of ``name``, downloaded first if it is not there.

    Raises:
        RaftWeightsMissing: the checkpoint is neither cached nor downloadable.
    """
    url, path = raft_checkpoint(name)
    if not path.is_file():
        log.info("downloading %s to %s", url, path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except (OSError, ValueError) as err:  # URLError is an OSError
            raise RaftWeightsMissing(
                f"{name} weights {path.name} are not in torch.hub's cache ({path.parent}) and could not be "
                f"downloaded ({type(err).__name__}: {' '.join(str(err).split())}); copy {url} there "
                "(or set TORCH_HOME to a folder whose hub/checkpoints holds it)"
            ) from None
    return path


@functools.lru_cache(maxsize=4)
def load_raft(name: str, device: str) -> nn.Module:
    """The RAFT model ``name`` with torchvision's default weights, in eval mode on ``device``.

    One copy per process and device (decode workers each hold their own).

    Raises:
        RaftWeightsMissing: the checkpoint is neither cached nor downloadable.
    """
    state = torch.load(raft_weights_file(name), map_location="cpu", weights_only=True)
    model = RAFT_MODELS[name][0](weights=None)
    model.load_state_dict(state)
    return model.eval().to(device)


def _rgb_input(frames: np.ndarray, size: int | None) -> torch.Tensor:
    """(M, H, W, 3) uint8 -> (M, 3, h, w) float32 in [-1, 1], resized to short side ``size``."""
    h, w = frames.shape[1:3]
    out_h, out_w = (h, w) if size is None else short_side_size(h, w, size)
    if (out_h, out_w) != (h, w):
        frames = np.stack([cv2.resize(f, (out_w, out_h), interpolation=cv2.INTER_AREA) for f in frames])
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (M, h, w, 3) -> (M, 3, h, w)
    return x.float().div_(127.5).sub_(1.0)


def _padded_side(n: int) -> int:
    return max(MIN_SIDE, -(-n // 8) * 8)


@torch.inference_mode()
def raft_pair_flows(
    frames: np.ndarray,
    pairs: np.ndarray,
    name: str,
    *,
    size: int | None = None,
    device: str = "cpu",
    batch: int = DEFAULT_BATCH,
) -> np.ndarray:
    """RAFT flow of each ``(from, to)`` position pair of ``frames``, ``batch`` pairs at a time.

    Args:
        frames: (M, H, W, 3) uint8 RGB.
        pairs: (P, 2) positions into ``frames``; a pair of one position twice gets zero flow.
        name: ``"raft_small"`` or ``"raft_large"``.
        size: short side the flow is computed at (None: the frames' size).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        batch: frame pairs per forward pass.

    Returns:
        (P, h, w, 2) float32 pixels per frame at the ``size`` resolution, x then y.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (M, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    model = load_raft(name, device)
    x = _rgb_input(frames, size)  # (M, 3, h, w)
    h, w = x.shape[2:]
    pad_h, pad_w = _padded_side(h) - h, _padded_side(w) - w
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x  # -> (M, 3, H8, W8)
    out = np.zeros((len(pairs), h, w, 2), dtype=np.float32)  # (P, h, w, 2)
    moving = np.flatnonzero(pairs[:, 0] != pairs[:, 1])  # the others keep zero flow
    for start in range(0, len(moving), batch):
        rows = moving[start : start + batch]
        a = x[pairs[rows, 0]].to(device, non_blocking=True)  # (B, 3, H8, W8)
        b = x[pairs[rows, 1]].to(device, non_blocking=True)
        flow = model(a, b)[-1]  # the last refinement: (B, 2, H8, W8)
        out[rows] = flow[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()  # -> (B, h, w, 2)
    return out
