"""Table rows shared by the 3D ResNet converters: one bottleneck block, PySlowFast-style names.

pytorchvideo and PySlowFast name the three convs of a bottleneck ``conv_a/b/c``
(``a/b/c``) with norms ``norm_a/b/c`` (``a_bn/b_bn/c_bn``) and the projection shortcut
``branch1_conv``/``branch1_norm`` (``branch1``/``branch1_bn``); ours are torchvision's
``conv1..3``, ``bn1..3`` and ``downsample.0``/``downsample.1``
(:class:`extract.backbones.i3d_nonlocal.Bottleneck3d`).
"""

from __future__ import annotations

from extract.backbones.converters._table import batch_norm

__all__ = ["R50_BLOCKS", "bottleneck"]

#: Bottleneck blocks per stage (res2..res5) of a ResNet-50.
R50_BLOCKS = (3, 4, 6, 3)


def bottleneck(theirs: str, ours: str, *, convs: tuple[str, str, str], norms: tuple[str, str, str],
               shortcut: tuple[str, str] | None) -> dict[str, str]:
    """Rows of one bottleneck block.

    Args:
        theirs: the block's prefix in the source (``blocks.1.multipathway_blocks.0.res_blocks.0``).
        ours: the block's prefix in our model (``slow_layer1.0``).
        convs: the source names of the 1st, 2nd and 3rd conv, relative to ``theirs``.
        norms: the source names of their norms.
        shortcut: source names of the shortcut conv and its norm, None for an identity shortcut.
    """
    table: dict[str, str] = {}
    for i, (conv, norm) in enumerate(zip(convs, norms, strict=True), start=1):
        table[f"{theirs}.{conv}.weight"] = f"{ours}.conv{i}.weight"
        table.update(batch_norm(f"{theirs}.{norm}", f"{ours}.bn{i}"))
    if shortcut is not None:
        table[f"{theirs}.{shortcut[0]}.weight"] = f"{ours}.downsample.0.weight"
        table.update(batch_norm(f"{theirs}.{shortcut[1]}", f"{ours}.downsample.1"))
    return table
