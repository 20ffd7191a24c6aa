"""The ``timm/`` and ``clip/`` frame encoder families, loaded from a temporary Hugging Face cache.

Nothing reaches a hub: each test fills ``HF_HOME`` with random state dicts laid out as
``huggingface_hub`` writes them (``models--ORG--NAME/refs/main`` + ``snapshots/REV/FILE``)
and sets ``HF_HUB_OFFLINE=1``. Tiny models: timm's ``test_convnext`` / ``test_vit`` and an
open_clip ViT of two layers registered with ``open_clip.add_model_config``.
"""

import hashlib
import json

import numpy as np
import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file

from extract.backbones import get_backbone, list_backbone_families, list_family_weights
from extract.backbones.weights import WeightsError
from extract.demo import DemoConfig, make_demo
from extract.media.decode import decode_video
from extract.run import main
from extract.search import producer_for
from store import FeatureStore
from store.errors import SettingsError

CONVNEXT = "test_convnext.r160_in1k"
VIT = "test_vit.r160_in1k"
CLIP_ARCH = "vf-test-ViT-tiny"
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def put_in_hf_cache(home, repo_id, filename, state, rev="0123abcd"):
    """Write ``state`` where huggingface_hub would have downloaded ``repo_id/filename``."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    path = repo / "snapshots" / rev / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if filename.endswith(".safetensors"):
        save_file(state, path)
    else:
        torch.save(state, path)
    return path


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _timm_reference(name, seed=0):
    """A timm model with its classifier, random weights from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_families_are_listed_and_unknown_names_are_one_line():
    assert list_backbone_families() == ["clip", "timm"]
    with pytest.raises(SettingsError, match=r"unknown backbone family 'nope'.*timm/NAME"):
        get_backbone("nope/x")
    with pytest.raises(SettingsError, match=r"unknown timm model 'convnxt_tiny'; close: convnext_tiny"):
        get_backbone("timm/convnxt_tiny")
    with pytest.raises(SettingsError, match=r"no pretrained tag 'foo'; tags: r160_in1k"):
        get_backbone("timm/test_vit.foo")


@pytest.mark.parametrize("name,size", [(CONVNEXT, 64), (VIT, 160)])
def test_timm_from_the_cache_equals_timm_forward_head(name, size, hf_home):
    ref = _timm_reference(name)
    path = put_in_hf_cache(hf_home, f"timm/{name}", "model.safetensors", ref.state_dict())
    model = get_backbone(f"timm/{name}").eval()
    info = model.info
    assert (info.kind, info.clip_len, info.feature_dim) == ("frame2d", 1, ref.num_features)
    assert info.input_size == 160 and info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    assert model.weights_sha256 == _sha256(path)
    assert model.weights_record == {
        "name": "r160_in1k", "source": f"hf-hub:timm/{name}/model.safetensors", "sha256": _sha256(path)
    }
    torch.manual_seed(1)
    frames = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(frames), pre_logits=True)  # (3, D)
        got = model.forward_features(frames[:, :, None])  # (3, 3, 1, H, W) -> (3, D)
        again = model.forward_features(frames[:, :, None])
        # T = 3 frames of one clip: the mean of the three frame features
        clip = model.forward_features(frames.transpose(0, 1)[None])  # (1, 3, 3, H, W) -> (1, D)
    assert got.shape == (3, ref.num_features) and want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    torch.testing.assert_close(clip[0], want.mean(0), rtol=0, atol=1e-5)


def test_timm_default_tag_pytorch_bin_and_local_files(hf_home, tmp_path):
    """No tag: timm's default tag; a repo with only pytorch_model.bin; @PATH in timm's layout
    and a checkpoint of the backbone itself (keys net.*) give the same features."""
    ref = _timm_reference(CONVNEXT, seed=3)
    put_in_hf_cache(hf_home, f"timm/{CONVNEXT}", "pytorch_model.bin", ref.state_dict())
    cached = get_backbone("timm/test_convnext").eval()
    assert get_backbone("timm/test_convnext", weights="default").weights_record == cached.weights_record
    # @TAG spells the tag too (the recorded name rebuilds the backbone); a second tag is refused
    assert get_backbone("timm/test_convnext", weights="r160_in1k").weights_record == cached.weights_record
    assert get_backbone(f"timm/{CONVNEXT}", weights="r160_in1k").weights_record == cached.weights_record
    with pytest.raises(SettingsError, match="already has the tag 'a1_in1k'"):
        get_backbone("timm/resnet50.a1_in1k", weights="a2_in1k")
    assert cached.weights_record["name"] == "r160_in1k"
    assert cached.weights_record["source"] == f"hf-hub:timm/{CONVNEXT}/pytorch_model.bin"
    torch.save(ref.state_dict(), tmp_path / "timm_layout.pth")
    from_file = get_backbone("timm/test_convnext", weights=tmp_path / "timm_layout.pth").eval()
    torch.save(cached.state_dict(), tmp_path / "ours.pt")
    ours = get_backbone("timm/test_convnext", weights=tmp_path / "ours.pt").eval()
    sha = _sha256(tmp_path / "timm_layout.pth")
    assert from_file.weights_record == {"name": "file", "source": "local file", "sha256": sha}
    assert from_file.weights_sha256 == sha
    x = torch.randn(2, 3, 1, 48, 48)
    with torch.no_grad():
        want = cached.forward_features(x)
        torch.testing.assert_close(from_file.forward_features(x), want, rtol=0, atol=0)
        torch.testing.assert_close(ours.forward_features(x), want, rtol=0, atol=0)


def test_timm_random_init_is_timms_own(hf_home):
    torch.manual_seed(5)
    model = get_backbone("timm/test_vit", weights="random")
    torch.manual_seed(5)
    ref = timm.create_model("test_vit", pretrained=False, num_classes=0)
    assert model.weights_sha256 is None and model.weights_record == {"name": "random"}
    ours = {k.removeprefix("net."): v for k, v in model.state_dict().items()}
    assert ours.keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)


def test_timm_flow_averages_the_rgb_input_conv(hf_home):
    """Flow (2 channels): the cross-modality rule on pretrained_cfg's first_conv (stem.0): on
    any 2-channel x it answers like the RGB net on the image whose channels are all (x0 + x1) / 3."""
    ref = _timm_reference(CONVNEXT)
    put_in_hf_cache(hf_home, f"timm/{CONVNEXT}", "model.safetensors", ref.state_dict())
    rgb = get_backbone(f"timm/{CONVNEXT}").eval()
    flow = get_backbone(f"timm/{CONVNEXT}", in_channels=2).eval()
    assert flow.info.modality == "flow" and flow.info.mean == (0.5, 0.5) and flow.info.in_channels == 2
    kernel = ref.stem[0].weight.mean(dim=1, keepdim=True)  # (O, 3, k, k) -> (O, 1, k, k)
    torch.testing.assert_close(flow.net.stem[0].weight, kernel.expand(-1, 2, -1, -1), rtol=0, atol=0)
    x = torch.randn(2, 2, 1, 48, 48)
    gray = x.sum(dim=1, keepdim=True).expand(-1, 3, -1, -1, -1) / 3  # (2, 2, 1, H, W) -> (2, 3, 1, H, W)
    with torch.no_grad():
        torch.testing.assert_close(flow.forward_features(x), rgb.forward_features(gray), rtol=1e-4, atol=1e-5)


def test_missing_weights_offline_is_one_line_naming_hub_id_and_cache(hf_home):
    with pytest.raises(WeightsError) as err:
        get_backbone(f"timm/{VIT}")
    text = str(err.value)
    assert "\n" not in text and f"timm/{VIT}" in text and str(hf_home / "hub") in text
    assert "HF_HUB_OFFLINE" in text and "@PATH" in text


# ------------------------------------------------------------------------------- open_clip
@pytest.fixture
def tiny_clip(tmp_path, monkeypatch, hf_home):
    """A 2-layer open_clip ViT config and a pretrained tag ``test`` of it on a fake hub repo."""
    config = tmp_path / f"{CLIP_ARCH}.json"
    config.write_text(json.dumps(CLIP_CONFIG))
    if CLIP_ARCH not in open_clip.list_models():
        open_clip.add_model_config(config)
    from open_clip import pretrained

    tags = {
        "test": pretrained._pcfg(hf_hub="vf-test/clip-tiny/", quick_gelu=True),
        "other_norm": pretrained._pcfg(hf_hub="vf-test/clip-tiny-b/", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)),
    }
    monkeypatch.setitem(pretrained._PRETRAINED, CLIP_ARCH, tags)
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_ARCH, force_quick_gelu=True).eval()
    path = put_in_hf_cache(hf_home, "vf-test/clip-tiny", "open_clip_pytorch_model.bin", clip.state_dict())
    return clip, path


def test_clip_tower_equals_encode_image(tiny_clip):
    clip, path = tiny_clip
    model = get_backbone(f"clip/{CLIP_ARCH}", weights="test").eval()
    info = model.info
    assert (info.kind, info.feature_dim, info.input_size) == ("frame2d", 32, 32)
    assert info.mean == open_clip.OPENAI_DATASET_MEAN and info.std == open_clip.OPENAI_DATASET_STD
    assert model.weights_sha256 == _sha256(path)
    assert model.weights_record == {
        "name": "test",
        "source": "hf-hub:vf-test/clip-tiny/open_clip_pytorch_model.bin",
        "sha256": _sha256(path),
    }
    torch.manual_seed(2)
    frames = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = clip.encode_image(frames)  # (4, 32)
        got = model.forward_features(frames[:, :, None])  # (4, 3, 1, 32, 32) -> (4, 32)
    assert got.shape == (4, 32) and want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_clip_tag_normalisation_random_and_errors(tiny_clip, hf_home):
    clip, _ = tiny_clip
    with pytest.raises(WeightsError, match=r"vf-test/clip-tiny-b .*not in the Hugging Face cache") as err:
        get_backbone(f"clip/{CLIP_ARCH}", weights="other_norm")
    assert "\n" not in str(err.value) and str(hf_home / "hub") in str(err.value)
    put_in_hf_cache(hf_home, "vf-test/clip-tiny-b", "open_clip_model.safetensors", clip.state_dict())
    other = get_backbone(f"clip/{CLIP_ARCH}", weights="other_norm")
    assert other.info.mean == (0.5, 0.4, 0.3) and other.info.std == (0.2, 0.3, 0.4)
    assert other.weights_record["source"] == "hf-hub:vf-test/clip-tiny-b/open_clip_model.safetensors"
    torch.manual_seed(7)
    rand = get_backbone(f"clip/{CLIP_ARCH}", weights="random")
    torch.manual_seed(7)
    ref = open_clip.create_model(CLIP_ARCH)
    assert rand.weights_sha256 is None
    torch.testing.assert_close(rand.visual.conv1.weight, ref.visual.conv1.weight, rtol=0, atol=0)
    with pytest.raises(SettingsError, match=r"needs its weights after '@': a pretrained tag \(test, other_norm\)"):
        get_backbone(f"clip/{CLIP_ARCH}")
    with pytest.raises(SettingsError, match=r"not a pretrained tag of .* \(test, other_norm\)"):
        get_backbone(f"clip/{CLIP_ARCH}", weights="laion9b")
    with pytest.raises(SettingsError, match=r"takes RGB frames only, not flow \(2 channels\)"):
        get_backbone(f"clip/{CLIP_ARCH}", weights="test", in_channels=2)


# ------------------------------------------------------------------------------- extract.run
def test_extract_run_with_a_timm_backbone_from_the_cache(hf_home, tiny_clip, tmp_path, capsys):
    demo = make_demo(tmp_path / "demo", DemoConfig(videos=4, size=48, seconds=1.0), progress=False)
    ref = _timm_reference(CONVNEXT)
    path = put_in_hf_cache(hf_home, f"timm/{CONVNEXT}", "model.safetensors", ref.state_dict())
    store = tmp_path / "s.zarr"
    args = ["--videos", str(demo.videos_csv), "--store", str(store), "--crop", "32", "--clips", "4",
            "--workers", "1", "--threads", "1", "--batch-size", "8", "-q"]
    assert main([*args, "--backbone", f"rgb:timm/{CONVNEXT}"]) == 0
    name = f"rgb_timm_{CONVNEXT}"
    fset = FeatureStore.open(store).feature_set(name)
    data, valid = fset.read()
    assert data.shape == (4, 4, ref.num_features) and valid.all() and fset.done().all()
    spec = fset.spec
    assert spec.backbone == f"timm/{CONVNEXT}" and spec.weights_sha256 == _sha256(path)
    assert spec.extra["weights"] == {
        "name": "r160_in1k",
        "source": f"hf-hub:timm/{CONVNEXT}/model.safetensors",
        "sha256": _sha256(path),
    }
    # extract.search rebuilds the backbone from the recorded weight name (the tag), from the cache
    rebuilt = producer_for(fset, device="cpu")
    assert rebuilt.model.weights_sha256 == _sha256(path) and rebuilt.spec.extra["weights"] == spec.extra["weights"]
    # Hand reference: TSN frames 3, 9, 15, 21 of 25, short side 37, centre 32 px crop, mean/std 0.5.
    starts = np.array([3, 9, 15, 21])
    for row in (0, 3):
        frames = decode_video(FeatureStore.open(store).videos()["path"][row], starts, 37).frames[:, 2:34, 2:34]
        x = (torch.from_numpy(frames).float() / 255 - 0.5) / 0.5
        with torch.no_grad():
            want = ref.forward_head(ref.forward_features(x.permute(0, 3, 1, 2)), pre_logits=True)  # (4, D)
        np.testing.assert_allclose(data[row], want.numpy(), rtol=2e-3, atol=2e-3)
    capsys.readouterr()
    # Other weights into the same set are refused; nothing is written.
    assert main([*args, "--backbone", f"rgb:timm/{CONVNEXT}@random", "--set", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    # A timm model not in the cache: one line, no set created.
    assert main([*args, "--backbone", f"rgb:timm/{VIT}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"timm/{VIT}" in err and str(hf_home / "hub") in err
    assert f"rgb_timm_{VIT}" not in FeatureStore.open(store).feature_sets()
    # A frame encoder on audio, a CLIP tower on flow: one line each.
    for spec, words in ((f"audio:timm/{CONVNEXT}", "audio needs an audio backbone"),
                        (f"flow:clip/{CLIP_ARCH}@test", "takes RGB frames only, not flow")):
        assert main([*args, "--backbone", spec]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert FeatureStore.open(store).feature_sets() == [name]


def test_listed_family_weights_and_their_cache_state(hf_home):
    rows = {(r["backbone"], r["weights"]): r for r in list_family_weights()}
    assert ("clip/ViT-B-32", "laion2b_s34b_b79k") in rows and ("clip/ViT-L-14", "openai") in rows
    convnext = rows[("timm/convnext_tiny.fb_in22k", "")]
    assert convnext["source"] == "hf-hub:timm/convnext_tiny.fb_in22k" and not convnext["cached"]
    assert convnext["feature_dim"] == get_backbone("timm/convnext_tiny", weights="random").info.feature_dim == 768
    assert rows[("clip/ViT-L-14", "openai")]["feature_dim"] == 768 and all(r["clip_len"] == 1 for r in rows.values())
    repo = hf_home / "hub" / "models--timm--convnext_tiny.fb_in22k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("r1")
    (repo / "snapshots" / "r1").mkdir(parents=True)
    (repo / "snapshots" / "r1" / "model.safetensors").write_bytes(b"x")  # presence is what is listed
    cached = {(r["backbone"], r["weights"]): r["cached"] for r in list_family_weights()}
    assert cached[("timm/convnext_tiny.fb_in22k", "")] and not cached[("timm/convnext_tiny.fb_in1k", "")]
