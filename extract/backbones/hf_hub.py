"""Weight files from the Hugging Face Hub cache: found there offline, downloaded on first use.

The timm and open_clip families keep their published weights on the Hugging Face Hub. A
file is looked up in the standard cache first (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``, laid out as ``huggingface_hub`` writes it:
``models--ORG--NAME/refs/main`` naming a snapshot, ``snapshots/HASH/FILE``), so a cached
weight never touches the network. Only a file missing from the cache is downloaded (with
``huggingface_hub``'s progress bar), unless ``HF_HUB_OFFLINE=1``. A download that cannot
happen ends in one :class:`~extract.backbones.weights.WeightsError` line naming the hub id,
the file and the cache folder where the user can put it by hand.

The environment is read at each call (not at import), so a process may point ``HF_HOME``
at another cache before building a backbone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from extract.backbones.weights import WeightsError, file_sha256

logger = logging.getLogger(__name__)

__all__ = ["HubFile", "hf_cache_dir", "hf_offline", "hub_file", "in_hf_cache"]

_TRUE = {"1", "on", "yes", "true"}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder the environment names now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids downloads."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class HubFile:
    """A weight file resolved from the hub cache.

    Attributes:
        repo_id: the hub id (``timm/convnext_tiny.fb_in22k``).
        filename: the file inside the repository (``model.safetensors``).
        path: where it lies in the cache.
        sha256: hex sha256 of the file's bytes.
    """

    repo_id: str
    filename: str
    path: Path
    sha256: str

    @property
    def source(self) -> str:
        """``hf-hub:REPO/FILE``, the provenance string recorded in the store."""
        return f"hf-hub:{self.repo_id}/{self.filename}"

    def record(self, name: str) -> dict[str, str]:
        """The backbone's ``weights_record`` for the weight ``name`` loaded from this file."""
        return {"name": name, "source": self.source, "sha256": self.sha256}


def _cached(repo_id: str, filename: str, cache: Path, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    return Path(found) if isinstance(found, str) else None


def in_hf_cache(repo_id: str, filenames: Sequence[str], *, revision: str | None = None) -> bool:
    """True when one of ``filenames`` of ``repo_id`` is in the cache (no network access)."""
    cache = hf_cache_dir()
    return any(_cached(repo_id, name, cache, revision) is not None for name in filenames)


def _hand_placement(repo_id: str, filenames: Sequence[str], cache: Path) -> str:
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    return (
        f"put {filenames[0]} from https://huggingface.co/{repo_id} at {folder}/snapshots/REV/{filenames[0]} "
        f"and the word REV in {folder}/refs/main (or download once with network, or pass @PATH)"
    )


def hub_file(repo_id: str, filenames: Sequence[str], *, revision: str | None = None) -> HubFile:
    """The first of ``filenames`` the hub repository has, from the cache or downloaded into it.

    Args:
        repo_id: ``ORG/NAME`` on the Hugging Face Hub.
        filenames: candidate files in order of preference (``model.safetensors`` before
            ``pytorch_model.bin``); the first one present in the cache wins without any
            network access.
        revision: branch, tag or commit; None is ``main``.

    Returns:
        The file and its sha256.

    Raises:
        WeightsError: not in the cache and no download possible (offline, no network, no
            such repository or file): one line naming the hub id and the cache folder.
    """
    cache = hf_cache_dir()
    for name in filenames:
        path = _cached(repo_id, name, cache, revision)
        if path is not None:
            logger.info("%s/%s found in the cache %s", repo_id, name, cache)
            return HubFile(repo_id, name, path, file_sha256(path))
    where = _hand_placement(repo_id, filenames, cache)
    if hf_offline():
        raise WeightsError(f"weights {repo_id} ({' or '.join(filenames)}) are not in the Hugging Face "
                           f"cache {cache} and HF_HUB_OFFLINE is set; {where}")
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    missing = []
    for name in filenames:
        try:
            path = _download(repo_id, name, revision, cache)
        except RemoteEntryNotFoundError:  # the hub answered: no such file, try the next one
            missing.append(name)
            continue
        except (OSError, ValueError) as err:  # no network, unknown or gated repository
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, LocalEntryNotFoundError):
                first = "the hub cannot be reached: no network?"
            raise WeightsError(f"cannot download {repo_id}/{name} from the Hugging Face Hub ({first[:160]}) "
                               f"into {cache}; {where}") from None
        return HubFile(repo_id, name, path, file_sha256(path))
    raise WeightsError(f"the Hugging Face repository {repo_id} has none of {missing}")


def _download(repo_id: str, filename: str, revision: str | None, cache: Path) -> Path:
    """``hf_hub_download`` with huggingface_hub's own warnings held back (the caller reports)."""
    from huggingface_hub import hf_hub_download

    logger.info("downloading %s/%s into %s", repo_id, filename, cache)
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, like the cache folder
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache, endpoint=endpoint))
    finally:
        hub_logger.setLevel(level)
