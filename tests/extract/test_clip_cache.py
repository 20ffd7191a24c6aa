"""The clip cache of backbone training (``extract.training.clip_cache``, ``TrainClips(cache_dir=...)``):
cached = uncached batches for RGB, flow and audio; one decode per video and generation, staggered;
reuse on a rerun; another key (seed, sizes, a replaced file) -> another directory; damaged entries
detected and rebuilt; ``fit`` with and without the cache ends with the same weights."""

import copy
import logging
import os
import threading

import numpy as np
import pytest
import torch

from extract.backbones import get_backbone
from extract.demo import DemoConfig, make_demo
from extract.train import _parser
from extract.training import TrainData, TrainRecipe, fit
from extract.training.clip_cache import MAGIC, ClipCache, decode_entry, encode_entry
from extract.training.data import EvalClips, TrainClips, generation, train_loader
from extract.training.modality import make_inputs

CHANNELS = {"rgb": 3, "flow": 2, "audio": 1}
BACKBONE = {"rgb": "r2plus1d_tiny", "flow": "r2plus1d_tiny", "audio": "resnet_audio_tiny"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo"), DemoConfig(videos=12, size=48, seconds=1.0), progress=False)


@pytest.fixture(scope="module")
def data(demo):
    tr, va = demo.video_list("train"), demo.video_list("val")
    return TrainData(tr.videos, tr.label_matrix(), va.videos, va.label_matrix(), list(demo.classes))


def _inputs(modality="rgb", **kw):
    recipe = TrainRecipe(**{"backbone": BACKBONE[modality], "weights": "random", "modality": modality, "crop": 32,
                            "decode_every": 3, **kw})
    model = get_backbone(recipe.backbone, num_classes=21, in_channels=CHANNELS[modality])
    return make_inputs(model, recipe.resolve(model.info))


def _count_decodes(ds):
    """Wrap ``ds.inputs.decode_clips`` (in this process; a copy of the inputs) to count its calls."""
    calls = []
    ds.inputs = copy.copy(ds.inputs)
    real = ds.inputs.decode_clips

    def counted(video, clips, size):
        calls.append(video.path)
        return real(video, clips, size)

    ds.inputs.decode_clips = counted
    return calls


def test_generations_by_hand():
    # every 3 epochs, video 1 is offset by 1: epochs 0-1, then 2-4, 5-7, ...
    assert [generation(e, 1, 3) for e in range(6)] == [
        (0, range(0, 2)), (0, range(0, 2)), (1, range(2, 5)), (1, range(2, 5)), (1, range(2, 5)), (2, range(5, 8))]
    assert generation(4, 0, 3) == (1, range(3, 6)) and generation(4, 7, 1) == (4, range(4, 5))
    for every in (1, 2, 5):  # each epoch after the first starts a generation for ~1/every of the videos
        for e in range(1, 7):
            starts = sum(generation(e, i, every)[1][0] == e for i in range(20))
            assert starts == sum((e + i % every) % every == 0 for i in range(20))


def test_entry_format_round_trip():
    arrays = {"frames": np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3), "numbers": np.array([4, 9]),
              "stacks": np.linspace(-1, 1, 10, dtype=np.float16), "empty": np.zeros(0, np.float32),
              "flag": np.bool_(False), "path": np.str_("a/b.mp4")}
    back = decode_entry(encode_entry(arrays))
    assert back.keys() == arrays.keys()
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == np.shape(v)
        np.testing.assert_array_equal(back[k], v)
    for bad in (b"", b"VFCLIP01", encode_entry(arrays)[:-1], encode_entry(arrays) + b"x", b"PK\x03\x04" + b"0" * 99):
        with pytest.raises(ValueError):
            decode_entry(bad)


@pytest.mark.parametrize("modality", ["rgb", "flow", "audio"])
def test_cached_batches_equal_uncached_and_decode_once_per_generation(data, tmp_path, modality):
    inputs = _inputs(modality)
    plain = TrainClips(data.train, data.train_labels, inputs, seed=5)
    cached = TrainClips(data.train, data.train_labels, inputs, seed=5, cache_dir=tmp_path)
    n = len(cached)
    calls = _count_decodes(cached)
    per_epoch = []
    for epoch in range(7):
        before = len(calls)
        a = [plain[(epoch, i)] for i in range(n)]
        b = [cached[(epoch, i)] for i in range(n)]
        per_epoch.append(len(calls) - before)
        for x, y in zip(a, b):
            assert x[0].dtype == y[0].dtype and x[0].shape == y[0].shape
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])
    if modality == "audio":  # one decode of each track for all epochs
        assert per_epoch == [n] + [0] * 6
    else:  # every video in the first epoch, then those whose generation starts
        assert per_epoch == [n] + [sum(generation(e, i, 3)[1][0] == e for i in range(n)) for e in range(1, 7)]
        assert 0 < per_epoch[1] < n
        assert len(cached.cache.entries()) == n  # one generation per video is kept
    # augmentation stays random per epoch, inside a generation too (video 0: epochs 0-2)
    assert not np.array_equal(cached[(0, 0)][0], cached[(1, 0)][0])


def test_loader_batches_with_a_worker_equal_uncached(data, tmp_path):
    inputs = _inputs("rgb", decode_every=2)
    runs = []
    for cache in (None, tmp_path):
        ds = TrainClips(data.train, data.train_labels, inputs, seed=2, cache_dir=cache)
        loader = train_loader(ds, batch_size=4, workers=1 if cache else 0)
        epochs = []
        for e in range(3):
            loader.sampler.set_epoch(e)
            epochs.append([b["x"] for b in loader])
        runs.append(epochs)
    for a, b in zip(*runs):
        assert len(a) == len(b) == 2
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_rerun_reuses_the_cache_and_another_key_rebuilds(data, tmp_path):
    inputs = _inputs("rgb")
    first = TrainClips(data.train, data.train_labels, inputs, seed=1, cache_dir=tmp_path)
    want = [[first[(e, i)][0] for i in range(len(first))] for e in range(3)][-1]
    again = TrainClips(data.train, data.train_labels, inputs, seed=1, cache_dir=tmp_path)
    assert again.cache.dir == first.cache.dir
    calls = _count_decodes(again)
    got = [again[(2, i)][0] for i in range(len(again))]  # every video's kept generation holds epoch 2
    assert calls == [] and all(np.array_equal(a, b) for a, b in zip(want, got))
    # what decides the content is in the key: seed, sizes, the recipe's decode_every, the files
    dirs = {first.cache.dir}
    for other in (TrainClips(data.train, data.train_labels, inputs, seed=2, cache_dir=tmp_path),
                  TrainClips(data.train, data.train_labels, _inputs("rgb", scale=(1.0, 1.5)), seed=1,
                             cache_dir=tmp_path),
                  TrainClips(data.train, data.train_labels, _inputs("rgb", decode_every=2), seed=1,
                             cache_dir=tmp_path),
                  TrainClips(data.train, data.train_labels, _inputs("flow"), seed=1, cache_dir=tmp_path),
                  TrainClips(data.train.iloc[:-1], data.train_labels[:-1], inputs, seed=1, cache_dir=tmp_path)):
        assert other.cache.dir not in dirs
        dirs.add(other.cache.dir)
    path = data.train["path"].iloc[0]
    st = os.stat(path)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced
        assert TrainClips(data.train, data.train_labels, inputs, seed=1, cache_dir=tmp_path).cache.dir not in dirs
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert TrainClips(data.train, data.train_labels, inputs, seed=1, cache_dir=tmp_path).cache.dir == first.cache.dir


def test_damaged_entries_are_detected_and_rebuilt(data, tmp_path, caplog):
    inputs = _inputs("rgb")
    plain = TrainClips(data.train, data.train_labels, inputs, seed=4)
    ds = TrainClips(data.train, data.train_labels, inputs, seed=4, cache_dir=tmp_path)
    for i in range(4):
        ds[(0, i)]
    paths = [ds.cache.path(f"t0_{i}") for i in range(4)]
    paths[0].write_bytes(paths[0].read_bytes()[: paths[0].stat().st_size // 2])  # killed mid-write (no rename)
    paths[1].write_bytes(b"\0" * paths[1].stat().st_size)  # renamed, but its blocks never reached the disk
    raw = bytearray(paths[2].read_bytes())  # a bit flipped in the frames
    raw[-100] ^= 0x10
    paths[2].write_bytes(bytes(raw))
    raw = bytearray(paths[3].read_bytes())  # and one in the header (a shape: the sizes no longer add up)
    at = raw.index(b'"frames"')
    raw[at:at + 40] = raw[at:at + 40].replace(b"[", b"[1", 1)[:40]
    paths[3].write_bytes(bytes(raw))
    (ds.cache.dir / "t0_9.clip.123.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="extract.training.clip_cache"):
        for i in range(4):
            assert ds.cache.load(f"t0_{i}") is None
    assert sum("damaged" in r.message for r in caplog.records) == 4
    calls = _count_decodes(ds)
    for i in range(4):  # rebuilt, and right
        np.testing.assert_array_equal(ds[(0, i)][0], plain[(0, i)][0])
    assert len(calls) == 4
    ClipCache(tmp_path, {"any": 1})  # another cache in the same root leaves this one alone
    reopened = TrainClips(data.train, data.train_labels, inputs, seed=4, cache_dir=tmp_path)
    assert not list(reopened.cache.dir.glob("*.tmp"))  # stray temporary files go when the cache opens
    assert all(p.read_bytes().startswith(MAGIC) for p in reopened.cache.entries())


def test_eval_clips_are_cached(data, tmp_path):
    inputs = _inputs("flow")
    plain = EvalClips(data.val, data.val_labels, inputs)
    cached = EvalClips(data.val, data.val_labels, inputs, cache_dir=tmp_path)
    for _ in range(2):
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert a[0] == b[0] and a[1].dtype == b[1].dtype
            np.testing.assert_array_equal(a[1], b[1])
    assert len(cached.cache.entries()) == len(plain)


def test_fit_with_and_without_the_cache_ends_with_the_same_weights(data, tmp_path):
    recipe = TrainRecipe(backbone="r2plus1d_tiny", weights="random", crop=32, epochs=3, batch_size=4,
                         warmup_epochs=0.5, eval_clips=2, decode_every=2, device="cpu")
    # decoded in a DataLoader worker; read in this process by the prefetch thread, decoded there, or
    # decoded ahead in a background process
    runs = (("worker", None, 1), ("plain", None, 0), ("cached", "auto", 0), ("ahead", "auto", 1))
    results = [fit(recipe, data, tmp_path / name, workers=workers, cache_dir=cache) for name, cache, workers in runs]
    assert not (tmp_path / "plain" / "clip_cache").exists()
    for name in ("cached", "ahead"):
        assert len(list((tmp_path / name / "clip_cache").glob("*/*.clip"))) == len(data.train) + len(data.val)
    a, *others = (torch.load(r.backbone_path, weights_only=True) for r in results)
    for b in others:
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    maps = [[e["class_map"] for e in r.history] for r in results]
    assert maps[0] == maps[1] == maps[2] == maps[3]


def test_examples_read_in_this_process_are_made_by_the_prefetch_thread(data, tmp_path, monkeypatch):
    """With the cache the examples are made in one background thread while the model computes; an
    error mid-epoch stops that thread (and the decode pool) before ``fit`` raises."""
    threads = set()
    real = TrainClips.__getitem__

    def spy(self, key):
        threads.add(threading.current_thread().name)
        return real(self, key)

    monkeypatch.setattr(TrainClips, "__getitem__", spy)
    recipe = TrainRecipe(backbone="r2plus1d_tiny", weights="random", crop=32, epochs=2, batch_size=2,
                         warmup_epochs=0.5, eval_clips=2, decode_every=2, device="cpu")

    def stop(epoch, step, steps, loss):
        if (epoch, step) == (1, 1):
            raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test"):
        fit(recipe, data, tmp_path / "run", workers=1, on_step=stop)
    assert threads == {"prefetch"}
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]


def test_cli_flags():
    text = _parser().format_help()
    assert "--decode-every" in text and "--clip-cache" in text and "--no-clip-cache" in text
    args = _parser().parse_args(["--decode-every", "4", "--clip-cache", "c", "--no-clip-cache"])
    assert (args.decode_every, str(args.clip_cache), args.no_clip_cache) == (4, "c", True)
    with pytest.raises(ValueError):
        TrainRecipe(decode_every=0)


def test_a_generation_holds_the_run_epochs_and_an_epoch_past_them_rebuilds_it(data, tmp_path):
    inputs = _inputs("rgb", epochs=2, decode_every=4)  # epochs 0, 1 and the pass after them (SWA's)
    plain = TrainClips(data.train, data.train_labels, inputs, seed=6)
    cached = TrainClips(data.train, data.train_labels, inputs, seed=6, cache_dir=tmp_path)
    cached[(0, 0)]
    assert int(cached.cache.load("t0_0")["covered"]) == 3  # video 0's generation 0 is epochs 0-3; 3 is not run
    for epoch in range(6):
        for i in range(len(plain)):
            np.testing.assert_array_equal(plain[(epoch, i)][0], cached[(epoch, i)][0])
        if epoch == 3:
            assert int(cached.cache.load("t0_0")["covered"]) == 4
    assert not cached.cache.path("t0_0").exists()  # generation 1 started at epoch 4
