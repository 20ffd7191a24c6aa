"""TSM authors' Kinetics-400 ResNet-50 checkpoints -> ``tsm_resnet50``.

Source: https://github.com/mit-han-lab/temporal-shift-module (README, "Kinetics-400"):
TSM ResNet-50, 8 segments, shift 1/8 each way in every block ("blockres"), e.g.
https://hanlab18.mit.edu/projects/tsm/models/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth
(top-1 71.2% at 8x1 clip; ``..._e100_dense.pth`` has the same layout). The file is a dict
with the state dict under ``state_dict``, keys of ``nn.DataParallel(TSN)``
(``ops/models.py``): a torchvision ResNet-50 as ``module.base_model``, whose block
``conv1`` is wrapped by ``TemporalShift`` (``ops/temporal_shift.py``) and so stored as
``conv1.net``; its ``fc`` replaced by a dropout, the classifier being ``module.new_fc``.

===============================================  ==========================
TSM (``module.`` removed)                        ours (``tsm_resnet50``)
===============================================  ==========================
``base_model.conv1`` / ``base_model.bn1``         ``conv1`` / ``bn1``
``base_model.layerS.I.conv1.net``                 ``layerS.I.conv1``
``base_model.layerS.I.{conv2,conv3,bn1..3}``      ``layerS.I.{conv2,conv3,bn1..3}``
``base_model.layerS.I.downsample.{0,1}``          ``layerS.I.downsample.{0,1}``
``new_fc``                                        ``fc``
===============================================  ==========================

TSM averages the per-frame class scores over the segments; ours averages the per-frame
features, then applies ``fc``: the same logits, since ``fc`` is linear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from extract.backbones.converters._resnet3d import R50_BLOCKS
from extract.backbones.converters._table import apply_table, batch_norm, unwrap
from extract.backbones.pretrained import PretrainedWeights, WeightsTransforms, register_all

__all__ = ["TSM_TABLE", "TABLES", "URLS", "convert"]

URLS = {"tsm_resnet50": "https://hanlab18.mit.edu/projects/tsm/models/"
                        "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth"}


def _tsm_table() -> dict[str, str]:
    table = {"base_model.conv1.weight": "conv1.weight", **batch_norm("base_model.bn1", "bn1")}
    for s, blocks in enumerate(R50_BLOCKS, start=1):
        for i in range(blocks):
            theirs, ours = f"base_model.layer{s}.{i}", f"layer{s}.{i}"
            table[f"{theirs}.conv1.net.weight"] = f"{ours}.conv1.weight"  # the shift wraps conv1
            table[f"{theirs}.conv2.weight"] = f"{ours}.conv2.weight"
            table[f"{theirs}.conv3.weight"] = f"{ours}.conv3.weight"
            for bn in ("bn1", "bn2", "bn3"):
                table.update(batch_norm(f"{theirs}.{bn}", f"{ours}.{bn}"))
            if i == 0:
                table[f"{theirs}.downsample.0.weight"] = f"{ours}.downsample.0.weight"
                table.update(batch_norm(f"{theirs}.downsample.1", f"{ours}.downsample.1"))
    return table | {"new_fc.weight": "fc.weight", "new_fc.bias": "fc.bias"}


TSM_TABLE = _tsm_table()
#: Backbone -> its key table (their key -> ours).
TABLES = {"tsm_resnet50": TSM_TABLE}


def convert(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """A TSM ResNet-50 checkpoint (or its ``state_dict`` entry) in our layout.

    Returns:
        The state dict of ``tsm_resnet50`` (with the Kinetics classifier as ``fc``).

    Raises:
        WeightsError: tensors missing / left over (a few listed).
    """
    return apply_table(unwrap(state_dict), TSM_TABLE, "TSM ResNet-50 (tsm_resnet50)")


# Named weight (extract.backbones.pretrained): the file above, converted on load; no published
# checksum (the sha256 of the file loaded is recorded with the features).
register_all([PretrainedWeights(
    backbone="tsm_resnet50", name="kinetics400", url=URLS["tsm_resnet50"], dataset="Kinetics-400",
    transforms=WeightsTransforms(crop_size=224, resize_size=(256,), mean=(0.485, 0.456, 0.406),
                                 std=(0.229, 0.224, 0.225), clip_len=8),  # 8 TSN segments of one frame
    feature_dim=2048, aliases=("TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50",), source="tsm",
    converter=convert, default=True)])
