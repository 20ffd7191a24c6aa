"""xgboost fusion trained with xgboost.dask on a small LocalCluster matches the local path."""

import numpy as np
import pytest

from fusion import get_fusion, make_synthetic_fusion_store
from fusion.run import main
from heads.metrics import class_map

distributed = pytest.importorskip("distributed")


def test_dask_training_matches_local_training(problem, tmp_path, capsys):
    syn, x, train, test = problem
    classes = np.arange(10, 16)  # sound and action x direction classes: availability and interactions
    xs = type(x)(x.probs[:, :, classes], x.available, x.names)
    labels = syn.labels[:, classes]
    settings = {"n_rounds": 60}
    local = get_fusion("xgboost", settings).fit(xs.take(train), labels[train])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            remote = get_fusion("xgboost", settings, client=client).fit(xs.take(train), labels[train])
        # the command line connects its own client (one client per process at a time)
        fs = make_synthetic_fusion_store(tmp_path / "s.zarr", n_videos=600, n_classes=4)
        argv = ["--store", str(fs.path), "--runs", "rgb", "flow", "audio", "--scheduler", cluster.scheduler_address,
                "--compare", "--rounds", "20"]
        assert main(argv) == 0, capsys.readouterr().err
        assert "fused run written: fused_xgboost" in capsys.readouterr().out
    xt = xs.take(test)
    a, b = local.margin(xt), remote.margin(xt)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    map_local = class_map(a, labels[test]).value
    map_remote = class_map(b, labels[test]).value
    assert abs(map_local - map_remote) < 0.02, (map_local, map_remote)
    assert (remote.rounds_ > 0).all()  # every class got trees (early stopping may pick other rounds)
