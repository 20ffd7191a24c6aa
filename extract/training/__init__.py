"""Backbone training on videos (``python -m extract.train``): recipe, data, loop, SWA, mixup.

>>> from extract.training import TrainRecipe, TrainData, fit  # doctest: +SKIP
>>> result = fit(TrainRecipe(backbone="r2plus1d_18", epochs=10), data, "runs/r21d")  # doctest: +SKIP
>>> result.backbone_path   # loads with `python -m extract.run --weights runs/r21d/backbone.pt`  # doctest: +SKIP

See ``extract/README_train.md``.
"""

from extract.training.loop import (
    TrainData,
    TrainError,
    TrainResult,
    build_backbone,
    fit,
    predict_videos,
)
from extract.training.recipe import TrainRecipe

__all__ = ["TrainData", "TrainError", "TrainRecipe", "TrainResult", "build_backbone", "fit", "predict_videos"]
