"""The device a run uses: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against what is visible.

One rule for every trainer and fitter (heads, backbones, XGBoost fusion): ``auto`` takes the
GPU when one is visible, else the CPU; asking for ``cuda`` without a visible GPU is a user
error that says what to pass instead. Importing this module does not import torch (fusion
uses it with XGBoost's own GPU check).
"""

from __future__ import annotations

from collections.abc import Callable

from store.errors import VideoFeatError


class DeviceUnavailable(VideoFeatError):
    """The device asked for is not visible on this machine."""


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(name: str, *, gpu_visible: Callable[[], bool] = _torch_cuda, library: str = "torch") -> str:
    """``auto`` -> ``cuda`` or ``cpu``; ``cpu`` / ``cuda`` / ``cuda:N`` as given when usable.

    Args:
        name: the user's choice.
        gpu_visible: whether ``library`` sees a GPU (default: ``torch.cuda.is_available``).
        library: named in the error.

    Returns:
        The device name (``torch.device(...)`` takes it).

    Raises:
        DeviceUnavailable: ``cuda`` asked for, but ``library`` sees no GPU.
    """
    if name == "auto":
        return "cuda" if gpu_visible() else "cpu"
    if name.startswith("cuda") and not gpu_visible():
        raise DeviceUnavailable(f"device {name!r} asked for but {library} sees no CUDA GPU; "
                                "use --device cpu or auto")
    return name
