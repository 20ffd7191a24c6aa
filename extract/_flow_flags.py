"""The optical-flow flags that ``extract.run`` and ``extract.train`` share: declared once, mapped
once to :class:`~extract.media.flow.FlowSettings` fields (a feature set's flow and the flow its
backbone was trained on must be made alike)."""

from __future__ import annotations

import argparse
from typing import Any

from extract.media.flow import FlowSettings
from store.cli import positive_int

#: (FlowSettings field, flag dest) of :func:`add_flow_param_arguments`' flags: they go into ``flow_params``.
FLOW_PARAM_FLAGS: tuple[tuple[str, str], ...] = (("gap", "flow_gap"), ("fb_winsize", "fb_winsize"))


def add_flow_param_arguments(group: argparse._ActionsContainer, *, default: Any = None) -> None:
    """``--flow-gap`` and ``--fb-winsize`` (``default``: what an absent flag leaves, e.g. None or
    ``argparse.SUPPRESS``; the FlowSettings default applies then)."""
    group.add_argument(
        "--flow-gap", dest="flow_gap", type=positive_int, default=default, metavar="N",
        help=f"flow from each clip frame to the frame N on, divided by N (still pixels per frame; default: "
        f"{FlowSettings().gap}, the next frame): a larger N shows slow motion that one frame step hides under "
        "the flow's noise")
    group.add_argument(
        "--fb-winsize", dest="fb_winsize", type=positive_int, default=default, metavar="PX",
        help=f"Farneback's averaging window (default: {FlowSettings().fb_winsize}, OpenCV's sample; smaller "
        "keeps the motion of small objects apart from their background)")


def flow_param_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``{FlowSettings field: value}`` of the flags given on the command line (absent or None: left out)."""
    return {name: getattr(args, dest) for name, dest in FLOW_PARAM_FLAGS if getattr(args, dest, None) is not None}
