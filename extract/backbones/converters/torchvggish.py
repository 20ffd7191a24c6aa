"""torchvggish's port of the AudioSet VGGish -> ``vggish_relu`` (and ``vggish``).

Source: https://github.com/harritaylor/torchvggish (``torchvggish/torchvggish.py``),
weights https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth,
converted from Google's TensorFlow ``vggish_model.ckpt`` (AudioSet). The file is a plain
state dict of ``VGG``: ``features.N`` (conv layers 0, 3, 6, 8, 11, 13 of
``make_layers()``) and ``embeddings.N`` (fc layers 0, 2, 4), the names our VGGish uses,
so the table is the identity on exactly those 18 tensors.

torchvggish ends its embeddings with a ReLU, as the 2017 TensorFlow release did;
``vggish_relu`` is that architecture, ``vggish`` the one without it. Our feature is the
128-D embedding **before** PCA: torchvggish's optional postprocessor (PCA whitening
from the separate ``vggish_pca_params-970ea276.pth``, clipping to [-2, 2] and 8-bit
quantisation, which made the released AudioSet embeddings) is lossy and not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from extract.backbones.converters._table import apply_table, unwrap
from extract.backbones.pretrained import PretrainedWeights, WeightsTransforms, register_all

__all__ = ["TABLES", "URLS", "VGGISH_TABLE", "convert"]

URLS = {"vggish_relu": "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"}
_CONV_LAYERS = (0, 3, 6, 8, 11, 13)  # make_layers(): conv, relu[, pool] per entry of 64 M 128 M 256 256 M 512 512 M
_FC_LAYERS = (0, 2, 4)

VGGISH_TABLE = {
    f"{block}.{i}.{t}": f"{block}.{i}.{t}"
    for block, layers in (("features", _CONV_LAYERS), ("embeddings", _FC_LAYERS))
    for i in layers
    for t in ("weight", "bias")
}
#: Backbone -> its key table (their key -> ours).
TABLES = {"vggish_relu": VGGISH_TABLE}


def convert(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """torchvggish's VGGish state dict in our layout (the same names, checked).

    Raises:
        WeightsError: tensors missing / left over (a few listed).
    """
    return apply_table(unwrap(state_dict), VGGISH_TABLE, "torchvggish VGGish (vggish_relu)")


# Named weight (extract.backbones.pretrained); the file name carries its sha256 prefix (10086976).
# Transforms in BackboneInfo's terms: 96 log-mel frames (clip_len) of 64 bands (crop_size).
register_all([PretrainedWeights(
    backbone="vggish_relu", name="audioset", url=URLS["vggish_relu"], dataset="AudioSet",
    transforms=WeightsTransforms(crop_size=64, resize_size=(64,), mean=(0.0,), std=(1.0,), clip_len=96),
    feature_dim=128, aliases=("vggish-10086976",), source="torchvggish", converter=convert, default=True)])
