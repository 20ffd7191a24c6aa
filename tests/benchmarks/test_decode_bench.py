"""The decode benchmark on two tiny demo sets: PyAV alone where torchcodec cannot be imported, both
decoders with their ratio and frame differences where it can."""

import argparse
import sys

import pytest

import benchmarks.decode_bench as bench
from extract.errors import ExtractError
from extract.media.torchcodec_decode import require_torchcodec


@pytest.fixture
def args(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "LONG_VIDEOS", 1)
    monkeypatch.setattr(bench, "LONG_SECONDS", 1.0)
    monkeypatch.setattr(bench, "REPEATS", 1)
    return argparse.Namespace(size=2, workdir=tmp_path)


def test_without_torchcodec_pyav_alone_and_one_line(args, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    metrics = bench.run_decode(args)
    out = capsys.readouterr().out
    assert out.count("torchcodec is not available") == 1 and "pip install 'videofeat[decoders]'" in out
    assert set(metrics) == {f"decode_pyav_{p}_frames_per_s" for p in bench.PATTERNS} | {
        "decode_pyav_audio_tracks_per_s"}
    assert all(v > 0 for v in metrics.values())


def test_both_decoders_with_their_ratio(args, capsys):
    pytest.importorskip("torchcodec", reason="torchcodec is not installed")
    try:
        require_torchcodec()
    except ExtractError as err:
        pytest.skip(str(err))
    m = bench.run_decode(args)
    for p in bench.PATTERNS:
        assert m[f"decode_torchcodec_vs_pyav_{p}"] == pytest.approx(
            m[f"decode_torchcodec_{p}_frames_per_s"] / m[f"decode_pyav_{p}_frames_per_s"])
    assert m["decode_native_max_abs_diff"] == 0 and 0 < m["decode_resized_mean_abs_diff"] < 3
    assert "torchcodec / pyav" in capsys.readouterr().out
