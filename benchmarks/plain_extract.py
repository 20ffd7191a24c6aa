"""The plain per-video extraction script a user would write: the baseline of
``benchmarks.run --only extract``.

One video at a time: decode the whole video to RGB frames (PyAV defaults), pick the sampled
frames, resize, crop and normalise them, one model batch per video, ``np.save`` per video;
torch with its default threads unless told otherwise. As a library call
(:func:`plain_extract`) or as a child process whose memory the benchmark watches::

    python -m benchmarks.plain_extract VIDEOS.csv OUT_DIR --backbone r2plus1d_18 --crop 112 --clips 8
    -> one JSON line: {"clips": ..., "seconds": ..., "clips_per_s": ..., "threads": ...}
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from extract.backbones import Backbone, get_backbone
from extract.dump.settings import ExtractSettings
from extract.media.sampling import clip_frame_indices
from store.cli import positive_int, run_command


def plain_extract(paths: list[str], model: Backbone, settings: ExtractSettings, out: Path,
                  threads: int | None = None) -> tuple[int, float]:
    """``(clips, seconds)`` of the one-video-at-a-time, decode-everything loop.

    Args:
        paths: the videos.
        model: the backbone (eval mode), NCHW, no tricks.
        settings: the clips and views (``clip_sampling``, ``view_spec`` of the model).
        out: directory of the ``.npy`` files (emptied first).
        threads: torch threads; None keeps torch's default (what a script gets).
    """
    info = model.info
    device = next(model.parameters()).device
    sampling, view = settings.clip_sampling(info), settings.view_spec(info)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    clips = 0
    t = time.perf_counter()
    try:
        for i, path in enumerate(paths):
            with av.open(path) as container:
                frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (N, H, W, 3)
            idx, _ = clip_frame_indices(len(frames), sampling)  # (n, T)
            x = torch.from_numpy(frames[idx.reshape(-1)]).permute(0, 3, 1, 2).float() / 255  # (n*T, 3, H, W)
            h, w = x.shape[-2:]
            scale = view.short_side / min(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
            top, left = (x.shape[-2] - view.crop) // 2, (x.shape[-1] - view.crop) // 2
            x = (x[..., top : top + view.crop, left : left + view.crop] - mean) / std
            x = x.view(*idx.shape, 3, view.crop, view.crop).transpose(1, 2)  # (n, T, 3, c, c) -> (n, 3, T, c, c)
            with torch.inference_mode():
                feats = model.forward_features(x.to(device))  # (n, 3, T, c, c) -> (n, D)
            np.save(out / f"{i:05d}.npy", feats.cpu().numpy().astype(np.float16))
            clips += len(idx)
    finally:
        torch.set_num_threads(old)
    return clips, time.perf_counter() - t


@run_command(path_errors=True)
def main(argv: list[str] | None = None) -> int:
    """The script as a command (the benchmark's child process); prints one JSON line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plain_extract", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", type=Path, help="CSV with a path column (the demo's videos.csv)")
    ap.add_argument("out", type=Path, help="directory for the .npy files")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--crop", type=positive_int, default=112)
    ap.add_argument("--clips", type=positive_int, default=8)
    ap.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    table = pd.read_csv(args.videos)
    paths = [str((args.videos.parent / p).resolve()) for p in table["path"]]
    settings = ExtractSettings(backbone=args.backbone, crop=args.crop, clips=args.clips)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = get_backbone(args.backbone).eval()
    clips, seconds = plain_extract(paths, model, settings, args.out, args.threads)
    print(json.dumps({"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds,
                      "threads": args.threads or torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
