"""heads.sweep / heads._grid on tiny synthetic stores (300 videos, K=4, D=16, 2 epochs, 4 configs).

One 2-worker LocalCluster (processes, one thread each) serves the Dask tests: the sweep equals
serial ``train_head`` calls, an interrupted sweep (the whole process group SIGKILLed) resumes
without training a finished configuration again, and a worker killed during a task is survived.
"""

import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import heads.sweep
from heads._grid import GridError, expand_grid, load_grid
from heads.sweep import estimate_cost, main, plan_sweep, results_table, run_sweep, worker_cache
from heads.trainer import FeatureCache, TrainConfig, train_head
from store import FeatureSetSpec
from store.testing import make_synthetic_store

ROOT = Path(__file__).resolve().parents[2]
BASE = {"features": ["synthetic"], "epochs": 2, "batch_size": 32, "lr": 0.01, "warmup": 0.5, "device": "cpu",
        "head_kwargs": {"hidden_dim": 16}}
GRID = {"base": BASE, "grid": {"head": ["mean_mlp", "max_mlp"], "lr": [0.01, 0.03]}}
GRID_TOML = """
[base]
features = ["synthetic"]
epochs = 2
batch_size = 32
warmup = 0.5
device = "cpu"
head_kwargs = { hidden_dim = 16 }

[grid]
head = ["mean_mlp", "max_mlp"]
lr = [0.01, 0.03]
"""


def _store(path: Path):
    fs = make_synthetic_store(path, n_videos=300, n_classes=4, clips=4, dim=16, chunk_rows=32, noise=0.5,
                              short_fraction=0.3)
    val_only = fs.create_feature_set("valonly", FeatureSetSpec(clips=4, dim=16, chunk_rows=32))
    rows = fs.split_rows("val")
    with val_only.writer() as w:
        w.write_rows(rows, np.random.default_rng(0).standard_normal((len(rows), 4, 16)))
    return fs


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


@dataclass(frozen=True)
class Recorder:
    """A ``before_train`` hook: appends ``<config hash> <pid>`` to a file; with ``kill_marker``,
    the first task to get here (race-free: O_EXCL) SIGKILLs its own worker process."""

    path: str
    kill_marker: str | None = None

    def __call__(self, config: TrainConfig) -> None:
        with open(self.path, "a") as f:
            f.write(f"{config.config_hash()} {os.getpid()}\n")
        if self.kill_marker is not None:
            try:
                os.close(os.open(self.kill_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


def _calls(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _worker_state() -> tuple:
    return sorted(heads.sweep._CACHES), heads.sweep._MALLOC_TUNED, os.environ.get("MALLOC_TRIM_THRESHOLD_")


# ------------------------------------------------------------------------------------ grid files
def test_grid_product_kwargs_runs_and_union():
    configs = expand_grid({**GRID, "grid": {**GRID["grid"], "head_kwargs": {"gating": [True, False]}}})
    assert len(configs) == 8
    assert {(c.head, c.lr, c.head_kwargs["gating"]) for c in configs} == {
        (h, lr, g) for h in ("mean_mlp", "max_mlp") for lr in (0.01, 0.03) for g in (True, False)}
    assert all(c.head_kwargs["hidden_dim"] == 16 and c.epochs == 2 for c in configs)  # [base] kwargs merged
    spec = {"base": BASE,
            "grid": [{"head": ["netvlad"], "head_kwargs.num_clusters": [4, 8]},
                     {"head": ["mean_mlp"], "head_kwargs": [{"hidden_dim": 8}, {"gating": True}]}],
            "runs": [{"head": "max_mlp", "loss": "focal", "loss_kwargs": {"gamma": 1.0}},
                     {"head": "netvlad", "head_kwargs": {"num_clusters": 4}}]}  # the second repeats a grid point
    configs = expand_grid(spec)
    got = [(c.head, c.head_kwargs) for c in configs]
    assert got == [("netvlad", {"hidden_dim": 16, "num_clusters": 4}),
                   ("netvlad", {"hidden_dim": 16, "num_clusters": 8}), ("mean_mlp", {"hidden_dim": 8}),
                   ("mean_mlp", {"hidden_dim": 16, "gating": True}),
                   ("max_mlp", {"hidden_dim": 16})]
    assert configs[-1].loss == "focal" and configs[-1].loss_kwargs == {"gamma": 1.0}


def test_random_search_is_seeded_and_in_range():
    space = {"n": 40, "seed": 3, "lr": {"loguniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0.0, 0.5]},
             "epochs": {"randint": [2, 4]}, "head": ["mean_mlp", "max_mlp"],
             "head_kwargs": {"hidden_dim": {"choice": [8, 16]}}}
    a = expand_grid({"base": BASE, "random": space})
    b = expand_grid({"base": BASE, "random": space})
    c = expand_grid({"base": BASE, "random": {**space, "seed": 4}})
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b] and a != c
    assert len(a) == 40 and all(1e-4 <= x.lr <= 1e-2 and 0 <= x.dropout <= 0.5 for x in a)
    assert {x.epochs for x in a} == {2, 3, 4} and {x.head for x in a} == {"mean_mlp", "max_mlp"}
    assert {x.head_kwargs["hidden_dim"] for x in a} == {8, 16}
    logs = np.log10([x.lr for x in a])  # log-uniform: both decades visited
    assert (logs < -3).any() and (logs > -3).any()


@pytest.mark.parametrize("spec, message", [
    ({"base": BASE, "grids": {}}, "unknown table"),
    ({"base": BASE, "grid": {"learning_rate": [1]}}, "unknown TrainConfig field 'learning_rate'"),
    ({"base": BASE, "grid": {"lr": 0.1}}, "must be a non-empty list"),
    ({"base": BASE, "grid": {"head": ["mean_mlp", "max_mlp"], "head_kwargs.num_clusters": [4]}},
     r"point 1 of 2 \(head='mean_mlp', head_kwargs.num_clusters=4\): head 'mean_mlp' does not accept num_clusters"),
    ({"base": BASE, "grid": {"lr": [0.1, -1.0]}}, r"point 2 of 2 \(lr=-1.0\): invalid --lr / lr -1.0: must be > 0"),
    ({"base": {**BASE, "lr": "fast"}, "runs": [{}]}, r"\[\[runs\]\] #1"),
    ({"base": BASE, "random": {"lr": {"loguniform": [0, 1]}, "n": 2}}, "loguniform needs low > 0"),
    ({"base": BASE, "random": {"lr": {"normal": [0, 1]}, "n": 2}}, "list of choices or one of"),
    ({"base": BASE, "random": {"lr": [0.1]}}, "number of samples"),
    ({"base": BASE, "random": {"n": 2}}, "nothing to sample"),
    ({"base": BASE}, "defines no configuration"),
    ({"base": BASE, "grid": {"head_kwargs.a.b": [1]}}, "may be dotted"),
])
def test_grid_errors_are_one_line_and_name_the_place(spec, message):
    with pytest.raises(GridError, match=message) as err:
        expand_grid(spec, name="g.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("g.toml")


def test_load_grid_reads_toml_dotted_keys(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(GRID_TOML + 'head_kwargs.gating = [true]\nloss = ["focal"]\n"loss_kwargs.gamma" = [1.0]\n')
    configs = expand_grid(load_grid(path))
    assert len(configs) == 4 and all(c.head_kwargs == {"hidden_dim": 16, "gating": True} for c in configs)
    assert all(c.loss_kwargs == {"gamma": 1.0} for c in configs)
    path.write_text("[base\n")
    with pytest.raises(GridError, match="not valid TOML"):
        load_grid(path)


# ------------------------------------------------------------------------------------ sweeps
def test_sweep_on_two_workers_matches_serial_training(client, tmp_path):
    fs = _store(tmp_path / "s.zarr")
    configs = expand_grid(GRID)
    calls = tmp_path / "calls"
    table = run_sweep(fs.path, configs, client=client, torch_threads=1, progress=False,
                      before_train=Recorder(str(calls)))
    assert (table["status"] == "done").all() and sorted(_calls(calls)) == sorted(c.config_hash() for c in configs)
    assert list(table.columns[:6]) == ["run", "head", "loss", "features", "lr", "val_class_map"]
    assert table["val_class_map"].is_monotonic_decreasing
    # features were read once per worker process, however many tasks it ran
    # each worker read the features once, however many tasks it ran; and countered the nanny's
    # MALLOC_TRIM_THRESHOLD_ (training took twice the CPU time with it)
    key = (str(fs.path.resolve()), ("synthetic",))
    states = list(client.run(_worker_state).values())
    assert [key] in [keys for keys, _, _ in states]
    assert all(keys in ([], [key]) and tuned == bool(keys) and env == "65536" for keys, tuned, env in states)
    data = FeatureCache.load(fs, ("synthetic",))
    for c in configs:
        ref = train_head(fs, c, data=data, write_predictions=False, progress=False)
        row = table.set_index("config_hash").loc[c.config_hash()]
        assert row["run"] == c.default_run_name() and row["head"] == c.head and row["lr"] == c.lr
        for m in ("class_map", "sample_map", "gap20", "top1"):
            assert abs(row[f"val_{m}"] - ref.metrics["val"][m]) <= 1e-6
        scores, attrs = fs.read_predictions(c.default_run_name())
        np.testing.assert_allclose(scores, ref.scores, atol=1e-6)
        assert attrs["config_hash"] == c.config_hash() and attrs["metrics"]["val"] == ref.metrics["val"]


def test_resume_after_the_sweep_is_killed(client, tmp_path):
    fs = _store(tmp_path / "s.zarr")
    grid = tmp_path / "g.toml"
    grid.write_text(GRID_TOML.replace("epochs = 2", "epochs = 3"))
    configs = expand_grid(load_grid(grid))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "heads.sweep", "--store", str(fs.path), "--grid", str(grid),
                             "--workers", "1", "--quiet", "--out", str(tmp_path / "r.csv")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs_dir = fs.path / "predictions"
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.is_dir() and not p.name.startswith(".") for p in runs_dir.iterdir()):
                break  # one configuration finished: kill the sweep midway
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler, nanny and worker: one process group
        proc.wait()
    fs.refresh()
    finished = {fs.read_predictions(r)[1]["config_hash"] for r in fs.prediction_runs()}
    assert 1 <= len(finished) < len(configs), "the sweep was not caught midway"
    calls = tmp_path / "calls"
    table = run_sweep(fs.path, configs, client=client, torch_threads=1, progress=False,
                      before_train=Recorder(str(calls)))
    trained = _calls(calls)
    assert sorted(trained) == sorted(c.config_hash() for c in configs if c.config_hash() not in finished)
    status = dict(zip(table["config_hash"], table["status"]))
    assert {h for h, s in status.items() if s == "cached"} == finished
    assert {h for h, s in status.items() if s == "done"} == set(trained)
    assert table["val_class_map"].notna().all()  # cached rows carry their metrics from the run's attrs
    again = run_sweep(fs.path, configs, client=client, progress=False, before_train=Recorder(str(calls)))
    assert (again["status"] == "cached").all() and len(_calls(calls)) == len(trained)


def test_serial_sweep_reports_a_failed_config_and_goes_on(tmp_path):
    fs = _store(tmp_path / "s.zarr")
    good = TrainConfig(**{**BASE, "head": "mean_mlp"})
    bad = TrainConfig(**{**BASE, "head": "mean_mlp", "features": ["valonly"]})  # no train row is done
    table = run_sweep(fs.path, [bad, good], progress=False)
    assert list(table["status"]) == ["done", "failed"]
    assert "train row" in table["error"].iloc[1] and math.isnan(table["val_class_map"].iloc[1])
    assert fs.prediction_runs() == [good.default_run_name()]
    rerun = run_sweep(fs.path, [bad, good], progress=False, resume=False, before_train=Recorder(str(tmp_path / "c")))
    assert list(rerun["status"]) == ["done", "failed"] and len(_calls(tmp_path / "c")) == 2


def test_estimate_cost_counts_the_heads_flops_by_hand():
    linear = TrainConfig(features=("x",), head="mean_mlp", head_kwargs={"hidden_dim": None}, epochs=3)
    assert estimate_cost(linear, clips=4, dim=16, num_classes=5) == 2 * 16 * 5 * 3  # one D x C matmul per video
    hidden = TrainConfig(features=("x",), head="mean_mlp", head_kwargs={"hidden_dim": 8}, epochs=3, folds=4)
    assert estimate_cost(hidden, clips=4, dim=16, num_classes=5) == 2 * (16 * 8 + 8 * 5) * 3 * 4


def test_plan_sweep_starts_the_most_expensive_configurations_first(tmp_path):
    fs = _store(tmp_path / "s.zarr")
    configs = [TrainConfig(**{**BASE, "head": "netvlad", "head_kwargs": {"num_clusters": k}, "epochs": e})
               for k, e in ((2, 1), (8, 1), (4, 1), (2, 10))]  # cost grows with the clusters (< linearly)
    todo, cached = plan_sweep(fs, configs)
    assert not cached
    assert [(c.head_kwargs["num_clusters"], c.epochs) for c in todo] == [(2, 10), (8, 1), (4, 1), (2, 1)]


def test_worker_cache_is_reused_until_the_store_grows(tmp_path):
    fs = _store(tmp_path / "s.zarr")
    first = worker_cache(fs, ("synthetic",))
    assert worker_cache(fs, ("synthetic",)) is first
    fs.append_videos(pd.DataFrame({"id": ["new"], "path": ["new.mp4"], "split": ["train"]}), [[0]])
    assert worker_cache(fs, ("synthetic",)) is not first
    heads.sweep._CACHES.clear()


def test_results_table_lists_varied_settings_and_sorts_failures_last():
    a, b = TrainConfig(**{**BASE, "head": "mean_mlp"}), TrainConfig(**{**BASE, "head": "netvlad",
                                                                       "head_kwargs": {"num_clusters": 4}})
    val = {"class_map": 0.5, "sample_map": 0.6, "gap20": 0.7, "top1": 0.8}
    table = results_table([a, b], {b.config_hash(): {"status": "cached", "run": "old", "metrics": {"val": val}},
                                   a.config_hash(): {"status": "failed", "run": "x", "error": "boom"}})
    assert list(table["run"]) == ["old", "x"] and list(table["status"]) == ["cached", "failed"]
    assert "head_kwargs.num_clusters" in table.columns and "lr" not in table.columns
    assert table.loc[0, "val_top1"] == 0.8 and math.isnan(table.loc[1, "seconds"])


# ------------------------------------------------------------------------------------ command line
def test_cli_on_an_existing_scheduler_then_everything_cached(client, tmp_path, capsys):
    fs = _store(tmp_path / "s.zarr")
    grid, out = tmp_path / "g.toml", tmp_path / "r.csv"
    grid.write_text(GRID_TOML)
    args = ["--store", str(fs.path), "--grid", str(grid), "--scheduler", client.scheduler.address, "--out", str(out),
            "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "4 to train, 0 in the store already" in text and "dashboard" in text
    table = pd.read_csv(out)
    assert len(table) == 4 and (table["status"] == "done").all() and table["val_class_map"].is_monotonic_decreasing
    assert main(args) == 0
    assert "0 to train, 4 in the store already" in capsys.readouterr().out
    assert (pd.read_csv(out)["status"] == "cached").all()


@pytest.mark.parametrize("change, message", [
    ({"grid": "missing.toml"}, "grid file .*missing.toml not found"),
    ({"store": "missing.zarr"}, "no feature store"),
    ({"toml": GRID_TOML.replace('["synthetic"]', '["nope"]')}, "nope"),
    ({"toml": GRID_TOML.replace("lr = [", "lr = [-1, ")}, "invalid --lr / lr -1"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, change, message):
    fs = _store(tmp_path / "s.zarr")
    grid = tmp_path / "g.toml"
    grid.write_text(change.get("toml", GRID_TOML))
    args = ["--store", str(tmp_path / change.get("store", "s.zarr")),
            "--grid", str(tmp_path / change.get("grid", "g.toml")), "--workers", change.get("workers", "1")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err)
    assert fs.prediction_runs() == []


# ------------------------------------------------------------------------------------ last: it restarts a worker
def test_a_worker_killed_during_a_task_is_survived(client, tmp_path):
    fs = _store(tmp_path / "s.zarr")
    configs = expand_grid(GRID)
    calls, marker = tmp_path / "calls", tmp_path / "killed"
    table = run_sweep(fs.path, configs, client=client, torch_threads=1, progress=False,
                      before_train=Recorder(str(calls), kill_marker=str(marker)))
    assert marker.exists() and (table["status"] == "done").all()
    assert len(_calls(calls)) == len(configs) + 1  # the killed attempt, then its retry elsewhere
    assert sorted(fs.prediction_runs()) == sorted(c.default_run_name() for c in configs)
