"""README.md's "From videos to predictions" block runs as written (shrunk to seconds).

The block is found by its heading, not by line numbers; each command keeps its structure
(module, flags, order, files it names) and only the substitutions below apply, so an
unknown flag, a missing file or a wrong order in the README fails this test.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADING = "## From videos to predictions"

# Text substitutions over the whole block: tiny backbones for the real ones (their feature
# set names follow: rgb_r2plus1d_18 -> rgb_r2plus1d_tiny, ...), random init for named pretrained
# weights (tests never reach a hub; the tiny nets have none), and fewer sweep epochs.
SUBSTITUTE = {
    "r2plus1d_18@kinetics400": "r2plus1d_tiny@random",
    "resnet18@imagenet1k": "resnet_tiny@random",
    "r2plus1d_18": "r2plus1d_tiny",
    "resnet18": "resnet_tiny",
    "vggish": "vggish_tiny",
    "epochs = 10": "epochs = 1",
}
# Flags appended to a command of that module: a tiny demo set, one epoch, few boosting rounds.
APPEND = {
    "extract.demo": "--videos 30 --size 48 --seconds 1 --quiet",
    "extract.train": "--epochs 1",
    "heads.train": "--epochs 1 --quiet",
    "heads.sweep": "--quiet",
    "fusion.run": "--rounds 5",
}
# Commands that need a cluster (`--scheduler tcp://...`) would be dropped here; the block has none.


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md lost its {HEADING!r} section"
    match = re.search(r"```bash\n(.*?)```", text[text.index(HEADING):], re.S)
    assert match, f"no ```bash block after {HEADING!r}"
    return match.group(1)


def shrink(block: str) -> str:
    """The block with the substitutions applied and ``python`` bound to this interpreter."""
    for old, new in SUBSTITUTE.items():
        block = block.replace(old, new)
    block = block.replace("\\\n", " ")  # continuation lines -> one line per command
    lines = []
    for line in block.splitlines():
        segments = []
        for seg in line.split(" && "):
            cmd = re.match(r"\s*python -m ([\w.]+)", seg)
            if cmd:
                seg = re.sub(r"\s+#.*$", "", seg)  # a trailing comment
                seg = f"{seg} {APPEND.get(cmd.group(1), '')}".rstrip()
                seg = seg.replace("python -m", f"{sys.executable} -m", 1)
            segments.append(seg)
        lines.append(" && ".join(segments))
    return "\n".join(lines) + "\n"


def test_shrink_keeps_every_command_and_flag():
    block, script = readme_block(), shrink(readme_block())
    modules = re.findall(r"python -m ([\w.]+)", block)
    assert re.findall(r" -m ([\w.]+)", script) == modules
    assert {"extract.demo", "extract.run", "store.split", "heads.train", "fusion.run"} <= set(modules)
    code = re.sub(r"(^|\s)#.*", "", block)  # the flags outside comments
    for flag in re.findall(r"\s(--[\w-]+)", code):
        assert flag in script


def test_readme_workflow_runs_as_written(tmp_path):
    script = tmp_path / "readme.sh"
    script.write_text("set -euxo pipefail\n" + shrink(readme_block()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    from store import FeatureStore
    fs = FeatureStore.open(tmp_path / "my.zarr")
    assert set(fs.feature_sets()) == {"rgb_r2plus1d_tiny", "flow_resnet_tiny", "audio_vggish_tiny", "rgb_again"}
    runs = set(fs.prediction_runs())
    assert {"rgb_nextvlad", "flow_nextvlad", "audio_nextvlad", "fused_xgboost"} <= runs
    assert (tmp_path / "fusion_report").is_dir()


def test_other_blocks_name_real_commands_flags_and_files():
    """The blocks too long to run here (bin/demo, bin/test, benchmarks.run): each script exists
    and is executable, and each flag and choice a command uses is one its --help lists."""
    text = (REPO / "README.md").read_text()
    others = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if b != readme_block()]
    assert others
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    helps: dict[str, str] = {}
    for block in others:
        for line in re.sub(r"(^|\s)#.*", "", block).splitlines():
            words = line.split()
            if not words:
                continue
            if words[0].startswith("bin/"):
                assert os.access(REPO / words[0], os.X_OK), words[0]
                continue
            assert words[:2] == ["python", "-m"], line
            if words[2] not in helps:
                helps[words[2]] = subprocess.run([sys.executable, "-m", words[2], "--help"], cwd=REPO, env=env,
                                                 capture_output=True, text=True, timeout=120, check=True).stdout
            for word in words[3:]:
                assert word in helps[words[2]], f"{line!r}: {word!r} is not in {words[2]} --help"
