"""The demo generator: labels, layout, determinism, idempotence, and that each modality
carries its classes (motion direction in the frames, sound events in the audio)."""

import json
import math

import av
import numpy as np
import pytest

from extract.demo import DemoConfig, load_demo, make_demo, render_demo_video
from extract.demo import generator as demo_module
from extract.demo.__main__ import main
from extract.demo._classes import (
    CLASS_FAMILIES,
    DEMO_CLASSES,
    EXCLUSIVE_GROUPS,
    MOTION_PAIRS,
    SOUND_CLASSES,
    assign_splits,
    video_labels,
)
from extract.demo._render import render_frames
from extract.demo._sound import synthesize_audio
from extract.errors import DemoConfigMismatch, DemoError

TINY = DemoConfig(videos=3, seed=5, size=64, seconds=1.0, difficulty=0.5)


def _first_frame(path):
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), TINY, progress=False)


# ---------------------------------------------------------------- labels and splits


def test_classes_cover_three_families():
    assert len(DEMO_CLASSES) >= 15 and len(set(DEMO_CLASSES)) == len(DEMO_CLASSES)
    families = {f: [c for c in DEMO_CLASSES if CLASS_FAMILIES[c] == f]
                for f in ("appearance", "motion", "sound")}
    assert len(families["appearance"]) >= 6 and len(families["motion"]) >= 8
    assert len(families["sound"]) >= 5


def test_sixty_videos_hold_every_class_with_valid_label_sets():
    labels = [video_labels(i, seed=0) for i in range(60)]
    assert {c for ls in labels for c in ls} == set(DEMO_CLASSES)
    assert {len(ls) for ls in labels} == {1, 2, 3, 4}
    for ls in labels:
        for group in EXCLUSIVE_GROUPS:
            assert len(set(ls) & set(group)) <= 1, (ls, group)
        assert list(ls) == [c for c in DEMO_CLASSES if c in ls]  # class-id order
    for start in (0, 21):  # every run of C consecutive videos holds every class
        assert {c for ls in labels[start:start + 21] for c in ls} == set(DEMO_CLASSES)
    assert labels != [video_labels(i, seed=1) for i in range(60)]


@pytest.mark.parametrize("n, fractions, expected", [
    (20, (0.7, 0.15, 0.15), {"train": 14, "val": 3, "test": 3}),
    (4, (0.7, 0.15, 0.15), {"train": 2, "val": 1, "test": 1}),
    (5, (0.8, 0.2, 0.0), {"train": 4, "val": 1, "test": 0}),
    (1, (0.7, 0.15, 0.15), {"train": 1, "val": 0, "test": 0}),
])
def test_assign_splits_sizes(n, fractions, expected):
    splits = assign_splits(n, 0, fractions)
    assert {s: splits.count(s) for s in expected} == expected
    assert splits == assign_splits(n, 0, fractions)


def test_config_validation_and_round_trip():
    assert DemoConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    assert TINY.n_frames == 25
    for bad in ({"size": 63}, {"videos": 0}, {"difficulty": 1.5}, {"sample_rate": 10000},
                {"splits": (0.5, 0.2, 0.2)}, {"seconds": 0.2}, {"seed": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DemoConfig(**bad)
    with pytest.raises(ValueError, match="unknown keys"):
        DemoConfig.from_dict({"videos": 3, "colour": "red"})


# ---------------------------------------------------------------- files


def test_layout_csvs_and_mp4_streams(tiny_demo):
    root = tiny_demo.root
    assert (root / "classes.txt").read_text().split("\n")[:-1] == list(DEMO_CLASSES)
    rows = [line.split(",") for line in (root / "labels.csv").read_text().splitlines()]
    assert [r[0] for r in rows] == [f"videos/demo_{i:05d}.mp4" for i in range(3)]
    assert [tuple(r[1:]) for r in rows] == [video_labels(i, TINY.seed) for i in range(3)]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["classes.txt", "demo.json", "labels.csv", "videos.csv", "videos",
         *[f"{s}.csv" for s in tiny_demo.split_csvs]])
    meta = json.loads((root / "demo.json").read_text())
    assert meta["complete"] and meta["config"] == TINY.to_dict()
    vl = tiny_demo.video_list()
    assert vl.format == "table" and vl.classes == list(DEMO_CLASSES)
    assert vl.videos["labels"].map(tuple).tolist() == [tuple(r[1:]) for r in rows]
    assert vl.videos["split"].tolist() == assign_splits(3, TINY.seed, TINY.splits)
    for split in tiny_demo.split_csvs:
        assert set(tiny_demo.video_list(split).videos["split"]) == {split}
    with av.open(str(root / rows[0][0])) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (64, 64)
        assert video.average_rate == 25 and video.frames == 25
        assert sound.codec_context.name == "aac" and sound.sample_rate == TINY.sample_rate
        samples = np.concatenate([f.to_ndarray() for f in container.decode(sound)], axis=1)
        assert abs(samples.shape[1] / TINY.sample_rate - TINY.seconds) < 0.07


def test_same_seed_same_files_other_seed_differs(tiny_demo, tmp_path):
    again = make_demo(tmp_path / "again", TINY, progress=False)
    other = make_demo(tmp_path / "other", DemoConfig(**{**TINY.to_dict(), "seed": 6}),
                      progress=False)
    for name in ("labels.csv", "videos.csv", "classes.txt"):
        assert (again.root / name).read_text() == (tiny_demo.root / name).read_text()
    first = _first_frame(tiny_demo.root / "videos/demo_00000.mp4")
    assert np.array_equal(_first_frame(again.root / "videos/demo_00000.mp4"), first)
    assert not np.array_equal(_first_frame(other.root / "videos/demo_00000.mp4"), first)
    assert (other.root / "labels.csv").read_text() != (tiny_demo.root / "labels.csv").read_text()


def test_rerun_reuses_files_and_other_settings_are_refused(tiny_demo, monkeypatch, tmp_path):
    def no_writes(*args, **kwargs):
        raise AssertionError("a finished video was rewritten")

    monkeypatch.setattr(demo_module, "write_video", no_writes)
    assert make_demo(tiny_demo.root, TINY, progress=False) == tiny_demo
    with pytest.raises(DemoConfigMismatch, match=r"videos=3 \(asked 4\)"):
        make_demo(tiny_demo.root, DemoConfig(**{**TINY.to_dict(), "videos": 4}), progress=False)
    (tmp_path / "stuff.txt").write_text("not a demo")
    with pytest.raises(DemoError, match="holds no demo.json"):
        make_demo(tmp_path, TINY, progress=False)
    with pytest.raises(DemoError, match="holds no demo"):
        load_demo(tmp_path / "nothing")


def test_an_interrupted_demo_is_finished_by_a_rerun(tmp_path):
    config = DemoConfig(videos=2, seed=1, size=32, seconds=1.0)
    make_demo(tmp_path, config, progress=False)
    (tmp_path / "videos/demo_00001.mp4").unlink()
    meta = json.loads((tmp_path / "demo.json").read_text())
    (tmp_path / "demo.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(DemoError, match="unfinished"):
        load_demo(tmp_path)
    make_demo(tmp_path, config, progress=False)
    assert (tmp_path / "videos/demo_00001.mp4").exists() and load_demo(tmp_path).n_videos == 2


def test_cli_help_run_and_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "motion" in capsys.readouterr().out
    args = ["--out", str(tmp_path), "--videos", "2", "--size", "32", "--seconds", "1", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo: 2 videos") and out.count("\n") == 1
    assert main([*args[:3], "3", *args[4:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "videos=2 (asked 3)" in err and err.count("\n") == 1


# ---------------------------------------------------------------- modalities


def _render(labels, seed=0, difficulty=0.0, size=64, n_frames=25):
    return render_frames(set(labels), np.random.default_rng(seed), size=size,
                         n_frames=n_frames, fps=25.0, difficulty=difficulty)


def _carrier_mask(frames):
    """Pixels of the light-grey carrier (distractors at difficulty 0 are coloured)."""
    f = frames.astype(int)
    return (f.min(-1) > 150) & (f.max(-1) - f.min(-1) < 25)


def _circular_mean(mask, axis):
    size = mask.shape[axis + 1]
    weights = mask.sum(axis=2 - axis)  # (T, size) along the chosen image axis
    angles = 2 * np.pi * (np.arange(size) + 0.5) / size
    return np.angle((weights * np.exp(1j * angles)).sum(-1)) * size / (2 * np.pi)


@pytest.mark.parametrize("axis", list(MOTION_PAIRS))
def test_motion_pairs_are_exact_time_reversals(axis):
    forward, reverse = MOTION_PAIRS[axis]
    _, meta_f = _render([forward], seed=3)
    _, meta_r = _render([reverse], seed=3)
    key = {"x": "cx", "y": "cy", "angle": "angle", "scale": "scale", "visibility": "visible"}[axis]
    track_f, track_r = meta_f["carrier"][key], meta_r["carrier"][key]
    assert track_f[-1] > track_f[0] and track_r[-1] < track_r[0]
    if axis in ("scale", "visibility"):  # same values, played backwards
        np.testing.assert_allclose(track_r, track_f[::-1])
    else:  # same path backwards, from a start that is uniform anyway
        np.testing.assert_allclose(np.diff(track_r), -np.diff(track_f)[::-1], atol=1e-9)
    assert meta_f["directions"][axis] == "forward" and meta_r["directions"][axis] == "reverse"
    others = [a for a in MOTION_PAIRS if a != axis]
    assert all(meta_f["directions"][a] == "none" for a in others)


@pytest.mark.parametrize("label, sign", [("moves_right", 1), ("moves_left", -1)])
def test_horizontal_motion_is_visible_in_the_pixels(label, sign):
    frames, meta = _render([label], seed=1)
    mask = _carrier_mask(frames)
    x = _circular_mean(mask, axis=1)  # (T,)
    step = (np.diff(x) + 32) % 64 - 32  # wrapped displacement per frame
    assert np.all(np.sign(step) == sign)
    expected = np.diff(meta["carrier"]["cx"])
    np.testing.assert_allclose(step.mean(), expected.mean(), rtol=0.15)


def test_rises_falls_approaches_appears_in_the_pixels():
    y_rise = _circular_mean(_carrier_mask(_render(["rises"], seed=2)[0]), axis=0)
    assert np.all((np.diff(y_rise) + 32) % 64 - 32 < 0)  # image y decreases
    area = _carrier_mask(_render(["approaches"], seed=2)[0]).sum((1, 2))
    assert area[-1] > 3 * area[0]
    area = _carrier_mask(_render(["appears"], seed=2)[0]).sum((1, 2))
    assert area[0] == 0 and area[-1] > 10
    area = _carrier_mask(_render(["disappears"], seed=2)[0]).sum((1, 2))
    assert area[0] > 10 and area[-1] == 0


def test_rotation_direction_in_the_pixels():
    """The carrier bar's principal axis turns the way its angle does (clockwise = +)."""
    for label, sign in (("rotates_cw", 1), ("rotates_ccw", -1)):
        frames, meta = _render([label], seed=4, size=96)
        mask = _carrier_mask(frames)
        ys, xs = np.mgrid[0:96, 0:96]
        turns = []
        for t in range(len(mask) - 1):
            phis = []
            for m in (mask[t], mask[t + 1]):
                w = m / m.sum()
                mx, my = (w * xs).sum(), (w * ys).sum()
                mu20 = (w * (xs - mx) ** 2).sum()
                mu02 = (w * (ys - my) ** 2).sum()
                mu11 = (w * (xs - mx) * (ys - my)).sum()
                phis.append(0.5 * math.atan2(2 * mu11, mu20 - mu02))
            turns.append((phis[1] - phis[0] + np.pi / 2) % np.pi - np.pi / 2)
        assert np.sign(np.median(turns)) == sign
        assert np.sign(np.diff(meta["carrier"]["angle"])).tolist() == [sign] * (len(mask) - 1)


def test_appearance_objects_are_drawn_and_distractors_never_match_a_class():
    for seed in range(20):
        _, meta = _render(["red_circle", "checker_square"], seed=seed, difficulty=1.0)
        kinds = [o["kind"] for o in meta["objects"]]
        assert kinds.count("red_circle") == 1 and kinds.count("checker_square") == 1
        for o in meta["objects"]:
            if o["kind"] == "distractor":
                assert (o["shape"], o["fill"]) not in {("circle", "red"), ("square", "blue"),
                                                       ("triangle", "green"),
                                                       ("cross", "yellow"),
                                                       ("circle", "stripes"),
                                                       ("square", "checker")}
    frames, _ = _render(["red_circle"], seed=0)
    red = (frames[..., 0] > 180) & (frames[..., 1] < 90) & (frames[..., 2] < 90)
    assert red.sum((1, 2)).min() > 20  # on screen in every frame


def _rms(audio, sr, start, end):
    return float(np.sqrt(np.mean(audio[int(start * sr):int(end * sr)] ** 2)))


@pytest.mark.parametrize("label", SOUND_CLASSES)
def test_sound_events_have_energy_where_reported(label):
    sr = 16000
    audio, events = synthesize_audio({label}, np.random.default_rng(7), seconds=3.0,
                                     sample_rate=sr, difficulty=0.0)
    assert audio.shape == (3 * sr,) and audio.dtype == np.float32
    (event,) = events
    assert event["label"] == label
    window = sr // 50  # 20 ms loudness envelope
    envelope = np.sqrt(np.mean(audio[: len(audio) // window * window].reshape(-1, window) ** 2,
                               axis=1))
    starts, ends = np.arange(len(envelope)) / 50, np.arange(1, len(envelope) + 1) / 50
    inside = (starts >= event["start"]) & (ends <= event["end"])
    outside = (ends <= event["start"]) | (starts >= event["end"])
    assert envelope[inside].max() > 4 * envelope[outside].max()
    assert envelope[outside].max() < 0.02  # difficulty 0: a quiet background


def test_chirps_are_time_reversed_and_sweep_the_right_way():
    sr = 16000
    up, (ev_up,) = synthesize_audio({"chirp_up"}, np.random.default_rng(3), seconds=3.0,
                                    sample_rate=sr, difficulty=0.0)
    down, (ev_down,) = synthesize_audio({"chirp_down"}, np.random.default_rng(3), seconds=3.0,
                                        sample_rate=sr, difficulty=0.0)
    assert ev_up["end"] - ev_up["start"] == pytest.approx(ev_down["end"] - ev_down["start"])

    def crossings(audio, ev, half):
        a, b = int(ev["start"] * sr), int(ev["end"] * sr)
        mid = (a + b) // 2
        seg = audio[a:mid] if half == 0 else audio[mid:b]
        return np.count_nonzero(np.diff(np.sign(seg)))

    assert crossings(up, ev_up, 1) > 1.5 * crossings(up, ev_up, 0)
    assert crossings(down, ev_down, 0) > 1.5 * crossings(down, ev_down, 1)


def test_encoded_audio_keeps_the_event_and_silent_videos_have_background():
    config = DemoConfig(videos=40, seed=0, size=32, seconds=1.0, difficulty=0.2)
    index = next(i for i in range(40) if "tone" in video_labels(i, 0))
    video = render_demo_video(index, config)
    (event,) = [e for e in video.meta["sound_events"] if e["label"] == "tone"]
    assert 0 <= event["start"] < event["end"] <= config.seconds
    quiet_index = next(i for i in range(40)
                       if not set(video_labels(i, 0)) & set(SOUND_CLASSES))
    quiet = render_demo_video(quiet_index, config)
    assert quiet.meta["sound_events"] == []
    assert 0.005 < _rms(quiet.audio, 16000, 0, 1.0) < 0.05
