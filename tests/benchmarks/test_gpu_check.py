"""``benchmarks.run --only gpu``: every part run on the CPU with tiny sizes (``device="cpu"`` where the
real check passes ``"cuda"``), the no-GPU line and exit codes, the utilisation readers and fallbacks."""

import argparse
import subprocess
import time

import numpy as np
import pytest
import torch

import benchmarks.gpu_bench as gb
from benchmarks.run import main


def test_without_a_gpu_one_line_and_exit_0_or_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--only", "gpu", "--workdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == [gb.NO_GPU] and err == ""
    assert main(["--only", "gpu", "--require-gpu", "--workdir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "error: torch sees no CUDA GPU on this machine and --require-gpu was given"]
    assert not (tmp_path / "results").exists()


def test_bench_gpu_runs_the_check_on_cuda(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    monkeypatch.setattr(gb, "gpu_check", lambda workdir, device, sizes: seen.update(device=device, sizes=sizes) or {})
    assert gb.bench_gpu(argparse.Namespace(workdir=tmp_path, size=None)) == {}
    assert seen == {"device": "cuda", "sizes": gb.SIZES}
    assert gb.SIZES.faiss_vectors == 1_000_000 and {m[0] for m in gb.SIZES.models} == {"r2plus1d_18", "resnet50"}


def test_every_part_runs_on_the_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))  # RAFT: random weights in the scratch home
    readings = iter([40.0, 60.0] * 1000)
    m = gb.gpu_check(tmp_path, "cpu", gb.TINY, read_utilization=lambda: next(readings))
    out = capsys.readouterr().out
    for backbone, _, _ in gb.TINY.models:
        for dtype in ("float16", "bfloat16"):
            key = f"{backbone}_{dtype}"
            decode, model, rate = (m[f"{key}_{s}_clips_per_s"] for s in ("decode", "model", "pipeline"))
            assert min(decode, model, rate) > 0
            assert m[f"{key}_pipeline_vs_bound"] == pytest.approx(rate / min(decode, model))
            assert 40.0 <= m[f"{key}_gpu_utilization_pct"] <= 60.0
    assert "autocast (off: CPU)" in out and "x min(decode, model)" in out and "GPU utilisation mean" in out
    assert m["raft_small_pairs_per_s"] > 0 and m["raft_large_pairs_per_s"] > 0 and "random weights" in out
    assert m["faiss_recall_at_10"] == 1.0 and m["faiss_on_gpu"] == 0.0  # exact (flat) at this size
    assert "this faiss has no GPU" in out
    assert m["xgboost_on_cuda"] == 0.0 and m["xgboost_rounds_per_s"] > 0
    assert m["sweep_runs_per_s"] > 0 and 0 <= m["sweep_best_val_map"] <= 1
    parts = ("extraction", "raft", "faiss", "xgboost", "sweep")
    assert m["gpu_check_s"] >= sum(m[f"{p}_check_s"] for p in parts) and "the check took" in out


def test_xgboost_without_cuda_says_so_and_trains_on_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(gb, "cuda_visible", lambda: False)
    m = gb.check_xgboost("cuda", gb.TINY)
    assert m["xgboost_on_cuda"] == 0.0 and "has no CUDA" in capsys.readouterr().out


def test_faiss_recall_is_measured_against_brute_force(monkeypatch):
    sizes = gb.GpuCheckSizes(faiss_vectors=30_000, faiss_dim=16, faiss_clusters=50, faiss_queries=200)
    m = gb.check_faiss(sizes, use_gpu=False)  # 30k > flat_max_vectors: an approximate (IVF) index
    assert 0.5 < m["faiss_recall_at_10"] < 1.0 + 1e-9 and m["faiss_queries_per_s"] > 0


def test_utilization_readers(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "utilization", lambda i=0: 73)
    assert gb.gpu_utilization() == 73.0

    def no_nvml(i=0):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    monkeypatch.setattr(gb.shutil, "which", lambda name: None)
    assert gb.gpu_utilization() is None
    monkeypatch.setattr(gb.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gb.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="55\n"))
    assert gb.gpu_utilization() == 55.0

    def broken(*a, **k):
        raise subprocess.CalledProcessError(9, "nvidia-smi")

    monkeypatch.setattr(gb.subprocess, "run", broken)
    assert gb.gpu_utilization() is None
    with gb.UtilizationSampler(lambda: None, period_s=0.01) as util:
        pass
    assert util.mean is None and "unknown" in util.describe()
    values = iter([10.0, 30.0] + [20.0] * 1000)
    with gb.UtilizationSampler(lambda: next(values), period_s=0.001) as util:
        while len(util.samples) < 2:
            time.sleep(0.001)
    assert util.samples[:2] == [10.0, 30.0] and util.mean == pytest.approx(np.mean(util.samples))


def test_amp_dtype_reaches_autocast(monkeypatch):
    from extract.dump import pipeline, producers
    from extract.dump.settings import ExtractSettings
    from store.errors import SettingsError

    with pytest.raises(SettingsError, match="--amp-dtype must be one of"):
        ExtractSettings(amp_dtype="float8")
    settings = ExtractSettings(backbone="resnet_tiny", weights="random", crop=32, amp_dtype="bfloat16")
    producer = pipeline.build_producers(settings, "cpu")[0]
    assert producer.spec.extra["precision"] == "fp32" and "amp_dtype" not in producer.spec.extra  # no autocast on CPU
    seen = []
    real = torch.autocast

    def spy(device_type, dtype=None, enabled=True):
        seen.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(producers.torch, "autocast", spy)
    producer.amp = True  # what CUDA turns on; CPU autocast takes bfloat16 too
    out = producer.embed(np.zeros((2, 1, 32, 32, 3), dtype=np.uint8))
    assert seen == [("cpu", torch.bfloat16, True)] and out.shape == (2, 64) and out.dtype == np.float32
