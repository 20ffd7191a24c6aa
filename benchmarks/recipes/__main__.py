"""``python -m benchmarks.recipes NAME``: run one challenge recipe (:mod:`benchmarks.recipes.runner`)."""

import sys

from benchmarks.recipes.runner import main

if __name__ == "__main__":
    sys.exit(main())
