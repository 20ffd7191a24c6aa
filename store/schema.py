"""Schema constants and the frozen settings record of a feature set.

The layout itself is documented in ``store/README.md``; this module holds what code needs:
the schema version, the standard video columns and :class:`FeatureSetSpec`, which is
serialised into the feature set's Zarr attributes so that every feature set records how
it was made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from store.errors import SchemaMismatch

SCHEMA_VERSION = 1

# Standard columns of ``videos/`` with their numpy dtype and the value a missing cell takes.
VIDEO_COLUMNS: dict[str, tuple[str, Any]] = {
    "id": ("str", ""),
    "path": ("str", ""),
    "split": ("str", ""),
    "n_frames": ("int64", -1),
    "fps": ("float64", float("nan")),
    "duration": ("float64", float("nan")),
    "has_audio": ("bool", False),
}
SPLITS = ("train", "val", "test")
COMPRESSORS = ("none", "lz4", "zstd")


def code_version() -> str:
    """The installed version of this project, recorded next to everything it writes."""
    try:
        return metadata.version("videofeat")
    except metadata.PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


@dataclass(frozen=True)
class FeatureSetSpec:
    """How a feature set is shaped, stored and made (its provenance).

    Attributes:
        clips: K, the number of clips / views / time steps per video.
        dim: D, the feature dimension.
        dtype: Storage dtype, ``float16`` by default (features are read back as float32).
        backbone: Registered backbone name that produced the features.
        modality: ``rgb``, ``flow``, ``audio`` or a free word for synthetic features.
        weights_sha256: Checksum of the backbone weights file; None for random init.
        sampling: Clip sampling and view settings (as their ``to_dict()``).
        extra: Anything else a producer wants to record (flow bound, mel parameters...).
        chunk_rows: Rows per storage chunk. 256 rows x 8 x 512 fp16 is 2 MiB a chunk:
            large enough that whole-chunk reads run near disk speed (see store/README.md).
        compressor: ``none`` (default, fastest to read; fp16 features compress ~1.1x),
            ``lz4`` or ``zstd`` (Blosc, byte-shuffled).
    """

    clips: int
    dim: int
    dtype: str = "float16"
    backbone: str = "unknown"
    modality: str = "rgb"
    weights_sha256: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    chunk_rows: int = 256
    compressor: str = "none"

    def __post_init__(self) -> None:
        if self.clips < 1 or self.dim < 1:
            raise SchemaMismatch(f"a feature set needs clips >= 1 and dim >= 1, got {self.clips}, {self.dim}")
        if self.dtype not in ("float16", "float32"):
            raise SchemaMismatch(f"feature dtype must be float16 or float32, got {self.dtype!r}")
        if self.chunk_rows < 1:
            raise SchemaMismatch(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.compressor not in COMPRESSORS:
            raise SchemaMismatch(f"compressor must be one of {COMPRESSORS}, got {self.compressor!r}")
        try:
            json.dumps(self.sampling)
            json.dumps(self.extra)
        except TypeError as exc:
            raise SchemaMismatch(f"sampling/extra must be JSON-serialisable: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSetSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe_weights(self) -> str:
        """A few words on the weights the features come from (``extra["weights"]``, see README)."""
        record = self.extra.get("weights") or {}
        sha = f"sha256 {self.weights_sha256[:12]}" if self.weights_sha256 else ""
        if not self.weights_sha256:
            seed = self.extra.get("random_init_seed")
            return "random init" + (f" (seed {seed})" if seed is not None else "")
        if record.get("name") not in (None, "file"):
            return f"weights {record['name']} ({record.get('dataset', '?')}, {sha})"
        return f"weights from a local file ({sha})"

    def provenance(self) -> dict[str, Any]:
        """The fields that define what the features mean (not how they are stored)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("chunk_rows", "compressor")}

    def fingerprint(self) -> str:
        """A short hash of :meth:`provenance`; equal fingerprints mean comparable features."""
        blob = json.dumps(self.provenance(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
