"""The main job: the whole pipeline on the demo set, one summary (``python -m benchmarks.pipeline``, ``bin/demo``).

Public API::

    PipelineConfig, SIZES, run_pipeline,     benchmarks.pipeline.job (the settings, the run, the summary,
      build_stages, format_summary, main       the command)
    Context, Workdir, PipelineError,         benchmarks.pipeline.steps (one function per stage, and the
      MODALITIES, extract_sets, ...            helpers the recipes share: scores, demo and weights records)
    Stage, run_stages                        benchmarks.pipeline.stages (resumable stages: skip, resume, rerun)
"""

from benchmarks.pipeline.job import (
    SIZES,
    PipelineConfig,
    build_stages,
    format_summary,
    main,
    run_pipeline,
)
from benchmarks.pipeline.stages import Stage, run_stages
from benchmarks.pipeline.steps import MODALITIES, Context, PipelineError, Workdir

__all__ = ["MODALITIES", "SIZES", "Context", "PipelineConfig", "PipelineError", "Stage", "Workdir", "build_stages",
           "format_summary", "main", "run_pipeline", "run_stages"]
