"""Feature producers: from one decoded video to the ``(K, ...)`` inputs and features of a set.

A video is opened and decoded **once** (:func:`extract.decode.decode_video`) for every
feature set a run fills; each set has a producer in two halves::

    decode worker (numpy, picklable)          main process (torch, owns the model)
    --------------------------------          ------------------------------------
    InputMaker.frame_indices(n_frames)   ->   union over makers -> decode_video (one open)
    InputMaker.make(video) -> ModelInput ->   FeatureProducer.embed((B, ...) inputs) -> (B, D)
                                              FeatureProducer.spec -> the store's record

An :class:`InputMaker` says which frames (and audio) it needs and turns a
:class:`~extract.decode.DecodedVideo` into ``K`` model inputs with their valid mask and
times; it runs in decode worker processes, so it holds only settings. A
:class:`FeatureProducer` owns the maker, the model and the feature set's
:class:`~store.FeatureSetSpec`. The RGB producer (clips x views of a frame or clip backbone)
is the one built today; flow, audio and logits producers plug into the same two methods.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass

import numpy as np
import torch

from extract.backbones import Backbone
from extract.decode import DecodedVideo
from extract.sampling import ClipSampling, ViewSpec, clip_frame_indices, clip_times
from extract.transforms import make_views, to_tensor_clip
from store import FeatureSetSpec

log = logging.getLogger(__name__)

DECODER = {
    "library": "pyav",
    "pass": "forward-only",
    "frame_numbering": "decoder output order",
    "interpolation": "bilinear",
}


@dataclass(frozen=True, eq=False)
class ModelInput:
    """What a maker made of one video: K model inputs, which are real, and when they are.

    Attributes:
        inputs: ``(K, ...)`` model inputs, uint8 for pictures (RGB: ``(K, T, h, w, 3)``).
        valid: ``(K,)`` bool, False for padded slots (clips past a short video's end).
        times: ``(K, 2)`` float32 start/end seconds of each slot.
    """

    inputs: np.ndarray
    valid: np.ndarray
    times: np.ndarray


class InputMaker(abc.ABC):
    """The decode-side half of a producer: picklable settings, numpy only."""

    #: Audio sample rate this maker needs from the same container open (None: no audio).
    audio_rate: int | None = None

    @property
    @abc.abstractmethod
    def clips(self) -> int:
        """K, the slots per video."""

    @property
    @abc.abstractmethod
    def decode_short_side(self) -> int | None:
        """Short side the frames should be decoded at (None: native size)."""

    @abc.abstractmethod
    def frame_indices(self, n_frames: int) -> np.ndarray:
        """Frame numbers this maker needs from a video of ``n_frames`` frames (any shape)."""

    @abc.abstractmethod
    def make(self, video: DecodedVideo, n_frames: int, fps: float) -> ModelInput:
        """Build the K inputs from the decoded video (``n_frames``/``fps`` as probed)."""


@dataclass(frozen=True)
class RGBClips(InputMaker):
    """N sampled clips x V spatial views of RGB frames: ``K = N * V``, clip-major.

    Attributes:
        sampling: where the N clips of T frames go.
        view: resize and crops giving the V views of every clip.
    """

    sampling: ClipSampling
    view: ViewSpec

    @property
    def clips(self) -> int:
        return self.sampling.num_clips * self.view.num_views

    @property
    def decode_short_side(self) -> int:
        return self.view.decode_short_side

    def frame_indices(self, n_frames: int) -> np.ndarray:
        return clip_frame_indices(n_frames, self.sampling)[0]

    def make(self, video: DecodedVideo, n_frames: int, fps: float) -> ModelInput:
        idx, valid_clips = clip_frame_indices(n_frames, self.sampling)  # (N, T)
        clips = video.take(idx)  # (N, T) -> (N, T, H, W, 3)
        views = np.stack([make_views(c, self.view) for c in clips])  # (N, V, T, c, c, 3)
        n, v = views.shape[:2]
        real = np.arange(n) < valid_clips  # (N,)
        if (
            video.truncated and video.n_frames
        ):  # clips starting past the real end repeat its last frame
            real &= idx[:, 0] < video.n_frames
        times = clip_times(idx, fps if fps > 0 else video.fps).astype(np.float32)  # (N, 2)
        return ModelInput(
            inputs=views.reshape(n * v, *views.shape[2:]),  # (N, V, T, c, c, 3) -> (K, T, c, c, 3)
            valid=np.repeat(real, v),  # (N,) -> (K,)
            times=np.repeat(times, v, axis=0),  # (N, 2) -> (K, 2)
        )


class FeatureProducer(abc.ABC):
    """The model-side half: owns the maker, the model and the feature set's spec."""

    maker: InputMaker

    @property
    @abc.abstractmethod
    def spec(self) -> FeatureSetSpec:
        """How the features are shaped and made (stored with the feature set)."""

    @abc.abstractmethod
    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """``(B, ...)`` inputs from the maker -> ``(B, D)`` float32 features."""


class RGBProducer(FeatureProducer):
    """RGB clips through a frame (TSN) or clip (3D / TSM) backbone.

    Args:
        backbone: the model (put in eval mode and on ``device`` here).
        maker: the clips and views it is fed.
        device: ``"cpu"`` or ``"cuda"``.
        amp: float16 autocast (CUDA only).
        seed: the seed of a random init (recorded when there are no weights).
        chunk_rows: rows per storage chunk of the feature set.
    """

    def __init__(
        self,
        backbone: Backbone,
        maker: RGBClips,
        *,
        device: str = "cpu",
        amp: bool = False,
        seed: int = 0,
        chunk_rows: int = 256,
    ) -> None:
        if (
            maker.sampling.frames_per_clip != backbone.info.clip_len
            and backbone.info.kind == "clip3d"
        ):
            log.warning(
                "%s was built for %d-frame clips; feeding %d-frame clips",
                backbone.info.name,
                backbone.info.clip_len,
                maker.sampling.frames_per_clip,
            )
        self.model = backbone.eval().to(device)
        if backbone.info.kind == "frame2d":  # 2D convs run faster on NHWC (oneDNN, cuDNN)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.maker = maker
        self.device = torch.device(device)
        self.amp = bool(amp and self.device.type == "cuda")
        info = backbone.info
        extra = {
            "backbone": info.to_dict(),
            "decode": {**DECODER, "short_side": maker.decode_short_side},
            "precision": "amp" if self.amp else "fp32",
            "k_axis": "clip-major: k = clip * V + view",
        }
        if backbone.weights_sha256 is None:
            extra["random_init_seed"] = seed
        self._spec = FeatureSetSpec(
            clips=maker.clips,
            dim=info.feature_dim,
            backbone=info.name,
            modality=info.modality,
            weights_sha256=backbone.weights_sha256,
            sampling={"clips": maker.sampling.to_dict(), "views": maker.view.to_dict()},
            extra=extra,
            chunk_rows=chunk_rows,
        )

    @property
    def spec(self) -> FeatureSetSpec:
        return self._spec

    @torch.inference_mode()
    def embed(self, inputs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(inputs))  # (B, T, h, w, 3) uint8
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        info = self.model.info
        clips = to_tensor_clip(x, info.mean, info.std)  # (B, T, h, w, 3) -> (B, 3, T, h, w)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            feats = self.model.forward_features(clips)  # (B, 3, T, h, w) -> (B, D)
        return feats.float().cpu().numpy()
