"""Clip samplers against hand-computed frame numbers (see the formulas in extract.media.sampling)."""

import json

import numpy as np
import pytest

from extract.media.sampling import (
    ClipSampling,
    ViewSpec,
    clip_frame_indices,
    clip_times,
    union_frame_indices,
)

# (n_frames, sampling, expected indices (N, T), expected valid_clips); every row worked by hand.
HAND_CASES = [
    # uniform: span = (T-1)s+1, slack = n - span, start_i = floor(i*slack/(N-1) + 1/2)
    # n=100, T=4, s=2: span 7, slack 93 -> starts 0, floor(46.5+.5)=47, 93
    (100, ClipSampling("uniform", 3, 4, 2), [[0, 2, 4, 6], [47, 49, 51, 53], [93, 95, 97, 99]], 3),
    # one clip: the centre one, start = floor(92 / 2) = 46
    (100, ClipSampling("uniform", 1, 8, 1), [list(range(46, 54))], 1),
    # n=10, T=2, s=3: span 4, slack 6 -> starts 0, 2, 4, 6
    (10, ClipSampling("uniform", 4, 2, 3), [[0, 3], [2, 5], [4, 7], [6, 9]], 4),
    # halves round up (not to even): slack 5, N=3 -> 0, floor(2.5+.5)=3, 5
    (6, ClipSampling("uniform", 3, 1, 1), [[0], [3], [5]], 3),
    # more clips than room: slack 3, N=6 -> 0, 1, 1, 2, 2, 3 -> real 0,1,2,3 then repeat the last
    (5, ClipSampling("uniform", 6, 2, 1), [[0, 1], [1, 2], [2, 3], [3, 4], [3, 4], [3, 4]], 4),
    # clip longer than the video: 0, 2, 4->2, 6->2 (last frame repeated), one real clip
    (3, ClipSampling("uniform", 2, 4, 2), [[0, 2, 2, 2], [0, 2, 2, 2]], 1),
    # single-frame video
    (1, ClipSampling("uniform", 2, 3, 1), [[0, 0, 0], [0, 0, 0]], 1),
    # tsn: start_i = floor((i + 1/2)(slack+1)/N); n=100, T=1: 12.5, 37.5, 62.5, 87.5
    (100, ClipSampling("tsn", 4, 1, 1), [[12], [37], [62], [87]], 4),
    # n=30, T=4, s=2: span 7, slack+1 = 24, N=3 -> 4, 12, 20
    (30, ClipSampling("tsn", 3, 4, 2), [[4, 6, 8, 10], [12, 14, 16, 18], [20, 22, 24, 26]], 3),
    # fewer frames than segments: slack+1 = 2 -> floor(1/3)=0, floor(1)=1, floor(5/3)=1
    (2, ClipSampling("tsn", 3, 1, 1), [[0], [1], [1]], 2),
    # dense: run = (N*T-1)s+1 = 23, slack 77, start0 = 38, clips every T*s = 8 frames
    (
        100,
        ClipSampling("dense", 3, 4, 2),
        [[38, 40, 42, 44], [46, 48, 50, 52], [54, 56, 58, 60]],
        3,
    ),
    # run 11 > 10 frames: start0 = 0, starts 0, 4, 8; frame 10 clamps to 9
    (10, ClipSampling("dense", 3, 2, 2), [[0, 2], [4, 6], [8, 9]], 3),
    # n=5: start 8 is past the end -> not real; it repeats the last real clip
    (5, ClipSampling("dense", 3, 2, 2), [[0, 2], [4, 4], [4, 4]], 2),
]


@pytest.mark.parametrize("n_frames,sampling,expected,valid", HAND_CASES)
def test_indices_match_hand_computed(n_frames, sampling, expected, valid):
    indices, valid_clips = clip_frame_indices(n_frames, sampling)
    assert indices.dtype == np.int64
    assert indices.shape == (sampling.num_clips, sampling.frames_per_clip)
    np.testing.assert_array_equal(indices, np.array(expected))
    assert valid_clips == valid


def test_tsn_random_draws_one_start_per_segment_covering_it():
    sampling = ClipSampling("tsn", 4, 1, 1, random=True)
    rng = np.random.default_rng(0)
    seen = [set() for _ in range(4)]
    for _ in range(600):
        indices, valid = clip_frame_indices(100, sampling, rng)
        assert valid == 4
        for i, start in enumerate(indices[:, 0]):
            assert 25 * i <= start < 25 * (i + 1)  # segment i of 100 / 4 frames
            seen[i].add(int(start))
    assert all(len(s) == 25 for s in seen)  # every frame of each segment can be drawn


def test_tsn_random_matches_formula_for_given_draws():
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    indices, _ = clip_frame_indices(30, ClipSampling("tsn", 3, 4, 2, random=True), rng_a)
    u = rng_b.random(3)
    starts = np.floor((np.arange(3) + u) * 24 / 3).astype(int)  # slack + 1 = 30 - 7 + 1 = 24
    np.testing.assert_array_equal(indices, starts[:, None] + np.arange(4) * 2)


def test_uniform_random_keeps_equal_spacing():
    rng = np.random.default_rng(1)
    sampling = ClipSampling("uniform", 4, 1, 1, random=True)  # slack + 1 = 100, width 25
    starts = {int(clip_frame_indices(100, sampling, rng)[0][0, 0]) for _ in range(300)}
    for _ in range(20):
        indices, _ = clip_frame_indices(100, sampling, rng)
        np.testing.assert_array_equal(np.diff(indices[:, 0]), [25, 25, 25])
    assert starts == set(range(25))


def test_dense_random_places_an_unbroken_run():
    rng = np.random.default_rng(2)
    sampling = ClipSampling("dense", 3, 4, 2, random=True)  # run 23 frames in 100: start0 0..77
    firsts = set()
    for _ in range(400):
        indices, valid = clip_frame_indices(100, sampling, rng)
        assert valid == 3
        np.testing.assert_array_equal(np.diff(indices.ravel()), np.full(11, 2))
        firsts.add(int(indices[0, 0]))
    assert min(firsts) == 0 and max(firsts) == 77 and len(firsts) > 60


def test_random_sampling_needs_an_rng():
    with pytest.raises(ValueError, match="rng"):
        clip_frame_indices(10, ClipSampling("tsn", 2, 1, 1, random=True))


@pytest.mark.parametrize("n_frames", [0, -3, 2.5])
def test_bad_frame_counts_are_rejected(n_frames):
    with pytest.raises(ValueError, match="n_frames"):
        clip_frame_indices(n_frames, ClipSampling())


def test_clip_times_are_first_frame_start_to_last_frame_end():
    indices = np.array([[0, 2, 4, 6], [47, 49, 51, 53]])
    np.testing.assert_allclose(clip_times(indices, 10.0), [[0.0, 0.7], [4.7, 5.4]])
    with pytest.raises(ValueError, match="fps"):
        clip_times(indices, 0.0)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        clip_times(np.arange(4), 10.0)


def test_union_frame_indices():
    a = np.array([[5, 1], [3, 3]])
    np.testing.assert_array_equal(union_frame_indices(a, [9, 1]), [1, 3, 5, 9])
    with pytest.raises(ValueError):
        union_frame_indices()


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"mode": "sparse"}, "--sampling must be one of"),
        ({"num_clips": 0}, "--clips must be a whole number >= 1, got 0"),
        ({"frames_per_clip": 2.0}, "--frames must be"),
        ({"stride": True}, "--stride must be"),
        ({"random": "yes"}, "random"),
    ],
)
def test_clip_sampling_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ClipSampling(**kwargs)


def test_clip_sampling_round_trips_through_json():
    s = ClipSampling("tsn", 6, 16, 2, random=True)
    assert s.span == 31
    assert ClipSampling.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="unknown keys"):
        ClipSampling.from_dict({**s.to_dict(), "fps": 3})


def test_view_spec_properties_and_round_trip():
    v = ViewSpec(short_side=128, crop=112, crops="three", scales=(160, 144))
    assert v.short_sides == (128, 160, 144)
    assert v.decode_short_side == 160
    assert v.num_views == 9
    back = ViewSpec.from_dict(json.loads(json.dumps(v.to_dict())))
    assert back == v and back.scales == (160, 144)
    assert ViewSpec().num_views == 1 and ViewSpec(crops="ten").num_views == 10


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"crop": 129}, "--crop 129 is larger than the short side 128"),
        ({"scales": (100,)}, "--crop 112 is larger than the short side 100"),
        ({"crops": "four"}, "--crops must be one of"),
        ({"short_side": 0}, "--short-side must be a whole number >= 1, got 0"),
        ({"scales": (128,)}, "--short-side and --scales repeat a short side"),
        ({"scales": (160.5,)}, "--scales must be whole short sides"),
    ],
)
def test_view_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewSpec(**kwargs)
