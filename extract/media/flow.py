"""Dense optical flow of sampled clips: Farneback (fast) or TV-L1 (OpenCV), as network input.

The flow of a clip comes from the frames the decoder already produced, in the same single
forward pass as the RGB frames::

    pairs = flow_frame_indices(idx, settings.stack, n_frames=info.n_frames, gap=settings.gap)  # (N, T*L, 2)
    video = decode_video(path, union_frame_indices(idx, pairs), size=view.decode_short_side)
    stack = clip_flow_stack(video, idx, settings, n_frames=info.n_frames)     # (N, 2, T*L, H, W)
    views = flow_views(stack[i], view)                                        # (V, 2, T*L, c, c)

Conventions:

* **Which frames.** Flow ``t`` of a clip is the motion from frame ``indices[t]`` to frame
  ``indices[t] + gap``, whatever the clip's stride (``gap`` 1, the default: the very next
  video frame, as I3D and TSN compute flow between consecutive frames and sample it like
  RGB). Values are divided by ``gap``, so they are always pixels per video frame and one
  ``bound`` fits every sampling. A clip of T frames thus has T flows and needs its frames
  plus each one's ``gap``-th successor (T + 1 frames when ``gap`` is the stride). A larger
  gap shows slow motion that one frame step hides under the flow's noise: on the 64-px demo
  a zoom moves the carrier's edge ~0.1 px per frame (benchmarks/README.md, issue 19).
  With ``stack = L`` (TSN: L = 5 flow fields per segment, 10 channels) each sampled frame
  gives the L consecutive flows starting at it (each ``gap`` frames on from the last):
  ``T' = T * L`` flows, t-major. A run that would pass the last frame is shifted back to end
  on it (TSN samples its starts in ``[0, n - L)`` for the same reason); a video of one frame
  gives zero flow.
* **Values.** ``compute_flow`` returns pixels per frame, channel 0 = x (to the right),
  channel 1 = y (down): ``frame_t(y, x) ~ frame_t+1(y + flow_y, x + flow_x)``.
  :func:`flow_to_input` clips to ``+-bound`` and divides by ``bound``: values in [-1, 1].
  The TSN / I3D convention stores ``255 * (clip(f) + bound) / (2 * bound)`` as 8-bit jpegs;
  ours is its exact linear equivalent without the rounding: ``x = jpeg / 127.5 - 1``, and
  ``(x + 1) / 2 = jpeg / 255`` is the [0, 1] image a backbone normalised with mean 0.5
  (``BackboneInfo.with_input_channels``) expects.
* **Gray.** Frames are converted with ``cv2.cvtColor(RGB2GRAY)``; with ``size`` set the
  gray frames are resized (``cv2.INTER_AREA``) to that short side before the flow.
* **Threads.** ``threads`` calls ``cv2.setNumThreads`` for the duration of the call and
  restores the previous value (OpenCV's pool is process-wide; give each worker process of
  ``extract.run`` its share of the cores).
* **GPU.** ``device="auto"`` uses OpenCV's CUDA optical flow
  (``cv2.cuda_FarnebackOpticalFlow`` / ``cv2.cuda_OpticalFlowDual_TVL1``, same parameters,
  its ``iterations`` = inner x outer iterations) when OpenCV was built with CUDA and sees a
  GPU, else the CPU. The pip wheels are CPU-only. Record :func:`flow_backend` in the attrs.
* **Methods and cost** (one core, 112 px demo frames; ``benchmarks.run --only flow``):
  ``farneback`` (fastest, the CPU default), ``tvl1`` with ``preset="default"`` (OpenCV's
  parameters, the two-stream / I3D flow) or ``preset="fast"`` (:data:`TVL1_PRESETS`: fewer
  scales, warps and iterations), ``raft_small`` / ``raft_large`` (torchvision's RAFT,
  :mod:`extract.media.raft`; torch's device, batched over the frame pairs).
  :func:`paper_flow` picks what stands in for the papers' TV-L1 on a machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from extract.errors import ExtractError
from extract.media.decode import DecodedVideo
from extract.media.raft import RAFT_MODELS, raft_pair_flows
from extract.media.sampling import CROP_MODES, ViewSpec
from extract.media.transforms import center_crop, five_crop, short_side_size, three_crop
from store.device import resolve_device

FLOW_ALGORITHMS = ("farneback", "tvl1", "raft_small", "raft_large")
#: ``--flow`` choices: an algorithm, or ``paper`` (:func:`paper_flow`: TV-L1 as cheap as the machine needs).
FLOW_CHOICES = (*FLOW_ALGORITHMS, "paper")
FLOW_DEVICES = ("auto", "cpu", "cuda")
#: TV-L1 parameter sets; a field given explicitly wins over its preset. ``fast`` was chosen with
#: ``benchmarks.run --only flow``: ~4-5x the pairs/s of ``default``, the same motion-probe score within noise.
TVL1_PRESETS: dict[str, dict[str, int | float]] = {
    "default": {"tvl1_tau": 0.25, "tvl1_lambda": 0.15, "tvl1_theta": 0.3, "tvl1_nscales": 5, "tvl1_warps": 5,
                "tvl1_epsilon": 0.01, "tvl1_inner_iterations": 30, "tvl1_outer_iterations": 10,
                "tvl1_scale_step": 0.8},
    "fast": {"tvl1_nscales": 3, "tvl1_warps": 2, "tvl1_inner_iterations": 10, "tvl1_outer_iterations": 2},
}
#: The TV-L1 parameters a user may set (``--tvl1-NAME``), named after ``cv2.optflow.DualTVL1OpticalFlow_create``.
TVL1_PARAMS = tuple(name.removeprefix("tvl1_") for name in TVL1_PRESETS["default"])


class FlowUnavailableError(ExtractError):
    """The requested flow algorithm or device is missing from the installed OpenCV."""


# (fields, test, what the message asks for): FlowSettings' numeric checks.
_FIELD_RULES = (
    (
        (
            "stack gap fb_levels fb_winsize fb_iterations fb_poly_n tvl1_nscales tvl1_warps "
            "tvl1_inner_iterations tvl1_outer_iterations"
        ),
        lambda v: isinstance(v, (int, np.integer)) and v >= 1,
        "an integer >= 1",
    ),
    ("fb_pyr_scale tvl1_scale_step", lambda v: 0 < v < 1, "in (0, 1)"),
    ("bound fb_poly_sigma tvl1_tau tvl1_lambda tvl1_theta tvl1_epsilon", lambda v: v > 0, "> 0"),
)


@dataclass(frozen=True)
class FlowSettings:
    """How optical flow is computed and scaled (recorded in the feature set's attrs).

    Attributes:
        algorithm: ``"farneback"`` (fast, the CPU default), ``"tvl1"`` (TV-L1, the
            two-stream / I3D choice; ~100x slower on a CPU with its default parameters), or
            ``"raft_small"`` / ``"raft_large"`` (torchvision's RAFT, :mod:`extract.media.raft`).
        bound: flows are clipped to ``+-bound`` pixels per frame, then divided by it.
        size: short side (pixels) of the gray frames the flow is computed on; None keeps
            the decoded size (then flow and RGB crops line up pixel for pixel).
        stack: L, consecutive flow fields per sampled frame (1 for 3D nets; 5 for TSN).
        gap: frames from the first to the second frame of each flow pair (1: consecutive
            frames); the flow is divided by it (pixels per frame).
        preset: ``"default"`` or ``"fast"``: where the ``tvl1_*`` fields left None come from
            (:data:`TVL1_PRESETS`); ``"fast"`` is for ``tvl1`` only.
        fb_pyr_scale: Farneback pyramid scale (< 1).
        fb_levels: Farneback pyramid levels including the image itself.
        fb_winsize: Farneback averaging window (pixels).
        fb_iterations: Farneback iterations per pyramid level.
        fb_poly_n: Farneback polynomial expansion neighbourhood (5 or 7).
        fb_poly_sigma: Gaussian sigma of the expansion (1.1 for 5, 1.5 for 7).
        tvl1_tau: TV-L1 time step of the numerical scheme.
        tvl1_lambda: TV-L1 data-term weight (smaller = smoother flow).
        tvl1_theta: TV-L1 coupling of the two sub-problems.
        tvl1_nscales: TV-L1 pyramid scales.
        tvl1_warps: TV-L1 warpings per scale.
        tvl1_epsilon: TV-L1 stopping threshold.
        tvl1_inner_iterations: TV-L1 inner iterations per warp.
        tvl1_outer_iterations: TV-L1 outer iterations per warp.
        tvl1_scale_step: TV-L1 downscale factor between pyramid scales.

    The Farneback values are OpenCV's ``samples/python/opt_flow.py``; the TV-L1 values left
    None are filled from the preset (``default``: OpenCV's own,
    ``cv2.optflow.DualTVL1OpticalFlow_create()``), so :meth:`to_dict` records every value used.
    """

    algorithm: str = "farneback"
    bound: float = 20.0
    size: int | None = None
    stack: int = 1
    gap: int = 1
    preset: str = "default"
    fb_pyr_scale: float = 0.5
    fb_levels: int = 3
    fb_winsize: int = 15
    fb_iterations: int = 3
    fb_poly_n: int = 5
    fb_poly_sigma: float = 1.2
    tvl1_tau: float | None = None
    tvl1_lambda: float | None = None
    tvl1_theta: float | None = None
    tvl1_nscales: int | None = None
    tvl1_warps: int | None = None
    tvl1_epsilon: float | None = None
    tvl1_inner_iterations: int | None = None
    tvl1_outer_iterations: int | None = None
    tvl1_scale_step: float | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in FLOW_ALGORITHMS:
            raise ValueError(
                f"FlowSettings.algorithm must be one of {FLOW_ALGORITHMS}, got {self.algorithm!r}"
            )
        if self.preset not in TVL1_PRESETS:
            raise ValueError(f"FlowSettings.preset must be one of {tuple(TVL1_PRESETS)}, got {self.preset!r}")
        if self.preset != "default" and self.algorithm != "tvl1":
            raise ValueError(f"the flow preset {self.preset!r} is for tvl1, not {self.algorithm}")
        for name, value in {**TVL1_PRESETS["default"], **TVL1_PRESETS[self.preset]}.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.size is not None and (not _is_int(self.size) or self.size < 8):
            raise ValueError(
                f"FlowSettings.size must be None or a short side >= 8, got {self.size!r}"
            )
        for names, ok, what in _FIELD_RULES:
            for name in names.split():
                value = getattr(self, name)
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float, np.number))
                    or (not ok(value))
                ):
                    raise ValueError(f"FlowSettings.{name} must be {what}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the feature set's attrs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"FlowSettings.from_dict: unknown keys {unknown} "
                "(was this written by a newer version?)"
            )
        return cls(**d)


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def cuda_flow_available() -> bool:
    """Whether OpenCV was built with CUDA and sees at least one GPU."""
    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0
    except (AttributeError, cv2.error):
        return False


def flow_backend(device: str = "auto", algorithm: str = "farneback") -> str:
    """The backend a flow call with ``device`` uses: ``"cuda"`` or ``"cpu"``.

    OpenCV's GPU for ``farneback`` / ``tvl1`` (:func:`cuda_flow_available`), torch's for RAFT
    (:func:`store.device.resolve_device`).

    Raises:
        FlowUnavailableError: ``device="cuda"`` but OpenCV has no CUDA device.
        DeviceUnavailable: ``device="cuda"`` for RAFT but torch sees no GPU.
    """
    if device not in FLOW_DEVICES:
        raise ValueError(f"device must be one of {FLOW_DEVICES}, got {device!r}")
    if algorithm in RAFT_MODELS:
        return resolve_device(device)
    if device == "cpu":
        return "cpu"
    if cuda_flow_available():
        return "cuda"
    if device == "cuda":
        raise FlowUnavailableError(
            "optical flow on the GPU needs OpenCV built with CUDA (the pip wheels are CPU-only) "
            "and a visible GPU; build OpenCV with CUDA or use device='cpu'"
        )
    return "cpu"


def paper_flow(device: str = "auto") -> tuple[str, str, str]:
    """What stands in for the papers' TV-L1 flow here: ``(algorithm, preset, why)``.

    On a CPU TV-L1 with the ``fast`` preset (the default parameters cost ~100x Farneback);
    on a GPU full TV-L1 when OpenCV has CUDA, else ``raft_large`` on torch's GPU.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``: where the flow is computed.
    """
    if device not in FLOW_DEVICES:
        raise ValueError(f"device must be one of {FLOW_DEVICES}, got {device!r}")
    if device != "cpu" and cuda_flow_available():
        return "tvl1", "default", "paper flow: full TV-L1 on OpenCV's GPU"
    if device != "cpu" and resolve_device(device) != "cpu":
        return "raft_large", "default", "paper flow: RAFT-large on the GPU (OpenCV has no CUDA here)"
    return "tvl1", "fast", "paper flow: TV-L1 fast preset on the CPU"


class _Estimator:
    """One flow algorithm on one backend: ``est(prev_gray, next_gray) -> (H, W, 2) float32``."""

    def __init__(self, s: FlowSettings, backend: str) -> None:
        self.backend, self.algorithm = backend, s.algorithm
        fb = (s.fb_pyr_scale, s.fb_levels, s.fb_winsize, s.fb_iterations)
        self.fb_args = (*fb, s.fb_poly_n, s.fb_poly_sigma, 0)  # calcOpticalFlowFarneback's order
        tv = (s.tvl1_tau, s.tvl1_lambda, s.tvl1_theta, s.tvl1_nscales, s.tvl1_warps, s.tvl1_epsilon)
        iters = s.tvl1_inner_iterations * s.tvl1_outer_iterations
        if backend == "cuda" and s.algorithm == "farneback":
            cuda_fb = (s.fb_levels, s.fb_pyr_scale, False, s.fb_winsize, s.fb_iterations)
            self.alg = cv2.cuda_FarnebackOpticalFlow.create(*cuda_fb, *self.fb_args[4:])
        elif backend == "cuda":
            self.alg = cv2.cuda_OpticalFlowDual_TVL1.create(
                *tv, iters, s.tvl1_scale_step, 0.0, False
            )
        elif s.algorithm == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise FlowUnavailableError(
                    "TV-L1 flow needs cv2.optflow from opencv-contrib: "
                    "pip install opencv-contrib-python-headless (instead of opencv-python)"
                )
            inner_outer = (s.tvl1_inner_iterations, s.tvl1_outer_iterations)
            self.alg = cv2.optflow.DualTVL1OpticalFlow_create(*tv, *inner_outer, s.tvl1_scale_step)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self.backend == "cuda":
            g0, g1 = cv2.cuda_GpuMat(), cv2.cuda_GpuMat()
            g0.upload(prev)
            g1.upload(nxt)
            return self.alg.calc(g0, g1, None).download()
        if self.algorithm == "tvl1":
            return self.alg.calc(prev, nxt, None)
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, *self.fb_args)


@contextlib.contextmanager
def _cv2_threads(threads: int) -> Iterator[None]:
    if not _is_int(threads) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    before = cv2.getNumThreads()
    cv2.setNumThreads(int(threads))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _gray(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(M, H, W, 3) uint8 RGB -> (M, h, w) uint8 gray, resized to short side ``size``."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be (T, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}"
        )
    h, w = frames.shape[1:3]
    out_h, out_w = (h, w) if size is None else short_side_size(h, w, size)
    out = np.empty((frames.shape[0], out_h, out_w), dtype=np.uint8)  # (M, h, w)
    for i, frame in enumerate(frames):
        g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)  # (H, W, 3) -> (H, W)
        out[i] = (
            g
            if (out_h, out_w) == (h, w)
            else cv2.resize(g, (out_w, out_h), interpolation=cv2.INTER_AREA)
        )
    return out


def _pair_flows(gray: np.ndarray, pairs: np.ndarray, est: _Estimator) -> np.ndarray:
    """Flow of each (from, to) position pair of ``gray``: (P, 2) -> (P, h, w, 2) float32."""
    out = np.zeros((len(pairs), *gray.shape[1:], 2), dtype=np.float32)  # (P, h, w, 2)
    for p, (a, b) in enumerate(pairs):
        if a != b:  # the same frame twice (one-frame video) has zero flow
            out[p] = est(gray[a], gray[b])
    return out


def _flows(frames: np.ndarray, pairs: np.ndarray, s: FlowSettings, backend: str) -> np.ndarray:
    """Flow of each (from, to) position pair of RGB ``frames``: (P, 2) -> (P, h, w, 2) float32."""
    if s.algorithm in RAFT_MODELS:
        return raft_pair_flows(frames, pairs, s.algorithm, size=s.size, device=backend)
    return _pair_flows(_gray(frames, s.size), pairs, _Estimator(s, backend))


def compute_flow(
    frames: np.ndarray, settings: FlowSettings, *, threads: int = 1, device: str = "auto"
) -> np.ndarray:
    """Flow between consecutive frames, in pixels per frame (x then y).

    This is the unit to time: ``T - 1`` frame pairs per call.

    Args:
        frames: (T, H, W, 3) uint8 RGB, T >= 2.
        settings: algorithm and parameters (``bound`` and ``stack`` are not used here).
        threads: OpenCV threads during the call (``cv2.setNumThreads``); RAFT runs on torch's threads.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`flow_backend`).

    Returns:
        (T - 1, h, w, 2) float32; ``(h, w)`` is ``(H, W)`` or the ``settings.size`` resize.
    """
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"compute_flow needs (T, H, W, 3) frames with T >= 2, got {frames.shape}")
    pairs = np.stack([np.arange(len(frames) - 1), np.arange(1, len(frames))], axis=1)  # (T-1, 2)
    with _cv2_threads(threads):
        return _flows(frames, pairs, settings, flow_backend(device, settings.algorithm))


def flow_to_input(flow: np.ndarray, bound: float) -> np.ndarray:
    """Clip to ``+-bound`` and divide by ``bound``, channel-first.

    Args:
        flow: (..., T, H, W, 2) pixels per frame (x, y).
        bound: clipping bound in pixels per frame (> 0).

    Returns:
        (..., 2, T, H, W) float32 in [-1, 1] (the linear form of TSN's ``bound`` jpegs).
    """
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    if flow.ndim < 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (..., T, H, W, 2), got shape {flow.shape}")
    x = np.clip(flow.astype(np.float32, copy=False), -bound, bound) / np.float32(bound)
    return np.ascontiguousarray(np.moveaxis(x, -1, -4))  # (..., T, H, W, 2) -> (..., 2, T, H, W)


def flow_frame_indices(indices: np.ndarray, stack: int = 1, *, n_frames: int, gap: int = 1) -> np.ndarray:
    """The (from, to) frame numbers of every flow of every clip.

    Pass the result, with the RGB indices, to ``union_frame_indices`` so one decode gives
    both. Flow ``t * stack + l`` of clip ``i`` goes from frame ``s + l * gap`` to
    ``s + (l + 1) * gap``, ``s = min(indices[i, t], n_frames - 1 - stack * gap)`` (the run
    shifted back so it ends on the last frame at the latest; clamped to the video for videos
    shorter than ``stack * gap + 1`` frames).

    Args:
        indices: (N, T) frame numbers from ``clip_frame_indices``.
        stack: L, consecutive flows per sampled frame.
        n_frames: frames in the video, the value given to ``clip_frame_indices``.
        gap: frames between the two frames of a pair (``FlowSettings.gap``).

    Returns:
        (N, T * L, 2) int64 ``[from, to]`` frame numbers.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2:
        raise ValueError(f"indices must be (N, T), got shape {idx.shape}")
    if not _is_int(stack) or stack < 1:
        raise ValueError(f"stack must be an integer >= 1, got {stack!r}")
    if not _is_int(n_frames) or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    if not _is_int(gap) or gap < 1:
        raise ValueError(f"gap must be an integer >= 1, got {gap!r}")
    n, t = idx.shape
    start = np.clip(idx, 0, max(n_frames - 1 - stack * gap, 0))  # (N, T)
    first = start[:, :, None] + gap * np.arange(stack)  # (N, T, 1) + (L,) -> (N, T, L)
    pairs = np.stack([first, first + gap], axis=-1)  # (N, T, L) -> (N, T, L, 2)
    return np.minimum(pairs, n_frames - 1).reshape(n, t * stack, 2)  # -> (N, T*L, 2)


def clip_flow_stack(
    decoded: DecodedVideo,
    indices: np.ndarray,
    settings: FlowSettings,
    *,
    n_frames: int,
    threads: int = 1,
    device: str = "auto",
) -> np.ndarray:
    """Network-ready flow stacks of every clip, each distinct frame pair computed once.

    Args:
        decoded: frames decoded with ``flow_frame_indices(indices, settings.stack, ...,
            gap=settings.gap)`` among the frame indices.
        indices: (N, T) frame numbers of the clips.
        settings: algorithm, bound, size, stack.
        n_frames: frames in the video (the value given to ``flow_frame_indices``).
        threads: OpenCV threads during the call.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        (N, 2, T * L, h, w) float32 in [-1, 1]: x then y, clipped to ``bound`` and divided
        by it; ``(h, w)`` is the decoded size or the ``settings.size`` resize.
    """
    pairs = flow_frame_indices(indices, settings.stack, n_frames=n_frames, gap=settings.gap)  # (N, T', 2)
    n, t_out = pairs.shape[:2]
    uniq, inverse = np.unique(pairs.reshape(-1, 2), axis=0, return_inverse=True)  # (P, 2)
    numbers = np.unique(uniq)  # (F,) frames the flow needs
    with _cv2_threads(threads):
        backend = flow_backend(device, settings.algorithm)
        flows = _flows(decoded.take(numbers), np.searchsorted(numbers, uniq), settings, backend)  # (P, h, w, 2)
    if settings.gap > 1:
        flows /= np.float32(settings.gap)  # pixels per gap -> pixels per frame
    stacked = flows[inverse.reshape(-1)].reshape(n, t_out, *flows.shape[1:])  # (N, T', h, w, 2)
    return flow_to_input(stacked, settings.bound)  # -> (N, 2, T', h, w)


def flow_stack_channels(stack: np.ndarray | torch.Tensor, length: int) -> np.ndarray | torch.Tensor:
    """TSN layout: each run of ``length`` flows as ``2 * length`` interleaved channels.

    Args:
        stack: (..., 2, T * L, H, W) from :func:`clip_flow_stack` (``L = length``).
        length: L, the ``stack`` of the flow settings.

    Returns:
        (..., 2 * L, T, H, W) with channels ``x_1, y_1, x_2, y_2, ...`` (TSN's order).
    """
    *lead, c, t_out, h, w = stack.shape
    if c != 2 or t_out % length:
        raise ValueError(
            f"stack must be (..., 2, T * {length}, H, W), got shape {tuple(stack.shape)}"
        )
    t = t_out // length
    x = stack.reshape(*lead, 2, t, length, h, w)  # (..., 2, T*L, H, W) -> (..., 2, T, L, H, W)
    x = (
        np.moveaxis(x, -3, -5) if isinstance(x, np.ndarray) else x.movedim(-3, -5)
    )  # (..., L, 2, T, H, W)
    return x.reshape(*lead, 2 * length, t, h, w)  # -> (..., 2L, T, H, W)


def _flip(crop: np.ndarray) -> np.ndarray:
    """Mirror left-right; the x component changes sign. (T, h, w, 2) -> same shape."""
    return crop[:, :, ::-1, :] * np.array([-1.0, 1.0], dtype=np.float32)


_FLOW_CROPPERS = {
    "center": lambda flow, size: [center_crop(flow, size)],
    "three": three_crop,
    "five": five_crop,
    "ten": lambda flow, size: five_crop(flow, size) + [_flip(c) for c in five_crop(flow, size)],
}
assert set(_FLOW_CROPPERS) == set(CROP_MODES), "every ViewSpec crop mode needs a flow cropper"


def _rescale(stack: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize flow images and their values: (2, T', H, W) -> (2, T', h', w'), clamped to [-1, 1]."""
    _, t, h, w = stack.shape
    x = torch.from_numpy(np.ascontiguousarray(stack)).reshape(1, 2 * t, h, w)  # -> (1, 2T', H, W)
    x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    scale = torch.tensor([out_w / w, out_h / h]).repeat_interleave(t).view(1, 2 * t, 1, 1)
    return (x * scale).clamp_(-1, 1).reshape(2, t, out_h, out_w).numpy()  # -> (2, T', h', w')


def flow_views(stack: np.ndarray, view: ViewSpec) -> np.ndarray:
    """The spatial views of one clip's flow, positioned exactly like the RGB views.

    Crops use the RGB croppers of ``extract.media.transforms``; mirrored views (``"ten"``) negate
    x. An extra scale resizes the flow images (bilinear, antialiased) and multiplies x and
    y by the width and height factors, clamped to [-1, 1] (saturated values stay at the
    rescaled bound: the clip to ``bound`` happened at the computed size).

    Args:
        stack: (2, T', H, W) float32 in [-1, 1], one clip of :func:`clip_flow_stack`.
        view: the same ViewSpec as the RGB views.

    Returns:
        (V, 2, T', crop, crop) float32, scale-major then crop position.
    """
    if stack.ndim != 4 or stack.shape[0] != 2:
        raise ValueError(f"stack must be (2, T', H, W), got shape {stack.shape}")
    h, w = stack.shape[2:]
    views: list[np.ndarray] = []
    for side in view.short_sides:
        out_h, out_w = short_side_size(h, w, side)
        x = stack if (out_h, out_w) == (h, w) else _rescale(stack, out_h, out_w)
        last = np.moveaxis(x, 0, -1)  # (2, T', h', w') -> (T', h', w', 2)
        crops = _FLOW_CROPPERS[view.crops](last, view.crop)
        views.extend(np.moveaxis(c, -1, 0) for c in crops)  # (T', c, c, 2) -> (2, T', c, c)
    return np.stack(views).astype(np.float32, copy=False)  # V x (2, T', c, c) -> (V, 2, T', c, c)
