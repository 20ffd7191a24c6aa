"""Feature extraction: our decode-once, batched, overlapped pipeline vs a per-video baseline.

First, head to head as a user would compare them: our ``extract()`` and the plain per-video
script (:mod:`benchmarks.plain_extract`, torch's default threads), each in its own process,
for ResNet-18 TSN (``--size`` videos) and R(2+1)D-18 (4 videos), 8 clips of 112 px, default
settings (resource plan fitted on the first videos, ``--max-memory`` 2 GB); once as the
machine is ("idle") and once with one core kept busy by a spinning process ("busy"):

* ``<model>_<idle|busy>_ours_clips_per_s``, ``..._plain_clips_per_s``, ``..._ours_vs_plain``;
* ``<model>_<idle|busy>_ours_peak_rss_gb``, ``..._plain_peak_rss_gb``: peak resident memory,
  sampled every 50 ms: the process's RSS plus its child processes' private memory (USS);
* ``<model>_<idle|busy>_plan_workers`` / ``_plan_threads`` / ``_plan_batch``: the plan ours chose.

Then, on demo videos (112 px, 3 s at 25 fps) with the TSN ResNet-18 frame backbone at 112 px,
8 segments (light enough that decoding is a real share of the cost), in one run:

* ``decode_clips_per_s``: the decode stage alone (``DecodePool``, the default worker count:
  decode, frame selection, crops), in model inputs (clips x views) per second;
* ``model_clips_per_s``: the model stage alone on those inputs (default threads, batch 64);
* ``pipeline_clips_per_s``: ``extract.dump.pipeline.run_extraction`` end to end, store writes included;
* ``naive_clips_per_s``: the style of today's extraction scripts: one video at a time,
  decode the whole video to RGB frames (PyAV defaults), pick the sampled frames, resize,
  crop and normalise them, one model batch per video, ``np.save`` per video; torch gets
  the better of one thread and every core;
* ``decodes_per_video``: ``decode_video`` calls per video counted by the pipeline (also with
  three crops per clip).

Then a sweep of decode workers x model threads (the evidence behind
``extract.dump.settings.default_parallelism``) and the same four figures for R(2+1)D-18
(16 x 112 x 112 clips) on a few videos. Then the other modalities:

* ``flow_<method>_pairs_per_s`` (farneback, tvl1, tvl1_fast, raft_small):
  ``benchmarks.flow_bench.flow_rates``, ``compute_flow`` on the same demo frames at 112 px,
  one OpenCV / torch thread (what one decode worker gives);
* ``audio_logmel_windows_per_s`` (``AudioWindows.make`` on decoded tracks: 2 s windows,
  log-mel), ``audio_model_windows_per_s`` (ResNet-18 on log-mel) and
  ``audio_windows_per_s`` (the two one after the other);
* ``single_pass_speedup``: three feature sets (RGB ResNet-18, Farneback flow ResNet-18,
  log-mel ResNet-18 at 112 px, 8 clips) from one ``extract()`` run against three runs of
  one set each (what a per-modality tool does), both on ``SINGLE_PASS_VIDEOS`` videos of a
  store that exists already; ``single_pass_speedup_tiny`` the same with the tiny backbones
  (models that cost little, as on a GPU: the workers' decode, flow and log-mel set the
  pace), and ``single_pass_speedup_448`` the tiny backbones on ``LARGE_VIDEOS`` demo
  videos of 448 px (decoding a frame costs ~9x more; real datasets are 340-1280 px wide).

Last, the torchvision video families (:mod:`benchmarks.backbone_families_bench`): S3D, MViT v2-S
and Swin3D-T, model-stage clips/s and peak RSS on the CPU, each in its own process.

Throughputs are the best of ``REPEATS`` tries (the figures of a shared machine move a lot
between tries).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from benchmarks.backbone_families_bench import video_family_rates
from benchmarks.flow_bench import flow_rates
from benchmarks.plain_extract import plain_extract
from benchmarks.registry import register_benchmark
from extract.backbones import RANDOM, get_backbone
from extract.demo import DemoConfig, make_demo
from extract.dump import pipeline
from extract.dump.makers import AudioWindows
from extract.dump.producers import AudioProducer
from extract.dump.settings import BackboneChoice, ExtractSettings, default_parallelism
from extract.dump.worker import DecodePool, DecodeTask
from extract.media.audio import AudioSettings
from extract.media.decode import decode_video
from extract.media.sampling import ClipSampling
from store.threads import available_cores

VIDEOS = 60
SWEEP_VIDEOS = 30
REPEATS = 2
R2PLUS1D_VIDEOS = 3
AUDIO_VIDEOS = 20
SINGLE_PASS_VIDEOS = 30
LARGE_VIDEOS, LARGE_SIZE = 20, 448
TRIO = (
    BackboneChoice("resnet18", weights=RANDOM),
    BackboneChoice("resnet18", "flow", weights=RANDOM),
    BackboneChoice("resnet18_audio", "audio", weights=RANDOM),
)
TINY_TRIO = (
    BackboneChoice("resnet_tiny", weights=RANDOM),
    BackboneChoice("resnet_tiny", "flow", weights=RANDOM),
    BackboneChoice("resnet_audio_tiny", "audio", weights=RANDOM),
)


def _decode_stage(targets, meta, maker, workers: int) -> tuple[float, list]:
    """Clips/s of the decode stage alone, and the model inputs it made."""
    tasks = [
        DecodeTask(
            int(r),
            str(targets.at[r, "path"]),
            int(meta.at[r, "n_frames"]),
            float(meta.at[r, "fps"]),
            (0,),
        )
        for r in targets.index
    ]
    with DecodePool([maker], workers) as pool:
        list(pool.imap_unordered(tasks[:1]))  # start the fork server outside the timing
        t = time.perf_counter()
        results = list(pool.imap_unordered(tasks))
        dt = time.perf_counter() - t
    inputs = [r.inputs[0].inputs for r in results if not r.error]
    return sum(len(x) for x in inputs) / dt, inputs


def _model_stage(producer, inputs: list, batch: int, threads: int) -> float:
    """Clips/s of ``producer.embed`` on batches of ``batch`` clips."""
    clips = np.concatenate(inputs)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        producer.embed(clips[:batch])  # warm-up (allocations, oneDNN kernels)
        t = time.perf_counter()
        for s in range(0, len(clips), batch):
            producer.embed(clips[s : s + batch])
        return len(clips) / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)


def _pipeline(fs, targets, producers, settings: ExtractSettings) -> pipeline.RunStats:
    name = settings.set_name
    if name in fs.feature_sets():
        fs.delete_feature_set(name)
    return pipeline.run_extraction(fs, targets, producers, settings)


def _naive(paths: list[str], model, settings: ExtractSettings, out: Path, threads: int) -> float:
    """Clips/s of the plain per-video script (:mod:`benchmarks.plain_extract`) in this process."""
    clips, seconds = plain_extract(paths, model, settings, out, threads)
    return clips / seconds


def _measure(
    fs, targets, settings: ExtractSettings, device: str, work: Path, repeats: int = REPEATS
) -> dict[str, float]:
    """The four throughputs (best of ``repeats``) and the decode count for one backbone.

    The baseline gets its best thread count (1 or every core: on a busy machine torch's
    OpenMP threads can stall each other); the pipeline fits its own plan (reported), the
    stages alone run with the fixed rule ``default_parallelism``."""
    workers, threads = settings.parallelism(device)
    producers = pipeline.build_producers(settings, device)
    meta = fs.videos(["n_frames", "fps"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        plain = get_backbone(settings.backbone, weights=RANDOM).eval().to(device)  # NCHW, no tricks
    paths = [str(p) for p in targets["path"]]
    best: dict[str, float] = {}
    stats = None
    for _ in range(repeats):
        decode, inputs = _decode_stage(targets, meta, producers[0].maker, workers)
        model = _model_stage(producers[0], inputs, settings.batch_size, threads)
        stats = _pipeline(fs, targets, producers, settings)
        naive = max(
            _naive(paths, plain, settings, work / "naive", t)
            for t in sorted({1, available_cores()})
        )
        for k, v in (
            ("decode", decode),
            ("model", model),
            ("pipeline", stats.clips / stats.seconds),
            ("naive", naive),
        ):
            best[k] = max(best.get(k, 0.0), v)
    return {f"{k}_clips_per_s": v for k, v in best.items()} | {
        "decodes_per_video": stats.decodes_per_video,
        "workers": stats.workers,
        "threads": stats.threads,
        "batch": stats.batch_size,
    }


def _report(name: str, m: dict[str, float], device: str) -> None:
    d, mo, p, n = (m[f"{k}_clips_per_s"] for k in ("decode", "model", "pipeline", "naive"))
    serial = 1 / (1 / d + 1 / mo)
    print(f"   {name}: the pipeline's plan: {int(m['workers'])} decode process(es), {int(m['threads'])} model "
          f"thread(s), batch {int(m['batch'])} (the stages alone: the fixed rule default_parallelism)")
    print(f"     decode only   {d:8.1f} clips/s")
    print(f"     model only    {mo:8.1f} clips/s")
    print(f"     pipeline      {p:8.1f} clips/s   {p / n:.2f}x naive (target >= 2)")
    print(f"     naive         {n:8.1f} clips/s")
    if device == "cuda":
        print(f"     pipeline / min(decode, model) = {p / min(d, mo):.2f} (target >= 0.8)")
    else:
        print(
            f"     pipeline / serial bound 1/(1/decode + 1/model) = {p / serial:.2f} (target >= 0.9); "
            f"/ min(decode, model) = {p / min(d, mo):.2f}"
        )
    print(f"     decodes per video {m['decodes_per_video']:.2f} (target 1)")


def _audio_rates(targets, meta, device: str, threads: int) -> dict[str, float]:
    """Windows/s of the audio maker (2 s windows -> log-mel) and of ResNet-18 on them."""
    maker = AudioWindows(ClipSampling("tsn", 8, 1), AudioSettings(), "log_mel")
    decoded = [decode_video(str(p), [], audio_rate=16000) for p in targets["path"]]
    counts = [(int(meta.at[r, "n_frames"]), float(meta.at[r, "fps"])) for r in targets.index]
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a decode worker
    try:
        best, made = 0.0, []
        for _ in range(REPEATS):
            t = time.perf_counter()
            made = [maker.make(d, n, fps).inputs for d, (n, fps) in zip(decoded, counts)]
            best = max(best, sum(len(m) for m in made) / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(old)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        producer = AudioProducer(get_backbone("resnet18_audio", weights=RANDOM), maker, device=device)
    model = _model_stage(producer, made, 64, threads)
    return {
        "audio_logmel_windows_per_s": best,
        "audio_model_windows_per_s": model,
        "audio_windows_per_s": 1 / (1 / best + 1 / model),
    }


def _first_videos(demo, n: int) -> Path:
    """A CSV of the demo's first ``n`` videos (beside the demo's own list)."""
    lines = demo.videos_csv.read_text().splitlines()
    csv = demo.root / f"bench_{n}.csv"
    csv.write_text("\n".join(lines[: n + 1]) + "\n")
    return csv


def _single_pass(demo, work: Path, n: int, trio, device: str) -> tuple[float, float, float]:
    """Seconds of three one-set ``extract()`` runs, of one three-set run, and the decodes
    per video of the latter, on the first ``n`` demo videos (stores made beforehand)."""
    csv = _first_videos(demo, n)
    base = ExtractSettings(crop=112, clips=8, chunk_rows=64)
    workers = base.parallelism(device)[0]
    stores = {}
    for name in ("separate", "single"):
        stores[name] = work / f"single_pass_{name}.zarr"
        shutil.rmtree(stores[name], ignore_errors=True)
        pipeline.prepare_store(stores[name], pipeline.open_video_list(csv), workers=workers)
    t = time.perf_counter()
    for c in trio:
        pipeline.extract(
            csv,
            stores["separate"],
            dataclasses.replace(base, backbone=c.backbone, modality=c.modality, weights=c.weights),
        )
    separate = time.perf_counter() - t
    t = time.perf_counter()
    stats = pipeline.extract(csv, stores["single"], dataclasses.replace(base, backbones=trio))
    return separate, time.perf_counter() - t, stats.decodes_per_video


def _modalities(demo, fs, targets, device: str, work: Path, workdir: Path) -> dict[str, float]:
    paths = [str(p) for p in targets["path"]]
    metrics = flow_rates(paths[0], work / "torch_home")
    print(
        "   optical flow at 112 px, 1 OpenCV / torch thread, pairs/s: "
        + ", ".join(f"{k.removeprefix('flow_').removesuffix('_pairs_per_s')} {v:.2f}" for k, v in metrics.items())
    )
    meta = fs.videos(["n_frames", "fps"])
    threads = default_parallelism(device)[1]
    metrics |= _audio_rates(targets.iloc[:AUDIO_VIDEOS], meta, device, threads)
    print(
        f"   audio, 2 s windows: log-mel {metrics['audio_logmel_windows_per_s']:.1f} windows/s "
        f"(1 thread), ResNet-18 {metrics['audio_model_windows_per_s']:.1f} windows/s "
        f"({threads} threads), both {metrics['audio_windows_per_s']:.1f} windows/s"
    )
    large = make_demo(
        workdir / f"extract_demo_{LARGE_VIDEOS}_{LARGE_SIZE}px",
        DemoConfig(videos=LARGE_VIDEOS, size=LARGE_SIZE),
        progress=False,
    )
    n = min(SINGLE_PASS_VIDEOS, len(paths))
    for label, source, trio, key in (
        (f"ResNet-18s, {n} videos", demo, TRIO, ""),
        (f"tiny backbones, {n} videos", demo, TINY_TRIO, "_tiny"),
        (f"tiny backbones, {LARGE_VIDEOS} videos of {LARGE_SIZE} px", large, TINY_TRIO, "_448"),
    ):
        count = n if source is demo else LARGE_VIDEOS
        tries = [_single_pass(source, work, count, trio, device) for _ in range(REPEATS)]
        sep, one, dpv = min(t[0] for t in tries), min(t[1] for t in tries), tries[-1][2]
        metrics |= {
            f"single_pass_speedup{key}": sep / one,
            f"separate_passes_s{key}": sep,
            f"single_pass_s{key}": one,
            f"single_pass_decodes_per_video{key}": dpv,
        }
        print(
            f"   rgb + flow + audio, {label}: 3 separate runs {sep:.1f} s, one run "
            f"{one:.1f} s ({dpv:.2f} decodes per video): single_pass_speedup {sep / one:.2f} "
            "(target >= 1.5)"
        )
    return metrics


# ---------------------------------------------------------------------------- ours vs the plain script
#: (metric key, backbone, videos) of the head-to-head runs; the TSN run takes ``--size`` videos.
VERSUS = (("resnet18_tsn", "resnet18", None), ("r2plus1d_18", "r2plus1d_18", 4))
_OURS = """
import json, sys
from extract.dump import pipeline
from extract.dump.settings import ExtractSettings
s = ExtractSettings.from_dict(json.loads(sys.argv[3]))
st = pipeline.extract(sys.argv[1], sys.argv[2], s)
print(json.dumps({"clips": st.clips, "seconds": st.seconds, "plan": st.plan["plan"]}))
"""


def _watched(cmd: list[str]) -> tuple[dict, float]:
    """Run a child that prints one JSON line; ``(that line, peak memory in GB)``.

    The memory is sampled every 50 ms: the child's resident set plus the private (USS)
    memory of its own children (decode processes share the parent's pages copy-on-write;
    their RSS would count those pages again)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, stop = [0], threading.Event()

    def watch() -> None:
        proc = psutil.Process(child.pid)
        while not stop.is_set():
            try:
                total = proc.memory_info().rss
                total += sum(c.memory_full_info().uss for c in proc.children(recursive=True))
            except psutil.Error:
                pass
            else:
                peak[0] = max(peak[0], total)
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = child.communicate()
    stop.set()
    watcher.join()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {child.returncode}): {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak[0] / 2**30


def _busy_core() -> subprocess.Popen:
    """A child that keeps one core busy until killed (another job on the machine)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _versus(demo, n: int, work: Path) -> dict[str, float]:
    """Our ``extract()`` against the plain script, each in its own process, idle and with one
    core busy: clips/s, their ratio, peak memory of each, and the plan ours chose."""
    metrics: dict[str, float] = {}
    for key, backbone, videos in VERSUS:
        count = videos or n
        csv = _first_videos(demo, count)
        settings = ExtractSettings(backbone=backbone, weights=RANDOM, crop=112, clips=8, chunk_rows=64)
        for load in ("idle", "busy"):
            busy = _busy_core() if load == "busy" else None
            try:
                store = work / f"versus_{key}.zarr"
                shutil.rmtree(store, ignore_errors=True)
                ours, ours_gb = _watched([sys.executable, "-c", _OURS, str(csv), str(store),
                                          json.dumps(settings.to_dict())])
                plain, plain_gb = _watched([sys.executable, "-m", "benchmarks.plain_extract", str(csv),
                                            str(work / f"versus_{key}_plain"), "--backbone", backbone,
                                            "--crop", "112", "--clips", "8"])
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            rate, plain_rate = ours["clips"] / ours["seconds"], plain["clips"] / plain["seconds"]
            plan = ours["plan"]
            k = f"{key}_{load}"
            metrics |= {
                f"{k}_ours_clips_per_s": rate,
                f"{k}_plain_clips_per_s": plain_rate,
                f"{k}_ours_vs_plain": rate / plain_rate,
                f"{k}_ours_peak_rss_gb": ours_gb,
                f"{k}_plain_peak_rss_gb": plain_gb,
                f"{k}_plan_workers": plan["workers"],
                f"{k}_plan_threads": plan["threads"],
                f"{k}_plan_batch": plan["batch_size"],
            }
            print(f"   {key}, {count} videos x 8 clips, {load} (load average {os.getloadavg()[0]:.1f}): "
                  f"ours {rate:.2f} clips/s, peak {ours_gb:.2f} GB [{plan['workers']} decode process(es), "
                  f"{plan['threads']} thread(s), batch {plan['batch_size']}]; plain script {plain_rate:.2f} "
                  f"clips/s ({plain['threads']} torch threads), peak {plain_gb:.2f} GB; "
                  f"ours / plain {rate / plain_rate:.2f}x\n     ours' plan: {plan['reason']}", flush=True)
    return metrics


@register_benchmark(
    "extract",
    "decode-once pipeline (workers, cross-video batches) vs a per-video decode-all script",
)
def bench_extract(args: argparse.Namespace) -> dict[str, float]:
    n = args.size or VIDEOS
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = args.workdir / "extract"
    work.mkdir(parents=True, exist_ok=True)
    demo = make_demo(
        args.workdir / f"extract_demo_{n}", DemoConfig(videos=n, size=112), progress=False
    )
    store = work / "bench.zarr"
    shutil.rmtree(store, ignore_errors=True)
    fs, targets = pipeline.prepare_store(
        store, demo.video_list(), workers=default_parallelism(device)[0]
    )
    cores = available_cores()
    print(f"   {n} demo videos, 112 px, 75 frames; {cores} cores, device {device}")
    versus = _versus(demo, n, work)

    base = ExtractSettings(backbone="resnet18", weights=RANDOM, crop=112, clips=8, set_name="bench", chunk_rows=64)
    metrics = _measure(fs, targets, base, device, work)
    _report("ResNet-18 TSN, 8 x 1 frame at 112 px", metrics, device)

    three = _pipeline(
        fs,
        targets.iloc[:10],
        pipeline.build_producers(dataclasses.replace(base, crops="three"), device),
        dataclasses.replace(base, crops="three"),
    )
    metrics["decodes_per_video"] = max(metrics["decodes_per_video"], three.decodes_per_video)
    metrics["decodes_per_video_3crops"] = three.decodes_per_video
    print(f"     three crops (K = 24): {three.decodes_per_video:.2f} decodes per video")

    print(f"   decode workers x model threads, pipeline clips/s (first {SWEEP_VIDEOS} videos):")
    sweep = sorted(
        {
            (1, max(1, cores - 1)),
            (1, cores),
            (0, cores),
            (2, max(1, cores - 2)),
            default_parallelism(device),
        }
    )
    for w, t in sweep:
        s = dataclasses.replace(base, workers=w, threads=t)
        st = _pipeline(fs, targets.iloc[:SWEEP_VIDEOS], pipeline.build_producers(s, device), s)
        rate = st.clips / st.seconds
        metrics[f"pipeline_w{w}_t{t}_clips_per_s"] = rate
        mark = "  <- default" if (w, t) == default_parallelism(device) else ""
        print(f"     workers {w}, threads {t}: {rate:7.1f}{mark}")

    r21 = dataclasses.replace(
        base, backbone="r2plus1d_18", clips=2, set_name="bench_r21", batch_size=8
    )
    few = targets.iloc[:R2PLUS1D_VIDEOS]
    m21 = _measure(fs, few, r21, device, work, repeats=1)
    _report(f"R(2+1)D-18, 2 x 16 frames at 112 px, {R2PLUS1D_VIDEOS} videos", m21, device)
    metrics |= {f"r2plus1d_{k}": v for k, v in m21.items()}
    metrics |= _modalities(demo, fs, targets, device, work, args.workdir)
    print("   backbone families: video nets, timm/ and clip/ frame encoders (random weights, model stage, CPU):")
    metrics |= video_family_rates()
    return versus | metrics
