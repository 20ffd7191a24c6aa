"""Stage one: decode videos once, sample clips, run backbones, write features to the store.

Sub-packages, one floor each (extract/README.md draws them)::

    extract.media       decode (PyAV; torchcodec optional), sampling, transforms, optical flow, audio, the mp4 writer
    extract.backbones   the backbone registry: frame, clip, audio models; weights
    extract.training    fine-tuning a backbone on videos (behind python -m extract.train)
    extract.dump        the feature dump behind python -m extract.run: settings, makers,
                        producers, decode workers, assembly into the store
    extract.demo        the generated demo dataset (python -m extract.demo)

Modules: ``run``, ``train``, ``search`` (the commands), ``inputs`` (video and class lists),
``errors`` (``ExtractError`` and subclasses), ``_config`` (``--config`` TOML defaults).

Public API::

    make_demo, load_demo, DemoConfig            the generated demo dataset (extract.demo)
    read_video_list, VideoList                  MiT / Multi-MiT, Kinetics, mmaction2 lists, folders (extract.inputs)
    probe_video, decode_video                   single-pass PyAV decoding, or torchcodec (extract.media.decode)
    ClipSampling, ViewSpec, clip_frame_indices  sampling and spatial views (extract.media.sampling)
    get_backbone, list_backbones                the backbone registry (extract.backbones)
    extract(), ExtractSettings                  the feature dump behind python -m extract.run (extract.dump)
    ExtractError and subclasses                 user-facing errors (extract.errors)
"""

from extract.demo import DEFAULT_DEMO_DIR, DemoConfig, DemoManifest, load_demo, make_demo
from extract.errors import ExtractError, InputError
from extract.inputs import VideoList, read_class_list, read_video_list
from extract.media.decode import DecodedVideo, DecodeError, VideoInfo, decode_video, probe_video
from extract.media.sampling import ClipSampling, ViewSpec, clip_frame_indices, clip_times

__all__ = [
    "DEFAULT_DEMO_DIR", "ClipSampling", "DecodeError", "DecodedVideo", "DemoConfig", "DemoManifest",
    "ExtractError", "InputError", "VideoInfo", "VideoList", "ViewSpec", "clip_frame_indices", "clip_times",
    "decode_video", "load_demo", "make_demo", "probe_video", "read_class_list", "read_video_list",
]
