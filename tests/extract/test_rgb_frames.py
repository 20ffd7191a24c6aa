"""The frames that reach the RGB backbone keep the colours and the layout the demo renderer drew.

Issue 19: every step between the renderer and the backbone -- H.264 encode, PyAV decode at the
short side, clip sampling, crop, ``to_tensor_clip`` normalisation -- is checked against the
renderer's own frames put through an independent numpy resize and crop. A channel swap, a
transposed or flipped frame, another video's frames, the wrong frame numbers, a crop box off
by some pixels or wrong normalisation constants all move the mean error far above what the
lossy codec allows (a few grey levels).
"""

import numpy as np
import pytest
import torch

from benchmarks.pipeline.job import PipelineConfig
from extract.backbones import get_backbone
from extract.demo import DemoConfig, make_demo, render_demo_video
from extract.demo._classes import APPEARANCE_OBJECTS
from extract.demo._render import COLOURS
from extract.media.sampling import clip_frame_indices
from extract.media.transforms import short_side_resize
from extract.training.modality import VideoMeta, make_inputs

DEMO = DemoConfig(videos=6, seed=3, size=64, seconds=1.0, difficulty=0.2)
#: Mean absolute error (grey levels) that H.264 at crf 23 plus a second bilinear resize may add.
CODEC_ERROR = 6.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DEMO, progress=False)


@pytest.fixture(scope="module")
def rgb_inputs():
    """The pipeline's RGB recipe and backbone: what ``bin/demo`` trains and extracts with."""
    config = PipelineConfig(videos=DEMO.videos, size=DEMO.size, seconds=DEMO.seconds)
    backbone = get_backbone(config.rgb_backbone)
    recipe = config.recipe("rgb").resolve(backbone.info)
    return make_inputs(backbone, recipe), backbone.info


def _pixels(x: torch.Tensor, mean, std) -> np.ndarray:
    """Undo ``to_tensor_clip``: (..., 3, T, h, w) normalised -> (..., T, h, w, 3) in grey levels."""
    m = torch.tensor(mean).view(3, 1, 1, 1)
    s = torch.tensor(std).view(3, 1, 1, 1)
    return ((x * s + m) * 255).movedim(-4, -1).numpy()


def test_evaluation_clips_are_the_rendered_frames_resized_and_centre_cropped(demo, rgb_inputs):
    inputs, info = rgb_inputs
    maker = inputs.eval_maker
    for video in demo.video_list().videos.itertuples():
        index = int(str(video.id).rsplit("_", 1)[1])
        rendered = render_demo_video(index, DEMO).frames  # (T, H, W, 3)
        n = len(rendered)
        clips = inputs.eval_clips(VideoMeta(str(video.path), n, DEMO.fps))  # (K, T, c, c, 3)
        x = inputs.to_model(torch.from_numpy(clips))  # (K, 3, T, c, c)
        assert x.shape[1:] == (3, maker.sampling.frames_per_clip, maker.view.crop, maker.view.crop)
        got = _pixels(x, info.mean, info.std)  # (K, T, c, c, 3)
        idx, valid = clip_frame_indices(n, maker.sampling)  # (N, T)
        want = short_side_resize(rendered[idx[:valid].reshape(-1)], maker.view.decode_short_side)
        top = (want.shape[1] - maker.view.crop) // 2
        left = (want.shape[2] - maker.view.crop) // 2
        want = want[:, top:top + maker.view.crop, left:left + maker.view.crop].astype(np.float64)
        err = np.abs(got.reshape(want.shape) - want)
        assert err.mean() < CODEC_ERROR, (index, err.mean(axis=(0, 1, 2)))
        # the wrong geometry (here: the frame mirrored) is far off: the check can fail
        assert np.abs(got.reshape(want.shape)[:, :, ::-1] - want).mean() > 2 * err.mean()


def test_class_objects_keep_their_colour_at_their_place(demo, rgb_inputs):
    """The centre pixel of every solid class object, found where the renderer put it in the crop."""
    inputs, info = rgb_inputs
    maker = inputs.eval_maker
    checked = 0
    for video in demo.video_list().videos.itertuples():
        index = int(str(video.id).rsplit("_", 1)[1])
        rendered = render_demo_video(index, DEMO)
        clips = inputs.eval_clips(VideoMeta(str(video.path), len(rendered.frames), DEMO.fps))
        got = _pixels(inputs.to_model(torch.from_numpy(clips)), info.mean, info.std)[0, 0]  # (c, c, 3)
        scale = maker.view.decode_short_side / DEMO.size
        offset = (maker.view.decode_short_side - maker.view.crop) // 2
        for obj in rendered.meta["objects"]:
            fill = APPEARANCE_OBJECTS.get(obj["kind"], (None, None))[1]
            if fill not in COLOURS:
                continue  # distractors and textures
            # the object jitters by a pixel or two: take the pixel nearest its colour around the centre
            cx, cy = obj["x"] * scale - offset, obj["y"] * scale - offset
            x0, y0 = int(cx), int(cy)
            if not (2 <= x0 < maker.view.crop - 2 and 2 <= y0 < maker.view.crop - 2):
                continue
            patch = got[y0 - 2:y0 + 3, x0 - 2:x0 + 3].reshape(-1, 3)
            dist = np.abs(patch - np.asarray(COLOURS[fill])).sum(axis=1)
            assert dist.min() < 45, (index, obj["kind"], patch[np.argmin(dist)])
            checked += 1
    assert checked >= 2


def test_training_examples_are_the_rendered_frames_at_the_drawn_scale_and_crop(demo, rgb_inputs):
    inputs, _ = rgb_inputs
    aug = inputs.augment
    for video in demo.video_list().videos.itertuples():
        index = int(str(video.id).rsplit("_", 1)[1])
        rendered = render_demo_video(index, DEMO).frames
        n = len(rendered)
        got = inputs.train_example(VideoMeta(str(video.path), n, DEMO.fps), np.random.default_rng(index))
        # the same draws, in the same order, on the rendered frames
        rng = np.random.default_rng(index)
        idx, _ = clip_frame_indices(n, inputs.sampling, rng)  # (S, T)
        frames = short_side_resize(rendered[idx.reshape(-1)], aug.draw_short_side(rng))
        want = aug.crop_flip_rgb(frames, rng).astype(np.float64)
        assert got.shape == want.shape == (idx.size, aug.crop, aug.crop, 3)
        err = np.abs(got.astype(np.float64) - want)
        assert err.mean() < CODEC_ERROR, (index, err.mean(axis=(0, 1, 2)))
        assert np.abs(got[..., ::-1].astype(np.float64) - want).mean() > 2 * err.mean()  # RGB, not BGR


def test_training_examples_show_the_frames_at_the_extraction_scale(rgb_inputs):
    """Training decodes RGB at the extraction's short side, twice the demo's size: only the crop moves (issue 19).

    A random zoom (decoding at up to 1.25x that side) resampled the 2-px stripes and checks to another period
    in every example, showed every object larger than extraction does, and its crop could cut a labelled object
    out. The fixed 2x (``rgb_crop`` 112 of 128) is the same for training and extraction.
    """
    inputs, _ = rgb_inputs
    sides = {inputs.draw_size(np.random.default_rng(seed)) for seed in range(50)}
    assert sides == {inputs.eval_maker.view.decode_short_side} == {2 * DEMO.size}
