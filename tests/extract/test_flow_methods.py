"""TV-L1 presets and parameters, RAFT (random weights in a temporary TORCH_HOME), ``--flow paper``.

RAFT's flow is checked against torchvision's model called directly, pair by pair, on inputs
padded by hand; its network images against the same clip-and-scale as every other method.
"""

import dataclasses
import urllib.error

import numpy as np
import pytest
import torch
from torchvision.models.optical_flow import raft_small

import extract.media.flow as flow_mod
from extract.backbones import file_sha256
from extract.demo import DemoConfig, make_demo
from extract.dump.settings import ExtractSettings
from extract.media import raft as raft_mod
from extract.media.decode import decode_video
from extract.media.flow import (
    TVL1_PRESETS,
    FlowSettings,
    clip_flow_stack,
    compute_flow,
    flow_backend,
    flow_to_input,
    paper_flow,
)
from extract.media.raft import RaftWeightsMissing, load_raft, raft_checkpoint
from extract.run import main
from store import FeatureStore
from store.device import DeviceUnavailable
from store.errors import SettingsError
from tests.extract.test_flow import interior_mean, moving_texture


def test_fast_preset_fills_what_is_not_given():
    fast = FlowSettings(algorithm="tvl1", preset="fast")
    assert (fast.tvl1_nscales, fast.tvl1_warps, fast.tvl1_inner_iterations, fast.tvl1_outer_iterations) == (3, 2, 10, 2)
    assert fast.tvl1_tau == 0.25 and fast.tvl1_scale_step == 0.8  # the default's, not in the preset
    assert FlowSettings(algorithm="tvl1", preset="fast", tvl1_warps=4).tvl1_warps == 4
    assert FlowSettings().to_dict() | {"preset": "default"} == {
        **FlowSettings().to_dict(), **TVL1_PRESETS["default"]}
    assert FlowSettings.from_dict(fast.to_dict()) == fast
    old = {k: v for k, v in FlowSettings().to_dict().items() if k != "preset"}  # attrs written before presets
    assert FlowSettings.from_dict(old) == FlowSettings()
    with pytest.raises(ValueError, match="is for tvl1"):
        FlowSettings(preset="fast")
    with pytest.raises(ValueError, match="tvl1_scale_step"):
        FlowSettings(algorithm="tvl1", tvl1_scale_step=1.5)


def test_fast_preset_still_recovers_a_translation():
    flow = compute_flow(moving_texture(2, 64, 2, -1), FlowSettings(algorithm="tvl1", preset="fast"))
    mean = interior_mean(flow)
    assert np.abs(mean - [2, -1]).max() < 0.5, mean


def test_tvl1_parameters_reach_opencv(monkeypatch):
    made = {}
    real = flow_mod.cv2.optflow.DualTVL1OpticalFlow_create

    def spy(*args):
        made["args"] = args
        return real(*args)

    monkeypatch.setattr(flow_mod.cv2.optflow, "DualTVL1OpticalFlow_create", spy)
    s = FlowSettings(algorithm="tvl1", preset="fast", tvl1_tau=0.2, tvl1_lambda=0.1, tvl1_theta=0.4)
    compute_flow(moving_texture(2, 32, 1, 0), s)
    # create(tau, lambda, theta, nscales, warps, epsilon, innerIterations, outerIterations, scaleStep)
    assert made["args"] == (0.2, 0.1, 0.4, 3, 2, 0.01, 10, 2, 0.8)


@pytest.fixture
def raft_home(tmp_path, monkeypatch):
    """A TORCH_HOME whose hub cache holds a seeded random raft_small state dict; returns it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _, path = raft_checkpoint("raft_small")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = raft_small(weights=None).state_dict()
    torch.save(state, path)
    load_raft.cache_clear()
    yield state
    load_raft.cache_clear()


def _reference_raft(state, frames, pairs):
    """torchvision's raft_small on each pair alone; inputs padded to 128 by hand (edge replicate)."""
    model = raft_small(weights=None)
    model.load_state_dict(state)
    model.eval()
    h, w = frames.shape[1:3]
    x = np.pad(frames.astype(np.float32) / 127.5 - 1.0, ((0, 0), (0, 128 - h), (0, 128 - w), (0, 0)), mode="edge")
    x = torch.from_numpy(x).permute(0, 3, 1, 2)  # (M, 128, 128, 3) -> (M, 3, 128, 128)
    out = []
    with torch.no_grad():
        for a, b in pairs:
            f = model(x[a : a + 1], x[b : b + 1])[-1]  # (1, 2, 128, 128)
            out.append(f[0, :, :h, :w].permute(1, 2, 0).numpy())  # -> (h, w, 2)
    return np.stack(out)


def test_raft_batched_equals_torchvision_pair_by_pair(raft_home):
    frames = moving_texture(4, 40, 1, 2)  # (4, 40, 40, 3)
    flow = compute_flow(frames, FlowSettings(algorithm="raft_small"), device="cpu")  # 3 pairs, one batch
    ref = _reference_raft(raft_home, frames, [(0, 1), (1, 2), (2, 3)])
    assert flow.shape == (3, 40, 40, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow, ref, rtol=1e-3, atol=1e-3)
    small = raft_mod.raft_pair_flows(frames, np.array([[0, 1], [2, 2], [1, 2]]), "raft_small", batch=1)
    np.testing.assert_allclose(small[[0, 2]], ref[:2], rtol=1e-3, atol=1e-3)
    assert not small[1].any()  # a frame with itself: zero flow, not computed


def test_raft_network_images_are_clipped_and_scaled_like_the_others(raft_home, tmp_path):
    demo = make_demo(tmp_path / "demo", DemoConfig(videos=1, size=48, seconds=1.0), progress=False)
    path = demo.video_list().videos["path"].iloc[0]
    idx = np.array([[3], [10]])
    decoded = decode_video(path, np.array([3, 4, 10, 11]))
    s = FlowSettings(algorithm="raft_small", bound=0.5, size=40)
    stack = clip_flow_stack(decoded, idx, s, n_frames=25, device="cpu")  # (2, 2, 1, 40, 40)
    raw = np.stack([compute_flow(decoded.take(np.array([a, a + 1])), s, device="cpu") for a in (3, 10)])
    np.testing.assert_allclose(stack, flow_to_input(raw, 0.5), atol=1e-3)
    assert stack.shape == (2, 2, 1, 40, 40) and np.abs(stack).max() == 1.0  # random weights: saturated somewhere


def test_raft_offline_without_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    load_raft.cache_clear()

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RaftWeightsMissing, match=r"raft_small_C_T_V2-01064c6d.pth are not in .* copy https://"):
        compute_flow(moving_texture(2, 32, 1, 0), FlowSettings(algorithm="raft_small"))


def test_paper_flow_and_backends(monkeypatch):
    monkeypatch.setattr(flow_mod, "cuda_flow_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert paper_flow("auto")[:2] == ("tvl1", "fast") and paper_flow("cpu")[:2] == ("tvl1", "fast")
    assert flow_backend("auto", "raft_small") == "cpu"
    with pytest.raises(DeviceUnavailable):
        flow_backend("cuda", "raft_large")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert paper_flow("auto")[:2] == ("raft_large", "default") and paper_flow("cpu")[:2] == ("tvl1", "fast")
    assert flow_backend("auto", "raft_small") == "cuda" and flow_backend("auto", "tvl1") == "cpu"
    monkeypatch.setattr(flow_mod, "cuda_flow_available", lambda: True)
    assert paper_flow("cuda")[:2] == ("tvl1", "default")


def test_extract_settings_flow():
    s = ExtractSettings(flow_algorithm="tvl1", flow_preset="fast", flow_params=(("tvl1_warps", 3),))
    flow, why = s.flow_settings("cpu", size=40)
    assert (flow.preset, flow.tvl1_warps, flow.tvl1_nscales, flow.size, why) == ("fast", 3, 3, 40, None)
    assert ExtractSettings.from_dict(s.to_dict()) == s
    flow, why = ExtractSettings(flow_algorithm="paper").flow_settings("cpu")
    assert (flow.algorithm, flow.preset) == ("tvl1", "fast") and "fast preset on the CPU" in why
    for bad, words in (({"flow_algorithm": "paper", "flow_preset": "fast"}, "drop --flow-preset"),
                       ({"flow_params": (("tvl1_warps", 2),)}, "for --flow tvl1"),
                       ({"flow_algorithm": "tvl1", "flow_params": (("tvl1_scale_step", 2.0),)}, "in \\(0, 1\\)"),
                       ({"flow_algorithm": "raft"}, "--flow must be one of")):
        with pytest.raises(SettingsError, match=words):
            ExtractSettings(**bad)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=2, size=48, seconds=1.0), progress=False)


RUN = ["--backbone", "flow:resnet_tiny@random", "--crop", "32", "--clips", "2", "--workers", "0", "--threads", "1",
       "-q"]


def test_run_paper_flow_records_which(tiny_demo, tmp_path):
    store = tmp_path / "s.zarr"
    assert main(["--videos", str(tiny_demo.videos_csv), "--store", str(store), "--flow", "paper", *RUN]) == 0
    attrs = FeatureStore.open(store).feature_set("flow_resnet_tiny").spec.extra
    assert attrs["flow"]["algorithm"] == "tvl1" and attrs["flow"]["preset"] == "fast"
    assert attrs["flow"]["tvl1_warps"] == 2 and "fast preset on the CPU" in attrs["flow_choice"]


def test_run_flow_gap_and_window_reach_the_set(tiny_demo, tmp_path):
    store = tmp_path / "s.zarr"
    argv = ["--videos", str(tiny_demo.videos_csv), "--store", str(store), "--flow-gap", "3", "--fb-winsize", "7"]
    assert main([*argv, *RUN]) == 0
    flow = FeatureStore.open(store).feature_set("flow_resnet_tiny").spec.extra["flow"]
    assert (flow["algorithm"], flow["gap"], flow["fb_winsize"], flow["stack"]) == ("farneback", 3, 7, 1)


def test_run_raft_records_its_weights(tiny_demo, tmp_path, raft_home):
    store = tmp_path / "s.zarr"
    argv = ["--videos", str(tiny_demo.videos_csv), "--store", str(store), "--flow", "raft_small", "--device", "cpu"]
    assert main([*argv, *RUN]) == 0
    fs = FeatureStore.open(store).feature_set("flow_resnet_tiny")
    extra = fs.spec.extra
    assert extra["flow"]["algorithm"] == "raft_small" and extra["flow_backend"] == "cpu"
    assert extra["flow_weights"] == {"file": "raft_small_C_T_V2-01064c6d.pth",
                                     "sha256": file_sha256(raft_checkpoint("raft_small")[1])}
    assert np.isfinite(fs.read()[0].astype(np.float32)).all()


@pytest.mark.parametrize(("argv", "words"), [
    (["--flow", "tvl1", "--tvl1-scale-step", "1.5"], "tvl1_scale_step must be in (0, 1)"),
    (["--flow", "farneback", "--tvl1-warps", "2"], "are for --flow tvl1"),
    (["--flow", "raft_small"], "raft_small_C_T_V2-01064c6d.pth are not in"),
])
def test_run_flow_user_errors(argv, words, tiny_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    load_raft.cache_clear()
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    store = tmp_path / "s.zarr"
    assert main(["--videos", str(tiny_demo.videos_csv), "--store", str(store), *RUN, *argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "randomly initialised" not in line]
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not store.exists()


def test_training_paper_flow_is_tvl1_fast_and_raft_checks_weights_first(tmp_path, monkeypatch):
    from extract.backbones import get_backbone
    from extract.training.modality import make_inputs
    from extract.training.recipe import TrainRecipe

    backbone = get_backbone("resnet_tiny", in_channels=2)
    recipe = TrainRecipe(backbone="resnet_tiny", modality="flow", flow_algorithm="paper").resolve(backbone.info)
    inputs = make_inputs(backbone, recipe)
    assert (inputs.flow.algorithm, inputs.flow.preset, inputs.flow.tvl1_warps) == ("tvl1", "fast", 2)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.raises(RaftWeightsMissing):
        make_inputs(backbone, dataclasses.replace(recipe, flow_algorithm="raft_small"))
