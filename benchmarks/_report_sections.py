"""What each benchmark's REPORT.md table shows: rows of "ours vs the plain alternative" and targets.

Declarative: :class:`Row` names metric keys, how to compare them (ratio, speedup, mAP points)
and the target from the benchmark's docstring; :data:`SECTIONS` maps benchmark names to
:class:`Section`. Rendered by :mod:`benchmarks.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda x, t: x >= t, ">": lambda x, t: x > t, "<=": lambda x, t: x <= t, "<": lambda x, t: x < t,
    "==": lambda x, t: abs(x - t) <= 1e-6 * max(1.0, abs(t)),
}
COMPARES = ("ratio", "speedup", "points", "none")  # ours / plain, plain / ours (times), 100 * (ours - plain)


@dataclass(frozen=True)
class Target:
    """A benchmark's target: ``op value`` on the comparison (or on our figure itself).

    Attributes:
        op: ``>=``, ``>``, ``<=``, ``<`` or ``==``.
        value: The bound, in the comparison's unit (x for ratios, points for mAP), or as
            the metric is stored when ``on="ours"`` (a fraction stays a fraction).
        on: ``comparison`` or ``ours``.
        device: ``cpu`` or ``gpu``: checked only on runs of that kind; None: always.
    """

    op: str
    value: float
    on: str = "comparison"
    device: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS or self.on not in ("comparison", "ours") or self.device not in (None, "cpu", "gpu"):
            raise ValueError(f"bad target {self}: op in {list(OPS)}, on in comparison/ours, device cpu/gpu/None")


@dataclass(frozen=True)
class Row:
    """One line of a benchmark's table: our figure, the plain alternative's, and how they compare.

    Attributes:
        label: What is measured.
        ours: Metric key of our figure.
        baseline: Metric key of the plain alternative's figure (None: a figure alone).
        baseline_label: What the plain alternative is.
        unit: Unit of both figures.
        compare: ``ratio`` (ours / plain), ``speedup`` (plain / ours: times), ``points``
            (100 x (ours - plain): mAP) or ``none`` (the two figures side by side).
        percent: The figures are fractions shown as percent.
        target: The benchmark's target, if it has one.
    """

    label: str
    ours: str
    baseline: str | None = None
    baseline_label: str = ""
    unit: str = ""
    compare: str = "ratio"
    percent: bool = False
    target: Target | None = None

    def __post_init__(self) -> None:
        if self.compare not in COMPARES:
            raise ValueError(f"Row {self.label!r}: compare must be one of {COMPARES}, got {self.compare!r}")
        if self.target and self.target.on == "comparison" and (not self.baseline or self.compare == "none"):
            raise ValueError(f"Row {self.label!r}: a target on the comparison needs a baseline key to compare with")


Derived = tuple[tuple[str, Callable[[Mapping[str, Any]], float]], ...]


@dataclass(frozen=True)
class Section:
    """How one benchmark is reported: its table rows and figures computed from its metrics."""

    title: str
    rows: tuple[Row, ...]
    derived: Derived = ()


def _ge(v: float, device: str | None = None) -> Target:
    return Target(">=", v, device=device)


def _below(v: float, device: str | None = None) -> Target:
    return Target("<", v, on="ours", device=device)


SEARCH_RECALL_TARGET = 0.95
_HEADS = ("mean_mlp", "netvlad", "nextvlad", "nonlocal_netvlad")
_BACKBONE = "ResNet-18 forward pass (no decoding)"
SECTIONS: dict[str, Section] = {
    "store": Section("Store I/O: Zarr store + torch reader vs .npy per video and np.memmap", (
        Row("shuffled epoch", "epoch_rows_per_s", "npy_per_video_rows_per_s", ".npy per video", "rows/s",
            target=_ge(10)),
        Row("shuffled epoch", "epoch_rows_per_s", "memmap_rows_per_s", "np.memmap (near-limit)", "rows/s",
            target=_ge(0.25)),
        Row("full scan", "scan_MBps", unit="MB/s", target=Target(">=", 1500, on="ours")),
        Row("write", "write_MBps", unit="MB/s"),
        Row("compression ratio", "compression_ratio", unit="x"),
    )),
    "extract": Section("Feature extraction: decode-once pipeline vs a per-video decode-all script", (
        Row("ResNet-18 TSN, 112 px", "pipeline_clips_per_s", "naive_clips_per_s", "per-video script", "clips/s",
            target=_ge(2)),
        Row("pipeline vs serial bound 1/(1/decode + 1/model)", "pipeline_clips_per_s", "serial_bound_clips_per_s",
            "serial bound", "clips/s", target=_ge(0.9, "cpu")),
        Row("pipeline vs the slower stage", "pipeline_clips_per_s", "min_stage_clips_per_s", "min(decode, model)",
            "clips/s", target=_ge(0.8, "gpu")),
        *(Row(f"{label}, 8 clips of 112 px, {load} machine: our extract.run vs the plain script",
              f"{key}_{load}_ours_clips_per_s", f"{key}_{load}_plain_clips_per_s", "plain per-video script",
              "clips/s", target=_ge(goal)) for key, label, goal in (("resnet18_tsn", "ResNet-18 TSN", 1.2),
                                                                     ("r2plus1d_18", "R(2+1)D-18", 1.0))
          for load in ("idle", "busy")),
        *(Row(f"R(2+1)D-18, {load} machine: peak RSS, ours vs the plain script",
              f"r2plus1d_18_{load}_ours_peak_rss_gb", f"r2plus1d_18_{load}_plain_peak_rss_gb", "plain per-video script",
              "GB", target=Target("<=", 2, on="ours"))
          for load in ("idle", "busy")),
        Row("decode stage alone", "decode_clips_per_s", unit="clips/s"),
        Row("model stage alone", "model_clips_per_s", unit="clips/s"),
        Row("decodes per video", "decodes_per_video", target=Target("==", 1, on="ours")),
        Row("decodes per video, 3 crops", "decodes_per_video_3crops", target=Target("==", 1, on="ours")),
        Row("R(2+1)D-18, 2 x 16 frames", "r2plus1d_pipeline_clips_per_s", "r2plus1d_naive_clips_per_s",
            "per-video script", "clips/s", target=_ge(2)),
        Row("RGB + flow + audio in one pass, ResNet-18s", "single_pass_s", "separate_passes_s", "3 separate runs",
            "s", "speedup", target=_ge(1.5)),
        Row("the same, tiny backbones", "single_pass_s_tiny", "separate_passes_s_tiny", "3 separate runs", "s",
            "speedup", target=_ge(1.5)),
        Row("the same, tiny backbones, 448 px", "single_pass_s_448", "separate_passes_s_448", "3 separate runs",
            "s", "speedup", target=_ge(1.5)),
        Row("optical flow, Farneback, 1 thread", "flow_farneback_pairs_per_s", "flow_tvl1_pairs_per_s", "TV-L1",
            "pairs/s"),
        Row("optical flow, TV-L1 fast preset", "flow_tvl1_fast_pairs_per_s", "flow_tvl1_pairs_per_s",
            "TV-L1 (OpenCV's parameters)", "pairs/s"),
        Row("optical flow, RAFT-small on the CPU", "flow_raft_small_pairs_per_s", "flow_tvl1_pairs_per_s", "TV-L1",
            "pairs/s"),
        Row("audio: log-mel + ResNet-18", "audio_windows_per_s", unit="windows/s"),
        Row("S3D, 32x224x224, model stage, CPU", "s3d_clips_per_s", unit="clips/s"),
        Row("S3D, peak RSS", "s3d_peak_rss_gb", unit="GB"),
        Row("MViT v2-S, 16x224x224, model stage, CPU", "mvit_v2_s_clips_per_s", unit="clips/s"),
        Row("MViT v2-S, peak RSS", "mvit_v2_s_peak_rss_gb", unit="GB"),
        Row("Swin3D-T, 32x224x224, model stage, CPU", "swin3d_t_clips_per_s", unit="clips/s"),
        Row("Swin3D-T, peak RSS", "swin3d_t_peak_rss_gb", unit="GB"),
        Row("timm/convnext_tiny, 1 x 224 px, model stage, CPU", "timm_convnext_tiny_clips_per_s", unit="clips/s"),
        Row("timm/convnext_tiny, peak RSS", "timm_convnext_tiny_peak_rss_gb", unit="GB"),
        Row("clip/ViT-B-32, 1 x 224 px, model stage, CPU", "clip_vit_b32_clips_per_s", unit="clips/s"),
        Row("clip/ViT-B-32, peak RSS", "clip_vit_b32_peak_rss_gb", unit="GB"),
    ), derived=(
        ("serial_bound_clips_per_s", lambda m: 1 / (1 / m["decode_clips_per_s"] + 1 / m["model_clips_per_s"])),
        ("min_stage_clips_per_s", lambda m: min(m["decode_clips_per_s"], m["model_clips_per_s"])),
    )),
    "flow": Section("Optical flow: what each method costs and what a linear probe of motion labels sees in it", (
        *(Row(f"{label}: motion-probe ROC AUC", f"flow_probe_{key}_auc", "flow_probe_tvl1_auc", "TV-L1", "AUC",
              "none") for key, label in (("farneback", "Farneback"), ("tvl1_fast", "TV-L1 fast"),
                                         ("raft_small", "RAFT-small"))),
        *(Row(f"{label}, 1 thread", f"flow_{key}_pairs_per_s", "flow_tvl1_pairs_per_s", "TV-L1", "pairs/s")
          for key, label in (("farneback", "Farneback"), ("tvl1_fast", "TV-L1 fast"), ("raft_small", "RAFT-small"))),
    )),
    "decode": Section("Decoders: torchcodec vs PyAV (the default) on extract.run's frame requests, one thread", (
        *(Row(f"{label}, short side 128", f"decode_torchcodec_{key}_frames_per_s", f"decode_pyav_{key}_frames_per_s",
              "PyAV", "frames/s") for key, label in (("tsn8", "TSN 8 frames, 3 s videos"),
                                                     ("uniform8x16", "8 clips x 16 frames, 3 s videos"),
                                                     ("long_tsn8", "TSN 8 frames, 30 s videos"))),
        Row("audio track, mono 16 kHz", "decode_torchcodec_audio_tracks_per_s", "decode_pyav_audio_tracks_per_s",
            "PyAV", "tracks/s"),
        Row("resized frames, mean |torchcodec - PyAV|", "decode_resized_mean_abs_diff", unit="grey levels"),
        Row("coded-size frames, max |torchcodec - PyAV|", "decode_native_max_abs_diff", unit="grey levels"),
    )),
    "heads": Section("Heads: training on cached features vs a backbone pass over the same videos", (
        *(Row(f"{h} epoch, features in RAM", f"{h}_rows_per_s", "backbone_videos_per_s", _BACKBONE, "videos/s",
              target=_ge(1000)) for h in _HEADS),
        *(Row(f"{h} epoch, streamed from the store", f"{h}_stream_rows_per_s", f"{h}_rows_per_s", "in RAM",
              "videos/s") for h in ("netvlad", "nextvlad")),
        *(Row(f"{h} data wait ({src})", f"{h}_{key}data_wait_fraction", percent=True, unit="% of epoch",
              target=_below(0.1))
          for h in ("netvlad", "nextvlad") for src, key in (("RAM", ""), ("stream", "stream_"))),
    ), derived=(("backbone_videos_per_s", lambda m: m["netvlad_rows_per_s"] / m["netvlad_cached_speedup"]),)),
    "sweep": Section("Head sweep: Dask LocalCluster vs the same configurations one after another", (
        Row("head configurations, 2 workers", "sweep_s", "serial_s", "one after another", "s", "speedup",
            target=_ge(1.7)),
        Row("the same, cluster start counted", "sweep_with_start_s", "serial_s", "one after another", "s",
            "speedup"),
        Row("CPU time of the trainings", "sweep_cpu_s", "serial_cpu_s", "one after another", "s"),
        Row("workers busy", "worker_busy", percent=True, unit="% of sweep time"),
        Row("max |serial - sweep| val mAP", "max_val_map_diff"),
    ), derived=(
        ("sweep_with_start_s", lambda m: m["sweep_s"] + m["cluster_start_s"]),
        ("serial_configs_per_min", lambda m: 60 * m["configs"] / m["serial_s"]),
        ("sweep_configs_per_min", lambda m: 60 * m["configs"] / m["sweep_s"]),
    )),
    "search": Section("Search: auto faiss index vs exact Flat vs numpy brute force", (
        Row("queries/s", "auto_qps", "exact_qps", "exact faiss Flat", "q/s", target=_ge(10)),
        Row("queries/s", "auto_qps", "numpy_qps", "numpy matmul + argpartition", "q/s"),
        Row("recall@10, held-out queries", "auto_recall10", "numpy_recall10", "numpy", compare="none",
            target=Target(">=", SEARCH_RECALL_TARGET, on="ours")),
        Row("index size", "auto_bytes_per_vector", "numpy_bytes_per_vector", "raw float32", "bytes/vector"),
        Row("build (auto: train + tune)", "auto_build_s", "exact_build_s", "exact Flat", "s"),
        Row("vectors indexed", "n_vectors"),
    )),
    "scale": Section("Scale: every stage-two command on one machine, each in its own process (targets at 1M rows)", (
        Row("steps failed", "failed_steps", target=Target("==", 0, on="ours")),
        Row("store build", "build_s", unit="s"),
        Row("store build, peak RSS", "build_peak_rss_gb", unit="GB"),
        Row("store.verify, peak RSS", "verify_peak_rss_gb", unit="GB", target=Target("<=", 1, on="ours")),
        *(Row(f"heads.train {h}, 1 epoch, peak RSS", f"train_{h}_peak_rss_gb", unit="GB",
              target=Target("<=", 4, on="ours")) for h in ("mean_mlp", "nextvlad")),
        Row("index build", "index_build_s", unit="s", target=Target("<=", 60, on="ours")),
        Row("search recall@10, 1,000 stored rows", "search_recall_at_10",
            target=Target(">=", SEARCH_RECALL_TARGET, on="ours")),
        Row("search queries/s", "search_qps", "exact_qps", "exact faiss Flat", "q/s", target=_ge(50)),
        Row("heads.knn, 3 folds", "knn_s", unit="s", target=Target("<=", 180, on="ours")),
        Row("heads.knn, peak RSS", "knn_peak_rss_gb", unit="GB", target=Target("<=", 3, on="ours")),
        Row("fusion.run xgboost", "fusion_xgboost_s", unit="s", target=Target("<=", 600, on="ours")),
        *(Row(f"fusion.run {f}, peak RSS", f"fusion_{f}_peak_rss_gb", unit="GB", target=Target("<=", 8, on="ours"))
          for f in ("xgboost", "logistic")),
        Row("videos", "rows"),
    )),
    "fusion": Section("Late fusion: XGBoost stacking vs the inputs and simpler fusions", (
        Row("XGBoost stacker", "xgb_map", "best_single_map", "best single input", "class mAP %", "points", True,
            _ge(5)),
        Row("XGBoost stacker", "xgb_map", "weighted_map", "weighted mean", "class mAP %", "points", True, _ge(0)),
        Row("XGBoost stacker", "xgb_map", "logistic_map", "logistic stacker", "class mAP %", "points", True, _ge(0)),
        Row("XGBoost stacker", "xgb_map", "mean_map", "plain mean", "class mAP %", "points", True),
        Row("fit on every 5th class", "xgb_subset_fit_s", "plain_subset_fit_s", "XGBClassifier per class", "s",
            "speedup"),
        Row("mAP on those classes", "xgb_subset_map", "plain_subset_map", "XGBClassifier per class",
            "class mAP %", "points", True),
        Row("classes in threads", "xgb_subset_fit_s", "xgb_subset_one_class_at_a_time_fit_s",
            "one class at a time, all threads", "s", "speedup"),
    )),
    "train": Section("Backbone training: linear probe on trained vs random-init features", (
        *(Row(f"val class mAP{f', {fam} classes' if fam else ''}", f"trained{'_' + fam if fam else ''}_map",
              f"random{'_' + fam if fam else ''}_map", "random init", "%", percent=True)
          for fam in ("", "appearance", "motion", "sound")),
        Row("data wait after the first epoch", "data_wait_fraction_after_first_epoch",
            "uncached_data_wait_fraction_after_first_epoch", "decoding every epoch", "% of step time", "none", True,
            _below(0.1)),
        Row("data wait, first epoch", "data_wait_fraction_epoch1", "uncached_data_wait_fraction_epoch1",
            "decoding every epoch", "% of step time", "none", True),
        Row("epoch after the first", "train_epoch_seconds_after_first_epoch",
            "uncached_train_epoch_seconds_after_first_epoch", "decoding every epoch", "s", "speedup"),
        Row("training", "train_seconds", unit="s"),
    )),
    "pipeline": Section("Demo pipeline: per-modality heads, kNN and fusion (test class mAP)", (
        *(Row(f"fusion: {f}", f"fusion_{f}_test_map", "best_single_test_map", "best single input", "%", "points",
              True, _ge(5) if f == "xgboost" else None) for f in ("xgboost", "logistic", "weighted", "mean")),
        *(Row("fusion: xgboost", "fusion_xgboost_test_map", f"fusion_{f}_test_map", f, "%", "points", True, _ge(0))
          for f in ("weighted", "logistic")),
        Row("demo videos", "videos"),
        Row("all stages, when computed", "total_computed_s", unit="s"),
    )),
}
