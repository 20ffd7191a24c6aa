"""Feature producers: from one decoded video to the ``(K, ...)`` inputs and features of a set.

A video is opened and decoded **once** (:func:`extract.media.decode.decode_video`) for every
feature set a run fills; each set has a producer in two halves::

    decode worker (numpy, picklable)          main process (torch, owns the model)
    --------------------------------          ------------------------------------
    InputMaker.frame_indices(n_frames)   ->   union over makers -> decode_video (one open,
    InputMaker.audio_rate                     frames and audio together)
    InputMaker.make(video) -> ModelInput ->   FeatureProducer.embed((B, ...) inputs) -> (B, D)
                                              FeatureProducer.spec -> the store's record

The makers (:class:`RGBClips`, :class:`FlowClips`, :class:`AudioWindows`) live in
:mod:`extract.dump.makers` and are re-exported here. The producers:

=============  ====================  =====================================================
modality       producer              model input from the maker's batch
=============  ====================  =====================================================
rgb            RGBProducer           ``to_tensor_clip``: (B, 3, T, c, c)
flow           FlowProducer          ``normalize((x + 1) / 2, mean, std)``: (B, 2, T, c, c)
audio          AudioProducer         log-mel (B, 1, F, M); VGGish (B*P, 1, 96, M), the P
                                     patch embeddings of a window averaged; waveform (B, 1, W)
=============  ====================  =====================================================

A :class:`BackboneProducer` can also keep the backbone's classifier scores
(``head_logits``): :meth:`FeatureProducer.embed_outputs` then returns the features and the
per-clip logits, written to a second feature set (``<set>__logits``, :data:`LOGITS_SUFFIX`).
"""

from __future__ import annotations

import abc
import logging
from typing import Any

import numpy as np
import torch

from extract.backbones import Backbone, file_sha256
from extract.backbones.batchnorm_fold import fold_batchnorm
from extract.dump.makers import (  # noqa: F401  (re-exported: the decode-side halves)
    AUDIO_INPUTS,
    NO_AUDIO,
    AudioWindows,
    FlowClips,
    InputMaker,
    ModelInput,
    RGBClips,
    audio_input_for,
)
from extract.media.raft import RAFT_MODELS, raft_weights_file
from extract.media.sampling import ClipSampling
from extract.media.transforms import normalize, to_tensor_clip
from store import FeatureSetSpec

log = logging.getLogger(__name__)

#: How each decoder reaches and scales frames, recorded in a picture set's ``extra["decode"]``
#: (the decoder is provenance: resized frames differ slightly between the two, see extract/README.md).
DECODER_RECORDS = {
    "pyav": {
        "library": "pyav",
        "pass": "forward-only",
        "frame_numbering": "decoder output order",
        "interpolation": "bilinear",
    },
    "torchcodec": {
        "library": "torchcodec",
        "pass": "exact seek mode: packet scan, then seeks to key frames",
        "frame_numbering": "presentation order",
        "interpolation": "bilinear, after RGB conversion",
    },
}
#: How each decoder gives the audio track (an audio set's ``extra["decode"]["audio"]``).
_AUDIO_PATHS = {"pyav": "av.AudioResampler", "torchcodec": "torchcodec AudioDecoder"}
#: Name suffix of the feature set holding a producer's per-clip classifier logits.
LOGITS_SUFFIX = "__logits"


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

    @property
    def outputs(self) -> list[tuple[str, FeatureSetSpec]]:
        """``(set name suffix, spec)`` of every feature set it fills; the features first."""
        return [("", self.spec)]

    def embed_outputs(self, inputs: np.ndarray) -> list[np.ndarray]:
        """``(B, ...)`` inputs -> one ``(B, D_j)`` float32 array per entry of :attr:`outputs`."""
        return [self.embed(inputs)]


class BackboneProducer(FeatureProducer):
    """A backbone fed by one maker; subclasses say what they record and how a batch of
    maker inputs becomes the model's input.

    Args:
        backbone: the model, owned by the producer from now on: put in eval mode and on
            ``device`` here, its BatchNorms after convolutions folded into them
            (:func:`~extract.backbones.batchnorm_fold.fold_batchnorm`), a frame model in
            channels-last memory format.
        maker: the inputs it is fed.
        device: ``"cpu"`` or ``"cuda"``.
        amp: autocast (CUDA only).
        amp_dtype: ``"float16"`` or ``"bfloat16"``, the autocast type.
        seed: the seed of a random init (recorded when there are no weights).
        chunk_rows: rows per storage chunk of the feature set.
        head_logits: also return the classifier's per-clip logits (needs ``backbone.fc``).
    """

    #: Backbone kinds this producer can feed.
    kinds: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: Backbone,
        maker: InputMaker,
        *,
        device: str = "cpu",
        amp: bool = False,
        amp_dtype: str = "float16",
        seed: int = 0,
        chunk_rows: int = 256,
        head_logits: bool = False,
    ) -> None:
        info = backbone.info
        if info.kind not in self.kinds:
            raise ValueError(
                f"{type(self).__name__} needs a {' or '.join(self.kinds)} backbone; "
                f"{info.name} is {info.kind}"
            )
        if head_logits and backbone.fc is None:
            raise ValueError(f"head_logits needs {info.name} built with a classifier (num_classes)")
        self.maker = maker
        self.check(backbone)
        self.model = backbone.eval().to(device)
        folded = fold_batchnorm(self.model)  # inference only: a BN after a conv is that conv's scale and bias
        if folded:
            log.info("%s: %d BatchNorm layer(s) folded into their convolutions", info.name, folded)
        if info.kind == "frame2d":  # 2D convs run faster on NHWC (oneDNN, cuDNN)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.amp = bool(amp and self.device.type == "cuda")
        self.amp_dtype = getattr(torch, amp_dtype)
        self.head_logits = head_logits
        extra = {
            "backbone": info.to_dict(),
            "weights": dict(backbone.weights_record),
            **self.record(),
            "precision": "amp" if self.amp else "fp32",
            **({"amp_dtype": amp_dtype} if self.amp else {}),
        }
        if backbone.weights_sha256 is None:
            extra["random_init_seed"] = seed
        common = {
            "clips": maker.clips,
            "backbone": info.name,
            "modality": info.modality,
            "weights_sha256": backbone.weights_sha256,
            "sampling": self.sampling_record(),
            "chunk_rows": chunk_rows,
        }
        self._spec = FeatureSetSpec(dim=info.feature_dim, extra=extra, **common)
        self._outputs = [("", self._spec)]
        if head_logits:
            logits = {**extra, "output": "classifier logits per clip (fc of the weights)"}
            dim = backbone.fc.out_features
            spec = FeatureSetSpec(dim=dim, dtype="float32", extra=logits, **common)
            self._outputs.append((LOGITS_SUFFIX, spec))

    @property
    def spec(self) -> FeatureSetSpec:
        return self._spec

    @property
    def outputs(self) -> list[tuple[str, FeatureSetSpec]]:
        return list(self._outputs)

    def check(self, backbone: Backbone) -> None:
        """Raise ValueError if the backbone and ``self.maker`` do not fit each other."""

    def record(self) -> dict[str, Any]:
        """What the modality records in the spec's ``extra`` (besides backbone, precision)."""
        return {
            "decode": {**DECODER_RECORDS[self.maker.decoder], "short_side": self.maker.decode_short_side},
            "k_axis": "clip-major: k = clip * V + view",
        }

    def sampling_record(self) -> dict[str, Any]:
        """The spec's ``sampling``: the clips, and the views where there are any."""
        return {"clips": self.maker.sampling.to_dict(), "views": self.maker.view.to_dict()}

    @abc.abstractmethod
    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of maker inputs (on the device) -> the backbone's normalised input."""

    def pool(self, feats: torch.Tensor, batch: int) -> torch.Tensor:
        """Model outputs -> ``(batch, D)`` (several model inputs per slot are averaged here)."""
        return feats

    @torch.inference_mode()
    def _run(self, inputs: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(inputs))  # (B, ...)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            feats = self.model.forward_features(self.model_input(x))
            out = [self.pool(feats, len(inputs))]  # -> (B, D)
            if self.head_logits:
                out.append(self.model.forward_head(out[0]))  # (B, D) -> (B, C)
        return [o.float().cpu().numpy() for o in out]

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        return self._run(inputs)[0]

    def embed_outputs(self, inputs: np.ndarray) -> list[np.ndarray]:
        return self._run(inputs)


def _check_clip_len(backbone: Backbone, sampling: ClipSampling) -> None:
    info = backbone.info
    if sampling.frames_per_clip != info.clip_len and info.kind == "clip3d":
        log.warning(
            "%s was built for %d-frame clips; feeding %d-frame clips",
            info.name,
            info.clip_len,
            sampling.frames_per_clip,
        )


class RGBProducer(BackboneProducer):
    """RGB clips (:class:`RGBClips`) through a frame (TSN) or clip (3D / TSM) backbone."""

    kinds = ("frame2d", "clip3d")
    maker: RGBClips

    def check(self, backbone: Backbone) -> None:
        _check_clip_len(backbone, self.maker.sampling)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        info = self.model.info
        return to_tensor_clip(x, info.mean, info.std)  # (B, T, h, w, 3) -> (B, 3, T, h, w)


def _raft_weights_record(name: str) -> dict[str, str]:
    path = raft_weights_file(name)
    return {"file": path.name, "sha256": file_sha256(path)}


class FlowProducer(BackboneProducer):
    """Flow stacks (:class:`FlowClips`) through a video backbone with 2 input channels.

    The maker's ``x = clip(flow, +-bound) / bound`` in [-1, 1] becomes ``(x + 1) / 2`` in
    [0, 1] (TSN's flow jpegs / 255), normalised with the backbone's mean / std (0.5 and
    the mean RGB std for a net adapted to 2 channels, ``BackboneInfo.with_input_channels``),
    exactly as ``extract.train --modality flow`` feeds it.
    """

    kinds = ("frame2d", "clip3d")
    maker: FlowClips

    def check(self, backbone: Backbone) -> None:
        if backbone.info.in_channels != 2:
            raise ValueError(
                f"a flow backbone takes 2 input channels (x, y); {backbone.info.name} has "
                f"{backbone.info.in_channels}: build it with get_backbone(name, in_channels=2)"
            )
        _check_clip_len(backbone, self.maker.sampling)

    def record(self) -> dict[str, Any]:
        algorithm = self.maker.flow.algorithm
        return {
            **super().record(),
            "flow": self.maker.flow.to_dict(),
            "flow_backend": self.maker.backend,
            **({"flow_choice": self.maker.choice} if self.maker.choice else {}),
            **({"flow_weights": _raft_weights_record(algorithm)} if algorithm in RAFT_MODELS else {}),
            "input": "x = clip(flow, +-bound) / bound (channel 0 = x right, 1 = y down); "
            "the model gets ((x + 1) / 2 - mean) / std",
        }

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        info = self.model.info
        return normalize((x.float() + 1.0) / 2.0, info.mean, info.std)  # (B, 2, T, c, c)


class AudioProducer(BackboneProducer):
    """Audio windows (:class:`AudioWindows`) through an audio backbone (log-mel ResNet,
    VGGish: the embeddings of a window's patches averaged, EnvNet-v2 on samples)."""

    kinds = ("audio2d", "audio1d")
    maker: AudioWindows

    def check(self, backbone: Backbone) -> None:
        info, m = backbone.info, self.maker
        if (m.input == "waveform") != (info.kind == "audio1d"):
            raise ValueError(f"{info.name} ({info.kind}) cannot take {m.input} inputs")
        if m.input == "vggish_patches" and m.patch_frames != info.clip_len:
            raise ValueError(
                f"{info.name} takes {info.clip_len}-frame patches, not {m.patch_frames}"
            )

    def record(self) -> dict[str, Any]:
        m, a = self.maker, self.maker.audio
        out = {
            "decode": {
                "library": m.decoder,
                "audio": f"whole track, mono float32 at {a.sample_rate} Hz ({_AUDIO_PATHS[m.decoder]})",
                "window": "centred on the clip, zero-padded past the track",
            },
            "k_axis": "k = clip (one window per clip, no views)",
            "audio": a.to_dict(),
            "input": m.input,
        }
        if m.input == "vggish_patches":
            n = a.frames_per_window // m.patch_frames
            out["pooling"] = f"mean of the {n} patch embeddings of a window"
        return out

    def sampling_record(self) -> dict[str, Any]:
        return {"clips": self.maker.sampling.to_dict()}

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.maker.input == "vggish_patches":
            return x.reshape(-1, 1, *x.shape[-2:])  # (B, P, 96, M) -> (B*P, 1, 96, M)
        return x.unsqueeze(1)  # (B, F, M) -> (B, 1, F, M); (B, W) -> (B, 1, W)

    def pool(self, feats: torch.Tensor, batch: int) -> torch.Tensor:
        if self.maker.input != "vggish_patches":
            return feats
        return feats.view(batch, -1, feats.shape[-1]).mean(dim=1)  # (B*P, D) -> (B, P, D) -> (B, D)
