"""Spatial views: sizes, crop offsets, view order, normalisation and tensor layout."""

import numpy as np
import pytest
import torch

from extract.media.sampling import ViewSpec
from extract.media.transforms import (
    center_crop,
    five_crop,
    make_views,
    normalize,
    short_side_resize,
    short_side_size,
    ten_crop,
    three_crop,
    to_tensor_clip,
)


def coord_frames(t: int, h: int, w: int) -> np.ndarray:
    """(t, h, w, 3) uint8 whose pixel (y, x) of frame i holds (y, x, i): crops are readable."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[..., 0], frames[..., 1] = y, x
    frames[..., 2] = np.arange(t)[:, None, None]
    return frames


def top_left(crop: np.ndarray) -> tuple[int, int]:
    return int(crop[0, 0, 0, 0]), int(crop[0, 0, 0, 1])


@pytest.mark.parametrize(
    "h,w,side,expected",
    [
        (48, 64, 24, (24, 32)),
        (64, 48, 24, (32, 24)),
        (240, 320, 112, (112, 149)),  # 320 * 112 / 240 = 149.33
        (360, 640, 224, (224, 398)),  # 398.2
        (4, 6, 3, (3, 5)),  # 4.5 rounds half up
        (50, 50, 20, (20, 20)),
    ],
)
def test_short_side_size(h, w, side, expected):
    assert short_side_size(h, w, side) == expected


def test_short_side_resize_is_a_no_op_at_the_right_size():
    frames = coord_frames(2, 8, 12)
    assert short_side_resize(frames, 8) is frames


def test_short_side_resize_shape_and_values():
    frames = np.full((3, 40, 60, 3), 77, dtype=np.uint8)
    frames[:, :, 30:] = 200  # left half 77, right half 200
    out = short_side_resize(frames, 20)
    assert out.shape == (3, 20, 30, 3) and out.dtype == np.uint8
    assert (out[:, :, :13] == 77).all() and (out[:, :, 17:] == 200).all()
    assert ((out[:, :, 13:17] >= 77) & (out[:, :, 13:17] <= 200)).all()


def test_center_crop_offsets():
    crop = center_crop(coord_frames(2, 9, 14), 4)
    assert crop.shape == (2, 4, 4, 3)
    assert top_left(crop) == ((9 - 4) // 2, (14 - 4) // 2)
    np.testing.assert_array_equal(crop[1, :, :, 2], 1)
    with pytest.raises(ValueError, match="does not fit"):
        center_crop(coord_frames(1, 4, 6), 5)


def test_three_crop_along_the_long_side():
    landscape = three_crop(coord_frames(1, 4, 10), 4)  # left, centre, right
    assert [top_left(c) for c in landscape] == [(0, 0), (0, 3), (0, 6)]
    portrait = three_crop(coord_frames(1, 11, 5), 4)  # top, centre, bottom; x centred
    assert [top_left(c) for c in portrait] == [(0, 0), (3, 0), (7, 0)]


def test_five_and_ten_crop():
    frames = coord_frames(1, 6, 8)
    five = five_crop(frames, 4)
    assert [top_left(c) for c in five] == [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
    ten = ten_crop(frames, 4)
    assert len(ten) == 10
    for plain, flipped in zip(ten[:5], ten[5:]):
        np.testing.assert_array_equal(flipped, plain[:, :, ::-1])


def test_make_views_order_and_shapes():
    frames = coord_frames(2, 8, 12)
    view = ViewSpec(short_side=8, crop=4, crops="three", scales=(6,))
    views = make_views(frames, view)
    assert views.shape == (6, 2, 4, 4, 3) and views.dtype == np.uint8
    for got, want in zip(views[:3], three_crop(frames, 4)):  # first scale: no resize
        np.testing.assert_array_equal(got, want)
    for got, want in zip(views[3:], three_crop(short_side_resize(frames, 6), 4)):
        np.testing.assert_array_equal(got, want)


def test_normalize_matches_manual_computation():
    clip = torch.rand(2, 3, 4, 5, 5)  # (B, C, T, H, W)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = normalize(clip, mean, std)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (clip[:, c] - mean[c]) / std[c])
    with pytest.raises(ValueError, match="one per channel"):
        normalize(clip, (0.1,), (1.0,))
    with pytest.raises(ValueError, match="std"):
        normalize(clip, mean, (1.0, 0.0, 1.0))


def test_to_tensor_clip_layout_and_values():
    frames = coord_frames(4, 6, 7)  # (T, H, W, 3)
    out = to_tensor_clip(frames, mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (3, 4, 6, 7) and out.dtype == torch.float32  # (C, T, H, W)
    torch.testing.assert_close(out[0, 2, 5, 6], torch.tensor(5 / 255))  # channel 0 = y
    torch.testing.assert_close(out[1, 2, 5, 6], torch.tensor(6 / 255))  # channel 1 = x
    torch.testing.assert_close(out[2, 3, 0, 0], torch.tensor(3 / 255))  # channel 2 = t
    views = make_views(frames, ViewSpec(short_side=6, crop=4, crops="three"))  # (3, 4, 4, 4, 3)
    batch = to_tensor_clip(views)
    assert batch.shape == (3, 3, 4, 4, 4)  # (V, C, T, H, W)
    torch.testing.assert_close(batch[1], to_tensor_clip(views[1]))
    with pytest.raises(ValueError, match="uint8"):
        to_tensor_clip(frames.astype(np.float32))
