"""The plain-zarr reading example of store/README.md runs against a real store and reads what the API reads."""

import re
import runpy
from pathlib import Path

import numpy as np

from store.testing import make_synthetic_store

README = Path(__file__).resolve().parents[2] / "store" / "README.md"


def _example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- plain-zarr-example -->\n```python\n(.*?)```", text, re.S)
    assert m, "store/README.md lost its plain-zarr example block"
    return m.group(1)


def test_plain_zarr_example_runs_and_agrees_with_the_api(tmp_path):
    code = _example()
    assert "store" not in re.findall(r"^\s*(?:import|from)\s+(\w+)", code, re.M)  # no project code
    assert '"demo.zarr"' in code and '"features/rgb_r18"' in code
    fs = make_synthetic_store(tmp_path / "s.zarr", n_videos=70, n_classes=5, clips=4, dim=8, chunk_rows=16,
                              feature_set="rgb_r18", short_fraction=0.3)
    fset = fs.feature_set("rgb_r18")
    with fset.writer() as w:  # a row that is not done must read as no clips
        w.write_errors([5], ["corrupt"])
    script = tmp_path / "example.py"
    script.write_text(code.replace('"demo.zarr"', repr(str(fs.path))))
    got = runpy.run_path(str(script))

    data, valid = fset.read()  # (N, K, D) float32, (N, K)
    assert not valid[5].any() and valid.sum(1).min() == 0
    np.testing.assert_array_equal(got["valid"], valid)
    np.testing.assert_array_equal(got["labels"], fs.labels())
    assert list(got["ids"]) == list(fs.video_ids()) and got["classes"] == fs.classes
    np.testing.assert_array_equal(got["times"], fset.read_times())
    want = (data * valid[..., None]).sum(1) / np.maximum(valid.sum(1), 1)[:, None]  # numpy, in memory
    np.testing.assert_allclose(got["mean"], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["first"], data[0, valid[0]].astype(np.float16))
    assert got["spec"]["clips"] == 4 and got["spec"]["dim"] == 8
    train = fs.split_rows("train")
    assert got["train_labels"][0] == [fs.classes[c] for c in np.flatnonzero(fs.labels()[train[0]])]
