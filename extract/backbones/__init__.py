"""Backbones: a registry of clip/frame feature extractors.

>>> from extract.backbones import get_backbone, list_backbones
>>> model = get_backbone("r2plus1d_18", weights="r2plus1d_18.pth").eval()  # doctest: +SKIP
>>> model.info.clip_len, model.info.input_size, model.info.feature_dim  # doctest: +SKIP
(16, 112, 512)

Registered (``list_backbones()``):

- frame models (TSN, ``kind="frame2d"``): ``resnet18``, ``resnet50``, ``resnet101``
- TSM (``kind="clip3d"``, 2D convs with temporal shift): ``tsm_resnet18``, ``tsm_resnet50``
- 3D clip models: ``r2plus1d_18``, ``r3d_18``, ``mc3_18``
- SlowFast, I3D non-local, TIN, audio CNNs (``slowfast.py``, ``i3d_nonlocal.py``,
  ``tin.py``, ``audio_cnn.py``), with the exact architectures of public checkpoints
  (``slowfast_8x8_r50``, ``i3d_8x8_r50``, ``i3d_nln_8x8_r50``, ``vggish_relu``) whose files
  ``converters/`` turns into our layout
- test / CPU-smoke variants (same code paths, a few channels, 32 px):
  ``resnet_tiny``, ``tsm_tiny``, ``r2plus1d_tiny``, ``r3d_tiny``, ``mc3_tiny``

Importing this package registers all of them.
"""

from extract.backbones import (  # noqa: F401  (registers the builders)
    audio_cnn,
    frame2d,
    i3d_nonlocal,
    slowfast,
    tin,
    tsm,
    video3d,
)
from extract.backbones.registry import (
    Backbone,
    BackboneInfo,
    get_backbone,
    list_backbones,
    register_backbone,
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
    "Backbone",
    "BackboneInfo",
    "WeightsError",
    "adapt_first_conv",
    "file_sha256",
    "get_backbone",
    "list_backbones",
    "load_weights",
    "read_torch_file",
    "register_backbone",
    "temporal_shift",
]
