"""The resource plan of ``extract.run``: the pure plan function on hand-made costs, the memory
budget (batch size and queue bound derived from it), and runs whose plan is recorded in the
feature set's attrs, overridden by ``--workers/--threads``, and squeezed by ``--max-memory``
without changing the features."""

import dataclasses

import numpy as np
import pytest
import torch

from extract.backbones import get_backbone
from extract.backbones.batchnorm_fold import fold_batchnorm
from extract.demo import DemoConfig, make_demo
from extract.dump import pipeline
from extract.dump.makers import RGBClips
from extract.dump.resources import MemoryBudget, WorkCosts, choose_plan, model_seconds
from extract.dump.settings import ExtractSettings, default_parallelism
from extract.dump.worker import DecodePool, DecodeTask, stop_fork_server
from extract.media.sampling import ClipSampling, ViewSpec
from extract.run import main
from store import FeatureStore

MB = 2**20
GB = 2**30
BIG = MemoryBudget(max_bytes=64 * GB, base_bytes=1 * GB, worker_bytes=256 * MB)

# R(2+1)D-18 on the 2-core CPU: decode 20 ms, 8 clips ~0.7 s each on one thread, 1.2x faster on two
R21D = WorkCosts(decode_s=0.02, model_s_all=4.7, model_s_one=5.6, cores=2, clip_bytes=130 * MB,
                 input_bytes=int(0.6 * MB), clips_per_video=8)
# A cheap frame model behind a slow decode (large videos): 0.5 s to decode, 30 ms of model
CHEAP = WorkCosts(decode_s=0.5, model_s_all=0.02, model_s_one=0.03, cores=2, clip_bytes=2 * MB,
                  input_bytes=40_000, clips_per_video=8)


def test_3d_model_on_two_cores_decodes_in_process_with_every_thread():
    plan = choose_plan(R21D, 2, BIG, max_batch=64)
    assert (plan.workers, plan.threads) == (0, 2)
    assert plan.source == "measured" and plan.fits
    assert plan.videos_per_s == pytest.approx(1 / (0.02 + 4.7))  # decode between batches


def test_cheap_model_with_slow_decode_gets_decode_processes():
    two = choose_plan(CHEAP, 2, BIG, max_batch=64)
    assert (two.workers, two.threads) == (1, 1)  # 2 videos/s against 1 / (0.5 + 0.02)
    assert two.videos_per_s == pytest.approx(1 / 0.5)
    four = choose_plan(dataclasses.replace(CHEAP, cores=4), 4, BIG, max_batch=64)
    assert (four.workers, four.threads) == (3, 1)


def test_one_free_core_never_adds_a_process():
    plan = choose_plan(dataclasses.replace(CHEAP, cores=1, model_s_all=0.03), 1, BIG, max_batch=64)
    assert (plan.workers, plan.threads) == (0, 1)


# Measured with one of the two cores kept busy by another process (the 2-core machines): R(2+1)D-18's
# two threads still beat one (big convolutions), ResNet-18 TSN's two OpenMP threads stall each other
R21D_BUSY = dataclasses.replace(R21D, model_s_all=5.3, model_s_one=11.0)
TSN_BUSY = WorkCosts(decode_s=0.01, model_s_all=0.33, model_s_one=0.10, cores=2, clip_bytes=8 * MB,
                     input_bytes=37_632, clips_per_video=8)


def test_a_busy_core_does_not_take_a_thread_the_measurement_says_is_faster():
    plan = choose_plan(R21D_BUSY, 1, BIG, max_batch=64)  # one free core
    assert (plan.workers, plan.threads) == (0, 2)
    assert plan.videos_per_s == pytest.approx(1 / (0.02 + 5.3))
    assert "next best in-process decode + 1 thread(s)" in plan.reason
    tsn = choose_plan(TSN_BUSY, 1, BIG, max_batch=64)
    assert (tsn.workers, tsn.threads) == (0, 1)
    assert tsn.videos_per_s == pytest.approx(1 / (0.01 + 0.10))


def test_equal_rates_take_fewer_threads_and_the_reason_says_what_was_assumed():
    flat = dataclasses.replace(R21D, model_s_all=5.6, model_s_one=5.6)  # two threads no faster
    assert choose_plan(flat, 2, BIG, max_batch=64).threads == 1
    assumed = dataclasses.replace(R21D, model_s_one=2 * 4.7, one_thread_measured=False)
    plan = choose_plan(assumed, 2, BIG, max_batch=64)
    assert "perfect scaling assumed" in plan.reason and "perfect scaling assumed" in plan.describe()


def test_model_seconds_follow_amdahl_through_the_two_measurements():
    c = dataclasses.replace(R21D, model_s_one=10.0, model_s_all=4.0, cores=4)
    # p = (1 - 4/10) / (1 - 1/4) = 0.8
    assert model_seconds(c, 1) == pytest.approx(10.0)
    assert model_seconds(c, 2) == pytest.approx(10.0 * (0.2 + 0.4))
    assert model_seconds(c, 4) == pytest.approx(4.0)
    assert model_seconds(c, 16) == pytest.approx(4.0)  # no gain past what was measured
    slower = dataclasses.replace(R21D, model_s_one=1.0, model_s_all=3.0)  # a busy core: more threads stall
    assert model_seconds(slower, 2) == pytest.approx(3.0) and model_seconds(slower, 1) == pytest.approx(1.0)


def test_batch_and_queue_follow_the_budget():
    budget = MemoryBudget(max_bytes=2 * GB, base_bytes=1 * GB, worker_bytes=256 * MB)
    plan = choose_plan(R21D, 2, budget, max_batch=64)
    per_clip = 130 * MB + 3 * int(0.6 * MB)
    assert plan.workers == 0
    assert plan.batch_size == (2 * GB - 1 * GB) // per_clip == 7
    assert plan.max_ahead == 2  # ceil(2 * 7 / 8) videos: about two batches
    assert plan.fits and plan.peak_bytes <= 2 * GB
    # a second copy of the weights is reserved (oneDNN's reordered weights for a new batch shape)
    heavy = dataclasses.replace(R21D, model_bytes=126 * MB)
    assert choose_plan(heavy, 2, budget, max_batch=64).batch_size == (2 * GB - 1 * GB - 126 * MB) // per_clip == 6
    # a bigger budget: the requested batch size is the cap
    assert choose_plan(R21D, 2, BIG, max_batch=16).batch_size == 16
    # a decode process and its fork server take their share of the budget before the batch does
    three = MemoryBudget(max_bytes=3 * GB, base_bytes=1 * GB, worker_bytes=256 * MB, server_bytes=512 * MB)
    given = choose_plan(R21D, 2, three, max_batch=64, workers=1)
    assert given.batch_size == (3 * GB - 1 * GB - 512 * MB - 256 * MB) // per_clip == 9
    assert given.max_ahead == 3  # ceil(2 * 9 / 8)


def test_a_budget_below_one_clip_runs_with_batch_one_and_says_so():
    plan = choose_plan(R21D, 2, MemoryBudget(max_bytes=GB, base_bytes=GB), max_batch=64)
    assert plan.batch_size == 1 and not plan.fits
    assert "over --max-memory" in plan.describe()


def test_memory_can_decide_against_a_decode_process():
    budget = MemoryBudget(max_bytes=1 * GB + 100 * MB, base_bytes=1 * GB, worker_bytes=256 * MB)
    plan = choose_plan(CHEAP, 2, budget, max_batch=64)  # faster with a process, but it does not fit
    assert plan.workers == 0 and plan.fits


def test_workers_and_threads_override_the_plan():
    given = choose_plan(R21D, 2, BIG, max_batch=64, workers=1, threads=1)
    assert (given.workers, given.threads, given.source) == (1, 1, "given")
    workers_only = choose_plan(R21D, 2, BIG, max_batch=64, workers=1)
    assert (workers_only.workers, workers_only.threads) == (1, 1)
    threads_only = choose_plan(CHEAP, 2, BIG, max_batch=64, threads=1)
    assert (threads_only.workers, threads_only.threads) == (1, 1)
    assert choose_plan(R21D, 2, BIG, max_batch=64, threads=1).workers == 0


def test_nothing_measured_falls_back_on_the_fixed_rule():
    plan = choose_plan(None, 4, BIG, max_batch=32)
    assert (plan.workers, plan.threads) == default_parallelism("cpu", 4)
    assert (plan.batch_size, plan.source) == (32, "default")


# ---------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=6, size=48, seconds=1.0), progress=False)


TINY = dict(backbone="resnet_tiny", weights="random", crop=32, clips=4, chunk_rows=4, batch_size=8)


def test_a_small_budget_gives_batch_one_and_the_same_features(demo, tmp_path, caplog):
    free = pipeline.extract(demo.videos_csv, tmp_path / "a.zarr", ExtractSettings(**TINY, max_memory_gb=64.0))
    with caplog.at_level("WARNING"):
        small = pipeline.extract(demo.videos_csv, tmp_path / "b.zarr", ExtractSettings(**TINY, max_memory_gb=0.01))
    assert free.batch_size == 8 and small.batch_size == 1
    assert "--max-memory 0.01 GB is below" in caplog.text
    assert small.videos_done == free.videos_done == 6
    a = FeatureStore.open(tmp_path / "a.zarr").feature_set("rgb_resnet_tiny").read()
    b = FeatureStore.open(tmp_path / "b.zarr").feature_set("rgb_resnet_tiny").read()
    np.testing.assert_allclose(b[0], a[0], rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(b[1], a[1])


def test_the_plan_is_measured_and_recorded_in_the_attrs(demo, tmp_path):
    stats = pipeline.extract(demo.videos_csv, tmp_path / "s.zarr", ExtractSettings(**TINY))
    rec = FeatureStore.open(tmp_path / "s.zarr").feature_set("rgb_resnet_tiny").attrs["extraction"]
    assert rec == stats.plan
    plan, costs = rec["plan"], rec["costs"]
    assert plan["source"] == "measured" and rec["max_memory_gb"] == 2.0
    assert (plan["workers"], plan["threads"], plan["batch_size"]) == (stats.workers, stats.threads, stats.batch_size)
    assert plan["workers"] + plan["threads"] <= max(2, plan["cores"])
    assert costs["decode_s"] > 0 and costs["model_s_all"] > 0 and costs["clips_per_video"] == 4
    assert costs["input_bytes"] == 1 * 32 * 32 * 3  # one TSN frame of 32 x 32 RGB, uint8
    model = get_backbone("resnet_tiny").eval()
    assert fold_batchnorm(model) > 0  # what the producer holds: BatchNorms after convs folded into them
    assert costs["model_bytes"] == sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()]
                                       if t.dtype == torch.float32) + sum(
        t.numel() * 8 for t in model.buffers() if t.dtype == torch.int64)


def test_calibration_times_the_run_s_own_clips_and_no_others(demo, tmp_path, monkeypatch):
    """Every clip goes through the model once, the calibration's timed passes included: the hook
    clip on every thread, then (a cheap decode, an idle machine) the plan's batches; with another
    process keeping a core busy one clip on one thread and one on every thread (no clip twice)."""
    from store import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)  # whatever this machine has
    monkeypatch.setattr("extract.dump._assembly.available_cores", lambda: 2)
    for busy, one_thread in ((0.0, False), (1.0, True)):
        monkeypatch.setattr(threads.OtherLoad, "busy_cores", lambda self, b=busy: b)
        settings = ExtractSettings(**TINY, max_memory_gb=64.0)  # batches > 1 in a large test process
        fs, targets = pipeline.prepare_store(tmp_path / f"busy{busy}.zarr", pipeline.open_video_list(demo.videos_csv),
                                             workers=0)
        producers = pipeline.build_producers(settings, "cpu")
        seen, threads_seen = [], []
        embed = producers[0].embed_outputs
        monkeypatch.setattr(producers[0], "embed_outputs",
                            lambda x: seen.append(len(x)) or threads_seen.append(torch.get_num_threads()) or embed(x))
        monkeypatch.setattr("extract.dump.calibration.DECODE_SHARE", 1e9)  # only the load asks for one thread
        stats = pipeline.run_extraction(fs, targets, producers, settings)
        assert sum(seen) == stats.clips == 6 * 4
        assert seen[0] == 1 and threads_seen[0] == 2  # the hook pass, on every thread
        if busy:  # no long pass on threads that may stall: one clip on one thread, then on all again
            assert seen[:3] == [1, 1, 1] and threads_seen[:3] == [2, 1, 2]
            assert seen[3] > 1  # then the plan's batches
        else:  # the hook clip, then the plan's batches (no more one-clip passes)
            assert seen[1] == min(stats.batch_size, 6 * 4 - 1) > 1
        costs = stats.plan["costs"]
        assert costs["one_thread_measured"] is one_thread
        assert stats.plan["plan"]["cores"] == (1 if busy else 2)
        assert "model " in stats.plan["plan"]["reason"]


def test_given_threads_time_no_one_thread_pass(demo, tmp_path, monkeypatch):
    """With --threads the plan uses only that count's time: even with a core busy no clip runs on
    one thread (the hook clip on the given threads, then the plan's batches)."""
    from store import threads

    monkeypatch.setattr(threads.OtherLoad, "busy_cores", lambda self: 1.0)
    settings = ExtractSettings(**TINY, threads=2, max_memory_gb=64.0)  # batches > 1 in a large test process
    fs, targets = pipeline.prepare_store(tmp_path / "t.zarr", pipeline.open_video_list(demo.videos_csv), workers=0)
    producers = pipeline.build_producers(settings, "cpu")
    seen = []
    embed = producers[0].embed_outputs
    monkeypatch.setattr(producers[0], "embed_outputs", lambda x: seen.append((len(x), torch.get_num_threads()))
                        or embed(x))
    stats = pipeline.run_extraction(fs, targets, producers, settings)
    assert sum(n for n, _ in seen) == stats.clips == 6 * 4
    assert {t for _, t in seen} == {2} and seen[0][0] == 1 and seen[1][0] > 1
    assert stats.plan["costs"]["one_thread_measured"] is False and stats.threads == 2
    assert "--threads given" in stats.plan["plan"]["reason"]


def test_cli_workers_and_threads_override_and_are_recorded(demo, tmp_path, capsys):
    store = tmp_path / "c.zarr"
    argv = ["--videos", str(demo.videos_csv), "--store", str(store), "--backbone", "resnet_tiny@random", "--crop", "32",
            "--clips", "4", "--workers", "1", "--threads", "1", "--max-memory", "64", "-q"]
    assert main(argv) == 0
    assert "1 decode worker(s), 1 model thread(s), batch 64 on cpu (given plan)" in capsys.readouterr().out
    rec = FeatureStore.open(store).feature_set("rgb_resnet_tiny").attrs["extraction"]
    assert (rec["plan"]["workers"], rec["plan"]["threads"], rec["plan"]["source"]) == (1, 1, "given")
    assert rec["max_memory_gb"] == 64.0  # far above the test process (batch 64 whatever the suite holds)


def test_max_memory_must_be_positive(demo, tmp_path, capsys):
    (tmp_path / "m.toml").write_text("max_memory_gb = 0\n")  # a file's value: the settings check it
    argv = ["--videos", str(demo.videos_csv), "--store", str(tmp_path / "e.zarr"), "--config", str(tmp_path / "m.toml")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-memory / max_memory_gb must be > 0 GB, got 0"]
    assert not (tmp_path / "e.zarr").exists()



def test_the_fork_server_stops_and_a_later_pool_starts_a_fresh_one(demo):
    maker = RGBClips(ClipSampling("tsn", 2, 1), ViewSpec(short_side=32, crop=32))
    task = DecodeTask(0, str(demo.root / "videos" / "demo_00000.mp4"), 25, 25.0, (0,))
    for _ in range(2):
        with DecodePool([maker], 1) as pool:
            (res,) = pool.imap_unordered([task])
        assert res.error is None and res.inputs[0].inputs.shape == (2, 1, 32, 32, 3)
        assert stop_fork_server()
        assert not stop_fork_server()  # nothing left to stop
