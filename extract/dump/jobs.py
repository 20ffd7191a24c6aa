"""The units of work of a dump: one backbone's feature sets, one record each, not lists side by side.

::

    FeatureSetJob   name + producer (maker, model, specs)   one per backbone of the run
      .outputs      (name, spec), (name__logits, spec)       the feature sets it fills
    PendingSet      an open FeatureSet + the rows it lacks   one per output, once the store is open
    PlannedJob      FeatureSetJob + its PendingSets          what the decode -> model -> write loop runs
    RunPlan         PlannedJobs + the rows to decode + the shard's row range

A run goes ``settings.choices()`` -> :func:`~extract.dump.pipeline.build_producers` ->
``FeatureSetJob`` per producer -> ``PlannedJob`` per job (:func:`~extract.dump.pipeline.run_extraction`)
-> :func:`~extract.dump._assembly.extract_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from extract.dump.makers import InputMaker
from extract.dump.producers import FeatureProducer
from store import FeatureSet, FeatureSetSpec

__all__ = ["FeatureSetJob", "PendingSet", "PlannedJob", "RunPlan", "make_jobs"]


@dataclass(frozen=True)
class FeatureSetJob:
    """One backbone's share of a run: its producer and the feature sets it fills.

    Args:
        name: the feature set of the features (``rgb_resnet18``); a producer with head
            logits also fills ``<name>__logits``.
        producer: the maker (decode side) and the model (this process).
    """

    name: str
    producer: FeatureProducer

    @property
    def outputs(self) -> list[tuple[str, FeatureSetSpec]]:
        """``(set name, spec)`` of every set it fills, in ``producer.outputs`` order (features first)."""
        return [(self.name + suffix, spec) for suffix, spec in self.producer.outputs]

    @property
    def maker(self) -> InputMaker:
        """What the decode workers run for this job."""
        return self.producer.maker

    @property
    def dims(self) -> list[int]:
        """``D`` of each output, side by side in the model's ``(B, sum D)`` result."""
        return [spec.dim for _, spec in self.producer.outputs]

    @property
    def head_logits(self) -> bool:
        """Whether the job also fills ``<name>__logits`` (and, at the end, the run ``<name>_logits``)."""
        return bool(getattr(self.producer, "head_logits", False))


def make_jobs(producers: Sequence[FeatureProducer], names: Sequence[str]) -> list[FeatureSetJob]:
    """One job per producer, ``names[i]`` for ``producers[i]``."""
    if len(producers) != len(names):
        raise ValueError(f"{len(producers)} producers but {len(names)} set names; give one name per producer")
    return [FeatureSetJob(name, producer) for producer, name in zip(producers, names)]


@dataclass(frozen=True, eq=False)
class PendingSet:
    """One feature set open in the store, and the rows (sorted) it still lacks in this run."""

    fset: FeatureSet
    pending: np.ndarray  # (n,) int64


@dataclass(frozen=True, eq=False)
class PlannedJob:
    """A job with its feature sets open: ``sets[j]`` is output ``j`` of ``job.outputs``."""

    job: FeatureSetJob
    sets: tuple[PendingSet, ...]

    def lacking(self, rows: np.ndarray) -> np.ndarray:
        """``(n, sets)`` bool: which of its sets still lack each of ``rows``."""
        return np.stack([np.isin(rows, s.pending) for s in self.sets], axis=1)


@dataclass(frozen=True, eq=False)
class RunPlan:
    """What the decode -> model -> write loop does: ``todo`` rows (sorted) for ``jobs``, inside
    ``shard_rows`` (``[start, stop)``, None: the whole store)."""

    jobs: tuple[PlannedJob, ...]
    todo: np.ndarray  # (n,) int64
    shard_rows: tuple[int, int] | None = None
