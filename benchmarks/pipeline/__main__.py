"""``python -m benchmarks.pipeline``: the main job (:func:`benchmarks.pipeline.job.main`)."""

import sys

from benchmarks.pipeline.job import main

if __name__ == "__main__":
    sys.exit(main())
