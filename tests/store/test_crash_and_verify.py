"""Crash safety: SIGKILLed writers, interrupted appends, damaged chunks, live readers."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore
from store.verify import main as verify_main
from store.verify import verify_store

N, K, D, CHUNK = 400, 4, 64, 16

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from store import FeatureStore
    fs = FeatureStore.open(sys.argv[1], "a")
    fset = fs.feature_set("f")
    with fset.writer() as w:
        for r in fset.pending():
            if r == {hold}:  # wait, lock held, until the test closes stdin (or kills us)
                print("holding", flush=True)
                sys.stdin.read()
            if r == {fail}:
                w.write_errors([r], ["corrupt video"])
                continue
            row = np.full((1, {K}, {D}), 0.0, np.float32) + (r % 997) / 64.0
            w.write_rows([r], row, valid=np.ones((1, {K}), bool))
            if r == {ready}:
                print("ready", flush=True)
    print("finished")
""")


def _expected(rows):
    return np.broadcast_to(((np.asarray(rows) % 997) / 64.0).astype(np.float16).astype(np.float32)[:, None, None],
                           (len(rows), K, D))


def _make(tmp_path: Path) -> FeatureStore:
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=["a", "b"])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(N)], "path": "x", "split": "train"}),
                     np.eye(2, dtype=np.uint8)[np.arange(N) % 2])
    fs.create_feature_set("f", FeatureSetSpec(clips=K, dim=D, chunk_rows=CHUNK))
    return fs


def _writer(path: Path, fail: int = -10, ready: int = -1, hold: int = -1) -> subprocess.Popen:
    """A writer process over the pending rows: row ``fail`` gets an error; after writing row ``ready`` it
    prints "ready"; before row ``hold`` it prints "holding" and waits until its stdin is closed. The
    tests synchronise on those lines, never on the clock."""
    code = WRITER.format(K=K, D=D, fail=fail, ready=ready, hold=hold)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_write_then_rerun_completes_and_verifies(tmp_path):
    fs = _make(tmp_path)
    proc = _writer(fs.path, fail=50, ready=100, hold=300)  # killed while writing rows 101-299, or held
    fset = fs.feature_set("f")
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = int(fset.done().sum())
    assert 100 <= done_at_kill < 300, "the writer should have been killed mid-run"
    # Everything marked done is correct even right after the kill.
    rows = np.flatnonzero(fset.done())
    np.testing.assert_array_equal(fset.read(rows)[0], _expected(rows))
    proc = _writer(fs.path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    fs = FeatureStore.open(fs.path)
    fset = fs.feature_set("f")
    assert fset.errors() == {50: "corrupt video"}
    assert fset.done().sum() == N - 1 and list(fset.pending()) == []
    rows = np.flatnonzero(fset.done())
    np.testing.assert_array_equal(fset.read(rows)[0], _expected(rows))
    rep = verify_store(fs.path)
    assert rep.ok, rep.problems


def test_lock_of_a_killed_writer_does_not_block_the_next(tmp_path):
    fs = _make(tmp_path)
    proc = _writer(fs.path, hold=5)
    fset = fs.feature_set("f")
    assert proc.stdout.readline() == "holding\n", proc.stderr.read()  # it holds the lock now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with fset.writer() as w:  # no StoreLocked: flock died with the process
        w.write_rows([0], _expected([0]))


def test_leftover_partial_files_are_reported_and_cleaned_by_the_next_writer(tmp_path):
    fs = _make(tmp_path)
    fset = fs.feature_set("f")
    with fset.writer() as w:
        w.write_rows(np.arange(CHUNK), _expected(np.arange(CHUNK)))
    stray = fset.path / "data" / "c" / "1" / "0" / "0.deadbeef.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a chunk")
    rep = verify_store(fs.path)
    assert not rep.ok and "partial chunk" in rep.problems[0]
    with fset.writer():
        pass
    assert not stray.exists() and verify_store(fs.path).ok


def test_interrupted_append_is_trimmed_on_next_open(tmp_path):
    fs = _make(tmp_path)
    # Simulate a crash after the arrays grew but before n_videos was committed.
    for _, arr in fs.root["videos"].arrays():
        arr.resize((N + 7,))
    fs.root["labels"].resize((N + 7, 2))
    fs.feature_set("f").arrays["data"].resize((N + 7, K, D))
    assert verify_store(fs.path).ok  # uncommitted tail rows are invisible
    fs = FeatureStore.open(fs.path, "a")
    assert fs.root["labels"].shape[0] == N and fs.feature_set("f").arrays["data"].shape[0] == N
    fs.append_videos(pd.DataFrame({"id": ["new"], "path": "y"}), None)
    assert fs.n_videos == N + 1 and verify_store(fs.path).ok


@pytest.mark.parametrize("damage", ["delete", "truncate"])
@pytest.mark.parametrize("compressor", ["none", "lz4"])
def test_verify_detects_deleted_and_truncated_chunks(tmp_path, damage, compressor, capsys):
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=["a"])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(40)], "path": "x"}), None)
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=2, dim=8, chunk_rows=16, compressor=compressor))
    with fset.writer() as w:
        w.write_rows(np.arange(40), np.random.default_rng(0).random((40, 2, 8)))
    assert verify_main([str(fs.path)]) == 0
    chunk = fset.path / "data" / "c" / "1" / "0" / "0"
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    rep = verify_store(fs.path)
    assert not rep.ok
    assert any("chunk 1" in p for p in rep.problems), rep.problems
    assert verify_main([str(fs.path)]) == 1
    assert "problem" in capsys.readouterr().out


def test_verify_of_a_missing_store_exits_2(tmp_path, capsys):
    assert verify_main([str(tmp_path / "none.zarr")]) == 2
    assert "no feature store" in capsys.readouterr().err


def test_reader_beside_a_writer_never_sees_unfinished_rows(tmp_path):
    fs = _make(tmp_path)
    proc = _writer(fs.path, hold=N // 2)  # it waits half-way until the reader has seen that much
    reader = FeatureStore.open(fs.path, "r").feature_set("f")
    seen = 0
    try:
        while proc.poll() is None:
            data, valid = reader.read()
            ok = valid.any(axis=1)
            rows = np.flatnonzero(ok)
            np.testing.assert_array_equal(data[ok], _expected(rows))
            assert (data[~ok] == 0).all()
            seen = max(seen, len(rows))
            if seen >= N // 2 and not proc.stdin.closed:
                proc.stdin.close()  # go on writing while we keep reading
    finally:
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.wait()
    assert proc.returncode == 0
    assert seen >= N // 2


def test_verify_finds_damage_in_late_chunks(tmp_path):
    """verify walks every block: a bad label, a repeated id and a NaN score in the last rows are found."""
    from store.feature_store import LABEL_CHUNK, VIDEO_CHUNK

    n = VIDEO_CHUNK + 10  # past the first videos/id block and several label blocks
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=["a", "b"])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(n)], "path": "x"}),
                     np.eye(2, dtype=np.uint8)[np.arange(n) % 2])
    scores = np.zeros((n, 2), np.float32)
    fs.write_predictions("run", scores)
    assert verify_store(fs.path).ok
    fs.root["labels"][n - 1, 0] = 2
    assert n - 1 >= 4 * LABEL_CHUNK
    fs.root["videos"]["id"][n - 1] = "v3"
    fs.root["predictions/run/scores"][n - 1, 1] = np.nan
    problems = " | ".join(verify_store(fs.path).problems)
    assert "labels hold values other than 0 and 1" in problems
    assert "video ids are not unique" in problems
    assert "predictions/run/scores holds NaN or inf" in problems
