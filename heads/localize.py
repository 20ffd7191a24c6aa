"""``python -m heads.localize``: which clip of a video shows a label, and which classes get confused.

Per-clip class scores of any trained head: the head is applied to each valid clip *alone*
(``K = 1``, the clip the only valid slot), which needs nothing from the head's structure.
For a linear head on mean pooling (``mean_mlp`` with ``hidden_dim=None``, no gating, logistic
classifier) the video logit is exactly the mean of the clip logits, i.e. the class activation
map decomposition (CAM, Zhou et al. 2016) over time; for other heads the per-clip scores are
the honest generic substitute. With fold runs the scores are averaged over the fold models.

Confusion report: on the val videos, ``M[a, b]`` counts the videos whose top-1 class ``b`` is
not a label while ``a`` is ("``a`` mistaken for ``b``"); pairs are ranked by ``M[a, b] + M[b, a]``.

Examples::

    python -m heads.localize --run runs/NAME --video vid0000012          # print one video
    python -m heads.localize --run runs/NAME --split val --save          # clip_scores_val.npz in the run dir
    python -m heads.localize --run runs/NAME --confusion                 # top-10 confused pairs on val
    python -m heads.localize --store S.zarr --predictions RUN --confusion  # any prediction run
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from heads._train_data import StreamSource, TrainError
from heads.pooling import MeanPooling, PooledHead
from heads.trainer import TrainConfig, build_head, predict
from store.cli import positive_int, run_command
from store.feature_store import FeatureStore
from store.threads import add_threads_argument, set_threads

log = logging.getLogger(__name__)


@torch.inference_mode()
def per_clip_logits(model: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of every clip scored alone: ``(B, K, D), (B, K) -> (B, K, C)``, NaN at padding."""
    b, k, _ = x.shape
    valid = x[mask]  # (B, K, D) -> (M, D): the valid clips
    logits = model.eval()(valid.unsqueeze(1), torch.ones(len(valid), 1, dtype=torch.bool, device=x.device))
    out = torch.full((b, k, logits.shape[-1]), float("nan"), dtype=logits.dtype, device=x.device)
    out[mask] = logits  # (M, C) -> (B, K, C)
    return out


def is_cam_exact(model: nn.Module) -> bool:
    """True when the video logit is exactly the mean of the per-clip logits (linear head on a mean)."""
    return (isinstance(model, PooledHead) and isinstance(model.pooling, MeanPooling)
            and all(isinstance(m, nn.Dropout) for m in model.mlp.layers) and isinstance(model.classifier, nn.Linear))


def confusion_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(C, C)`` counts: ``M[a, b]`` = videos with label ``a``, not ``b``, whose top-1 class is ``b``."""
    y = np.asarray(labels).astype(bool)
    top1 = np.asarray(scores).argmax(1)
    missed = ~y[np.arange(len(y)), top1]
    video, a = np.nonzero(y[missed])
    m = np.zeros((y.shape[1], y.shape[1]), np.int64)
    np.add.at(m, (a, top1[missed][video]), 1)
    return m


def most_confused(m: np.ndarray, top: int = 10) -> list[tuple[int, int, int, int]]:
    """The ``top`` unordered pairs ``(a, b, M[a, b], M[b, a])``, a < b, by ``M[a, b] + M[b, a]`` (ties: lower ids)."""
    total = m + m.T
    a, b = np.triu_indices(len(m), k=1)
    keep = total[a, b] > 0
    a, b = a[keep], b[keep]
    order = np.lexsort((b, a, -total[a, b]))[:top]
    return [(int(a[i]), int(b[i]), int(m[a[i], b[i]]), int(m[b[i], a[i]])) for i in order]


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A run directory's models (one, or one per fold) with the store they were trained on."""

    run_dir: Path
    config: TrainConfig
    meta: dict[str, Any]
    models: list[nn.Module]
    store: FeatureStore
    device: torch.device

    @classmethod
    def load(cls, run_dir: str | Path, *, store: str | Path | None = None, device: str = "cpu") -> TrainedRun:
        """Load ``run_dir/checkpoint.pt`` (store: the recorded one unless given)."""
        run_dir = Path(run_dir)
        path = run_dir / "checkpoint.pt"
        if not path.is_file():
            raise TrainError(f"no checkpoint.pt in {run_dir}: give the --out directory of a finished heads.train run")
        ckpt = torch.load(path, map_location=device, weights_only=True)
        config = TrainConfig.from_dict(ckpt["config"])
        fs = FeatureStore.open(store or ckpt["store"], "r", classes=ckpt["classes"])
        models = []
        for state in ckpt["models"]:
            m = build_head(config, ckpt["in_dim"], len(ckpt["classes"])).to(device)
            m.load_state_dict(state)
            models.append(m.eval())
        meta = {k: v for k, v in ckpt.items() if k not in ("models", "config")}
        return cls(run_dir, config, meta, models, fs, torch.device(device))

    def source(self) -> StreamSource:
        return StreamSource(self.store, self.config.features)

    def video_scores(self, rows: np.ndarray) -> np.ndarray:
        """``(n, C)`` sigmoid scores of whole videos (mean over fold models)."""
        src = self.source()
        return np.mean([predict(m, src, rows, device=self.device) for m in self.models], axis=0)

    def clip_scores(self, rows: np.ndarray, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, probs (n, K, C) NaN at padding, mask (n, K))`` of the ``rows`` done in the sets, sorted."""
        src = self.source()
        rows = np.intersect1d(np.asarray(rows, dtype=np.int64), src.rows)
        probs = np.full((len(rows), src.clips, len(self.store.classes)), np.nan, np.float32)
        mask = np.zeros((len(rows), src.clips), dtype=bool)
        for batch in src.batches(rows, batch_size=batch_size, shuffle=False, seed=0, epoch=0, drop_last=False):
            x, m = batch["features"].to(self.device), batch["mask"].to(self.device)
            p = torch.stack([torch.sigmoid(per_clip_logits(model, x, m)) for model in self.models]).mean(0)
            at = np.searchsorted(rows, batch["rows"].numpy())
            probs[at], mask[at] = p.cpu().numpy(), m.cpu().numpy()
        return rows, probs, mask


def describe_video(run: TrainedRun, row: int, *, top: int = 3) -> str:
    """Text: the video's top classes, each with its best clip, that clip's times and all clip scores."""
    fs = run.store
    rows, probs, mask = run.clip_scores(np.array([row]))
    if not len(rows):
        raise TrainError(f"row {row} is not done in {'+'.join(run.config.features)}: no features to localise")
    video = run.video_scores(rows)[0]
    times = fs.feature_set(run.config.features[0]).read_times(rows)[0]
    info = fs.videos(["id", "split"]).iloc[row]
    names = fs.classes
    truth = [names[c] for c in np.flatnonzero(fs.labels(rows)[0])]
    lines = [f"video {info['id']} (row {row}, split {info['split'] or '-'}); labels: {', '.join(truth) or '-'}",
             "per-clip scores: the head applied to each clip alone"
             + (" (linear head on mean pooling: video logit = mean clip logit, the CAM decomposition)"
                if all(is_cam_exact(m) for m in run.models) else ""),
             f"  {'class':<20}{'video p':>9}{'best clip':>11}{'time (s)':>15}   per-clip p ('-' = padding)"]
    for c in np.argsort(-video, kind="stable")[:top]:
        clip = probs[0, :, c]
        best = int(np.nanargmax(clip))
        start, end = times[best]
        when = f"{start:.2f}-{end:.2f}" if np.isfinite([start, end]).all() else "unknown"
        per = " ".join("-" if not mask[0, k] else f"{v:.2f}" for k, v in enumerate(clip))
        lines.append(f"  {names[c]:<20}{video[c]:>9.3f}{best:>11d}{when:>15}   {per}")
    return "\n".join(lines)


def confusion_report(scores: np.ndarray, labels: np.ndarray, classes: list[str], *, top: int = 10) -> str:
    """Text table of the ``top`` most confused class pairs (definition in the module docstring)."""
    labelled = np.asarray(labels).any(1)
    s, y = np.asarray(scores)[labelled], np.asarray(labels)[labelled]
    m = confusion_matrix(s, y)
    positives = y.sum(0)
    lines = [(f"most confused class pairs on {len(y)} labelled videos "
              "(a -> b: videos labelled a, not b, whose top-1 class is b)"),
             (f"  {'#':>3}  {'class a':<20}{'class b':<20}{'total':>7}{'a -> b':>8}{'b -> a':>8}"
              f"{'% of a':>8}{'% of b':>8}")]
    for i, (a, b, ab, ba) in enumerate(most_confused(m, top), 1):
        lines.append(f"  {i:>3}  {classes[a]:<20}{classes[b]:<20}{ab + ba:>7}{ab:>8}{ba:>8}"
                     f"{100 * ab / max(positives[a], 1):>7.1f}%{100 * ba / max(positives[b], 1):>7.1f}%")
    if len(lines) == 2:
        lines.append("  (none: every top-1 class is a true label)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m heads.localize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, metavar="DIR", help="run directory of heads.train (holds checkpoint.pt)")
    ap.add_argument("--store", type=Path, help="the store (default: the one recorded in the run)")
    ap.add_argument("--video", action="append", metavar="ID", help="print this video's localisation (repeat)")
    ap.add_argument("--split", default="val", help="rows to score with --save / --confusion (default val)")
    ap.add_argument("--top", type=positive_int, default=3, help="classes shown per video (default 3)")
    ap.add_argument("--save", action="store_true",
                    help="write per-clip scores of --split to an NPZ (rows, ids, clip_scores (n, K, C) float16, "
                         "video_scores, mask, times, classes)")
    ap.add_argument("--out", type=Path, help="NPZ path for --save (default RUN/clip_scores_<split>.npz)")
    ap.add_argument("--confusion", action="store_true", help="print the most confused class pairs on --split")
    ap.add_argument("--pairs", type=positive_int, default=10, help="pairs in the confusion report (default 10)")
    ap.add_argument("--predictions", metavar="RUN", help="confusion from this prediction run of --store instead")
    ap.add_argument("--device", default="cpu")
    add_threads_argument(ap)
    return ap


@run_command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.run is None and not (args.predictions and args.store and args.confusion):
        raise TrainError("give --run DIR (or --store S --predictions RUN --confusion)")
    if args.predictions:
        fs = FeatureStore.open(args.store, "r")
        rows = fs.split_rows(args.split)
        scores = fs.read_predictions(args.predictions)[0][rows]
        print(confusion_report(scores, fs.labels(rows), fs.classes, top=args.pairs))
        return 0
    run = TrainedRun.load(args.run, store=args.store, device=args.device)
    fs = run.store
    for vid in args.video or []:
        print(describe_video(run, int(fs.rows_of([vid])[0]), top=args.top))
    rows = fs.split_rows(args.split)
    if (args.save or args.confusion) and not len(rows):
        raise TrainError(f"split {args.split!r} has no rows in {fs.path}")
    if args.save:
        rows, probs, mask = run.clip_scores(rows)
        out = args.out or run.run_dir / f"clip_scores_{args.split}.npz"
        np.savez_compressed(out, rows=rows, ids=fs.video_ids()[rows].astype(str),
                            clip_scores=probs.astype(np.float16),
                            video_scores=run.video_scores(rows), mask=mask, classes=np.array(fs.classes),
                            times=fs.feature_set(run.config.features[0]).read_times(rows))
        print(f"wrote per-clip scores of {len(rows)} {args.split} videos to {out}")
    if args.confusion:
        rows = np.intersect1d(rows, run.source().rows)
        print(confusion_report(run.video_scores(rows), fs.labels(rows), fs.classes, top=args.pairs))
    if not (args.video or args.save or args.confusion):
        raise TrainError("nothing to do: give --video ID, --save or --confusion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
