"""Feature extraction: our decode-once, batched, overlapped pipeline vs a per-video baseline.

On demo videos (112 px, 3 s at 25 fps) with the TSN ResNet-18 frame backbone at 112 px,
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

* ``flow_farneback_pairs_per_s`` / ``flow_tvl1_pairs_per_s``: ``compute_flow`` on demo
  frames at 112 px, one OpenCV thread (what one decode worker gives);
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
import shutil
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.backbone_families_bench import video_family_rates
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
from extract.media.flow import FlowSettings, compute_flow
from extract.media.sampling import ClipSampling, clip_frame_indices
from store.threads import available_cores

VIDEOS = 60
SWEEP_VIDEOS = 30
REPEATS = 2
R2PLUS1D_VIDEOS = 3
FLOW_PAIRS = {"farneback": 40, "tvl1": 4}  # pairs timed per try (TV-L1 runs ~3 pairs/s on a CPU)
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
    """Clips/s of the one-video-at-a-time, decode-everything baseline."""
    info = model.info
    device = next(model.parameters()).device
    sampling, view = settings.clip_sampling(info), settings.view_spec(info)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    clips = 0
    t = time.perf_counter()
    try:
        for i, path in enumerate(paths):
            with av.open(path) as container:
                frames = np.stack(
                    [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
                )  # (N, H, W, 3)
            idx, _ = clip_frame_indices(len(frames), sampling)  # (n, T)
            x = (
                torch.from_numpy(frames[idx.reshape(-1)]).permute(0, 3, 1, 2).float() / 255
            )  # (n*T, 3, H, W)
            h, w = x.shape[-2:]
            scale = view.short_side / min(h, w)
            x = F.interpolate(
                x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True
            )
            top, left = (x.shape[-2] - view.crop) // 2, (x.shape[-1] - view.crop) // 2
            x = (x[..., top : top + view.crop, left : left + view.crop] - mean) / std
            x = x.view(*idx.shape, 3, view.crop, view.crop).transpose(
                1, 2
            )  # (n, T, 3, c, c) -> (n, 3, T, c, c)
            with torch.inference_mode():
                feats = model.forward_features(x.to(device))  # (n, 3, T, c, c) -> (n, D)
            np.save(out / f"{i:05d}.npy", feats.cpu().numpy().astype(np.float16))
            clips += len(idx)
    finally:
        torch.set_num_threads(old)
    return clips / (time.perf_counter() - t)


def _measure(
    fs, targets, settings: ExtractSettings, device: str, work: Path, repeats: int = REPEATS
) -> dict[str, float]:
    """The four throughputs (best of ``repeats``) and the decode count for one backbone.

    The baseline gets its best thread count (1 or every core: on a busy machine torch's
    OpenMP threads can stall each other), like the pipeline gets its default."""
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
        "workers": workers,
        "threads": threads,
    }


def _report(name: str, m: dict[str, float], device: str) -> None:
    d, mo, p, n = (m[f"{k}_clips_per_s"] for k in ("decode", "model", "pipeline", "naive"))
    serial = 1 / (1 / d + 1 / mo)
    print(f"   {name}: {int(m['workers'])} decode worker(s), {int(m['threads'])} model thread(s)")
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


def _flow_rates(path: str) -> dict[str, float]:
    """Frame pairs/s of ``compute_flow`` (one OpenCV thread) on 112 px demo frames."""
    frames = decode_video(path, np.arange(max(FLOW_PAIRS.values()) + 1)).frames  # (P+1, H, W, 3)
    out = {}
    for algorithm, pairs in FLOW_PAIRS.items():
        settings = FlowSettings(algorithm=algorithm)
        compute_flow(frames[:2], settings, device="cpu")  # warm-up
        best = 0.0
        for _ in range(REPEATS):
            t = time.perf_counter()
            compute_flow(frames[: pairs + 1], settings, device="cpu")
            best = max(best, pairs / (time.perf_counter() - t))
        out[f"flow_{algorithm}_pairs_per_s"] = best
    return out


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


def _single_pass(demo, work: Path, n: int, trio, device: str) -> tuple[float, float, float]:
    """Seconds of three one-set ``extract()`` runs, of one three-set run, and the decodes
    per video of the latter, on the first ``n`` demo videos (stores made beforehand)."""
    lines = demo.videos_csv.read_text().splitlines()
    csv = demo.root / f"bench_{n}.csv"
    csv.write_text("\n".join(lines[: n + 1]) + "\n")
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
    metrics = _flow_rates(paths[0])
    print(
        f"   optical flow at 112 px, 1 OpenCV thread: Farneback "
        f"{metrics['flow_farneback_pairs_per_s']:.1f} pairs/s, TV-L1 "
        f"{metrics['flow_tvl1_pairs_per_s']:.2f} pairs/s"
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
    print("   torchvision video families (random weights, model stage only, CPU):")
    metrics |= video_family_rates()
    return metrics
