"""pytorchvideo model-zoo checkpoints (Kinetics-400) -> ``slowfast_8x8_r50``, ``i3d_8x8_r50``.

Sources (the files ``pytorchvideo.models.hub`` loads; a dict with the state dict under
``model_state``):

* SlowFast R50 8x8, top-1 76.4:
  https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth
  (``pytorchvideo.models.hub.slowfast_r50``: ``create_slowfast`` with 7x1x1 lateral convs)
* I3D R50 8x8, top-1 73.27:
  https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/I3D_8x8_R50.pyth
  (``pytorchvideo.models.hub.i3d_r50``: ``create_resnet`` with a 5x7x7 stem, temporal
  kernels 3 / 3,1 / 3,1 / 1,3 and a 2x1x1 max pool after res2)

Layout (``pytorchvideo.models.net.Net``: a ``blocks`` list):

=============================================================  ===============================
pytorchvideo SlowFast                                          ours (``slowfast_8x8_r50``)
=============================================================  ===============================
``blocks.0.multipathway_blocks.{0,1}.conv`` / ``.norm``         ``{slow,fast}_stem.0`` / ``.1``
``blocks.S.multipathway_fusion.conv_fast_to_slow`` / ``.norm``  ``fuseS.conv`` / ``.bn`` (S 0-3)
``blocks.S.multipathway_blocks.P.res_blocks.I.branch2.conv_a``  ``{slow,fast}_layerS.I.conv1``
``... .branch2.norm_a`` (b, c alike)                            ``... .bn1`` (2, 3 alike)
``... .branch1_conv`` / ``.branch1_norm``                       ``... .downsample.0`` / ``.1``
``blocks.6.proj``                                               ``fc``
=============================================================  ===============================

I3D: ``blocks.0.conv`` / ``.norm`` -> ``conv1`` / ``bn1``; ``blocks.{1,3,4,5}.res_blocks.I``
-> ``layer{1,2,3,4}.I`` (``blocks.2`` is the parameter-free pool after res2);
``blocks.6.proj`` -> ``fc``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from extract.backbones.converters._resnet3d import R50_BLOCKS, bottleneck
from extract.backbones.converters._table import apply_table, batch_norm, unwrap
from extract.backbones.pretrained import PretrainedWeights, WeightsTransforms, register_all
from extract.backbones.weights import WeightsError

__all__ = ["I3D_TABLE", "SLOWFAST_TABLE", "TABLES", "URLS", "convert"]

#: PySlowFast's Kinetics normalisation (inputs in [0, 1]).
_MEAN, _STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
URLS = {
    "slowfast_8x8_r50": "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth",
    "i3d_8x8_r50": "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/I3D_8x8_R50.pyth",
}
_CONVS = ("branch2.conv_a", "branch2.conv_b", "branch2.conv_c")
_NORMS = ("branch2.norm_a", "branch2.norm_b", "branch2.norm_c")
_SHORTCUT = ("branch1_conv", "branch1_norm")
_HEAD = {"blocks.6.proj.weight": "fc.weight", "blocks.6.proj.bias": "fc.bias"}


def _stage(theirs: str, ours: str, blocks: int) -> dict[str, str]:
    """Rows of one stage: its first block has the projection shortcut."""
    table: dict[str, str] = {}
    for i in range(blocks):
        table.update(bottleneck(f"{theirs}.res_blocks.{i}", f"{ours}.{i}", convs=_CONVS, norms=_NORMS,
                                shortcut=_SHORTCUT if i == 0 else None))
    return table


def _slowfast_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for p, pathway in enumerate(("slow", "fast")):
        table[f"blocks.0.multipathway_blocks.{p}.conv.weight"] = f"{pathway}_stem.0.weight"
        table.update(batch_norm(f"blocks.0.multipathway_blocks.{p}.norm", f"{pathway}_stem.1"))
        for s, blocks in enumerate(R50_BLOCKS, start=1):
            table.update(_stage(f"blocks.{s}.multipathway_blocks.{p}", f"{pathway}_layer{s}", blocks))
    for s in range(4):  # lateral connections after the stem and res2..res4
        table[f"blocks.{s}.multipathway_fusion.conv_fast_to_slow.weight"] = f"fuse{s}.conv.weight"
        table.update(batch_norm(f"blocks.{s}.multipathway_fusion.norm", f"fuse{s}.bn"))
    return table | _HEAD


def _i3d_table() -> dict[str, str]:
    table = {"blocks.0.conv.weight": "conv1.weight", **batch_norm("blocks.0.norm", "bn1")}
    for s, (index, blocks) in enumerate(zip((1, 3, 4, 5), R50_BLOCKS, strict=True), start=1):
        table.update(_stage(f"blocks.{index}", f"layer{s}", blocks))
    return table | _HEAD


SLOWFAST_TABLE = _slowfast_table()
I3D_TABLE = _i3d_table()
#: Backbone -> its key table (their key -> ours).
TABLES = {"slowfast_8x8_r50": SLOWFAST_TABLE, "i3d_8x8_r50": I3D_TABLE}


def convert(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """A pytorchvideo SlowFast R50 or I3D R50 checkpoint in our layout.

    Args:
        state_dict: the state dict, or the loaded ``.pyth`` file (state dict under
            ``model_state``). The architecture is told by its stem's key:
            ``blocks.0.multipathway_blocks.0.conv.weight`` (SlowFast) or
            ``blocks.0.conv.weight`` (I3D).

    Returns:
        The state dict of ``slowfast_8x8_r50`` or ``i3d_8x8_r50`` (with the Kinetics
        classifier as ``fc``).

    Raises:
        WeightsError: neither stem key, or tensors missing / left over (a few listed).
    """
    state = unwrap(state_dict)
    if "blocks.0.multipathway_blocks.0.conv.weight" in state:
        return apply_table(state, SLOWFAST_TABLE, "pytorchvideo SlowFast R50 (slowfast_8x8_r50)")
    if "blocks.0.conv.weight" in state:
        return apply_table(state, I3D_TABLE, "pytorchvideo I3D R50 (i3d_8x8_r50)")
    raise WeightsError(
        "not a pytorchvideo SlowFast R50 / I3D R50 state dict: it has neither "
        "blocks.0.multipathway_blocks.0.conv.weight nor blocks.0.conv.weight "
        f"(first keys: {', '.join(list(state)[:3])})"
    )


# Named weights (extract.backbones.pretrained): the files above, converted on load. The
# model zoo publishes no checksum: the sha256 of the file loaded is recorded with the features.
register_all([
    PretrainedWeights(
        backbone="slowfast_8x8_r50", name="kinetics400", url=URLS["slowfast_8x8_r50"], dataset="Kinetics-400",
        transforms=WeightsTransforms(crop_size=224, resize_size=(256,), mean=_MEAN, std=_STD, clip_len=32,
                                     frame_rate=15.0),  # 32 frames, every 2nd of 30 fps
        feature_dim=2304, aliases=("SLOWFAST_8x8_R50",), source="pytorchvideo", converter=convert, default=True),
    PretrainedWeights(
        backbone="i3d_8x8_r50", name="kinetics400", url=URLS["i3d_8x8_r50"], dataset="Kinetics-400",
        transforms=WeightsTransforms(crop_size=224, resize_size=(256,), mean=_MEAN, std=_STD, clip_len=8,
                                     frame_rate=3.75),  # 8 frames, every 8th of 30 fps
        feature_dim=2048, aliases=("I3D_8x8_R50",), source="pytorchvideo", converter=convert, default=True),
])
