"""``python -m extract.demo``: generate the demo dataset (:func:`extract.demo.make_demo`).

``python -m extract.demo --out DIR [--videos N] [--seed S] [--size PX] [--difficulty D]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from extract.demo._classes import CLASS_FAMILIES, DEMO_CLASSES, SPLIT_NAMES
from extract.demo.generator import DEFAULT_DEMO_DIR, DemoConfig, make_demo
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.errors import SettingsError


def _parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m extract.demo",
        description=(
            "Generate the demo dataset: deterministic multi-label mp4 clips (H.264 + AAC) over "
            f"{len(DEMO_CLASSES)} classes in three families -- appearance (objects on screen), "
            "motion (a grey carrier moving/rotating/zooming/appearing, in time-reversed pairs) "
            "and sound (audio-only events). Writes DIR/videos/*.mp4, classes.txt, labels.csv, "
            "train/val/test.csv (Multi-MiT style: path,label,...), videos.csv "
            "(path,labels,split) and demo.json. Rerunning with the same settings reuses "
            "finished files."),
        epilog="classes: " + "; ".join(
            f"{family}: {', '.join(c for c in DEMO_CLASSES if CLASS_FAMILIES[c] == family)}"
            for family in ("appearance", "motion", "sound")),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_DEMO_DIR, help="output folder")
    p.add_argument("--videos", type=positive_int, default=d.videos, help="number of videos")
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help="random seed")
    p.add_argument("--size", type=positive_int, default=d.size, help="frame size in pixels (even)")
    p.add_argument("--fps", type=positive_float, default=d.fps, help="frames per second")
    p.add_argument("--seconds", type=positive_float, default=d.seconds, help="clip duration")
    p.add_argument("--difficulty", type=float, default=d.difficulty,
                   help="0 = clean .. 1 = cluttered, noisy, confusable distractors")
    p.add_argument("--sample-rate", type=positive_int, default=d.sample_rate, help="audio rate (Hz)")
    p.add_argument("--splits", default=",".join(f"{s:g}" for s in d.splits),
                   help="train,val,test fractions")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@run_command
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        splits = tuple(float(s) for s in args.splits.split(","))
    except ValueError:
        raise SettingsError(f"--splits must be three numbers like 0.7,0.15,0.15, got "
                            f"{args.splits!r}") from None
    config = DemoConfig(videos=args.videos, seed=args.seed, size=args.size, fps=args.fps,
                        seconds=args.seconds, difficulty=args.difficulty,
                        sample_rate=args.sample_rate, splits=splits)
    manifest = make_demo(args.out, config, progress=not args.quiet)
    meta = json.loads(manifest.config_path.read_text(encoding="utf-8"))
    counts = " / ".join(f"{meta['split_counts'][s]} {s}" for s in SPLIT_NAMES)
    print(f"demo: {manifest.n_videos} videos ({counts}), {len(manifest.classes)} classes, "
          f"{config.size} px, {config.n_frames} frames at {config.fps:g} fps, difficulty "
          f"{config.difficulty:g} -> {manifest.videos_csv} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
