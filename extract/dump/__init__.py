"""The dump engine behind ``python -m extract.run``: video list -> one decode per video -> every
backbone -> chunk-aligned writes into the feature sets of one store.

Public API::

    extract, run_extraction, RunStats               extract.dump.pipeline (the command minus printing)
    build_producers, open_video_list,               extract.dump.pipeline (the steps, one by one)
      prepare_store, output_set_names, timeline
    write_logit_predictions                         extract.dump.pipeline (--head-logits prediction runs)
    ExtractSettings, BackboneChoice,                extract.dump.settings (frozen, validated)
      default_parallelism, parse_shard
    FeatureSetJob, PlannedJob, RunPlan, make_jobs   extract.dump.jobs (one backbone's feature sets: the unit of work)
    FeatureProducer, BackboneProducer, RGBProducer, extract.dump.producers (the model half: torch)
      FlowProducer, AudioProducer
    InputMaker, RGBClips, FlowClips, AudioWindows,  extract.dump.makers (the decode half: numpy, picklable)
      ModelInput, audio_input_for, NO_AUDIO, SILENT_AUDIO
    DecodePool, DecodeTask, DecodeResult,           extract.dump.worker (decode processes; one video, one decode)
      process_task
    ResourcePlan, WorkCosts, MemoryBudget,          extract.dump.resources (workers, threads, batch, queue:
      choose_plan, model_seconds                      fitted to measured costs, free cores, --max-memory)
    calibrate, largest_activation                   extract.dump.calibration (the costs, on the run's first clips)

Private helpers: ``_prepare`` (store rows, pending work), ``_assembly`` (batches, chunked
writes, the run loop), ``_logits`` (head logits). Exports are lazy (PEP 562).
"""

import importlib
from typing import Any

_MODULES = {
    "extract.dump.pipeline": ("RunStats", "build_producers", "extract", "open_video_list", "output_set_names",
                              "prepare_store", "run_extraction", "timeline", "write_logit_predictions"),
    "extract.dump.settings": ("DEVICES", "MODALITIES", "BackboneChoice", "ExtractSettings",
                              "default_parallelism", "parse_shard"),
    "extract.dump.jobs": ("FeatureSetJob", "PendingSet", "PlannedJob", "RunPlan", "make_jobs"),
    "extract.dump.producers": ("AudioProducer", "BackboneProducer", "FeatureProducer", "FlowProducer",
                               "RGBProducer"),
    "extract.dump.makers": ("NO_AUDIO", "SILENT_AUDIO", "AudioWindows", "FlowClips", "InputMaker", "ModelInput",
                            "RGBClips", "audio_input_for"),
    "extract.dump.worker": ("DecodePool", "DecodeResult", "DecodeTask", "process_task"),
    "extract.dump.resources": ("MemoryBudget", "ResourcePlan", "WorkCosts", "choose_plan", "model_seconds"),
    "extract.dump.calibration": ("BUSY_CORE", "CALIBRATION_S", "DECODE_SHARE", "calibrate", "largest_activation"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'extract.dump' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
