"""Late fusion of prediction runs: ``mean``, ``weighted``, ``logistic`` and ``xgboost`` stackers.

Public API::

    fuse_runs(store, runs, method=..., fit_split=..., eval_split=...) -> FusionResult
    write_report(result, out_dir)                  report.md + PNG plots
    get_fusion(name, settings) / list_fusions()    the method registry (register_fusion)
    plan_fit(...) / RunRecord / FitPlan            the leakage rule (fusion.leakage)
    load_inputs(store, runs) -> StoredInputs, ...  runs as availability; .take(rows) -> StackInputs
    make_synthetic_fusion_store(path, ...)         seeded RGB/flow/audio-like runs

Command line: ``python -m fusion.run --store S --runs A B C --method xgboost --report DIR``.
"""

from fusion import logistic, mean, weighted, xgb  # noqa: F401  (register the methods, in this order)
from fusion.errors import FusionError, InputMismatch, LeakageError, UnknownMethod
from fusion.inputs import StackInputs, StoredInputs, load_inputs
from fusion.leakage import FitPlan, RunRecord, plan_fit
from fusion.pipeline import FusionResult, MethodOutcome, fuse_runs
from fusion.registry import Fuser, get_fusion, list_fusions, register_fusion
from fusion.report import write_report
from fusion.synthetic import make_synthetic_fusion_store, synthetic_predictions

__all__ = [
    "FitPlan", "Fuser", "FusionError", "FusionResult", "InputMismatch", "LeakageError", "MethodOutcome",
    "RunRecord", "StackInputs", "StoredInputs", "UnknownMethod", "fuse_runs", "get_fusion", "list_fusions",
    "load_inputs", "make_synthetic_fusion_store", "plan_fit", "register_fusion", "synthetic_predictions",
    "write_report",
]
