"""PySlowFast checkpoints of I3D NLN R50 8x8 (Kinetics-400) -> ``i3d_nln_8x8_r50``.

Source: PySlowFast's model zoo (https://github.com/facebookresearch/SlowFast, MODEL_ZOO.md,
config ``configs/Kinetics/c2/I3D_NLN_8x8_R50.yaml``, top-1 74.0),
https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/I3D_NLN_8x8_R50.pkl.
That file is a Caffe2 pickle of numpy blobs (``res2_0_branch2a_w``, ...), which
PySlowFast renames on loading (``slowfast/utils/c2_model_loading.py``) to the PyTorch
layout of its ``slowfast.models.video_model_builder.ResNet``; a checkpoint PySlowFast
saves (``checkpoint_epoch_*.pyth``, state dict under ``model_state``) has that layout too.
This converter takes that PyTorch layout; it does not read Caffe2 pickles.

=====================================================  ====================================
PySlowFast (``slowfast/models/*_helper.py``)           ours (``i3d_nln_8x8_r50``)
=====================================================  ====================================
``s1.pathway0_stem.conv`` / ``.bn``                     ``conv1`` / ``bn1``
``sK.pathway0_resI.branch2.a`` / ``.a_bn`` (b, c)       ``layer{K-1}.I.conv1`` / ``.bn1`` (2, 3)
``sK.pathway0_resI.branch1`` / ``.branch1_bn``          ``layer{K-1}.I.downsample.0`` / ``.1``
``sK.pathway0_nonlocalI.conv_{theta,phi,g,out}``, ``.bn``  ``layer{K-1}.I.nl.conv_*``, ``.bn``
``head.projection``                                    ``fc``
=====================================================  ====================================

K = 2..5 (res2..res5); non-local blocks after blocks 1, 3 of res3 and 1, 3, 5 of res4
(``NONLOCAL.LOCATION``), softmax instantiation, input max-pooled 1x2x2 before phi and g.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from extract.backbones.converters._resnet3d import R50_BLOCKS, bottleneck
from extract.backbones.converters._table import apply_table, batch_norm, unwrap

__all__ = ["I3D_NLN_TABLE", "TABLES", "URLS", "convert"]

URLS = {"i3d_nln_8x8_r50": "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/I3D_NLN_8x8_R50.pkl"}
_NL_CONVS = ("conv_theta", "conv_phi", "conv_g", "conv_out")
#: Blocks followed by a non-local block, per stage (the config's NONLOCAL.LOCATION).
_NONLOCAL_AT = ((), (1, 3), (1, 3, 5), ())


def _i3d_nln_table() -> dict[str, str]:
    table = {"s1.pathway0_stem.conv.weight": "conv1.weight", **batch_norm("s1.pathway0_stem.bn", "bn1")}
    for stage, (blocks, nonlocal_at) in enumerate(zip(R50_BLOCKS, _NONLOCAL_AT, strict=True), start=1):
        theirs = f"s{stage + 1}"
        for i in range(blocks):
            table.update(bottleneck(f"{theirs}.pathway0_res{i}", f"layer{stage}.{i}", convs=("branch2.a", "branch2.b",
                         "branch2.c"), norms=("branch2.a_bn", "branch2.b_bn", "branch2.c_bn"),
                         shortcut=("branch1", "branch1_bn") if i == 0 else None))
            if i in nonlocal_at:
                nl, ours = f"{theirs}.pathway0_nonlocal{i}", f"layer{stage}.{i}.nl"
                for conv in _NL_CONVS:
                    table.update({f"{nl}.{conv}.{t}": f"{ours}.{conv}.{t}" for t in ("weight", "bias")})
                table.update(batch_norm(f"{nl}.bn", f"{ours}.bn"))
    return table | {"head.projection.weight": "fc.weight", "head.projection.bias": "fc.bias"}


I3D_NLN_TABLE = _i3d_nln_table()
#: Backbone -> its key table (their key -> ours).
TABLES = {"i3d_nln_8x8_r50": I3D_NLN_TABLE}


def convert(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """A PySlowFast I3D NLN R50 state dict (or checkpoint, under ``model_state``) in our layout.

    Returns:
        The state dict of ``i3d_nln_8x8_r50`` (with the Kinetics classifier as ``fc``).

    Raises:
        WeightsError: tensors missing / left over (a few listed).
    """
    return apply_table(unwrap(state_dict), I3D_NLN_TABLE, "PySlowFast I3D NLN R50 (i3d_nln_8x8_r50)")
