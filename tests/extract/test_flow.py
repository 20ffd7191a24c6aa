"""Optical flow: known translations recovered, scaling, frame bookkeeping, views, GPU wiring."""

import cv2
import numpy as np
import pytest

import extract.media.flow as flow_mod
from extract.media.decode import decode_video
from extract.media.flow import (
    FlowSettings,
    FlowUnavailableError,
    clip_flow_stack,
    compute_flow,
    flow_backend,
    flow_frame_indices,
    flow_stack_channels,
    flow_to_input,
    flow_views,
)
from extract.media.sampling import ClipSampling, ViewSpec, clip_frame_indices, union_frame_indices
from extract.media.video_writer import write_video

MARGIN = 8  # pixels left out at the borders, where content enters or leaves the image


def moving_texture(n_frames, size, dx, dy, seed=0):
    """(T, size, size, 3) uint8 frames of a smooth random texture moving (dx, dy) px/frame."""
    pad = MARGIN + n_frames * max(abs(dx), abs(dy))
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((size + 2 * pad,) * 2).astype(np.float32), (0, 0), 2.0)
    tex = np.round(255 * (tex - tex.min()) / (tex.max() - tex.min())).astype(np.uint8)
    frames = []
    for t in range(n_frames):  # frame_t(y, x) = tex(pad - dy t + y, pad - dx t + x)
        top, left = pad - dy * t, pad - dx * t
        frames.append(tex[top : top + size, left : left + size])
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1)  # (T, H, W) -> (T, H, W, 3)


def interior_mean(flow):
    """Mean (x, y) flow away from the borders: (T, H, W, 2) -> (2,)."""
    return flow[:, MARGIN:-MARGIN, MARGIN:-MARGIN].reshape(-1, 2).mean(axis=0)


@pytest.mark.parametrize(
    ("algorithm", "dx", "dy", "tol"),
    [("farneback", 2, -1, 0.3), ("farneback", -1, 2, 0.3), ("tvl1", 2, -1, 0.5)],
)
def test_translation_recovered(algorithm, dx, dy, tol):
    frames = moving_texture(3 if algorithm == "farneback" else 2, 64, dx, dy)
    flow = compute_flow(frames, FlowSettings(algorithm=algorithm))
    assert flow.shape == (len(frames) - 1, 64, 64, 2) and flow.dtype == np.float32
    mean = interior_mean(flow)
    assert np.abs(mean - [dx, dy]).max() < tol, mean
    assert np.sign(mean).tolist() == [np.sign(dx), np.sign(dy)]


def test_size_resizes_before_flow():
    frames = moving_texture(2, 64, 2, -1)
    flow = compute_flow(frames, FlowSettings(size=32))
    assert flow.shape == (1, 32, 32, 2)
    mean = flow[:, 4:-4, 4:-4].reshape(-1, 2).mean(axis=0)  # half size -> half the motion
    assert np.abs(mean - [1.0, -0.5]).max() < 0.3, mean


def test_threads_are_restored():
    before = cv2.getNumThreads()
    compute_flow(moving_texture(2, 32, 1, 0), FlowSettings(), threads=1)
    assert cv2.getNumThreads() == before
    with pytest.raises(ValueError, match="threads"):
        compute_flow(moving_texture(2, 32, 1, 0), FlowSettings(), threads=0)


def test_flow_to_input_clips_and_scales():
    values = np.array([-30.0, -20.0, -10.0, 0.0, 5.0, 20.0, 25.0], dtype=np.float32)
    flow = np.stack([values, -values], axis=-1).reshape(1, 1, 7, 2)  # (T, H, W, 2)
    x = flow_to_input(flow, bound=20.0)
    assert x.shape == (2, 1, 1, 7) and x.dtype == np.float32
    expected = [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0]
    np.testing.assert_allclose(x[0, 0, 0], expected)  # channel 0 is x
    np.testing.assert_allclose(x[1, 0, 0], [-v for v in expected])  # channel 1 is y
    # The TSN / I3D 8-bit convention, before rounding, is the same map shifted and scaled.
    jpeg = 255 * (np.clip(values, -20, 20) + 20) / 40
    np.testing.assert_allclose(x[0, 0, 0], jpeg / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="bound"):
        flow_to_input(flow, bound=0.0)


def test_flow_frame_indices_by_hand():
    pairs = flow_frame_indices(np.array([[0, 1, 2], [5, 6, 7]]), n_frames=8)
    assert pairs.tolist() == [[[0, 1], [1, 2], [2, 3]], [[5, 6], [6, 7], [6, 7]]]
    # stride 2: flow still goes to the very next frame
    assert flow_frame_indices(np.array([[0, 2, 4]]), n_frames=10).tolist() == [
        [[0, 1], [2, 3], [4, 5]]
    ]
    # TSN stacks of 3; the one at the end is shifted back to end on the last frame
    assert flow_frame_indices(np.array([[2], [9]]), stack=3, n_frames=10).tolist() == [
        [[2, 3], [3, 4], [4, 5]],
        [[6, 7], [7, 8], [8, 9]],
    ]
    assert flow_frame_indices(np.array([[0, 1]]), stack=2, n_frames=10).tolist() == [
        [[0, 1], [1, 2], [1, 2], [2, 3]]
    ]
    assert flow_frame_indices(np.array([[0]]), stack=3, n_frames=2).tolist() == [
        [[0, 1], [1, 1], [1, 1]]
    ]
    assert flow_frame_indices(np.array([[0, 0]]), n_frames=1).tolist() == [[[0, 0], [0, 0]]]


def test_flow_frame_indices_with_a_gap_by_hand():
    # gap 3: each pair spans 3 frames; a run that would pass the last frame ends on it
    assert flow_frame_indices(np.array([[0, 3, 8]]), n_frames=10, gap=3).tolist() == [
        [[0, 3], [3, 6], [6, 9]]
    ]
    assert flow_frame_indices(np.array([[1], [7]]), stack=2, n_frames=10, gap=2).tolist() == [
        [[1, 3], [3, 5]],
        [[5, 7], [7, 9]],
    ]
    # a video shorter than the gap: clamped to its frames
    assert flow_frame_indices(np.array([[0]]), n_frames=3, gap=5).tolist() == [[[0, 2]]]
    with pytest.raises(ValueError, match="gap"):
        flow_frame_indices(np.array([[0]]), n_frames=3, gap=0)


def test_decode_union_is_clip_plus_next_frame():
    idx, _ = clip_frame_indices(40, ClipSampling(num_clips=2, frames_per_clip=8))
    union = union_frame_indices(idx, flow_frame_indices(idx, n_frames=40))
    # idx is 0..7 and 32..39: the first clip needs its next frame (8); the last clip ends
    # on the last frame, whose flow is the one from 38 to 39, so it needs nothing more.
    assert union.tolist() == list(range(9)) + list(range(32, 40))


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory):
    frames = moving_texture(12, 48, 2, -1, seed=1)
    path = write_video(tmp_path_factory.mktemp("flow") / "moving.mp4", frames, 25, lossless=True)
    return path, frames


def test_clip_flow_stack_from_one_decode(moving_video):
    path, frames = moving_video
    n = len(frames)
    idx, _ = clip_frame_indices(n, ClipSampling(num_clips=2, frames_per_clip=4, stride=2))
    settings = FlowSettings(bound=10.0)
    pairs = flow_frame_indices(idx, n_frames=n)
    video = decode_video(path, union_frame_indices(idx, pairs))
    assert not video.truncated
    stack = clip_flow_stack(video, idx, settings, n_frames=n)
    assert stack.shape == (2, 2, 4, 48, 48) and stack.dtype == np.float32
    for i in range(2):  # each flow equals compute_flow on its own frame pair, scaled
        for t in range(4):
            a, b = pairs[i, t]
            ref = compute_flow(frames[[a, b]], settings)
            np.testing.assert_array_equal(stack[i, :, t], flow_to_input(ref, 10.0)[:, 0])
    inner = stack[..., MARGIN:-MARGIN, MARGIN:-MARGIN].mean(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(inner, [0.2, -0.1], atol=0.03)


def test_clip_flow_stack_with_a_gap_is_pixels_per_frame(moving_video):
    path, frames = moving_video
    n = len(frames)
    idx, _ = clip_frame_indices(n, ClipSampling(num_clips=2, frames_per_clip=3, stride=2))
    settings = FlowSettings(bound=10.0, gap=2)
    pairs = flow_frame_indices(idx, n_frames=n, gap=2)
    assert (pairs[..., 1] - pairs[..., 0] == 2).all()
    video = decode_video(path, union_frame_indices(idx, pairs))
    stack = clip_flow_stack(video, idx, settings, n_frames=n)
    for i in range(2):  # each flow is compute_flow over its pair 2 frames apart, divided by 2
        for t in range(3):
            ref = compute_flow(frames[pairs[i, t]], settings)
            np.testing.assert_allclose(stack[i, :, t], flow_to_input(ref / 2, 10.0)[:, 0], rtol=1e-6, atol=1e-7)
    # the texture moves (2, -1) px per frame: (4, -2) px per pair, still 0.2, -0.1 of the bound per frame
    inner = stack[..., MARGIN:-MARGIN, MARGIN:-MARGIN].mean(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(inner, [0.2, -0.1], atol=0.03)


def test_clip_flow_stack_tsn_channels(moving_video):
    path, frames = moving_video
    n = len(frames)
    idx = np.array([[1], [10]])  # T = 1 frame per segment, stacks of 3 flows
    settings = FlowSettings(stack=3, size=24)
    video = decode_video(path, flow_frame_indices(idx, 3, n_frames=n))
    stack = clip_flow_stack(video, idx, settings, n_frames=n)
    assert stack.shape == (2, 2, 3, 24, 24)
    channels = flow_stack_channels(stack, 3)
    assert channels.shape == (2, 6, 1, 24, 24)
    for t in range(3):
        np.testing.assert_array_equal(channels[:, 2 * t, 0], stack[:, 0, t])  # x_t
        np.testing.assert_array_equal(channels[:, 2 * t + 1, 0], stack[:, 1, t])  # y_t


def test_flow_stack_channels_order_by_hand():
    t, length = 2, 3
    stack = np.zeros((2, t * length, 1, 1))
    for c in range(2):
        for k in range(t * length):
            stack[c, k] = 100 * c + k  # k = t * L + l
    out = flow_stack_channels(stack, length)
    assert out.shape == (6, 2, 1, 1)
    assert out[:, :, 0, 0].tolist() == [[0, 3], [100, 103], [1, 4], [101, 104], [2, 5], [102, 105]]
    import torch

    assert flow_stack_channels(torch.from_numpy(stack), length).tolist() == out.tolist()


def test_flow_views_crops_flips_and_scales():
    rng = np.random.default_rng(0)
    stack = rng.uniform(-1, 1, size=(2, 3, 16, 20)).astype(np.float32)
    center = flow_views(stack, ViewSpec(short_side=16, crop=8))
    assert center.shape == (1, 2, 3, 8, 8)
    np.testing.assert_array_equal(center[0], stack[:, :, 4:12, 6:14])
    ten = flow_views(stack, ViewSpec(short_side=16, crop=8, crops="ten"))
    assert ten.shape == (10, 2, 3, 8, 8)
    np.testing.assert_array_equal(ten[0], stack[:, :, :8, :8])  # top-left corner
    np.testing.assert_array_equal(ten[5, 0], -ten[0, 0, :, :, ::-1])  # mirrored: x negated
    np.testing.assert_array_equal(ten[5, 1], ten[0, 1, :, :, ::-1])  # y kept
    const = np.empty((2, 1, 16, 20), np.float32)
    const[0], const[1] = 0.4, -0.2
    multi = flow_views(const, ViewSpec(short_side=16, crop=8, scales=(8,)))
    assert multi.shape == (2, 2, 1, 8, 8)
    np.testing.assert_allclose(multi[1, 0], 0.2, atol=1e-6)  # half the size, half the motion
    np.testing.assert_allclose(multi[1, 1], -0.1, atol=1e-6)


def test_settings_round_trip_and_validation():
    s = FlowSettings(algorithm="tvl1", bound=15.0, size=112, stack=5)
    assert FlowSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown keys"):
        FlowSettings.from_dict({**s.to_dict(), "foo": 1})
    with pytest.raises(ValueError, match="algorithm"):
        FlowSettings(algorithm="brox")
    with pytest.raises(ValueError, match="bound"):
        FlowSettings(bound=-1.0)
    with pytest.raises(ValueError, match="stack"):
        FlowSettings(stack=0)
    with pytest.raises(ValueError, match="gap"):
        FlowSettings(gap=0)
    with pytest.raises(ValueError, match="fb_pyr_scale"):
        FlowSettings(fb_pyr_scale=1.5)


def test_backend_choice_without_cuda(monkeypatch):
    monkeypatch.setattr(flow_mod, "cuda_flow_available", lambda: False)
    assert flow_backend("auto") == "cpu" and flow_backend("cpu") == "cpu"
    with pytest.raises(FlowUnavailableError, match="CUDA"):
        flow_backend("cuda")
    with pytest.raises(ValueError, match="device"):
        flow_backend("tpu")


def test_tvl1_without_contrib_says_what_to_install(monkeypatch):
    monkeypatch.delattr(cv2, "optflow")
    with pytest.raises(FlowUnavailableError, match="opencv-contrib"):
        compute_flow(moving_texture(2, 32, 1, 0), FlowSettings(algorithm="tvl1"), device="cpu")


class _FakeGpuMat:
    def __init__(self, data=None):
        self.data = data

    def upload(self, array):
        self.data = np.array(array)

    def download(self):
        return self.data


def test_cuda_path_wiring(monkeypatch):
    """The CUDA branch passes Farneback's parameters in OpenCV's order and returns (H, W, 2)."""
    created = []

    class FakeFarneback:
        @staticmethod
        def create(levels, pyr_scale, fast_pyramids, winsize, iterations, poly_n, sigma, flags):
            created.append((levels, pyr_scale, fast_pyramids, winsize, iterations, poly_n, sigma))

            class Alg:
                def calc(self, g0, g1, flow):
                    out = cv2.calcOpticalFlowFarneback(
                        g0.data,
                        g1.data,
                        None,
                        pyr_scale,
                        levels,
                        winsize,
                        iterations,
                        poly_n,
                        sigma,
                        flags,
                    )
                    return _FakeGpuMat(out)

            return Alg()

    monkeypatch.setattr(cv2.cuda, "getCudaEnabledDeviceCount", lambda: 1)
    monkeypatch.setattr(cv2, "cuda_GpuMat", _FakeGpuMat)
    monkeypatch.setattr(cv2, "cuda_FarnebackOpticalFlow", FakeFarneback, raising=False)
    assert flow_backend("auto") == "cuda"
    frames = moving_texture(3, 48, 2, -1)
    s = FlowSettings(fb_levels=2, fb_winsize=11)
    gpu = compute_flow(frames, s)
    assert created == [(2, 0.5, False, 11, 3, 5, 1.2)]
    np.testing.assert_array_equal(gpu, compute_flow(frames, s, device="cpu"))
