"""Render the frames of one demo video with vectorised numpy (no per-pixel Python loops).

Scene, back to front:

1. background: a random dark base colour plus smooth low-frequency clutter (amplitude grows
   with ``difficulty``);
2. distractors: random shapes that share the colour *or* the shape of a class object
   (with probability ``difficulty``; otherwise in colours no class uses), jittering;
3. one object per appearance label, jittering;
4. the carrier: a light-grey bar with a knob at one end (so rotation shows), which moves
   along the axes named by the motion labels and holds still on the others;
5. per-frame luminance noise (triangular, std ``1.5 + 8 * difficulty`` grey levels).

Every motion axis is evaluated at time ``tau``: ``tau = t`` for the forward class of a pair
and ``tau = t_end - t`` for its reverse, so the two classes of a pair have exactly
time-reversed frame distributions. Translations wrap around the frame, so the carrier's
position in any single frame is uniform whatever the direction. Jitter is a random-phase
sinusoid (time-reversible in distribution too).

Shapes are drawn as signed distance functions in object coordinates (``u`` along the
object's angle, ``v`` across it, image y pointing down), anti-aliased over one pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from extract.demo._classes import APPEARANCE_OBJECTS, MOTION_PAIRS

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 225),
    "green": (40, 175, 60),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 175),
    "cyan": (40, 190, 205),
    "orange": (240, 135, 30),
    "pink": (240, 140, 185),
    "brown": (135, 85, 45),
}
_TEXTURE_DARK, _TEXTURE_LIGHT = (25, 25, 25), (235, 235, 235)
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
_CLASS_FILLS = sorted({fill for _, fill in APPEARANCE_OBJECTS.values()})
_EASY_FILLS = sorted(set(COLOURS) - set(_CLASS_FILLS))
_CLASS_PAIRS = set(APPEARANCE_OBJECTS.values())


@dataclass
class Sprite:
    """One object: shape, fill and a per-frame trajectory (arrays of length T, or 1 if static).

    Attributes:
        shape: a name in ``SHAPES`` or ``"bar"`` (the carrier).
        fill: a colour name, a texture name, or an RGB tuple.
        radius: size in pixels at scale 1.
        cx, cy: centre in pixels (x right, y down).
        angle: orientation in radians; increasing angle turns clockwise on screen.
        scale: size multiplier.
        visible: opacity in [0, 1].
        wrap: translate modulo the frame size (the object leaves one side, enters the other).
    """

    shape: str
    fill: str | tuple[int, int, int]
    radius: float
    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    visible: np.ndarray
    wrap: bool = False


def _sdf(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of a shape of circumradius ``r``."""
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    if shape == "triangle":  # apex up, inradius r / 2
        edges = np.maximum(v, np.maximum(-0.866 * u - 0.5 * v, 0.866 * u - 0.5 * v))
        return edges - 0.5 * r
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - r, av - 0.33 * r), np.maximum(au - 0.33 * r, av - r))
    if shape == "diamond":
        return (np.abs(u) + np.abs(v)) * 0.7071 - 0.75 * r
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.72 * r) - 0.28 * r
    if shape == "bar":  # the carrier: a bar along u with a round knob at its +u end
        body = np.maximum(np.abs(u) - r, np.abs(v) - 0.3 * r)
        return np.minimum(body, np.hypot(u - r, v) - 0.45 * r)
    raise ValueError(f"unknown shape {shape!r}")


def _rgb(colour: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(colour, np.float32).reshape(3, 1, 1, 1)


def _fill(fill: str | tuple[int, int, int], u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Fill colour, channel first: ``(3, 1, 1, 1)`` if solid, ``(3, t, h, w)`` if a texture."""
    if isinstance(fill, tuple):
        return _rgb(fill)
    if fill in COLOURS:
        return _rgb(COLOURS[fill])
    period = max(0.45 * r, 1.5)
    if fill == "stripes":
        light = np.floor(u / period) % 2 == 0
    elif fill == "checker":
        light = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:
        raise ValueError(f"unknown fill {fill!r}")
    return np.where(light[None], _rgb(_TEXTURE_LIGHT), _rgb(_TEXTURE_DARK))


def _sprite_alpha(sprite: Sprite, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Opacity ``(t, h, w)`` and colour (see :func:`_fill`) at offsets from the centre."""
    cos = np.cos(sprite.angle).astype(np.float32)[:, None, None]
    sin = np.sin(sprite.angle).astype(np.float32)[:, None, None]
    scale = sprite.scale.astype(np.float32)[:, None, None]
    u = (dx * cos + dy * sin) / scale  # (t, h, w)
    v = (dy * cos - dx * sin) / scale
    dist = _sdf(sprite.shape, u, v, sprite.radius) * scale
    alpha = np.clip(0.5 - dist, 0.0, 1.0) * sprite.visible.astype(np.float32)[:, None, None]
    return alpha, _fill(sprite.fill, u, v, sprite.radius)


def draw_sprite(canvas: np.ndarray, sprite: Sprite) -> None:
    """Alpha-blend ``sprite`` into ``canvas`` (channel first: (3, T, H, W) float32) in place.

    A fixed sprite is drawn in the box its whole trajectory covers; a wrapping one in a
    per-frame box around its centre whose pixel indices wrap modulo the frame.
    """
    _, n_frames, height, width = canvas.shape
    reach = sprite.radius * float(np.max(sprite.scale)) * 1.5 + 2.0
    if sprite.wrap:
        box_w, box_h = (min(int(np.ceil(2 * reach)), side) for side in (width, height))
        cx = np.broadcast_to(sprite.cx, (n_frames,)).astype(np.float32)
        cy = np.broadcast_to(sprite.cy, (n_frames,)).astype(np.float32)
        xs = np.floor(cx - box_w / 2).astype(int)[:, None] + np.arange(box_w)  # (T, w)
        ys = np.floor(cy - box_h / 2).astype(int)[:, None] + np.arange(box_h)  # (T, h)
        dx = (xs + 0.5 - cx[:, None])[:, None, :]  # (T, 1, w)
        dy = (ys + 0.5 - cy[:, None])[:, :, None]  # (T, h, 1)
        alpha, colour = _sprite_alpha(sprite, dx, dy)
        index = (np.arange(n_frames)[:, None, None], (ys % height)[:, :, None],
                 (xs % width)[:, None, :])
        region = canvas[(slice(None), *index)]  # a copy: (3, T, h, w)
        region += alpha * (colour - region)
        canvas[(slice(None), *index)] = region
        return
    x0 = max(0, int(np.floor(np.min(sprite.cx) - reach)))
    x1 = min(width, int(np.ceil(np.max(sprite.cx) + reach)))
    y0 = max(0, int(np.floor(np.min(sprite.cy) - reach)))
    y1 = min(height, int(np.ceil(np.max(sprite.cy) + reach)))
    if x1 <= x0 or y1 <= y0:
        return
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5
    dx = xs[None, None, :] - sprite.cx.astype(np.float32)[:, None, None]  # (t, 1, w)
    dy = ys[None, :, None] - sprite.cy.astype(np.float32)[:, None, None]  # (t, h, 1)
    alpha, colour = _sprite_alpha(sprite, dx, dy)
    region = canvas[:, :, y0:y1, x0:x1]  # a view: (3, T, h, w)
    region += alpha * (colour - region)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinear upsampling of a random ``3 x cells x cells`` grid: ``(3, size, size)``."""
    grid = rng.standard_normal((cells, cells, 3)).astype(np.float32)
    pos = np.linspace(0, cells - 1, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(int), cells - 2)
    frac = pos - i0
    rows = grid[i0] * (1 - frac)[:, None, None] + grid[i0 + 1] * frac[:, None, None]
    field = rows[:, i0] * (1 - frac)[None, :, None] + rows[:, i0 + 1] * frac[None, :, None]
    return np.moveaxis(field, -1, 0)  # (size, size, 3) -> (3, size, size)


def _jitter(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """A random-phase sinusoidal offset, ``(T,)``; ``(1,)`` zeros when ``amplitude`` is 0."""
    if amplitude <= 0:
        return np.zeros(1)
    freq = rng.uniform(0.3, 1.2)
    return amplitude * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _place(rng: np.random.Generator, size: int, radius: float,
           taken: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A centre inside the frame, avoiding the objects in ``taken`` when possible."""
    margin = min(radius * 1.2, size / 2 - 1)
    for _ in range(30):
        x, y = rng.uniform(margin, size - margin, 2)
        if all(math.hypot(x - ox, y - oy) > radius + orad + 1 for ox, oy, orad in taken):
            break
    taken.append((x, y, radius))
    return float(x), float(y)


def _distractor_look(rng: np.random.Generator, difficulty: float) -> tuple[str, str]:
    """(shape, fill) of a distractor: never a class conjunction; confusable with prob. d."""
    while True:
        if rng.random() < difficulty:  # shares the colour or the shape of a class object
            shape, fill = rng.choice(SHAPES), rng.choice(_CLASS_FILLS)
        else:
            shape, fill = rng.choice(SHAPES), rng.choice(_EASY_FILLS)
        if (str(shape), str(fill)) not in _CLASS_PAIRS:
            return str(shape), str(fill)


def _carrier(rng: np.random.Generator, labels: set[str], t: np.ndarray, size: int,
             difficulty: float) -> tuple[Sprite, dict[str, str]]:
    """The neutral carrier object and, per motion axis, ``"forward"``/``"reverse"``/``"none"``."""
    t_end = float(t[-1]) if len(t) > 1 else 1.0
    directions: dict[str, str] = {}
    taus: dict[str, np.ndarray] = {}
    for axis, (forward, reverse) in MOTION_PAIRS.items():
        directions[axis] = "forward" if forward in labels else (
            "reverse" if reverse in labels else "none")
        taus[axis] = t if directions[axis] != "reverse" else t_end - t
    # draw every parameter whatever the labels, so one label does not shift the others
    x0, y0 = rng.uniform(0, size, 2)
    speed_x, speed_y = rng.uniform(0.35, 0.7, 2) * size / t_end
    angle0, turns = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)
    scale_mid, zoom = rng.uniform(0.85, 1.15), rng.uniform(2.2, 3.5)
    static_zoom = rng.uniform(-0.5, 0.5)
    t_on, ramp = rng.uniform(0.2, 0.6) * t_end, 0.2
    jitter = 2.0 * difficulty * size / 112
    jx, jy = _jitter(rng, t, jitter), _jitter(rng, t, jitter)

    moving = {axis: d != "none" for axis, d in directions.items()}
    cx = x0 + speed_x * taus["x"] if moving["x"] else np.full(1, x0) + jx
    cy = y0 + speed_y * taus["y"] if moving["y"] else np.full(1, y0) + jy
    angle = (angle0 + 2 * np.pi * turns / t_end * taus["angle"] if moving["angle"]
             else np.full(1, angle0))
    scale = (scale_mid * zoom ** (taus["scale"] / t_end - 0.5) if moving["scale"]
             else np.full(1, scale_mid * 2.5 ** static_zoom))
    if moving["visibility"]:
        visible = np.clip((taus["visibility"] - t_on) / ramp, 0.0, 1.0)
        visible = visible * visible * (3 - 2 * visible)  # smoothstep
    else:
        visible = np.ones(1)
    grey = int(rng.integers(185, 236))
    sprite = Sprite("bar", (grey, grey, grey), size * rng.uniform(0.08, 0.11), cx, cy,
                    angle, scale, visible, wrap=True)
    return sprite, directions


def render_frames(
    labels: set[str] | frozenset[str],
    rng: np.random.Generator,
    *,
    size: int,
    n_frames: int,
    fps: float,
    difficulty: float,
) -> tuple[np.ndarray, dict]:
    """Render the frames of one video.

    Args:
        labels: the video's class names (sound classes are ignored here).
        rng: the video's generator for the picture.
        size: frame height and width in pixels.
        n_frames: number of frames T.
        fps: frame rate.
        difficulty: 0 (clean) to 1 (cluttered, noisy, confusable distractors).

    Returns:
        ``(frames, meta)``: frames ``(T, size, size, 3)`` uint8; ``meta`` with the carrier's
        per-frame ``cx``, ``cy`` (unwrapped; the picture wraps them modulo ``size``),
        ``angle``, ``scale``, ``visible`` (each ``(T,)``), its ``directions`` per axis, the
        list of ``objects`` drawn and the ``noise_sigma``.
    """
    t = np.arange(n_frames) / fps
    base = rng.uniform(35, 110, 3).astype(np.float32)
    clutter = _smooth_field(rng, size, int(rng.integers(3, 7))) * (6 + 40 * difficulty)
    # channel-first canvas, so every broadcast runs along contiguous rows of pixels
    canvas = np.empty((3, n_frames, size, size), np.float32)
    canvas[:] = (base[:, None, None] + clutter)[:, None]  # (3, H, W) -> (3, 1, H, W)

    objects: list[dict] = []
    taken: list[tuple[float, float, float]] = []
    jitter = 3.0 * difficulty * size / 112
    n_distractors = int(rng.integers(0, 3 + round(4 * difficulty)))
    looks = [("distractor", *_distractor_look(rng, difficulty)) for _ in range(n_distractors)]
    looks += [(name, *APPEARANCE_OBJECTS[name]) for name in sorted(labels)
              if name in APPEARANCE_OBJECTS]
    for kind, shape, fill in looks:
        radius = size * rng.uniform(0.075, 0.11) * (1 - 0.25 * difficulty)
        x, y = _place(rng, size, radius, taken)
        sprite = Sprite(shape, fill, radius, x + _jitter(rng, t, jitter),
                        y + _jitter(rng, t, jitter), np.full(1, rng.uniform(0, 2 * np.pi)),
                        np.ones(1), np.ones(1))
        draw_sprite(canvas, sprite)
        objects.append({"kind": kind, "shape": shape, "fill": fill, "x": x, "y": y,
                        "radius": radius})

    carrier, directions = _carrier(rng, set(labels), t, size, difficulty)
    draw_sprite(canvas, carrier)

    sigma = 1.5 + 8.0 * difficulty
    shape = (n_frames, size, size)  # luminance noise, the same in R, G and B
    noise = rng.random(shape, dtype=np.float32)
    noise += rng.random(shape, dtype=np.float32)
    noise -= 1
    noise *= np.float32(sigma * np.sqrt(6))  # triangular, std = sigma (fast to draw)
    canvas += noise
    planes = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for c in range(3):  # (3, T, H, W) -> (T, H, W, 3), one plane at a time (fast)
        frames[..., c] = planes[c]
    meta = {
        "carrier": {k: np.broadcast_to(getattr(carrier, k), (n_frames,)).astype(np.float64)
                    for k in ("cx", "cy", "angle", "scale", "visible")},
        "directions": directions,
        "objects": objects,
        "noise_sigma": sigma,
    }
    return frames, meta
