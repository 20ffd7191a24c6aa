"""The main job: the whole pipeline on the demo set, one summary (``python -m benchmarks.pipeline``, ``bin/demo``).

Public API::

    PipelineConfig, SIZES, run_pipeline,     benchmarks.pipeline.job (the settings, the run, the summary,
      build_stages, format_summary, main       the command)
    Context, Workdir, PipelineError,         benchmarks.pipeline.steps (one function per stage, and the
      MODALITIES, extract_sets, ...            helpers the recipes share: scores, demo and weights records)
    Stage, run_stages                        benchmarks.pipeline.stages (resumable stages: skip, resume, rerun)

Exports are lazy (PEP 562): ``benchmarks.pipeline.stages`` alone imports no torch.
"""

import importlib
from typing import Any

_MODULES = {
    "benchmarks.pipeline.job": ("SIZES", "PipelineConfig", "build_stages", "format_summary", "main", "run_pipeline"),
    "benchmarks.pipeline.steps": ("MODALITIES", "Context", "PipelineError", "Workdir"),
    "benchmarks.pipeline.stages": ("Stage", "run_stages"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'benchmarks.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
