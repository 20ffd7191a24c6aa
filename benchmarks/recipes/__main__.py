"""``python -m benchmarks.recipes NAME``: run one challenge recipe (:mod:`benchmarks.recipes.runner`)."""

import sys

from benchmarks.recipes.runner import main

sys.exit(main())
