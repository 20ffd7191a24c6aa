"""Audio backbones: ResNet-18/34 and VGGish on log-mel patches, EnvNet-v2 on raw waveforms.

Input conventions: mono audio as :mod:`extract.media.audio` prepares it with its default
``AudioSettings`` (16 kHz, 2 s windows centred on the video clips, VGGish's log-mel: 25 ms
frames every 10 ms, 64 HTK mel bands over 125-7500 Hz, ``log(mel + 0.01)``). A video without
audio is masked upstream (``valid`` False), never an error here.

- ``kind="audio2d"`` (``resnet18_audio``, ``resnet34_audio``, ``vggish``): ``x`` is
  ``(B, 1, F, M)``, F log-mel frames (time) by M = 64 mel bands: ``log_mel(wave,
  s).unsqueeze(1)`` (F = 198 per 2 s window) for the ResNets, ``vggish_patches(mel)``
  reshaped to ``(-1, 1, 96, 64)`` for VGGish. ``info.clip_len = F``, ``info.input_size = M``.
- ``kind="audio1d"`` (``envnet_v2``): ``x`` is ``(B, 1, S)``, the window's S = 32,000
  samples in [-1, 1]: ``wave.unsqueeze(1)``. ``info.clip_len = S``, ``info.input_size = 1``.

``info.mean`` / ``info.std`` are ``(0.0,)`` / ``(1.0,)`` (the values are fed as computed)
and ``info.modality`` is ``"audio"``. Builders take mono input only (``in_channels=1``, their
default; ``get_backbone`` passes none unless asked).

- ``resnet18_audio`` / ``resnet34_audio``: torchvision's ResNet with a 1-channel first conv,
  fully convolutional in time (any F, default 198); D = 512. ImageNet checkpoints
  load with ``get_backbone(..., weights=path)``: the RGB first conv is averaged over its
  channels (:func:`~extract.backbones.weights.adapt_first_conv`).
- ``vggish`` (Hershey et al. 2017): conv groups 64, 128, 256x2, 512x2 (3x3, ReLU) each
  followed by a 2x2 max pool, then fc 4096, 4096, 128, on 0.96 s patches (96 x 64);
  D = 128, the embedding before the (omitted) PCA, without a final ReLU (as the current
  TensorFlow release). Module layout of ``torchvggish`` (``features.N``,
  ``embeddings.N``), flattened in TensorFlow's (H, W, C) order, so its converted
  checkpoint loads. ``vggish_relu`` is the torchvggish port's architecture (the 2017
  TensorFlow release's): the same with a ReLU after the 128-D embedding; features are
  taken before torchvggish's PCA whitening and 8-bit quantisation.
- ``envnet_v2`` (Tokozume, Ushiku and Harada, ICLR 2018): conv1d 32 (k 64, s 2), 64 (k 16,
  s 2), max-pool 64, the 64 filters become the height of a 1-channel image, conv 32 (8x8)
  x2, max-pool (5, 3), conv 64 (1x4) x2, pool (1, 2), conv 128 (1x2) x2, pool, conv 256
  (1x2) x2, pool, fc 4096, fc 4096 (D = 4096, the penultimate layer); BN + ReLU after
  every conv, no padding, dropout 0.5 after the fcs. The paper feeds 66,650 samples at
  44.1 kHz (~1.5 s); here the same layer table runs on 2 s at 16 kHz (32,000 samples),
  which changes only the fc11 input (256 x 10 x 2 instead of 256 x 10 x 8) and makes the
  64-tap kernel span 4 ms instead of 1.5 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from extract.backbones._narrow import NarrowResNet, _init_like_torchvision
from extract.backbones.frame2d import _TRUNK_NAMES, IMAGENET_WEIGHTS, TINY_WIDTHS, FrameResNet
from extract.backbones.pretrained import from_torchvision, register_all
from extract.backbones.registry import Backbone, BackboneInfo, BackboneKind, register_backbone
from extract.backbones.variants import register_variants

__all__ = ["ENVNET_VARIANTS", "RESNET_VARIANTS", "VGGISH_VARIANTS", "AudioResNet", "EnvNetV2", "VGGish"]

AUDIO_MEAN = (0.0,)
AUDIO_STD = (1.0,)
# What extract.media.audio produces with its default AudioSettings (VGGish's recipe at 16 kHz):
N_MELS = 64
LOG_MEL_FRAMES = 198  # frames of a 2 s window: 1 + (32000 - 400) // 160
VGGISH_FRAMES = 96  # frames of a VGGish patch (0.96 s)
ENVNET_SAMPLES = 32_000  # samples of a 2 s window at 16 kHz
ENVNET_V2_CHANNELS = (32, 64, 32, 32, 64, 64, 128, 128, 256, 256)
ENVNET_TINY_CHANNELS = (8, 64, 8, 8, 8, 8, 16, 16, 16, 16)  # conv2 keeps 64: the image height
VGGISH_WIDTHS = (64, 128, 256, 512)
VGGISH_FC = (4096, 4096, 128)


def _check_audio_input(info: BackboneInfo, x: Tensor, exact_time: bool) -> None:
    """Raise a clear error unless ``x`` has the layout of ``info.kind``."""
    if info.kind == "audio2d":
        layout = f"(B, 1, {info.clip_len} frames, {info.input_size} mels)"
        ok = x.ndim == 4 and x.shape[1] == 1 and x.shape[3] == info.input_size
    else:
        layout = f"(B, 1, {info.clip_len} samples)"
        ok = x.ndim == 3 and x.shape[1] == 1
    if ok and exact_time:
        ok = x.shape[2] == info.clip_len
    if not ok:
        raise ValueError(
            f"{info.name} expects {layout} mono audio, got shape {tuple(x.shape)}; cut the "
            "audio into windows of that size (log-mel frames x mels, or samples)"
        )


def _audio_info(
    name: str,
    kind: BackboneKind,
    feature_dim: int,
    clip_len: int,
    input_size: int,
    in_channels: int,
    modality: str | None,
) -> BackboneInfo:
    if in_channels != 1:
        raise ValueError(
            f"{name} takes mono audio (in_channels=1), got in_channels={in_channels}; "
            "downmix to mono first"
        )
    return BackboneInfo(
        name=name,
        kind=kind,
        feature_dim=feature_dim,
        clip_len=clip_len,
        input_size=input_size,
        mean=AUDIO_MEAN,
        std=AUDIO_STD,
        modality=modality or "audio",
    )


class AudioResNet(FrameResNet):
    """A 2D ResNet on a log-mel patch: ``(B, 1, F, M)`` -> ``(B, D)``."""

    def check_input(self, x: Tensor) -> None:
        """``(B, 1, F, M)`` with M mel bands, any number of frames F."""
        _check_audio_input(self.info, x, exact_time=False)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 1, F, M)`` -> ``(B, D)``: the ResNet with the patch as a 1-channel image."""
        self.check_input(x)
        return self.frame_features(x)  # (B, 1, F, M) -> (B, D)


def _resnet_audio(
    name: str,
    arch: str,
    *,
    in_channels: int = 1,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = LOG_MEL_FRAMES,
) -> AudioResNet:
    """A torchvision ResNet (``arch``, or the tiny one) with a 1-channel stem, on log-mel patches."""
    if arch == "tiny":
        net: tv_resnet.ResNet = NarrowResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], TINY_WIDTHS)
    else:
        net = getattr(tv_resnet, arch)(weights=None)  # never downloads
    net.conv1 = nn.Conv2d(1, net.conv1.out_channels, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    info = _audio_info(
        name,
        "audio2d",
        net.layer4[-1].bn2.num_features,
        clip_len,
        N_MELS,
        in_channels,
        modality,
    )
    trunk = {n: getattr(net, n) for n in _TRUNK_NAMES}
    return AudioResNet(info, trunk, num_classes=num_classes, dropout=dropout)


class VGGish(Backbone):
    """VGGish: ``(B, 1, 96, 64)`` log-mel patch -> ``(B, 128)`` embedding."""

    # features: conv, relu, pool | conv, relu, pool | (conv, relu) x2, pool | (conv, relu) x2, pool
    stage_names = (
        tuple(f"features.{i}" for i in range(3)),
        tuple(f"features.{i}" for i in range(3, 6)),
        tuple(f"features.{i}" for i in range(6, 11)),
        tuple(f"features.{i}" for i in range(11, 16)),
        ("embeddings",),
    )

    def check_input(self, x: Tensor) -> None:
        """``(B, 1, 96, 64)``: the fc layers fix the patch size."""
        _check_audio_input(self.info, x, exact_time=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 1, F, M)`` -> ``(B, D)``: conv groups, flatten as TensorFlow (H, W, C), fc."""
        self.check_input(x)
        x = self.features(x)  # (B, 1, F, M) -> (B, 512, F/16, M/16)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (B, C, h, w) -> (B, h*w*C)
        return self.embeddings(x)  # (B, h*w*C) -> (B, D)


def _vggish(
    name: str,
    widths: Sequence[int],
    fc: Sequence[int],
    *,
    in_channels: int = 1,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    final_relu: bool = False,
) -> VGGish:
    """VGGish with conv ``widths`` per group and fully connected sizes ``fc``, a ReLU after
    the embedding with ``final_relu``."""
    layers: list[nn.Module] = []
    cin = 1
    for group, width in enumerate(widths):
        for _ in range(1 if group < 2 else 2):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2, stride=2))
    frames, mels = VGGISH_FRAMES, N_MELS
    flat = widths[-1] * (frames // 16) * (mels // 16)
    embeddings = nn.Sequential(
        nn.Linear(flat, fc[0]),
        nn.ReLU(inplace=True),
        nn.Linear(fc[0], fc[1]),
        nn.ReLU(inplace=True),
        nn.Linear(fc[1], fc[2]),
        *([nn.ReLU(inplace=True)] if final_relu else []),
    )
    features = nn.Sequential(*layers)
    _init_like_torchvision(features)
    info = _audio_info(name, "audio2d", fc[2], frames, mels, in_channels, modality)
    return VGGish(
        info,
        {"features": features, "embeddings": embeddings},
        num_classes=num_classes,
        dropout=dropout,
    )


def _conv_bn_relu(
    cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, dims: int = 2
) -> nn.Sequential:
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, kernel, stride=stride, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    bn = nn.BatchNorm1d(cout) if dims == 1 else nn.BatchNorm2d(cout)
    return nn.Sequential(conv, bn, nn.ReLU(inplace=True))


def _envnet_grid(samples: int, height: int) -> tuple[int, int]:
    """(height, width) of the conv10 output after its pool, for ``samples`` inputs."""
    width = ((samples - 64) // 2 + 1 - 16) // 2 + 1  # conv1 (k 64, s 2), conv2 (k 16, s 2)
    width //= 64  # pool2
    height, width = (height - 14) // 5, (width - 14) // 3  # conv3, conv4 (8x8), pool (5, 3)
    for kernel in (4, 2, 2):  # conv5/6, conv7/8, conv9/10, each pair followed by a (1, 2) pool
        width = (width - 2 * (kernel - 1)) // 2
    return height, width


class EnvNetV2(Backbone):
    """EnvNet-v2: ``(B, 1, S)`` waveform -> ``(B, 4096)`` penultimate fc feature."""

    stage_names = (
        ("conv1", "conv2"),
        ("conv3", "conv4"),
        ("conv5", "conv6"),
        ("conv7", "conv8", "conv9", "conv10"),
        ("fc11", "fc12"),
    )

    def check_input(self, x: Tensor) -> None:
        """``(B, 1, S)`` with S = ``info.clip_len``: the fc layers fix the window."""
        _check_audio_input(self.info, x, exact_time=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 1, S)`` -> ``(B, D)``."""
        self.check_input(x)
        x = nn.functional.max_pool1d(self.conv2(self.conv1(x)), 64)  # (B, 1, S) -> (B, 64, W)
        x = x.unsqueeze(1)  # (B, 64, W) -> (B, 1, 64, W): the filters become the height
        x = nn.functional.max_pool2d(self.conv4(self.conv3(x)), (5, 3))
        x = nn.functional.max_pool2d(self.conv6(self.conv5(x)), (1, 2))
        x = nn.functional.max_pool2d(self.conv8(self.conv7(x)), (1, 2))
        x = nn.functional.max_pool2d(self.conv10(self.conv9(x)), (1, 2))
        x = self.drop11(self.relu(self.fc11(x.flatten(1))))  # (B, C, h, w) -> (B, fc)
        return self.relu(self.fc12(x))  # (B, fc) -> (B, D)


def _envnet(
    name: str,
    channels: Sequence[int],
    fc: int,
    *,
    in_channels: int = 1,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = ENVNET_SAMPLES,
) -> EnvNetV2:
    """EnvNet-v2's layer table with ``channels`` filters and an ``fc``-wide head, on ``clip_len`` samples."""
    samples = clip_len
    c = channels
    trunk: dict[str, nn.Module] = {
        "conv1": _conv_bn_relu(1, c[0], 64, stride=2, dims=1),
        "conv2": _conv_bn_relu(c[0], c[1], 16, stride=2, dims=1),
        "conv3": _conv_bn_relu(1, c[2], (8, 8)),
        "conv4": _conv_bn_relu(c[2], c[3], (8, 8)),
        "conv5": _conv_bn_relu(c[3], c[4], (1, 4)),
        "conv6": _conv_bn_relu(c[4], c[5], (1, 4)),
        "conv7": _conv_bn_relu(c[5], c[6], (1, 2)),
        "conv8": _conv_bn_relu(c[6], c[7], (1, 2)),
        "conv9": _conv_bn_relu(c[7], c[8], (1, 2)),
        "conv10": _conv_bn_relu(c[8], c[9], (1, 2)),
    }
    height, width = _envnet_grid(samples, c[1])
    if height < 1 or width < 1:
        raise ValueError(
            f"{name}: {samples} samples are too short for EnvNet-v2's layers; use at least "
            f"{ENVNET_SAMPLES // 2}"
        )
    trunk["fc11"] = nn.Linear(c[9] * height * width, fc)
    trunk["relu"] = nn.ReLU(inplace=True)
    trunk["drop11"] = nn.Dropout(0.5)
    trunk["fc12"] = nn.Linear(fc, fc)
    info = _audio_info(name, "audio1d", fc, samples, 1, in_channels, modality)
    return EnvNetV2(info, trunk, num_classes=num_classes, dropout=dropout)


#: The audio CNN variants: ``create`` per family, then its fixed arguments.
RESNET_VARIANTS: dict[str, dict] = {
    "resnet18_audio": {"doc": "ResNet-18 on ``(B, 1, 198, 64)`` log-mel patches (2 s), D=512.", "arch": "resnet18"},
    "resnet34_audio": {"doc": "ResNet-34 on ``(B, 1, 198, 64)`` log-mel patches (2 s), D=512.", "arch": "resnet34"},
    "resnet_audio_tiny": {"doc": "Test / CPU-smoke variant: the tiny ResNet (widths 8..64) on ``(B, 1, 198, 64)``, "
                                 "D=64.", "arch": "tiny"},
}
VGGISH_VARIANTS: dict[str, dict] = {
    "vggish": {"doc": "VGGish on ``(B, 1, 96, 64)`` log-mel patches (0.96 s), D=128.",
               "widths": VGGISH_WIDTHS, "fc": VGGISH_FC},
    "vggish_relu": {"doc": "VGGish as the torchvggish port of the AudioSet release (its checkpoint's architecture): "
                           "``vggish`` with a ReLU after the 128-D embedding, before PCA; D=128.",
                    "widths": VGGISH_WIDTHS, "fc": VGGISH_FC, "final_relu": True},
    "vggish_tiny": {"doc": "Test / CPU-smoke variant: VGGish widths 8..64, fc 128-128-32, same input, D=32.",
                    "widths": TINY_WIDTHS, "fc": (128, 128, 32)},
}
ENVNET_VARIANTS: dict[str, dict] = {
    "envnet_v2": {"doc": "EnvNet-v2 on ``(B, 1, 32000)`` waveforms (2 s at 16 kHz), D=4096.",
                  "channels": ENVNET_V2_CHANNELS, "fc": 4096},
    "envnet_tiny": {"doc": "Test / CPU-smoke variant: EnvNet-v2's layers with few filters and fc 64, D=64.",
                    "channels": ENVNET_TINY_CHANNELS, "fc": 64},
}
register_variants(register_backbone, _resnet_audio, RESNET_VARIANTS)
register_variants(register_backbone, _vggish, VGGISH_VARIANTS)
register_variants(register_backbone, _envnet, ENVNET_VARIANTS)
# ImageNet ResNets, their first conv averaged to one channel (cross-modality init); not a default.
for _name, _arch in (("resnet18_audio", "resnet18"), ("resnet34_audio", "resnet34")):
    _enum, _dim = IMAGENET_WEIGHTS[_arch]
    register_all(from_torchvision(_name, _enum, feature_dim=_dim, default=False, clip_len=LOG_MEL_FRAMES))
