"""heads.trainer / heads.train on tiny synthetic stores (300 videos, K=4, D=16)."""

import json
import re

import numpy as np
import pytest
import torch

from heads.metrics import class_map
from heads.train import main
from heads.trainer import (
    FeatureCache,
    TrainConfig,
    TrainError,
    assign_folds,
    build_head,
    train_head,
)
from store import FeatureSetSpec
from store.errors import SettingsError
from store.testing import make_synthetic_store

FAST = {"features": ("synthetic",), "epochs": 3, "batch_size": 32, "lr": 1e-2, "warmup": 0.5, "device": "cpu"}
NETVLAD = {"head": "netvlad", "head_kwargs": {"num_clusters": 4, "hidden_dim": 16}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    fs = make_synthetic_store(tmp_path_factory.mktemp("train") / "s.zarr", n_videos=300, n_classes=5, clips=4,
                              dim=16, chunk_rows=32, noise=0.5, short_fraction=0.3)
    rng = np.random.default_rng(1)
    n = fs.n_videos
    extra = fs.create_feature_set("extra", FeatureSetSpec(clips=4, dim=3, chunk_rows=32))
    done = np.flatnonzero(rng.random(n) > 0.2)
    with extra.writer() as w:
        w.write_rows(done, rng.standard_normal((len(done), 4, 3)))
    k3 = fs.create_feature_set("k3", FeatureSetSpec(clips=3, dim=4, chunk_rows=32))
    with k3.writer() as w:
        w.write_rows(np.arange(n), rng.standard_normal((n, 3, 4)))
    val_only = fs.create_feature_set("valonly", FeatureSetSpec(clips=4, dim=16, chunk_rows=32))
    with val_only.writer() as w:
        rows = fs.split_rows("val")
        w.write_rows(rows, rng.standard_normal((len(rows), 4, 16)))
    return fs


def test_config_round_trip_hash_and_checks():
    cfg = TrainConfig(features=["a", "b"], head="mean_mlp", head_kwargs={"hidden_dim": 8}, lr=0.01, folds=3)
    assert cfg.features == ("a", "b")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert TrainConfig.from_dict({**cfg.to_dict(), "device": "cuda"}).config_hash() == cfg.config_hash()
    assert TrainConfig.from_dict({**cfg.to_dict(), "lr": 0.02}).config_hash() != cfg.config_hash()
    assert cfg.default_run_name() == f"mean_mlp-bce-a.b-{cfg.config_hash()[:8]}"
    assert TrainConfig(features=("a",), swa="swa", epochs=8).resolved_swa_start() == 6
    bad = [{"head": "nope"}, {"loss": "nope"}, {"lr": 0}, {"folds": 1}, {"swa": "x"}, {"batch_size": 1},
           {"head": "mean_mlp", "head_kwargs": {"num_clusters": 3}}, {"head_kwargs": {"dropout": 0.1}},
           {"loss": "focal", "loss_kwargs": {"bogus": 1}}, {"swa_start": 20}, {"features": ()},
           {"device": "tpu"}, {"reader": "disk"}, {"mixup_alpha": -1.0}]
    for kw in bad:
        with pytest.raises(SettingsError):
            TrainConfig(**{"features": ("a",), **kw})
    with pytest.raises(ValueError, match="unknown setting.s. learning_rate; the settings"):
        TrainConfig.from_dict({"features": ["a"], "learning_rate": 1})
    # the messages name the flag and the TOML key the user wrote, not internal names
    for kw, words in [({"lr": 0}, "invalid --lr / lr 0: must be > 0"),
                      ({"folds": 1}, "invalid --folds / folds 1: must be 0 (off) or >= 2"),
                      ({"batch_size": 1}, "invalid --batch-size / batch_size 1: must be >= 2"),
                      ({"swa_start": 20}, "invalid --swa-start / swa_start 20: must be >= 0 and below the epochs"),
                      ({"device": "tpu"}, "--device / device must be auto, cpu, cuda or cuda:N; got 'tpu'"),
                      ({"head_kwargs": {"dropout": 0.1}}, "with --dropout / dropout, not with --head-arg")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            TrainConfig(**{"features": ("a",), **kw})


@pytest.mark.parametrize("head, kw", [("mean_mlp", {"hidden_dim": 16}), ("netvlad", NETVLAD["head_kwargs"])])
def test_head_learns_a_separable_task_and_writes_every_row(store, tmp_path, head, kw):
    cfg = TrainConfig(**{**FAST, "epochs": 5}, head=head, head_kwargs=kw)
    res = train_head(store, cfg, out_dir=tmp_path / "run", progress=False)
    assert res.metrics["val"]["class_map"] > 0.9 and res.metrics["test"]["class_map"] > 0.9
    scores, attrs = store.read_predictions(res.run_name)
    assert res.scores is None  # written to the store in row blocks, not held
    assert scores.shape == (store.n_videos, 5) and ((scores > 0) & (scores < 1)).all()
    assert attrs["score_type"] == "sigmoid" and attrs["config_hash"] == cfg.config_hash()
    assert attrs["features"] == ["synthetic"] and attrs["missing_rows"] == 0 and attrs["folds"] == 0
    assert (store.read_prediction_folds(res.run_name) == -1).all()
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["checkpoint.pt", "config.json", "metrics.json"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["folds"][0]["history"]) == 5 and 0 <= metrics["timing"]["data_wait_fraction"] < 1
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    model = build_head(TrainConfig.from_dict(ckpt["config"]), ckpt["in_dim"], 5)
    model.load_state_dict(ckpt["models"][0])


def test_same_seed_same_predictions_other_seed_differs(store):
    cfg = TrainConfig(**FAST, **NETVLAD, dropout=0.2, mixup_alpha=0.4, swa="ema", ema_decay=0.9)
    rng_before = torch.get_rng_state()
    a = train_head(store, cfg, write_predictions=False, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before), "train_head must not consume the global RNG"
    assert not torch.are_deterministic_algorithms_enabled()
    b = train_head(store, cfg, write_predictions=False, progress=False)
    np.testing.assert_array_equal(a.scores, b.scores)
    c = train_head(store, TrainConfig(**{**cfg.to_dict(), "seed": 1}), write_predictions=False, progress=False)
    assert not np.array_equal(a.scores, c.scores)


def test_resume_gives_the_uninterrupted_result(store, tmp_path):
    cfg = TrainConfig(**FAST, **NETVLAD, folds=2, swa="swa", swa_start=1, mixup_alpha=0.3, dropout=0.1, patience=0)
    full = train_head(store, cfg, out_dir=tmp_path / "full", write_predictions=False, progress=False)

    class Stop(Exception):
        pass

    def interrupt(record):
        if record["fold"] == 1 and record["epoch"] == 0:
            raise Stop

    with pytest.raises(Stop):
        train_head(store, cfg, out_dir=tmp_path / "cut", write_predictions=False, progress=False,
                   on_epoch_end=interrupt)
    assert (tmp_path / "cut" / "state.pt").is_file()
    resumed = train_head(store, cfg, out_dir=tmp_path / "cut", resume=True, write_predictions=False, progress=False)
    np.testing.assert_array_equal(resumed.scores, full.scores)
    for f, r in zip(full.metrics["folds"], resumed.metrics["folds"]):
        assert [h["loss"] for h in f["history"]] == [h["loss"] for h in r["history"]]
    assert not (tmp_path / "cut" / "state.pt").exists()
    other = TrainConfig(**{**cfg.to_dict(), "lr": 0.1})
    with pytest.raises(Stop):
        train_head(store, cfg, out_dir=tmp_path / "x", write_predictions=False, progress=False, on_epoch_end=interrupt)
    with pytest.raises(TrainError, match="another configuration"):
        train_head(store, other, out_dir=tmp_path / "x", resume=True, write_predictions=False, progress=False)


def test_folds_give_out_of_fold_train_scores_and_averaged_val_scores(store):
    cfg = TrainConfig(**FAST, head="mean_mlp", head_kwargs={"hidden_dim": 16}, folds=3)
    res = train_head(store, cfg, run_name="oof", progress=False)
    scores = store.read_predictions("oof")[0]
    train = store.split_rows("train")
    fold = store.read_prediction_folds("oof")
    assert set(fold[train]) == {0, 1, 2} and (np.delete(fold, train) == -1).all()
    np.testing.assert_array_equal(fold[train], assign_folds(len(train), 3, cfg.seed))
    models = []
    for state in res.model_states:
        m = build_head(cfg, 16, 5).eval()
        m.load_state_dict(state)
        models.append(m)
    data, valid = store.feature_set("synthetic").read()
    with torch.no_grad():
        probs = [torch.sigmoid(m(torch.from_numpy(data), torch.from_numpy(valid))).numpy() for m in models]
    for j in range(3):
        rows = train[fold[train] == j]
        np.testing.assert_allclose(scores[rows], probs[j][rows], atol=1e-5)
    rest = np.setdiff1d(np.arange(store.n_videos), train)
    np.testing.assert_allclose(scores[rest], np.mean(probs, axis=0)[rest], atol=1e-5)
    assert res.metrics["train_oof"]["class_map"] > 0.85
    val = np.intersect1d(store.split_rows("val"), np.flatnonzero(store.feature_set("synthetic").done()))
    for j, f in enumerate(res.metrics["folds"]):  # each fold model's val metrics: its own scores of the val rows
        assert f["val"]["class_map"] == pytest.approx(class_map(probs[j][val], store.labels(val)).value, abs=1e-5)


def test_val_rows_are_scored_once_after_training(store, monkeypatch):
    import heads._fit
    import heads.trainer

    val = set(store.split_rows("val").tolist())
    calls = {"epochs": 0, "after": 0}

    def counting(where, original):
        def wrapped(model, source, rows, **kw):
            calls[where] += len(val & set(np.asarray(rows).tolist())) > 0
            return original(model, source, rows, **kw)
        return wrapped

    monkeypatch.setattr(heads._fit, "predict", counting("epochs", heads._fit.predict))
    monkeypatch.setattr(heads.trainer, "predict", counting("after", heads.trainer.predict))
    cfg = TrainConfig(**{**FAST, "patience": 0}, head="mean_mlp", head_kwargs={"hidden_dim": 16})
    res = train_head(store, cfg, write_predictions=False, progress=False)
    assert calls == {"epochs": cfg.epochs, "after": 1}  # once per epoch to keep the best, once at the end
    assert res.metrics["folds"][0]["val"] == res.metrics["val"]
    calls.update(epochs=0, after=0)
    one = train_head(store, TrainConfig(**{**cfg.to_dict(), "epochs": 1}), write_predictions=False, progress=False)
    assert calls == {"epochs": 0, "after": 1}  # one epoch: nothing to choose, so the val rows are scored once
    assert one.metrics["folds"][0]["val"] == one.metrics["val"] and one.metrics["val"]["class_map"] > 0


def test_assign_folds_is_a_balanced_seeded_partition():
    f = assign_folds(103, 4, seed=7)
    assert sorted(np.bincount(f)) == [25, 26, 26, 26]
    np.testing.assert_array_equal(f, assign_folds(103, 4, seed=7))
    assert not np.array_equal(f, assign_folds(103, 4, seed=8))


def test_stream_reader_and_shared_cache(store):
    base = {**FAST, "head": "mean_mlp", "head_kwargs": {"hidden_dim": 16}}
    mem = train_head(store, TrainConfig(**base, reader="memory"), write_predictions=False, progress=False)
    cache = FeatureCache.load(store, ["synthetic"])
    shared = train_head(store, TrainConfig(**base), data=cache, write_predictions=False, progress=False)
    np.testing.assert_array_equal(mem.scores, shared.scores)
    assert shared.metrics["reader"] == "memory"
    stream = train_head(store, TrainConfig(**base, reader="stream"), write_predictions=False, progress=False)
    assert stream.metrics["reader"] == "stream" and stream.metrics["val"]["class_map"] > 0.8
    with pytest.raises(TrainError, match="feature sets"):
        train_head(store, TrainConfig(**{**base, "features": ("synthetic", "extra")}), data=cache, progress=False)


def test_concatenated_sets_and_rows_not_done_score_zero(store):
    cfg = TrainConfig(**{**FAST, "features": ("synthetic", "extra"), "epochs": 2}, head="mean_mlp")
    res = train_head(store, cfg, run_name="concat", progress=False)
    scores = store.read_predictions("concat")[0]
    done = store.feature_set("extra").done()
    assert res.metrics["rows"]["missing"] == int((~done).sum()) > 0
    assert (scores[~done] == 0).all() and (scores[done] > 0).all()
    assert store.read_predictions("concat")[1]["missing_rows"] == int((~done).sum())
    assert res.model_states[0]["mlp.layers.1.weight"].shape == (512, 19)  # D = 16 + 3


def test_early_stopping_keeps_the_best_epoch(store):
    cfg = TrainConfig(**{**FAST, "epochs": 10, "lr": 1e-12, "warmup": 0}, head="mean_mlp", patience=2)
    res = train_head(store, cfg, write_predictions=False, progress=False)
    assert res.metrics["folds"][0]["epochs_run"] == 3 and res.metrics["folds"][0]["best_epoch"] == 0


def test_cli_toml_defaults_flags_win_and_summary(store, tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text(f'store = "{store.path}"\nfeatures = ["synthetic"]\nhead = "mean_mlp"\nepochs = 2\n'
                    'batch_size = 32\ndevice = "cpu"\n[head_kwargs]\nhidden_dim = 8\n')
    out = tmp_path / "run"
    assert main(["--config", str(toml), "--epochs", "3", "--out", str(out), "--run-name", "cli", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "class mAP" in text and "top-5" in text and "val" in text and "data wait" in text
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["epochs"] == 3 and cfg["head_kwargs"] == {"hidden_dim": 8} and cfg["batch_size"] == 32
    assert store.read_predictions("cli")[1]["config"]["epochs"] == 3


@pytest.mark.parametrize("args, words", [
    (["--features", "synthetic", "--head", "nope"], "unknown head"),
    (["--features", "synthetic", "--loss", "nope"], "unknown loss"),
    (["--features", "nope"], "no feature set"),
    (["--features", "synthetic", "--features", "k3"], "same number of clips"),
    (["--features", "valonly"], "train row"),
    (["--features", "synthetic", "--run-name", "bad name"], "invalid run name"),
])
def test_cli_errors_are_one_line_and_exit_2(store, tmp_path, capsys, args, words):
    assert main(["--store", str(store.path), "--out", str(tmp_path / "r"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
