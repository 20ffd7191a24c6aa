"""``python -m store.import STORE.zarr --from npy|h5|parquet IN --features NAME``: features other tools computed.

::

    python -m store.import demo.zarr --from npy vf_out/ --features i3d_rgb --suffix _rgb
    python -m store.import demo.zarr --from h5 feats.h5 --features clip_vit --ids-from index.csv
    python -m store.import demo.zarr --from parquet rgb.parquet --features rgb_again

Creates feature set NAME (provenance: "imported from" the source path, format and the source's
own attributes; the date and any skipped ids in the set's ``import`` attribute), so heads, fusion
and kNN run on it. Ids must be the store's (``--ids-from`` maps file names to ids), every video
needs an input unless ``--allow-missing``, every input the same D; K may vary up to K-max
(``--max-clips``), shorter videos padded and masked. A rerun continues an interrupted import.
Naming rules and layouts: ``store/README.md``; the library is ``store.feature_import``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from store.cli import positive_int, run_command
from store.feature_import import IMPORT_FORMATS, MAX_CLIPS, ImportOptions, import_features
from store.feature_store import FeatureStore


@run_command(path_errors=True)  # OSError: an unwritable or unreadable path
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.import", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="the NAME.zarr store (its videos must be there already)")
    ap.add_argument("--from", dest="fmt", required=True, choices=IMPORT_FORMATS, help="input format")
    ap.add_argument("src", help="input folder (npy) or file (h5, parquet)")
    ap.add_argument("--features", required=True, help="name of the feature set to create")
    ap.add_argument("--ids-from", help="CSV with 'id' and 'file' columns mapping inputs to store ids "
                                       "(store.export's index.csv works)")
    ap.add_argument("--suffix", default="", help="npy files are named ID{suffix}.npy, e.g. _rgb (default none)")
    ap.add_argument("--dataset", default="features", help="h5 groups hold this dataset (default features)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="skip store videos without an input and inputs of unknown ids (both recorded)")
    ap.add_argument("--max-clips", type=positive_int, default=MAX_CLIPS,
                    help=f"refuse inputs with more clips than this (default {MAX_CLIPS}); every row stores K-max")
    ap.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage dtype")
    ap.add_argument("--chunk-rows", type=positive_int,
                    help="rows per storage chunk (default: up to 256, about 8 MiB a chunk)")
    ap.add_argument("--backbone", help="backbone name to record (default: the source's, else 'imported')")
    ap.add_argument("--modality", help="modality to record, e.g. rgb (default: the source's, else 'imported')")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    fs = FeatureStore.open(args.store, "a")
    options = ImportOptions(suffix=args.suffix, dataset=args.dataset, ids_from=args.ids_from,
                            allow_missing=args.allow_missing, max_clips=args.max_clips, dtype=args.dtype,
                            backbone=args.backbone, modality=args.modality, chunk_rows=args.chunk_rows)
    s = import_features(fs, args.features, args.fmt, args.src, options, progress=tqdm)
    print(f"imported {s.written} videos into {s.feature_set} (K-max {s.clips}, D {s.dim})"
          + (f"; {s.earlier} were imported by an earlier run" if s.earlier else "")
          + (f"; {s.missing} store videos without an input skipped" if s.missing else "")
          + (f"; {s.unknown} inputs of unknown ids skipped" if s.unknown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
