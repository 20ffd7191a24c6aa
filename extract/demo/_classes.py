"""The demo dataset's classes (three families, evidence in different modalities) and which
videos get which labels and splits.

* appearance: which coloured or textured object is on screen; any single frame shows it.
  A class is a (shape, fill) conjunction; distractors share the colour *or* the shape of a
  class object, never both.
* motion: what the neutral grey "carrier" object does. Classes come in pairs that are
  exact time reversals of each other (``moves_right`` played backwards is ``moves_left``),
  so the set of frames of a video says nothing about the class; only their order does.
  Every video has a carrier, moving or not, and its look carries no label.
* sound: events in the audio track only (no visual counterpart).

The order of :data:`DEMO_CLASSES` is the label-id order written to ``classes.txt``.

Label assignment (:func:`video_labels`) depends only on ``(seed, index)``: the first
label of video ``i`` walks a seeded permutation of the classes (round ``i // C``), so every
run of ``C`` consecutive videos holds every class; 0-3 more labels are drawn uniformly
among the classes not excluded by :data:`EXCLUSIVE_GROUPS` (1-4 labels with
probabilities :data:`LABEL_COUNT_PROBS`).
"""

from __future__ import annotations

import numpy as np

# appearance class -> (shape, fill)
APPEARANCE_OBJECTS: dict[str, tuple[str, str]] = {
    "red_circle": ("circle", "red"),
    "blue_square": ("square", "blue"),
    "green_triangle": ("triangle", "green"),
    "yellow_cross": ("cross", "yellow"),
    "striped_disc": ("circle", "stripes"),
    "checker_square": ("square", "checker"),
}

# (forward, time-reversed) pairs, one per motion axis of the carrier
MOTION_PAIRS: dict[str, tuple[str, str]] = {
    "x": ("moves_right", "moves_left"),
    "y": ("falls", "rises"),  # image y grows downwards: falling is the forward direction
    "angle": ("rotates_cw", "rotates_ccw"),  # clockwise as seen on screen
    "scale": ("approaches", "recedes"),
    "visibility": ("appears", "disappears"),
}

SOUND_CLASSES: tuple[str, ...] = ("tone", "chirp_up", "chirp_down", "knocks", "noise_bursts")

APPEARANCE_CLASSES: tuple[str, ...] = tuple(APPEARANCE_OBJECTS)
MOTION_CLASSES: tuple[str, ...] = tuple(name for pair in MOTION_PAIRS.values() for name in pair)
DEMO_CLASSES: tuple[str, ...] = APPEARANCE_CLASSES + MOTION_CLASSES + SOUND_CLASSES

CLASS_FAMILIES: dict[str, str] = {
    **{name: "appearance" for name in APPEARANCE_CLASSES},
    **{name: "motion" for name in MOTION_CLASSES},
    **{name: "sound" for name in SOUND_CLASSES},
}

# at most one class of each group per video
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    *MOTION_PAIRS.values(),
    ("chirp_up", "chirp_down"),
)

SPLIT_NAMES = ("train", "val", "test")
LABEL_COUNT_PROBS = (0.25, 0.35, 0.25, 0.15)  # P(1, 2, 3, 4 labels)
# independent random streams of a demo: np.random.default_rng([seed, STREAM, ...])
STREAM_ROUND, STREAM_LABELS, STREAM_PICTURE, STREAM_SOUND, STREAM_SPLIT = range(5)


def video_labels(index: int, seed: int) -> tuple[str, ...]:
    """Labels of demo video ``index``: 1-4 classes, at most one per exclusive group."""
    n_classes = len(DEMO_CLASSES)
    order = np.random.default_rng([seed, STREAM_ROUND, index // n_classes]).permutation(n_classes)
    chosen = {DEMO_CLASSES[order[index % n_classes]]}
    rng = np.random.default_rng([seed, STREAM_LABELS, index])
    count = int(rng.choice(len(LABEL_COUNT_PROBS), p=LABEL_COUNT_PROBS)) + 1
    while len(chosen) < count:
        banned = {c for group in EXCLUSIVE_GROUPS if chosen & set(group) for c in group}
        options = [c for c in DEMO_CLASSES if c not in chosen and c not in banned]
        chosen.add(options[int(rng.integers(len(options)))])
    return tuple(c for c in DEMO_CLASSES if c in chosen)


def assign_splits(n: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Split names of ``n`` videos: seeded, sizes by largest remainder, >= 1 per used split."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(3):  # a split with a share gets a video when there are enough
        if fractions[i] > 0 and counts[i] == 0 and n >= np.count_nonzero(fractions):
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    names = np.repeat(np.array(SPLIT_NAMES), counts)
    order = np.random.default_rng([seed, STREAM_SPLIT]).permutation(n)
    out = np.empty(n, dtype=object)
    out[order] = names
    return [str(s) for s in out]


