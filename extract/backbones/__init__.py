"""Backbones: a registry of clip/frame feature extractors and of their named pretrained weights.

>>> from extract.backbones import get_backbone, list_backbones, list_weights
>>> model = get_backbone("r2plus1d_18", weights="kinetics400").eval()  # doctest: +SKIP
>>> model.info.clip_len, model.info.input_size, model.info.feature_dim  # doctest: +SKIP
(16, 112, 512)

Registered (``list_backbones()``; ``list_weights()`` for the named weights):

- frame models (TSN, ``kind="frame2d"``): ``resnet18``, ``resnet50``, ``resnet101``
- TSM / TIN (``kind="clip3d"``, 2D convs with temporal shift): ``tsm_resnet18``, ``tsm_resnet50``,
  ``tin_resnet50``; ``tsm_small`` for frames of a few dozen pixels (56-px crops, global max pooling:
  the demo's RGB net)
- 3D clip models: ``r2plus1d_18``, ``r3d_18``, ``mc3_18``, ``s3d``, ``mvit_v1_b``, ``mvit_v2_s``,
  ``swin3d_t``, ``swin3d_s``, ``swin3d_b``, ``slowfast_r50``..., ``i3d_nl_r50``...
- audio models: ``resnet18_audio``, ``resnet34_audio``, ``vggish``, ``envnet_v2``
- families of external image models as frame encoders (``kind="frame2d"``), named
  ``PREFIX/NAME`` (``list_backbone_families()``): ``timm/<any timm model[.tag]>``
  (:mod:`extract.backbones.timm_frames`) and ``clip/<open_clip architecture>`` with
  ``weights=TAG`` (:mod:`extract.backbones.clip_frames`); their weights come from the
  Hugging Face cache (:mod:`extract.backbones.hf_hub`)
- the exact architectures of public checkpoints (``slowfast_8x8_r50``, ``i3d_8x8_r50``,
  ``i3d_nln_8x8_r50``, ``vggish_relu``), whose files ``converters/`` turns into our layout
- test / CPU-smoke variants (same code paths, a few channels, 32 px):
  ``resnet_tiny``, ``tsm_tiny``, ``r2plus1d_tiny``, ``r3d_tiny``, ``mc3_tiny``, ...

``weights=`` of :func:`get_backbone`: None (the library default) is a random init, as in
torchvision, with a warning; ``"random"`` says it explicitly; ``"default"`` or a named weight
loads pretrained weights (downloaded into torch.hub's cache on first use); a path loads a
local file. The commands never pass None: ``--backbone NAME`` without ``@`` means ``default``.

Importing this package registers all of them.
"""

from extract.backbones import (  # noqa: F401  (registers the builders)
    audio_cnn,
    clip_frames,
    frame2d,
    i3d_nonlocal,
    slowfast,
    timm_frames,
    tin,
    tsm,
    video3d,
    video_transformers,
)
from extract.backbones.pretrained import (
    DEFAULT,
    RANDOM,
    PretrainedWeights,
    WeightsTransforms,
    default_weights,
    list_weights,
    register_weights,
    resolve_weights,
)
from extract.backbones.registry import (
    Backbone,
    BackboneInfo,
    get_backbone,
    list_backbone_families,
    list_backbones,
    list_family_weights,
    register_backbone,
    register_backbone_family,
)
from extract.backbones.tsm import temporal_shift
from extract.backbones.weights import (
    WeightsError,
    adapt_first_conv,
    file_sha256,
    load_weights,
    read_torch_file,
)

__all__ = [
    "DEFAULT",
    "RANDOM",
    "Backbone",
    "BackboneInfo",
    "PretrainedWeights",
    "WeightsTransforms",
    "WeightsError",
    "adapt_first_conv",
    "default_weights",
    "file_sha256",
    "get_backbone",
    "list_backbone_families",
    "list_backbones",
    "list_family_weights",
    "list_weights",
    "load_weights",
    "read_torch_file",
    "register_backbone",
    "register_backbone_family",
    "register_weights",
    "resolve_weights",
    "temporal_shift",
]
