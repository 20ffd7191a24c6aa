"""Shared synthetic fusion data: RGB/flow/audio-like runs with complementary informativeness."""

import numpy as np
import pytest

from fusion.inputs import StackInputs
from fusion.synthetic import MODELS, synthetic_predictions


@pytest.fixture(scope="package")
def problem():
    """16 classes (appearance 0-5 seen by rgb, motion 6-9 by flow, sound 10-12 by audio only when
    the video has audio, action x direction 13-15 needing rgb and flow together); 3000 videos."""
    syn = synthetic_predictions(3000, 16, seed=0)
    probs = np.stack([syn.scores[m] for m in MODELS], axis=1)  # (n, M, C)
    avail = np.ones(probs.shape[:2], bool)
    avail[:, 2] = syn.has_audio
    x = StackInputs(probs, avail, MODELS)
    train = np.flatnonzero(syn.split == "train")
    test = np.flatnonzero(syn.split == "test")
    return syn, x, train, test
