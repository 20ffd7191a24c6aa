"""The demo dataset: deterministic multi-label mp4 clips whose labels live in different modalities.

Public API::

    make_demo, load_demo, DemoConfig, DemoManifest,   extract.demo.generator (write / read a demo folder)
      DemoVideo, render_demo_video, DEFAULT_DEMO_DIR
    python -m extract.demo                            extract.demo.__main__ (the command)

Private pieces: ``_classes`` (the 21 classes, label draws, splits), ``_render`` (frames),
``_sound`` (the audio track).
"""

from extract.demo.generator import (
    DEFAULT_DEMO_DIR,
    DemoConfig,
    DemoManifest,
    DemoVideo,
    load_demo,
    make_demo,
    render_demo_video,
)

__all__ = ["DEFAULT_DEMO_DIR", "DemoConfig", "DemoManifest", "DemoVideo", "load_demo", "make_demo",
           "render_demo_video"]
