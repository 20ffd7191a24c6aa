"""Spatial views of decoded clips: short-side resize, crops, normalisation, tensors.

Frames are channel-last uint8 ``(T, H, W, 3)`` RGB, as :func:`extract.media.decode.decode_video`
returns them; backbones get channel-first float ``(C, T, H, W)`` from :func:`to_tensor_clip`.
The decoder's scaler normally does the resize (``decode_video(size=view.decode_short_side)``);
:func:`short_side_resize` is then a no-op for the first scale and only works for the other
scales of a multi-scale :class:`~extract.media.sampling.ViewSpec`.

Crop offsets: the centre of a side of length ``L`` for a crop ``c`` starts at ``(L - c) // 2``;
the end crop starts at ``L - c``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from extract.media.sampling import CROP_MODES, ViewSpec, short_side_size  # noqa: F401  (re-exported)

# ImageNet statistics (torchvision / Kinetics backbones), RGB order, for [0, 1] inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def short_side_resize(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize frames so their short side is ``short_side`` (bilinear, antialiased).

    Args:
        frames: (T, H, W, 3) uint8.
        short_side: target short side in pixels.

    Returns:
        (T, H', W', 3) uint8; the input itself when its short side already matches.
    """
    h, w = frames.shape[1:3]  # (T, H, W, 3)
    out_h, out_w = short_side_size(h, w, short_side)
    if (out_h, out_w) == (h, w):
        return frames
    x = (
        torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    )  # (T, H, W, 3) -> (T, 3, H, W)
    x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()  # (T, 3, H', W') -> (T, H', W', 3)


def _crop(frames: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return frames[:, top : top + size, left : left + size, :]  # (T, H, W, 3) -> (T, size, size, 3)


def _check_crop(frames: np.ndarray, size: int) -> tuple[int, int]:
    if frames.ndim != 4:
        raise ValueError(f"frames must be (T, H, W, C), got shape {frames.shape}")
    h, w = frames.shape[1:3]
    if size < 1 or size > min(h, w):
        raise ValueError(f"crop {size} does not fit frames of {h}x{w}; resize first")
    return h, w


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre ``size x size`` crop: (T, H, W, 3) -> (T, size, size, 3) (a view, no copy)."""
    h, w = _check_crop(frames, size)
    return _crop(frames, (h - size) // 2, (w - size) // 2, size)


def three_crop(frames: np.ndarray, size: int) -> list[np.ndarray]:
    """Three crops along the long side, SlowFast / mmaction2 three-crop testing.

    Landscape frames give left, centre, right; portrait frames top, centre, bottom; the
    other axis is centred. Square frames count as landscape.

    Returns:
        three (T, size, size, 3) arrays, in the order start, centre, end.
    """
    h, w = _check_crop(frames, size)
    if h > w:
        left = (w - size) // 2
        return [_crop(frames, top, left, size) for top in (0, (h - size) // 2, h - size)]
    top = (h - size) // 2
    return [_crop(frames, top, left, size) for left in (0, (w - size) // 2, w - size)]


def five_crop(frames: np.ndarray, size: int) -> list[np.ndarray]:
    """Four corners then centre (torchvision ``FiveCrop`` order): 5 x (T, size, size, 3)."""
    h, w = _check_crop(frames, size)
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [_crop(frames, top, left, size) for top, left in corners] + [center_crop(frames, size)]


def ten_crop(frames: np.ndarray, size: int) -> list[np.ndarray]:
    """Five crops then the same five flipped left-right: 10 x (T, size, size, 3)."""
    five = five_crop(frames, size)
    return five + [c[:, :, ::-1, :] for c in five]  # flip W of (T, size, size, 3)


_CROPPERS = {
    "center": lambda frames, size: [center_crop(frames, size)],
    "three": three_crop,
    "five": five_crop,
    "ten": ten_crop,
}
assert set(_CROPPERS) == set(CROP_MODES), "every ViewSpec crop mode needs a cropper"


def make_views(frames: np.ndarray, view: ViewSpec) -> np.ndarray:
    """All spatial views of one clip, from the same decoded frames.

    Args:
        frames: (T, H, W, 3) uint8; ideally already at ``view.decode_short_side``.
        view: scales and crop positions.

    Returns:
        (V, T, crop, crop, 3) uint8, scale-major then crop position (``V = view.num_views``).
    """
    views: list[np.ndarray] = []
    for side in view.short_sides:
        scaled = short_side_resize(frames, side)  # (T, H, W, 3) -> (T, H', W', 3)
        views.extend(_CROPPERS[view.crops](scaled, view.crop))
    return np.stack(views)  # V x (T, crop, crop, 3) -> (V, T, crop, crop, 3)


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(clip - mean) / std`` per channel, channel-first: (..., C, T, H, W) -> same shape."""
    c = clip.shape[-4]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be > 0, got {tuple(std)}")
    m = torch.as_tensor(mean, dtype=clip.dtype, device=clip.device).view(
        c, 1, 1, 1
    )  # (C,) -> (C, 1, 1, 1)
    s = torch.as_tensor(std, dtype=clip.dtype, device=clip.device).view(
        c, 1, 1, 1
    )  # (C,) -> (C, 1, 1, 1)
    return (clip - m) / s


def to_tensor_clip(
    frames: np.ndarray | torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 channel-last frames to a normalised channel-first float clip.

    Args:
        frames: (..., T, H, W, C) uint8, e.g. one clip (T, H, W, 3) or views (V, T, h, w, 3).
        mean: per-channel mean for [0, 1] values.
        std: per-channel standard deviation for [0, 1] values.
        dtype: output float dtype.

    Returns:
        (..., C, T, H, W) float tensor, ``(x / 255 - mean) / std``.
    """
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.dtype != torch.uint8 or x.ndim < 4:
        raise ValueError(f"frames must be uint8 (..., T, H, W, C), got {x.dtype} {tuple(x.shape)}")
    x = x.to(dtype).div_(255.0)
    x = x.movedim(-1, -4)  # (..., T, H, W, C) -> (..., C, T, H, W)
    return normalize(x, mean, std)
