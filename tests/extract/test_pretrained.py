"""Named pretrained weights: resolution of the ``@WEIGHT`` spellings, the torch.hub cache (filled
here with random state dicts of torchvision's layout, never downloaded), checksums, provenance in
the store, no silent random init, the torchvision video families against torchvision itself, and
fine-tuning from a named weight."""

import dataclasses
import email.message
import hashlib
import io
import json
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision.models import video as tv_video

from extract.backbones import RANDOM, get_backbone, list_weights, resolve_weights
from extract.backbones import pretrained as P
from extract.backbones.pretrained import PretrainedWeights, WeightsTransforms
from extract.backbones.weights import WeightsError, file_sha256
from extract.demo import DemoConfig, make_demo
from extract.run import main
from store import FeatureStore

REAL_DOWNLOAD = torch.hub.download_url_to_file  # conftest's _no_hub replaces it in every test
CLI = ["--crop", "32", "--frames", "8", "--clips", "1", "--workers", "0", "--threads", "1",
       "--chunk-rows", "4", "--batch-size", "4", "--no-verify", "-q"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=6, size=48, seconds=1.0), progress=False)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh TORCH_HOME; ``hub(backbone, name, model)`` saves ``model``'s state dict (random values,
    the right layout) under the file name of the weight's URL and lets the registry accept its checksum
    (the real files' hash prefixes cannot match random values). Downloads stay refused (conftest)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def fill(backbone: str, name: str, model: torch.nn.Module) -> PretrainedWeights:
        entry = resolve_weights(backbone, name)
        path = entry.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        filled = dataclasses.replace(entry, sha256=file_sha256(path))
        monkeypatch.setitem(P._WEIGHTS, backbone, [filled if e is entry else e for e in P._WEIGHTS[backbone]])
        return filled

    return fill


def _tv(builder, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return builder(weights=None).eval()


# ---------------------------------------------------------------------------- resolution
def test_the_three_spellings_and_the_ambiguity_rule(tmp_path, monkeypatch):
    entry = resolve_weights("r2plus1d_18", "kinetics400")
    assert isinstance(entry, PretrainedWeights) and entry.full_name == "r2plus1d_18@kinetics400"
    for spelling in ("KINETICS400_V1", "torchvision:KINETICS400_V1", "default", "DEFAULT"):
        assert resolve_weights("r2plus1d_18", spelling) is entry
    assert resolve_weights("r2plus1d_18", "random") == RANDOM
    assert resolve_weights("r2plus1d_18", None) is None
    for path in ("w.pt", "./w", "runs/r21d/backbone", "~/w"):
        assert isinstance(resolve_weights("r2plus1d_18", path), Path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kinetics400").write_bytes(b"x")  # a known name wins over a file of that name
    (tmp_path / "mine").write_bytes(b"x")  # an existing file without suffix is a path
    assert resolve_weights("r2plus1d_18", "kinetics400") is entry
    assert resolve_weights("r2plus1d_18", "mine") == Path("mine")
    with pytest.raises(WeightsError) as err:
        resolve_weights("r2plus1d_18", "kinetics700")
    msg = str(err.value)
    assert "\n" not in msg and "kinetics400 (KINETICS400_V1)" in msg and "@random" in msg
    with pytest.raises(WeightsError, match="resnet_tiny has no pretrained weights.*resnet_tiny@random"):
        resolve_weights("resnet_tiny", "default")


def test_entries_are_read_from_torchvision_and_fit_their_backbones():
    e = resolve_weights("r2plus1d_18", "kinetics400")
    tv = tv_video.R2Plus1D_18_Weights.KINETICS400_V1
    assert e.url == tv.url and e.hash_prefix == "91a641e6" and tv.url.endswith(f"-{e.hash_prefix}.pth")
    preset = tv.transforms()
    assert list(e.transforms.mean) == list(preset.mean) and list(e.transforms.std) == list(preset.std)
    assert [e.transforms.crop_size] * 2 == list(preset.crop_size) and list(e.transforms.resize_size) == [128, 171]
    assert (e.clip_len, e.transforms.frame_rate, e.dataset) == (16, 15.0, "Kinetics-400")
    assert resolve_weights("mvit_v2_s", "kinetics400").transforms.mean == (0.45, 0.45, 0.45)
    assert resolve_weights("swin3d_b", "KINETICS400_IMAGENET22K_V1").name == "kinetics400_imagenet22k"
    assert resolve_weights("resnet50", "default").aliases == ("IMAGENET1K_V2",)  # torchvision's DEFAULT
    names = {e.full_name for e in list_weights()}
    assert len(names) >= 12
    for name in ("r2plus1d_18", "resnet18", "tsm_resnet18", "s3d", "mvit_v1_b", "swin3d_t"):
        info = get_backbone(name, weights=RANDOM).info
        for e in list_weights(name):
            t = e.transforms
            assert (e.feature_dim, t.crop_size, t.mean, t.std) == (info.feature_dim, info.input_size, info.mean,
                                                                    info.std), e.full_name
            assert e.clip_len == info.clip_len, e.full_name


def test_list_backbones_shows_every_weight_and_the_cache(hub, capsys):
    hub("mc3_18", "kinetics400", _tv(tv_video.mc3_18))
    assert main(["--list-backbones"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "https://" in line]
    assert len(rows) >= 12 and any(r.startswith("s3d ") for r in rows)
    (mc3,) = [r for r in rows if r.startswith("mc3_18 ")]
    assert mc3.split()[1:8] == ["kinetics400*", "KINETICS400_V1", "Kinetics-400", "512", "16", "112", "yes"]
    (r21,) = [r for r in rows if r.startswith("r2plus1d_18 ")]
    assert " no " in r21 and "resnet_tiny" in out and "(none: @random or @PATH)" in out


# ---------------------------------------------------------------------------- cache and checksums
class _Response(io.BytesIO):
    """What urlopen returns, for torch.hub's real downloader."""

    def info(self):
        meta = email.message.Message()
        meta["Content-Length"] = str(len(self.getvalue()))
        return meta


def _serve(monkeypatch, payload: bytes) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", REAL_DOWNLOAD)
    monkeypatch.setattr(torch.hub, "urlopen", lambda req: _Response(payload))


def _entry(payload: bytes, **kw) -> PretrainedWeights:
    return PretrainedWeights(backbone="resnet_tiny", name="test", url="https://example.invalid/m/tiny.pth",
                             dataset="none", transforms=WeightsTransforms(32, (36,), (0.5,) * 3, (0.2,) * 3),
                             feature_dim=64, **kw)


def test_a_download_lands_in_the_cache_and_a_wrong_one_is_refused(hub, monkeypatch, tmp_path):
    buf = io.BytesIO()
    torch.save(get_backbone("resnet_tiny", weights=RANDOM).state_dict(), buf)
    payload = buf.getvalue()
    _serve(monkeypatch, payload)
    good = _entry(payload, sha256=hashlib.sha256(payload).hexdigest())
    path = good.fetch(progress=False)
    assert path == Path(torch.hub.get_dir()) / "checkpoints" / "tiny.pth" and path.read_bytes() == payload
    assert good.check_file(path) == good.sha256 and good.is_cached()
    # a source without a published checksum: nothing to check, the file's sha256 is still what is recorded
    assert dataclasses.replace(good, sha256=None).check_file(path) == good.sha256
    # torch.hub's own hash-prefix check on download (torchvision's NAME-<prefix>.pth names)
    bad = dataclasses.replace(good, url="https://example.invalid/m/tiny-0123abcd.pth", sha256=None)
    with pytest.raises(WeightsError, match=r"cannot download weights resnet_tiny@test from .*tiny-0123abcd.pth "
                                           r"\(invalid hash value.*put that file by hand at"):
        bad.fetch(progress=False)
    assert not bad.is_cached() and not list(bad.cache_path().parent.glob("tiny-0123abcd*"))
    # a file in the cache whose checksum differs (damaged, or put there by hand) is refused on load
    with pytest.raises(WeightsError, match=r"has sha256 .* but resnet_tiny@test has 0123abcd.*delete the file"):
        dataclasses.replace(good, sha256="0123abcd" * 8).check_file(path)


def test_a_wrong_hash_file_in_the_cache_is_refused(hub):
    entry = resolve_weights("mc3_18", "kinetics400")  # the registry's real hash prefix
    entry.cache_path().parent.mkdir(parents=True)
    torch.save(_tv(tv_video.mc3_18).state_dict(), entry.cache_path())
    with pytest.raises(WeightsError, match=r"mc3_18-a90a0ba3.pth has sha256 .* but mc3_18@kinetics400 has a90a0ba3"):
        get_backbone("mc3_18", weights="kinetics400")


def test_no_cache_and_no_network_is_one_line_and_no_features(hub, demo, tmp_path, monkeypatch, capsys):
    def offline(url, dst, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    store = tmp_path / "x.zarr"
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), "--backbone", "rgb:r2plus1d_18",
                 *CLI]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    entry = resolve_weights("r2plus1d_18", "kinetics400")
    assert len(err) == 1 and err[0].startswith("error: cannot download weights r2plus1d_18@kinetics400 from ")
    assert entry.url in err[0] and str(entry.cache_path()) in err[0] and "Temporary failure" in err[0]
    assert not store.exists()
    # a backbone without weights and without @ stops too, listing what to write
    assert main(["--videos", str(demo.videos_csv), "--store", str(store), "--backbone", "resnet_tiny", *CLI]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet_tiny has no pretrained weights" in err[0] and "resnet_tiny@random" in err[0]
    assert not store.exists()


# ---------------------------------------------------------------------------- provenance
def test_named_weights_extract_offline_and_are_recorded(hub, demo, tmp_path, capsys):
    entry = hub("r2plus1d_18", "kinetics400", _tv(tv_video.r2plus1d_18))
    sha = file_sha256(entry.cache_path())
    store = tmp_path / "k.zarr"
    args = ["--videos", str(demo.videos_csv), "--store", str(store), *CLI]
    assert main([*args, "--backbone", "rgb:r2plus1d_18@kinetics400", "--limit", "3"]) == 0
    assert "weights kinetics400 (Kinetics-400, sha256 " + sha[:12] in capsys.readouterr().out
    fset = FeatureStore.open(store).feature_set("rgb_r2plus1d_18")
    spec = json.loads((store / "features" / "rgb_r2plus1d_18" / "zarr.json").read_text())["attributes"]["spec"]
    assert spec["weights_sha256"] == sha == fset.spec.weights_sha256
    assert spec["extra"]["weights"] == {"name": "kinetics400", "source": entry.url, "sha256": sha,
                                        "dataset": "Kinetics-400"}
    assert fset.done().sum() == 3
    # another spelling of the same weight resumes the set; other weights are refused with one line
    assert main([*args, "--backbone", "r2plus1d_18@torchvision:KINETICS400_V1"]) == 0
    assert FeatureStore.open(store).feature_set("rgb_r2plus1d_18").done().all()
    capsys.readouterr()
    assert main([*args, "--backbone", "rgb:r2plus1d_18@random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # (logged warnings on 8-frame clips above it)
    assert sum(line.startswith("error:") for line in err) == 1 and "Traceback" not in "".join(err)
    assert "exists with a different spec" in err[-1] and "weights_sha256" in err[-1]
    from store.info import main as info_main

    assert info_main([str(store)]) == 0
    out = capsys.readouterr().out
    assert f"weights kinetics400 (Kinetics-400, sha256 {sha[:12]})" in out and f"{entry.url}, sha256 {sha}" in out
    # search by example rebuilds the producer from the recorded name, without --weights
    from extract.search import producer_for

    assert producer_for(FeatureStore.open(store).feature_set("rgb_r2plus1d_18"), device="cpu").spec == fset.spec


# ---------------------------------------------------------------------------- the torchvision families
FAMILIES = [
    ("r2plus1d_18", tv_video.r2plus1d_18, (1, 3, 8, 32, 32)),
    ("s3d", tv_video.s3d, (1, 3, 16, 224, 224)),  # its 2x7x7 pool needs 16 frames at 224 px
    ("mvit_v2_s", tv_video.mvit_v2_s, (1, 3, 16, 224, 224)),  # fixed positional sizes
    ("swin3d_t", tv_video.swin3d_t, (2, 3, 4, 64, 64)),
]


@pytest.mark.parametrize("name,builder,shape", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_families_load_torchvision_files_and_match_torchvision(name, builder, shape, hub):
    """Our backbone with the file's classifier gives torchvision's own logits; features are (B, D)."""
    reference = _tv(builder, seed=1)
    hub(name, "kinetics400", reference)
    ours = get_backbone(name, weights="kinetics400", num_classes=400).eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats = ours.forward_features(x)
        want = reference(x)
        got = ours.forward_head(feats)
    assert feats.shape == (shape[0], ours.info.feature_dim) and torch.isfinite(feats).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert ours.weights_record["name"] == "kinetics400"


def test_mvit_refuses_other_clip_shapes():
    model = get_backbone("mvit_v1_b", weights=RANDOM)
    with pytest.raises(ValueError, match=r"exactly 16x224x224.*--frames 16 --crop 224"):
        model.forward_features(torch.zeros(1, 3, 8, 224, 224))


def test_flow_nets_start_from_rgb_weights_by_the_cross_modality_rule(hub):
    from torchvision.models import resnet18

    entry = hub("resnet18", "imagenet1k", _tv(resnet18))
    rgb = torch.load(entry.cache_path(), weights_only=True)["conv1.weight"]  # (64, 3, 7, 7)
    flow = get_backbone("resnet18", weights="imagenet1k", in_channels=2)
    torch.testing.assert_close(flow.conv1.weight, rgb.mean(1, keepdim=True).expand(-1, 2, -1, -1))
    assert flow.weights_sha256 == entry.sha256


def test_tin_body_from_imagenet_keeps_its_interlace_init(hub):
    from torchvision.models import resnet50

    entry = hub("tin_resnet50", "imagenet1k", _tv(resnet50))
    body = torch.load(entry.cache_path(), weights_only=True)
    torch.manual_seed(5)
    loaded = get_backbone("tin_resnet50", weights="imagenet1k").state_dict()
    torch.manual_seed(5)
    fresh = get_backbone("tin_resnet50", weights=RANDOM).state_dict()
    interlace = [k for k in loaded if ".interlace." in k]
    assert len(interlace) == 128 and set(loaded) - set(interlace) - set(body) == set()
    for k in loaded:
        want = fresh[k] if k in interlace else body[k]
        torch.testing.assert_close(loaded[k], want, rtol=0, atol=0)


# ---------------------------------------------------------------------------- fine-tuning
def test_train_from_named_weights_replaces_the_classifier(hub, demo, tmp_path):
    from extract.train import main as train_main

    entry = hub("r2plus1d_18", "kinetics400", _tv(tv_video.r2plus1d_18))
    start = torch.load(entry.cache_path(), weights_only=True)
    out = tmp_path / "run"
    assert train_main(["--videos", str(demo.videos_csv), "--backbone", "r2plus1d_18@kinetics400", "--crop", "32",
                       "--frames", "4", "--batch-size", "4", "--epochs", "1", "--train-stages", "1", "--eval-clips",
                       "1", "--workers", "0", "--out", str(out), "-q"]) == 0
    trained = torch.load(out / "backbone.pt", weights_only=True)
    assert trained["fc.weight"].shape == (len(demo.classes), 512) != start["fc.weight"].shape
    trunk = [k for k in start if not k.startswith("fc.")]
    assert len(trunk) > 100 and set(trunk) <= set(trained)
    for key in trunk:  # --train-stages 1: the trunk (BatchNorm statistics too) stays the file's
        torch.testing.assert_close(trained[key], start[key], rtol=0, atol=0)
    assert json.loads((out / "recipe.json").read_text())["weights"] == "kinetics400"
