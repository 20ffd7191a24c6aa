"""extract.run on a Dask cluster (LocalCluster, 2 worker processes, tiny backbone and demo): features equal
a single-process run; a worker killed mid-task loses no finished row; a video that kills its worker twice
becomes an error row; a rerun resumes, also after the client was SIGKILLed; the Slurm job script; flag mistakes."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from extract.demo import DemoConfig, make_demo
from extract.dump import cluster as C
from extract.dump import pipeline
from extract.dump.settings import ExtractSettings
from store import FeatureStore
from store.cluster import SlurmConfig, check_choice, connect, slurm_cluster
from store.errors import SettingsError
from store.verify import verify_store

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task wrappers below travel by value
SET = "rgb_resnet_tiny"
SETTINGS = ExtractSettings(backbone="resnet_tiny", weights="random", crop=32, clips=4, chunk_rows=4,
                           batch_size=8, workers=0, threads=1, max_memory_gb=64.0)  # the suite's process is large


def test_task_ranges_are_whole_chunks_holding_pending_rows():
    assert C.task_ranges(np.array([0, 1, 9, 10, 11, 21]), 22, 4) == [(0, 4), (8, 12), (20, 22)]
    assert C.task_ranges(np.array([5, 6]), 22, 4, chunks_per_task=2) == [(0, 8)]
    assert C.task_ranges(np.array([], np.int64), 22, 4) == []


def test_the_slurm_job_script_follows_the_toml(tmp_path):
    toml = tmp_path / "slurm.toml"
    toml.write_text('partition = "gpu"\ngres = "gpu:1"\ncores = 6\nmemory = "24GB"\nwalltime = "02:00:00"\n'
                    'max_jobs = 4\njob_extra = ["--account=vision"]\nprologue = ["module load cuda"]\n')
    config = SlurmConfig.read(toml)
    assert config.gpus and (config.min_jobs, config.max_jobs) == (1, 4)
    cluster = slurm_cluster(config, adapt=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH --cpus-per-task=6", "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1",
                 "#SBATCH --account=vision", "module load cuda", "--resources GPU=1", "--nthreads 6"):
        assert line in script, line


@pytest.mark.parametrize("text, match", [
    ('gres = "gpu:1"\n', "give the partition"),
    ('partition = "gpu"\ncores = "many"\n', "cores must be a int"),
    ('partition = "gpu"\nqueue = "x"\n', "unknown key"),
    ('partition = "gpu"\nmin_jobs = 5\nmax_jobs = 2\n', "min_jobs"),
])
def test_a_bad_slurm_toml_is_one_clear_error(tmp_path, text, match):
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SettingsError, match=match):
        SlurmConfig.read(tmp_path / "s.toml")


@pytest.mark.parametrize("args, match", [
    (("tcp://h:8786", "local", None), "not both"), ((None, "slurm", None), "needs --slurm"),
    ((None, "local", "s.toml"), "needs --slurm"), ((None, "moon", None), "must be one of"),
])
def test_cluster_flag_mistakes(args, match):
    with pytest.raises(SettingsError, match=match):
        check_choice(*args)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=8, size=48, seconds=1.0), progress=False)


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    pipeline.extract(demo.videos_csv, store, SETTINGS)
    return FeatureStore.open(store).feature_set(SET).read()


@pytest.fixture(scope="module")
def client():
    with connect(cluster="local", workers=2) as c:
        yield c


def _run(client, demo, store, **kw):
    return C.extract_on_cluster(client, demo.videos_csv, store, kw.pop("settings", SETTINGS), **kw)


def _assert_same_fp16(a, b):
    """Same model, same inputs: the same fp16 features, to one fp16 step (a batch of another size may take
    another convolution kernel, whose float32 rounding can tip a value to the neighbouring fp16 value)."""
    assert a.shape == b.shape and np.array_equal(a.astype(np.float16), a)  # read() widens the stored fp16
    step = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(a - b) <= step), f"features differ by more than one fp16 step: {np.abs(a - b).max()}"


def _assert_equal_to_reference(store, reference, rows=slice(None)):
    data, valid = FeatureStore.open(store).feature_set(SET).read()
    _assert_same_fp16(data[rows], reference[0][rows])
    np.testing.assert_array_equal(valid[rows], reference[1][rows])


def test_a_cluster_run_equals_a_single_process_run_and_resumes(client, demo, reference, tmp_path):
    store = tmp_path / "c.zarr"
    first = _run(client, demo, store, settings=dataclasses.replace(SETTINGS, limit=3))
    assert (first.planned, first.done, first.tasks) == (3, 3, 1)
    stats = _run(client, demo, store)
    assert (stats.planned, stats.done, stats.failed, stats.tasks) == (5, 5, 0, 2)  # only the rows left
    assert sum(stats.per_worker.values()) == 5
    assert FeatureStore.open(store).feature_set(SET).done().all() and verify_store(store).ok
    _assert_equal_to_reference(store, reference)


def kill_mid_task(store, settings, names, num_classes, a, b, rows, marks):
    """Range 4:8, first attempt: write two rows, then die like a SIGKILLed worker. Later attempts: record
    which rows were still pending, then work normally."""
    mark = Path(marks) / f"{a}"
    if a == 4 and not mark.exists():
        mark.write_text("[]")
        C.extract_range(store, settings, names, num_classes, a, b, rows[:2])
        os._exit(9)
    if a == 4:
        pending = FeatureStore.open(store).feature_set(SET).pending(range(a, b))
        mark.write_text(json.dumps(pending.tolist()))
    return C.extract_range(store, settings, names, num_classes, a, b, rows)


def test_a_worker_killed_mid_task_loses_no_finished_row(client, demo, reference, tmp_path):
    store = tmp_path / "c.zarr"
    stats = _run(client, demo, store, task=partial(kill_mid_task, marks=str(tmp_path)))
    assert stats.killed_rows == [] and stats.isolated_ranges == 0
    assert json.loads((tmp_path / "4").read_text()) == [6, 7]  # rows 4 and 5 were done before the kill
    assert FeatureStore.open(store).feature_set(SET).done().all() and verify_store(store).ok
    _assert_equal_to_reference(store, reference)


def poison(store, settings, names, num_classes, a, b, rows, bad):
    """Any task holding row ``bad`` kills its worker (a video that crashes the decoder or the model)."""
    if bad in rows:
        os._exit(9)
    return C.extract_range(store, settings, names, num_classes, a, b, rows)


def test_a_video_that_kills_its_worker_twice_becomes_an_error_row(client, demo, reference, tmp_path):
    store = tmp_path / "c.zarr"
    stats = _run(client, demo, store, task=partial(poison, bad=2))
    # >= 1: the other range may be reported killed too when its worker dies under the poison retry
    assert stats.killed_rows == [2] and stats.isolated_ranges >= 1 and (stats.done, stats.failed) == (7, 1)
    fset = FeatureStore.open(store).feature_set(SET)
    assert fset.errors() == {2: C.KILLED}
    np.testing.assert_array_equal(np.flatnonzero(~fset.done()), [2])
    assert verify_store(store).ok
    _assert_equal_to_reference(store, reference, rows=[0, 1, 3, 4, 5, 6, 7])


def test_a_kinetics_window_on_the_cluster_equals_a_local_run(client, tmp_path):
    from extract.media.video_writer import write_video

    frames = np.random.default_rng(1).integers(0, 256, (60, 40, 40, 3), dtype=np.uint8)
    write_video(tmp_path / "full" / "untrimmedvid.mp4", frames, 25.0, lossless=True)
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nx,untrimmedvid,0.5,1.5,val\n")
    kw = {"list_format": "kinetics", "kinetics_pattern": "full/{youtube_id}.mp4"}
    pipeline.extract(csv, tmp_path / "local.zarr", SETTINGS, **kw)
    stats = C.extract_on_cluster(client, csv, tmp_path / "dask.zarr", SETTINGS, **kw)
    assert (stats.done, stats.failed) == (1, 0)
    local, dask = (FeatureStore.open(tmp_path / f"{n}.zarr").feature_set(SET) for n in ("local", "dask"))
    np.testing.assert_array_equal(dask.read()[0], local.read()[0])
    np.testing.assert_array_equal(dask.read_times(), local.read_times())
    assert dask.read_times()[0, 0, 0] == pytest.approx(16 / 25)  # window frames 13..37, TSN's first clip at 13 + 3


def test_a_time_based_cluster_run_fixes_k_max_as_a_local_run_does(client, demo, tmp_path):
    """--every on a cluster: the client fixes K-max from the videos (1 s at 25 fps, a one-frame clip every
    0.25 s: floor((1 - 0.04) / 0.25) + 1 = 4, not the default cap of 128) before any task builds a model."""
    timed = dataclasses.replace(SETTINGS, every=0.25)
    local, remote = tmp_path / "local.zarr", tmp_path / "remote.zarr"
    pipeline.extract(demo.videos_csv, local, timed)
    _run(client, demo, remote, settings=timed)
    a, b = (FeatureStore.open(s).feature_set(SET) for s in (local, remote))
    assert a.spec.clips == 4 and b.spec == a.spec
    (x, x_valid), (y, y_valid) = a.read(), b.read()
    _assert_same_fp16(x, y)
    np.testing.assert_array_equal(x_valid, y_valid)
    np.testing.assert_array_equal(a.read_times(), b.read_times())
    np.testing.assert_array_equal(a.read_times()[0, :, 0], [0.0, 0.25, 0.5, 0.75])


CLIENT = """
import sys, time
from pathlib import Path
from distributed import Client
from extract.dump import cluster as C
from extract.dump.settings import ExtractSettings

def hold_second_range(store, settings, names, num_classes, a, b, rows, release=sys.argv[4]):
    if a == 4:  # never extracts: waits until the test lets it go (or 120 s), so the client is killed mid-run
        deadline = time.monotonic() + 120
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return C.RangeResult(a, b, 0, 0, 0, 0.0, "held")
    return C.extract_range(store, settings, names, num_classes, a, b, rows)

settings = ExtractSettings.from_dict({settings!r})
with Client(sys.argv[1]) as client:
    C.extract_on_cluster(client, sys.argv[2], sys.argv[3], settings, task=hold_second_range)
"""


def test_a_rerun_completes_the_store_after_the_client_was_killed(client, demo, reference, tmp_path):
    store = tmp_path / "c.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    code = CLIENT.format(settings=SETTINGS.to_dict())
    release = tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", code, client.scheduler.address, str(demo.videos_csv), str(store),
                             str(release)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:  # wait until the first range (rows 0-3) is done; the second one is held
            try:
                if FeatureStore.open(store).feature_set(SET).done().sum() == 4:
                    break
            except Exception:  # noqa: BLE001 -- the store or the set is not made yet
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # killed mid-run, not finished
    finally:
        proc.kill()
    done_at_kill = FeatureStore.open(store).feature_set(SET).done()
    assert verify_store(store).ok  # a valid store at once
    stats = _run(client, demo, store)
    np.testing.assert_array_equal(np.flatnonzero(done_at_kill), [0, 1, 2, 3])
    assert stats.planned == 4  # only the rows left
    assert FeatureStore.open(store).feature_set(SET).done().all() and verify_store(store).ok
    _assert_equal_to_reference(store, reference)
    release.touch()  # the held task of the killed client returns and frees its worker


def record_range(store, settings, names, num_classes, a, b, rows, seen):
    """A task that only says which rows and device it was given (no extraction)."""
    Path(seen, f"{a}").write_text(json.dumps({"rows": list(rows), "device": settings.device}))
    return C.RangeResult(a, b, 0, 0, 0, 0.0, "recorded")


def test_a_client_without_a_gpu_can_plan_cuda_tasks(client, demo, tmp_path):
    """A login node without a GPU builds the specs on its CPU; the tasks keep --device cuda."""
    store = tmp_path / "c.zarr"
    settings = dataclasses.replace(SETTINGS, device="cuda")
    stats = _run(client, demo, store, settings=settings, task=partial(record_range, seen=str(tmp_path)))
    assert stats.tasks == 2 and FeatureStore.open(store).feature_sets() == [SET]
    sent = {a: json.loads((tmp_path / f"{a}").read_text()) for a in (0, 4)}
    assert sent == {0: {"rows": [0, 1, 2, 3], "device": "cuda"}, 4: {"rows": [4, 5, 6, 7], "device": "cuda"}}
