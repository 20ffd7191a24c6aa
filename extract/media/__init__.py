"""Media: from a video file to arrays a model can take (numpy and torch, no backbones, no store;
RAFT's flow network is the one model here).

Public API::

    probe_video, decode_video, VideoInfo, DecodedVideo   extract.media.decode (PyAV: frames + audio, one open)
    DecodeError and subclasses, DecodeTimeout, DECODERS  extract.media.decode (one bad file, one row error)
    require_torchcodec                                   extract.media.torchcodec_decode (decode_video(...,
                                                           decoder="torchcodec"), where torchcodec is installed)
    ClipSampling, ViewSpec, sample_clips, SampledClips,  extract.media.sampling (which frames, which crops;
      clip_frame_indices, clip_times, time_windows,        fixed counts or a clip every N seconds)
      union_frame_indices, short_side_size, EVERY
    make_views, normalize, to_tensor_clip,               extract.media.transforms (crops, resize, tensors)
      short_side_resize, IMAGENET_MEAN, IMAGENET_STD
    FlowSettings, compute_flow, clip_flow_stack,         extract.media.flow (Farneback / TV-L1 / RAFT optical flow)
      flow_frame_indices, flow_views, flow_backend,
      paper_flow, TVL1_PRESETS, FLOW_CHOICES
    raft_pair_flows, load_raft, raft_weights_file        extract.media.raft (torchvision RAFT, batched pairs)
    AudioSettings, audio_windows, log_mel,               extract.media.audio (windows, log-mel, VGGish patches)
      vggish_patches
    write_video, AAC_SAMPLE_RATES                        extract.media.video_writer (mp4: H.264 + AAC)

Exports are lazy (PEP 562): ``from extract.media.sampling import ClipSampling`` does not
import torch or OpenCV.
"""

import importlib
from typing import Any

_MODULES = {
    "extract.media.decode": ("DECODERS", "CorruptVideo", "DecodeError", "DecodeTimeout", "DecodedVideo", "EmptyVideo",
                             "NoVideoStream", "VideoInfo", "VideoNotFound", "decode_video", "probe_video"),
    "extract.media.sampling": ("CROP_MODES", "EVERY", "SAMPLING_MODES", "ClipSampling", "SampledClips", "ViewSpec",
                               "clip_frame_indices", "clip_times", "sample_clips", "short_side_size", "time_windows",
                               "union_frame_indices"),
    "extract.media.transforms": ("IMAGENET_MEAN", "IMAGENET_STD", "make_views", "normalize", "short_side_resize",
                                 "to_tensor_clip"),
    "extract.media.flow": ("FLOW_ALGORITHMS", "FLOW_CHOICES", "FlowSettings", "FlowUnavailableError", "TVL1_PARAMS",
                           "TVL1_PRESETS", "clip_flow_stack", "compute_flow", "flow_backend", "flow_frame_indices",
                           "flow_views", "paper_flow"),
    "extract.media.raft": ("RAFT_MODELS", "RaftWeightsMissing", "load_raft", "raft_checkpoint", "raft_pair_flows",
                           "raft_weights_file"),
    "extract.media.audio": ("AudioSettings", "audio_windows", "log_mel", "vggish_patches"),
    "extract.media.video_writer": ("AAC_SAMPLE_RATES", "write_video"),
    "extract.media.torchcodec_decode": ("require_torchcodec",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'extract.media' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
