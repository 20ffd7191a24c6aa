"""Search by example: the stored videos most like a new video file, and the labels they vote for.

::

    python -m extract.search --store demo.zarr --features rgb_resnet18 --video clip.mp4 [-k 10]
    python -m extract.search --store mit.zarr --features rgb_r2plus1d_18 --video x.mp4 --weights r2plus1d_18.pth
    python -m extract.search --store demo.zarr --features audio_resnet18_audio --video clip.mp4

Any feature set ``extract.run`` wrote can be searched: RGB, optical flow or audio. The file is
embedded exactly as ``extract.run`` embedded the feature set: the producer is rebuilt from the
set's recorded spec (modality, backbone, random-init seed or weights checksum, clip sampling,
views, flow algorithm and bound, audio windows, decoder, chunking; a named weight, e.g.
``r2plus1d_18@kinetics400``, is loaded again by its name from the cache) through
:func:`extract.dump.pipeline.build_producers`, the file is
decoded by the same worker function and embedded in the same model, and the features are
rounded to the set's storage dtype. The per-video vector is the mean of the valid clips
(:func:`store.index.pool_video_vectors`, what the index holds), and the search is
:func:`store.search.neighbours`. A set extracted from a local file needs ``--weights PATH``
to that checkpoint; its sha256 must equal the recorded one (the path itself is not recorded).

Exit status: 0 found, 2 a usage error (one ``error: ...`` line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.backbones import RANDOM, file_sha256
from extract.dump.makers import NO_AUDIO
from extract.dump.pipeline import build_producers
from extract.dump.producers import FeatureProducer
from extract.dump.settings import DEVICES, MODALITIES, ExtractSettings
from extract.dump.worker import DecodeTask, process_task
from extract.errors import ExtractError
from extract.media.decode import DECODERS
from extract.media.sampling import EVERY, ClipSampling, ViewSpec
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.feature_set import FeatureSet
from store.feature_store import FeatureStore
from store.index import KINDS, FeatureIndex, IndexSpec, ensure_index, pool_video_vectors
from store.search import Neighbours, format_neighbours, neighbours
from store.threads import add_threads_argument, set_threads

__all__ = ["VideoEmbedding", "embed_video", "producer_for", "search_video"]

log = logging.getLogger(__name__)


def _settings_from_spec(fset: FeatureSet, weights: str | os.PathLike | None, device: str,
                        batch_size: int) -> ExtractSettings:
    """The :class:`ExtractSettings` that made ``fset`` (as far as they shape the features)."""
    spec = fset.spec
    sampling = spec.sampling if isinstance(spec.sampling, dict) else {}
    views_needed = spec.modality != "audio"  # audio windows follow the clips, with no views
    flow = spec.extra.get("flow") if spec.modality == "flow" else {}
    if (spec.modality not in MODALITIES or "clips" not in sampling or (views_needed and "views" not in sampling)
            or not isinstance(flow, dict) or (spec.modality == "flow" and not {"algorithm", "bound"} <= set(flow))):
        raise ExtractError(f"feature set {fset.name!r} (backbone {spec.backbone!r}, modality {spec.modality!r}) was"
                           " not written by extract.run, so its embedding cannot be rebuilt; search it by id or"
                           " vector with `python -m store.search`")
    clips = ClipSampling.from_dict(sampling["clips"])
    shape: dict[str, object] = {}
    if views_needed:
        views = ViewSpec.from_dict(sampling["views"])
        shape = {"short_side": views.short_side, "crop": views.crop, "crops": views.crops, "scales": views.scales}
    if spec.modality == "flow":
        shape |= {"flow_algorithm": flow["algorithm"], "flow_bound": flow["bound"]}
    if spec.weights_sha256 is None and weights is not None:
        raise ExtractError(f"feature set {fset.name!r} was extracted from a random init (seed "
                           f"{spec.extra.get('random_init_seed', 0)}), not from a checkpoint; drop --weights")
    named = (spec.extra.get("weights") or {}).get("name")
    if spec.weights_sha256 is None:
        weights = RANDOM
    elif weights is None and named not in (None, "file", RANDOM):
        weights = named  # a named weight: loaded from the cache, its sha256 checked against the set's below
    elif spec.weights_sha256 is not None:
        if weights is None:
            raise ExtractError(f"feature set {fset.name!r} was extracted with the checkpoint of sha256 "
                               f"{spec.weights_sha256[:16]}...; pass --weights PATH to that file")
        if not Path(weights).is_file():
            raise ExtractError(f"--weights {weights}: file not found")
        digest = file_sha256(weights)
        if digest != spec.weights_sha256:
            raise ExtractError(f"--weights {weights} has sha256 {digest[:16]}... but feature set {fset.name!r} was"
                               f" extracted with {spec.weights_sha256[:16]}...; pass the checkpoint it was made with")
    decoder = (spec.extra.get("decode") or {}).get("library", "pyav")  # decoded as the set was
    if decoder not in DECODERS:
        raise ExtractError(f"feature set {fset.name!r} was decoded with {decoder!r}, which this version cannot use")
    return ExtractSettings(
        decoder=decoder,
        backbone=spec.backbone, modality=spec.modality, weights=None if weights is None else str(weights),
        seed=int(spec.extra.get("random_init_seed", 0)), frames=clips.frames_per_clip, stride=clips.stride,
        fps=clips.fps, **_placement(clips), amp=spec.extra.get("precision") == "amp", device=device,
        batch_size=batch_size, chunk_rows=spec.chunk_rows, **shape)


def _placement(clips: ClipSampling) -> dict[str, object]:
    """The settings fields that place ``clips``: ``every`` and K-max, or the fixed-count mode and count."""
    if clips.mode == EVERY:
        return {"every": clips.every_s, "max_clips": clips.num_clips}
    return {"sampling": clips.mode, "clips": clips.num_clips}


def producer_for(fset: FeatureSet, *, weights: str | os.PathLike | None = None, device: str = "auto",
                 batch_size: int = 64) -> FeatureProducer:
    """Rebuild the producer (model, clip sampling, views) that filled ``fset``.

    Args:
        fset: A feature set written by ``extract.run``.
        weights: The local checkpoint it was extracted with (its sha256 must match); None for
            a random-init set (rebuilt from the recorded seed) or one from a named weight.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Clips per model batch.

    Raises:
        ExtractError: the set was not made by ``extract.run``, ``weights`` is missing, not
            wanted or not the recorded checkpoint, or the rebuilt producer would make
            features with another provenance.
    """
    settings = _settings_from_spec(fset, weights, device, batch_size)
    try:
        resolved = settings.resolved_device()
        producer = build_producers(settings, resolved)[0]
    except ExtractError:
        raise
    except ValueError as err:  # unknown backbone, bad settings: the store is from another version
        raise ExtractError(f"cannot rebuild the producer of feature set {fset.name!r}: {err}") from None
    made, wanted = producer.spec.provenance(), fset.spec.provenance()
    if made.get("extra", {}).get("precision") != wanted.get("extra", {}).get("precision"):
        log.warning("feature set %r was extracted with %s precision, this search runs %s on %s: similarities may"
                    " differ slightly", fset.name, wanted["extra"].get("precision"), made["extra"].get("precision"),
                    resolved)
        made["extra"] = {**made["extra"], "precision": wanted["extra"].get("precision")}
    if made != wanted:
        changed = sorted(k for k in set(made) | set(wanted) if made.get(k) != wanted.get(k))
        raise ExtractError(f"the rebuilt producer of feature set {fset.name!r} differs from the recorded one in"
                           f" {', '.join(changed)}; the set was made by another version of extract.run")
    return producer


@dataclass(frozen=True, eq=False)
class VideoEmbedding:
    """One video file's features, as ``extract.run`` would store them.

    Attributes:
        data: ``(K, D)`` float32 clip features (rounded to the set's storage dtype).
        valid: ``(K,)`` bool, real clips.
        times: ``(K, 2)`` clip start/end seconds.
    """

    data: np.ndarray
    valid: np.ndarray
    times: np.ndarray

    def vector(self, metric: str = "ip") -> np.ndarray:
        """``(1, D)`` mean of the valid clips, L2-normalised for ``ip``: the vector an index holds."""
        vectors, _ = pool_video_vectors(self.data[None], self.valid[None], metric)  # (1, K, D) -> (1, D)
        return vectors


def embed_video(producer: FeatureProducer, path: str | os.PathLike, *, dtype: str = "float16",
                batch_size: int = 64, timeout_s: float = 120.0) -> VideoEmbedding:
    """Decode ``path`` once and embed its K clips with the producer, as ``extract.run`` does.

    Raises:
        ExtractError: the file is missing or cannot be decoded, or has no valid clip (too
            short, or no audio track for an audio set).
    """
    res = process_task(DecodeTask(0, str(path), makers=(0,)), [producer.maker], timeout_s)
    if res.error:
        raise ExtractError(res.error)
    item = res.inputs[0]
    if not item.valid.any():
        why = "it has no audio track" if item.note == NO_AUDIO else "the video is too short for this feature set"
        raise ExtractError(f"{path}: no valid clip to embed ({why})")
    feats = np.concatenate([producer.embed(item.inputs[s:s + batch_size])  # (B, ...) -> (B, D)
                            for s in range(0, len(item.inputs), batch_size)])  # (n, D): the real clips
    data = np.zeros((len(item.valid), feats.shape[1]), np.float32)  # (K, D): padded slots stay zeros
    data[: len(feats)] = feats.astype(dtype)  # what the store would hand back
    return VideoEmbedding(data, item.valid.astype(bool), item.times)


def search_video(fs: FeatureStore, features: str, path: str | os.PathLike, *, k: int = 10,
                 temperature: float = 0.1, weights: str | os.PathLike | None = None, device: str = "auto",
                 index: FeatureIndex | None = None) -> tuple[Neighbours, VideoEmbedding]:
    """The ``k`` stored videos most similar to a video file, with their label votes.

    Args:
        fs: The store.
        features: Feature set name (written by ``extract.run``).
        path: The video file.
        k: Neighbours.
        temperature: Of the label votes (:func:`store.search.propagate_labels`).
        weights: The checkpoint the set was extracted with (see :func:`producer_for`).
        device: Where the backbone runs.
        index: The set's index if already open (default :func:`store.index.ensure_index`).
    """
    fset = fs.feature_set(features)
    embedding = embed_video(producer_for(fset, weights=weights, device=device), path, dtype=fset.spec.dtype)
    index = index if index is not None else ensure_index(fset)
    result = neighbours(fs, features, vectors=embedding.vector(index.spec.metric), k=k, temperature=temperature,
                        index=index)
    return result, embedding


# ---------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="python -m extract.search", description=doc[0],
                                epilog="\n\n".join(part for part in doc[1:] if part.strip() != "::"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="the NAME.zarr store")
    p.add_argument("--features", required=True, help="feature set to search (written by extract.run)")
    p.add_argument("--video", required=True, type=Path, help="the video file to search by")
    p.add_argument("--weights", type=Path, help="the local checkpoint the set was extracted with (sha256 is checked); "
                   "not needed for a random init or a named weight (reloaded by its recorded name)")
    p.add_argument("-k", type=positive_int, default=10, help="neighbours to show (default 10)")
    p.add_argument("--temperature", type=positive_float, default=0.1,
                   help="softmax temperature of the votes (default 0.1)")
    p.add_argument("--top-labels", type=non_negative_int, default=5, help="propagated label scores to show (default 5)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where the backbone runs (default auto)")
    p.add_argument("--index", choices=KINDS,
                   help="index kind (default: the saved one, else auto)")
    p.add_argument("--rebuild", action="store_true", help="build the index afresh (after the features changed)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)
    return p


@run_command
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    if not args.video.is_file():
        raise ExtractError(f"--video {args.video}: file not found")
    fs = FeatureStore.open(args.store, "a" if os.access(args.store, os.W_OK) else "r")
    fset = fs.feature_set(args.features)
    producer = producer_for(fset, weights=args.weights, device=args.device)  # fails before any index work
    spec = None if args.index is None else IndexSpec(kind=args.index)
    index = ensure_index(fset, spec, rebuild=args.rebuild, progress=None if args.quiet else tqdm)
    embedding = embed_video(producer, args.video, dtype=fset.spec.dtype)
    result = neighbours(fs, args.features, vectors=embedding.vector(index.spec.metric), k=args.k,
                        temperature=args.temperature, index=index)
    print(f"index: {index.describe()}")
    title = (f"neighbours of {args.video} ({int(embedding.valid.sum())} of {len(embedding.valid)} clips valid, "
             f"embedded with {fset.spec.backbone})")
    print(format_neighbours(fs, result, title, temperature=args.temperature, top_labels=args.top_labels))
    return 0

if __name__ == "__main__":
    sys.exit(main())
