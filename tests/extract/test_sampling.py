"""Clip samplers against hand-computed frame numbers (see the formulas in extract.media.sampling)."""

import json

import numpy as np
import pytest

from extract.media.sampling import (
    ClipSampling,
    ViewSpec,
    clip_frame_indices,
    clip_times,
    sample_clips,
    time_windows,
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
        ClipSampling.from_dict({**s.to_dict(), "speed": 3})
    timed = ClipSampling("every", 5, 4, 2, every_s=0.5, fps=8)
    assert ClipSampling.from_dict(json.loads(json.dumps(timed.to_dict()))) == timed
    assert "every_s" not in s.to_dict() and "fps" not in s.to_dict()  # fixed-count records unchanged


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


# Time-based clips (mode "every") and resampled frame rates, worked by hand.
# (n_frames, video fps, sampling, expected indices (N, T), valid clips, expected starts of the real clips)
EVERY_CASES = [
    # 2 s at 30 fps, one-frame clips every 0.5 s: span 1/30 s, W = floor((2 - 1/30) / 0.5) + 1 = 4
    (60, 30.0, ClipSampling("every", 6, 1, 1, every_s=0.5), [[0], [15], [30], [45], [45], [45]], 4,
     [0.0, 0.5, 1.0, 1.5]),
    # 8 frames at 8 fps (span 1 s): W = floor((2 - 1) / 0.5) + 1 = 3; frames floor((start + j/8) * 30)
    (60, 30.0, ClipSampling("every", 3, 8, 1, every_s=0.5, fps=8),
     [[0, 3, 7, 11, 15, 18, 22, 26], [15, 18, 22, 26, 30, 33, 37, 41], [30, 33, 37, 41, 45, 48, 52, 56]], 3,
     [0.0, 0.5, 1.0]),
    # a clip past the end is dropped: 1 s, 4 native frames at stride 5 (span 16/30 s): W = floor(1.87) + 1 = 2;
    # the clip at 0.5 s would end at 1.03 s. Starts 0 and 0.25 s: frames floor(7.5) = 7 + 5j
    (30, 30.0, ClipSampling("every", 4, 4, 5, every_s=0.25), [[0, 5, 10, 15]] + [[7, 12, 17, 22]] * 3, 2,
     [0.0, 0.25]),
    # shorter than one clip: one clip from 0 s, its missing frames repeat the last one
    (10, 30.0, ClipSampling("every", 2, 4, 5, every_s=0.25), [[0, 5, 9, 9]] * 2, 1, [0.0]),
    # 60 s, every 0.5 s: W = 120 windows thinned to 3 by the uniform rule: windows 0, 60, 119 (59.5 + 0.5)
    (600, 10.0, ClipSampling("every", 3, 1, 1, every_s=0.5), [[0], [300], [595]], 3, [0.0, 30.0, 59.5]),
]


@pytest.mark.parametrize("n_frames,fps,sampling,expected,valid,starts", EVERY_CASES)
def test_every_clips_match_hand_computed(n_frames, fps, sampling, expected, valid, starts):
    clips = sample_clips(n_frames, sampling, fps)
    np.testing.assert_array_equal(clips.indices, np.array(expected))
    assert clips.valid_clips == valid
    np.testing.assert_allclose(clips.times[:valid, 0], starts, rtol=0, atol=1e-12)
    rate = sampling.fps or fps
    span_s = sampling.span / rate
    np.testing.assert_allclose(clips.times[:valid, 1], np.minimum(np.array(starts) + span_s, n_frames / fps),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(clips.times[valid:], np.repeat(clips.times[valid - 1:valid], len(expected) - valid,
                                                                 axis=0))
    assert (clips.times[:valid, 1] <= n_frames / fps + 1e-12).all()  # no kept clip runs past the end


def test_every_clips_against_a_brute_force_scan():
    """Every window that fits, found by stepping through time, equals the formula (no cap)."""
    for n_frames, fps, every, frames, stride in [(37, 25.0, 0.3, 3, 2), (90, 29.97, 0.1, 5, 1), (1, 30.0, 1.0, 1, 1)]:
        s = ClipSampling("every", 1000, frames, stride, every_s=every)
        clips = sample_clips(n_frames, s, fps)
        span = ((frames - 1) * stride + 1) / fps
        fits = [w for w in range(1000) if w * every + span <= n_frames / fps + 1e-9] or [0]
        assert clips.valid_clips == len(fits) == time_windows(n_frames / fps, every, span)
        first = np.floor(np.array(fits) * every * fps + 1e-6).astype(int)
        np.testing.assert_array_equal(clips.indices[: len(fits), 0], first)


def test_fps_resamples_the_fixed_modes_on_a_grid():
    # 2 s at 30 fps resampled to 10 fps: 20 grid frames; tsn 2 x 4: slack 16, starts floor((i + .5) * 17 / 2) = 4, 12
    clips = sample_clips(60, ClipSampling("tsn", 2, 4, 1, fps=10), 30.0)
    np.testing.assert_array_equal(clips.indices, [[12, 15, 18, 21], [36, 39, 42, 45]])
    np.testing.assert_allclose(clips.times, [[0.4, 0.8], [1.2, 1.6]])
    # fps equal to the video's changes nothing
    same = sample_clips(60, ClipSampling("uniform", 3, 4, 2, fps=30), 30.0)
    ref, valid = clip_frame_indices(60, ClipSampling("uniform", 3, 4, 2))
    np.testing.assert_array_equal(same.indices, ref)
    np.testing.assert_allclose(same.times, clip_times(ref, 30.0))


def test_time_sampling_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="frame rate is unknown"):
        sample_clips(60, ClipSampling("every", 3, 1, 1, every_s=0.5), float("nan"))
    with pytest.raises(ValueError, match="--fps"):
        sample_clips(60, ClipSampling("tsn", 3, 1, 1, fps=5), None)
    with pytest.raises(ValueError, match="every_s"):
        ClipSampling("every", 3, 1, 1)
    with pytest.raises(ValueError, match="every_s"):
        ClipSampling("tsn", 3, 1, 1, every_s=1.0)
    with pytest.raises(ValueError, match="deterministic"):
        ClipSampling("every", 3, 1, 1, every_s=1.0, random=True)
    with pytest.raises(ValueError, match="--every"):
        ClipSampling("every", 3, 1, 1, every_s=0)
