"""Failed rows through the public commands: ``store.info --errors`` lists a corrupt video with its
reason, ``--errors-csv`` writes a list file that ``extract.run --retry-errors`` reads back, and the
retried row is filled in place (same row, no appended video) once the file is repaired."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store import FeatureStore

REPO = Path(__file__).resolve().parents[2]
TINY = ["--backbone", "resnet_tiny@random", "--crop", "32", "--clips", "2", "--workers", "0",
        "--threads", "1", "--chunk-rows", "4", "-q"]
SET = "rgb_resnet_tiny"


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    demo = tmp_path_factory.mktemp("demo")
    r = _cli("extract.demo", "--out", str(demo), "--videos", "3", "--size", "48", "--seconds", "1",
             "--quiet", cwd=demo)
    assert r.returncode == 0, r.stderr
    return demo


@pytest.fixture
def broken(demo, tmp_path):
    """A store of 2 videos in ``tmp_path``: ``videos/bad.mp4`` was truncated before extraction."""
    d = tmp_path
    good = sorted((demo / "videos").glob("*.mp4"))[0]
    (d / "videos").mkdir()
    shutil.copy(good, d / "videos" / "ok.mp4")
    (d / "videos" / "bad.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # no moov index
    classes = (demo / "classes.txt").read_text().split()
    (d / "videos" / "list.csv").write_text(f"ok.mp4,{classes[0]}\nbad.mp4,{classes[1]},{classes[2]}\n")
    shutil.copy(demo / "classes.txt", d / "videos" / "classes.txt")
    r = _cli("extract.run", "--videos", "videos/list.csv", "--store", "s.zarr", *TINY, cwd=d)
    assert r.returncode == 0, r.stderr
    return d, good, classes


def test_errors_lists_failed_rows_with_their_reason(broken):
    d, _, _ = broken
    r = _cli("store.info", "s.zarr", "--errors", cwd=d)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    fset, vid, path, reason = lines[0].split("\t")
    assert (fset, vid, path) == (SET, "bad", str(d / "videos" / "bad.mp4"))
    assert reason.startswith("corrupt or unreadable video")
    assert "1 failed row(s)" in r.stderr
    r = _cli("store.info", "s.zarr", "--errors", "--features", "nope", cwd=d)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert "nope" in r.stderr


def test_errors_csv_round_trips_into_extract_run(broken):
    work, good, classes = broken
    r = _cli("store.info", "s.zarr", "--errors-csv", "retry/failed.csv", cwd=work)
    assert r.returncode == 2 and "retry/failed.csv" in r.stderr  # no such folder: one line
    (work / "retry").mkdir()
    r = _cli("store.info", "s.zarr", "--errors-csv", "retry/failed.csv", "--features", SET, cwd=work)
    assert r.returncode == 0, r.stderr
    text = (work / "retry" / "failed.csv").read_text().splitlines()
    bad = str(work / "videos" / "bad.mp4")
    assert text == ["path,id,split,labels", f"{bad},bad,unsplit,{classes[1]};{classes[2]}"]
    # Without --retry-errors a rerun skips the failed row; with it, the repaired file is extracted.
    shutil.copy(good, work / "videos" / "bad.mp4")
    r = _cli("extract.run", "--videos", "retry/failed.csv", "--store", "s.zarr", *TINY, cwd=work)
    assert r.returncode == 0, r.stderr
    assert not FeatureStore.open(work / "s.zarr").feature_set(SET).done().all()
    r = _cli("extract.run", "--videos", "retry/failed.csv", "--store", "s.zarr", "--retry-errors",
             *TINY, cwd=work)
    assert r.returncode == 0, r.stderr
    fs = FeatureStore.open(work / "s.zarr")
    assert fs.n_videos == 2 and list(fs.video_ids()) == ["ok", "bad"]  # retried in place
    fset = fs.feature_set(SET)
    assert fset.done().all() and fset.errors() == {}
    r = _cli("store.info", "s.zarr", "--errors", cwd=work)
    assert r.returncode == 0 and r.stdout == "" and "0 failed row(s)" in r.stderr
    assert _cli("store.verify", "s.zarr", cwd=work).returncode == 0
