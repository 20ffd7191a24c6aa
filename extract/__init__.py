"""Stage one: decode videos once, sample clips, run backbones, write features to the store.

Public API::

    make_demo, load_demo, DemoConfig            the generated demo dataset (extract.demo)
    read_video_list, VideoList                  MiT / Multi-MiT / Kinetics CSVs, folders (extract.inputs)
    probe_video, decode_video                   single-pass PyAV decoding (extract.decode)
    ClipSampling, ViewSpec, clip_frame_indices  sampling and spatial views (extract.sampling)
    get_backbone, list_backbones                the backbone registry (extract.backbones)
    extract(), ExtractSettings                  the feature dump behind python -m extract.run (extract.pipeline)
    ExtractError and subclasses                 user-facing errors (extract.errors)
"""

from extract.decode import DecodedVideo, DecodeError, VideoInfo, decode_video, probe_video
from extract.demo import DEFAULT_DEMO_DIR, DemoConfig, DemoManifest, load_demo, make_demo
from extract.errors import ExtractError, InputError
from extract.inputs import VideoList, read_class_list, read_video_list
from extract.sampling import ClipSampling, ViewSpec, clip_frame_indices, clip_times

__all__ = [
    "DEFAULT_DEMO_DIR", "ClipSampling", "DecodeError", "DecodedVideo", "DemoConfig", "DemoManifest",
    "ExtractError", "InputError", "VideoInfo", "VideoList", "ViewSpec", "clip_frame_indices", "clip_times",
    "decode_video", "load_demo", "make_demo", "probe_video", "read_class_list", "read_video_list",
]
