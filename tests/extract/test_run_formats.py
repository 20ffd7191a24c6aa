"""``extract.run --format``: mmaction2 and Kinetics lists of demo videos give the features of the
same videos read from the demo's own list; a Kinetics window of an untrimmed file gives the
features of the trimmed file, at the file's times; a list in the wrong format is one error line."""

import shutil

import numpy as np
import pytest

from extract.demo import DemoConfig, make_demo
from extract.dump.producers import RGBClips
from extract.dump.worker import DecodeTask, process_task
from extract.inputs import TRIM_COLUMNS
from extract.media.decode import DecodedVideo, decode_video
from extract.media.sampling import ClipSampling, ViewSpec, window_frames
from extract.media.video_writer import write_video
from extract.run import main
from store import FeatureStore

TINY = ["--backbone", "resnet_tiny@random", "--crop", "32", "--clips", "4", "--workers", "1"]
TINY += ["--threads", "1", "--batch-size", "8", "-q", "--no-verify"]
SET = "rgb_resnet_tiny"
N_VIDEOS = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=N_VIDEOS, size=48, seconds=1.0),
                     progress=False)


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    """Features by video file, from the demo's own list (a ``path,labels,split`` table)."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), *TINY]) == 0
    return _by_path(store)


def _by_path(store) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    fs = FeatureStore.open(store)
    data, valid = fs.feature_set(SET).read()
    times = fs.feature_set(SET).read_times()
    labels = fs.labels()
    return {p: (data[i], times[i], labels[i]) for i, p in enumerate(fs.videos()["path"])}


def test_an_mmaction_list_gives_the_features_of_the_same_videos(demo, reference, tmp_path, capsys):
    listed = demo.video_list()
    index = {name: i for i, name in enumerate(listed.classes)}
    lines = [f"{p}   {' '.join(str(index[x]) for x in labels)}"  # ids, odd spacing, CRLF
             for p, labels in zip(listed.videos["path"], listed.videos["labels"])]
    mm = tmp_path / "demo_train_list_videos.txt"
    mm.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    store = tmp_path / "mm.zarr"
    assert main(["--videos", str(mm), "--classes", str(demo.classes_path), "--store", str(store), *TINY]) == 0
    assert "extract: video list read as mmaction" in capsys.readouterr().out
    got = _by_path(store)
    assert sorted(got) == sorted(reference) and FeatureStore.open(store).classes == list(listed.classes)
    for path, (data, times, labels) in got.items():
        np.testing.assert_array_equal(data, reference[path][0])
        np.testing.assert_array_equal(times, reference[path][1])
        np.testing.assert_array_equal(labels, reference[path][2])


def test_a_kinetics_list_finds_the_downloaders_files(demo, reference, tmp_path, capsys):
    listed = demo.video_list()
    rows, sources = ["label,youtube_id,time_start,time_end,split"], {}
    for i, (path, labels) in enumerate(zip(listed.videos["path"], listed.videos["labels"])):
        label, yt = labels[0], f"video{i:06d}"  # Kinetics: one label a row
        dest = tmp_path / "kinetics" / "train" / label.replace(" ", "_") / f"{yt}_000010_000011.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        rows.append(f"{label},{yt},10,11,train")
        sources[str(dest)] = (path, label)
    csv = tmp_path / "kinetics" / "k400_train.csv"
    csv.write_text("\n".join(rows) + "\n")
    store = tmp_path / "k.zarr"
    argv = ["--videos", str(csv), "--store", str(store), "--format", "kinetics", *TINY]
    crawler = "{split}/{label_dir}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    assert main([*argv, "--kinetics-pattern", crawler]) == 0
    assert "extract: video list read as kinetics" in capsys.readouterr().out
    fs = FeatureStore.open(store)
    assert not set(TRIM_COLUMNS) & set(fs.videos().columns)  # trimmed files: no window
    got = _by_path(store)
    assert sorted(got) == sorted(sources)
    for dest, (data, times, labels) in got.items():
        source, label = sources[dest]
        np.testing.assert_array_equal(data, reference[source][0])
        np.testing.assert_array_equal(times, reference[source][1])  # a trimmed file: its own clock
        assert [fs.classes[j] for j in np.flatnonzero(labels)] == [label]


def test_a_kinetics_window_of_an_untrimmed_file_equals_the_trimmed_file(tmp_path):
    fps, n = 25.0, 60  # 2.4 s, lossless: the trimmed copy decodes to the very same frames
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)
    write_video(tmp_path / "full" / "untrimmedvid.mp4", frames, fps, lossless=True)
    start, end = 0.5, 1.5
    first, count = window_frames(start, end, fps, n)
    assert (first, count) == (13, 25)  # frames starting in [0.5, 1.5) s: 12.5 -> 13 .. 37.5 -> 37
    write_video(tmp_path / "cut" / "clip.mp4", frames[first:first + count], fps, lossless=True)
    np.testing.assert_array_equal(decode_video(tmp_path / "cut" / "clip.mp4", np.arange(count)).frames,
                                  frames[first:first + count])
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\r\nx,untrimmedvid,0.5,1.5,val\r\n")
    untrimmed, trimmed = tmp_path / "u.zarr", tmp_path / "t.zarr"
    assert main(["--videos", str(csv), "--store", str(untrimmed), "--kinetics-pattern", "full/{youtube_id}.mp4",
                 *TINY]) == 0
    (tmp_path / "cut.csv").write_text("cut/clip.mp4,x\n")
    assert main(["--videos", str(tmp_path / "cut.csv"), "--store", str(trimmed), "--format", "mit", *TINY]) == 0
    fs = FeatureStore.open(untrimmed)
    videos = fs.videos()
    assert videos[list(TRIM_COLUMNS)].to_numpy().tolist() == [[0.5, 1.5]]
    assert int(videos["n_frames"][0]) == n  # the table keeps the file's own length
    (u, u_valid), (t, t_valid) = fs.feature_set(SET).read(), FeatureStore.open(trimmed).feature_set(SET).read()
    np.testing.assert_array_equal(u, t)
    assert u_valid.all() and t_valid.all()
    # TSN, 4 segments of 1 frame in the window's 25 frames: 3, 9, 15, 21, i.e. file frames 16, 22, 28, 34
    starts = np.array([16, 22, 28, 34])
    np.testing.assert_allclose(fs.feature_set(SET).read_times()[0], np.stack([starts / fps, (starts + 1) / fps], 1),
                               rtol=1e-6)
    np.testing.assert_allclose(fs.feature_set(SET).read_times()[0] - first / fps,
                               FeatureStore.open(trimmed).feature_set(SET).read_times()[0], atol=1e-6)
    # whole files may join a store with windows: their window is NaN, the whole file
    assert main(["--videos", str(tmp_path / "cut.csv"), "--store", str(untrimmed), *TINY]) == 0
    fs = FeatureStore.open(untrimmed)
    assert np.isnan(fs.videos()[list(TRIM_COLUMNS)].to_numpy()[1]).all()
    np.testing.assert_array_equal(fs.feature_set(SET).read()[0][1], t[0])
    np.testing.assert_array_equal(fs.feature_set(SET).read_times()[1],
                                  FeatureStore.open(trimmed).feature_set(SET).read_times()[0])


def test_a_window_past_the_end_is_a_row_error_not_a_stop(tmp_path):
    write_video(tmp_path / "v" / "shortvideo1.mp4", np.zeros((10, 32, 32, 3), np.uint8), 25.0, lossless=True)
    write_video(tmp_path / "v" / "shortvideo2.mp4", np.zeros((10, 32, 32, 3), np.uint8), 25.0, lossless=True)
    csv = tmp_path / "k.csv"
    csv.write_text("youtube_id,time_start,time_end\nshortvideo1,5,6\nshortvideo2,0,6\n")
    store = tmp_path / "s.zarr"
    assert main(["--videos", str(csv), "--store", str(store), "--kinetics-pattern", "v/{youtube_id}.mp4", *TINY]) == 0
    fset = FeatureStore.open(store).feature_set(SET)
    errors = fset.errors()
    assert errors[0].startswith("trim window outside the video: ")
    assert "starts past the video's end (0.40 s)" in errors[0]
    assert list(errors) == [0] and fset.done().tolist() == [False, True]
    _, valid = fset.read()
    assert valid[1].sum() == 4  # [0, 6) s of a 0.4 s file: its 10 frames, 4 TSN clips


def test_a_list_in_the_wrong_format_is_one_error_line(demo, tmp_path, capsys):
    store = tmp_path / "never.zarr"
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), "--format", "kinetics", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {demo.videos_csv}:1: not in the kinetics format")
    assert not store.exists()
    bad_ids = tmp_path / "ids.txt"
    bad_ids.write_text(f"{demo.video_list().videos['path'][0]} 0 99\n")
    assert main(["--videos", str(bad_ids), "--classes", str(demo.classes_path), "--store", str(store), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad_ids}:1: label id 99 outside")
    assert not store.exists()


# ------------------------------------------------------------------ the window helpers


@pytest.mark.parametrize("start, end, fps, n, expected", [
    (0.5, 1.5, 25.0, 60, (13, 25)),  # frames starting at 0.52 .. 1.48 s
    (0.1, 0.2, 30.0, 100, (3, 3)),  # 0.1 x 30 = 3.0000000000000004: frame 3 starts at the window's start
    (0.0, 100.0, 25.0, 60, (0, 60)),  # past the end: clamped
    (3.0, 4.0, 25.0, 60, (60, 0)),  # wholly past the end: empty
])
def test_window_frames(start, end, fps, n, expected):
    assert window_frames(start, end, fps, n) == expected


def test_a_trimmed_decoded_video_is_the_window_as_a_whole_file():
    rate, fps = 16000, 10.0
    frames = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # frame k: value k
    audio = np.arange(2 * rate, dtype=np.float32)
    video = DecodedVideo(frames, np.arange(3, 9), fps, 20, 2.0, True, audio, rate, False, 9)
    cut = video.trimmed(4, 3)  # frames 4, 5, 6 of the file
    np.testing.assert_array_equal(cut.frame_numbers, [0, 1, 2])
    np.testing.assert_array_equal(cut.take(np.array([0, 2]))[:, 0, 0, 0], [1, 3])  # file frames 4, 6
    assert cut.n_frames == 3 and cut.duration == pytest.approx(0.3)
    np.testing.assert_array_equal(cut.audio, audio[6400:11200])  # 0.4 s .. 0.7 s
    assert video.trimmed(18, 5).n_frames == 2  # the file ends first


def test_windows_cannot_join_a_store_of_whole_files(tmp_path, capsys):
    write_video(tmp_path / "v" / "wholevideo1.mp4", np.zeros((10, 32, 32, 3), np.uint8), 25.0, lossless=True)
    (tmp_path / "whole.csv").write_text("v/wholevideo1.mp4,x\n")
    store = tmp_path / "s.zarr"
    assert main(["--videos", str(tmp_path / "whole.csv"), "--store", str(store), *TINY]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end\nx,wholevideo1,0,0.2\n")
    argv = ["--videos", str(csv), "--store", str(store), "--kinetics-pattern", "v/{youtube_id}.mp4", *TINY]
    assert main([*argv, "--set", "other"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {store} was made from whole files")
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # not even the new set


def test_a_stream_ending_before_the_window_is_the_rows_error(tmp_path):
    """The header (here: the store's n_frames) may promise more frames than the stream has."""
    path = write_video(tmp_path / "short.mp4", np.zeros((10, 32, 32, 3), np.uint8), 25.0, lossless=True)
    maker = RGBClips(ClipSampling(mode="tsn", num_clips=2, frames_per_clip=1), ViewSpec(short_side=32, crop=32))
    task = DecodeTask(0, str(path), n_frames=100, fps=25.0, makers=(0,), window=(2.0, 3.0))
    res = process_task(task, [maker], timeout_s=30)
    assert res.reason == "trim window outside the video" and not res.inputs
    assert "the stream ends at frame 10, before the window [2, 3) s" in res.error
    inside = process_task(DecodeTask(0, str(path), 10, 25.0, (0,), window=(0.2, 0.4)), [maker], timeout_s=30)
    assert inside.error is None  # frames 5..9: TSN starts 1 and 3 -> file frames 6 and 8
    np.testing.assert_allclose(inside.inputs[0].times, [[6 / 25, 7 / 25], [8 / 25, 9 / 25]], rtol=1e-6)


def test_extract_train_reads_the_formats_and_refuses_windows(tmp_path, capsys):
    from extract.train import main as train_main

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "aaaaaaaaaaa.mp4").write_bytes(b"")
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nx,aaaaaaaaaaa,0,10,train\n")
    argv = ["--videos", str(csv), "--backbone", "resnet_tiny@random", "--out", str(tmp_path / "run"), "-q"]
    assert train_main([*argv, "--kinetics-pattern", "full/{youtube_id}.mp4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"error: {csv}: extract.train takes whole files, not windows of untrimmed "
                                        "videos; pass a --kinetics-pattern naming the trimmed files, or cut them "
                                        "with ffmpeg")
    assert train_main([*argv, "--format", "mmaction"]) == 2  # the format reaches the reader
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {csv}:1: not in the mmaction format")
    assert not (tmp_path / "run").exists()
