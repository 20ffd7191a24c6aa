"""The leakage rule (fusion.leakage.plan_fit) on hand-made runs."""

import numpy as np
import pytest

from fusion.errors import InputMismatch, LeakageError
from fusion.leakage import RunRecord, plan_fit

SPLIT = np.array(["train"] * 6 + ["val"] * 3 + ["test"] * 3, dtype=object)
C = 4


def oof(name: str = "a", **kw) -> RunRecord:
    fold = np.where(SPLIT == "train", np.arange(12) % 3, -1)
    return RunRecord(name, (12, C), fold, **kw)


def in_sample(name: str = "b", **kw) -> RunRecord:
    return RunRecord(name, (12, C), np.full(12, -1), **kw)


def test_out_of_fold_runs_may_be_stacked_on_train():
    plan = plan_fit([oof("a"), oof("b")], SPLIT, C, fit_split="train", eval_split="test")
    assert plan.fit_rows.tolist() == list(range(6))
    assert plan.eval_rows.tolist() == [9, 10, 11]
    assert (plan.fit_split, plan.eval_split) == ("train", "test")


def test_in_sample_train_predictions_are_refused_naming_the_run():
    with pytest.raises(LeakageError, match=r"run 'b' predicted 6 of the 6 'train' rows in-sample.*--folds"):
        plan_fit([oof("a"), in_sample("b")], SPLIT, C, fit_split="train", eval_split="test")


def test_one_in_sample_train_row_is_enough_to_refuse():
    rec = oof("a")
    fold = rec.fold.copy()
    fold[2] = -1
    with pytest.raises(LeakageError, match="predicted 1 of the 6"):
        plan_fit([RunRecord("a", (12, C), fold)], SPLIT, C, fit_split="train", eval_split="val")


def test_fit_split_equal_to_eval_split_is_refused():
    with pytest.raises(LeakageError, match="both 'val'"):
        plan_fit([in_sample("a")], SPLIT, C, fit_split="val", eval_split="val")


def test_held_out_stacking_fits_on_val_and_scores_test():
    plan = plan_fit([in_sample("a"), in_sample("b")], SPLIT, C, fit_split="val", eval_split="test")
    assert plan.fit_rows.tolist() == [6, 7, 8]


def test_evaluating_on_in_sample_rows_is_refused():
    with pytest.raises(LeakageError, match="cannot be evaluated.*--eval-split test"):
        plan_fit([in_sample("a")], SPLIT, C, fit_split="val", eval_split="train")


def test_a_run_trained_on_val_cannot_be_stacked_on_val():
    run = in_sample("a", train_splits=("train", "val"))
    with pytest.raises(LeakageError, match="trained on train/val"):
        plan_fit([run], SPLIT, C, fit_split="val", eval_split="test")


def test_rows_without_a_usable_prediction_cannot_leak():
    avail = SPLIT != "train"  # the run has no features for any train row: nothing in-sample is used
    plan = plan_fit([in_sample("a", available=avail)], SPLIT, C, fit_split="train", eval_split="test")
    assert len(plan.fit_rows) == 6


def test_a_method_that_fits_nothing_needs_no_out_of_fold_rows():
    plan = plan_fit([in_sample("a")], SPLIT, C, fit_split=None, eval_split="test")
    assert plan.fit_rows.size == 0 and plan.fit_split is None


@pytest.mark.parametrize("runs, match", [
    ([], "no input runs"),
    ([oof("a"), oof("a")], "named twice"),
    ([RunRecord("a", (10, C), np.full(10, -1))], r"10 rows x 4 classes but the store has 12 videos x 4"),
    ([RunRecord("a", (12, 3), np.full(12, -1))], r"12 rows x 3 classes"),
])
def test_runs_that_do_not_fit_the_store_are_refused(runs, match):
    with pytest.raises(InputMismatch, match=match):
        plan_fit(runs, SPLIT, C, fit_split="train", eval_split="test")


@pytest.mark.parametrize("fit, ev, match", [("train", "holdout", "eval split 'holdout' has no rows"),
                                            ("extra", "test", "fit split 'extra' has no rows")])
def test_empty_splits_are_refused(fit, ev, match):
    with pytest.raises(LeakageError, match=match):
        plan_fit([oof("a")], SPLIT, C, fit_split=fit, eval_split=ev)
