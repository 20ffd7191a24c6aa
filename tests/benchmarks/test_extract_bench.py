"""The extract benchmark's baseline and memory watch: the plain per-video script as a child
process (``python -m benchmarks.plain_extract``) with its peak memory sampled."""

import sys

import numpy as np
import pytest

from benchmarks.extract_bench import _watched
from extract.demo import DemoConfig, make_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=3, size=48, seconds=1.0), progress=False)


def test_plain_script_in_a_watched_child(demo, tmp_path):
    out = tmp_path / "plain"
    line, peak_gb = _watched([sys.executable, "-m", "benchmarks.plain_extract", str(demo.videos_csv), str(out),
                              "--backbone", "resnet_tiny", "--crop", "32", "--clips", "4", "--threads", "1"])
    assert line["clips"] == 3 * 4 and line["threads"] == 1 and line["seconds"] > 0
    files = sorted(out.glob("*.npy"))
    assert len(files) == 3
    feats = np.load(files[0])
    assert feats.shape[0] == 4 and feats.dtype == np.float16 and np.isfinite(feats).all()
    assert 0.05 < peak_gb < 8  # the interpreter with torch, sampled while it ran


def test_a_failing_child_raises_with_its_error(tmp_path):
    with pytest.raises(RuntimeError, match="no such file"):
        _watched([sys.executable, "-c", "import sys; sys.exit('no such file here')"])
