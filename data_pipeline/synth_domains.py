"""The four synthetic domains: how a class is drawn (its fixed parameters) and how one image of it is rendered.

They differ the way the real data sets do:
- face: one homogeneous kind of thing. An identity is a fixed face geometry (feature sizes and spacing, head
  shape); every image varies skin, hair and eye colour, hair style, pose, scale, lighting, expression, background
  and noise, so identity is a fine-grained call on facial structure, not on colour.
- object: heterogeneous categories, each its own body shape, parts, texture and colours.
- food: categories defined by texture and colour on a plate, seen close up.
- car: a homogeneous fine-grained kind again (body proportions, cabin, wheels, windows, colour), side view.

A domain is a pair of functions: `identity(rng) -> params` draws a class, `render(params, rng, size) -> uint8 HxWx3`
draws one image of it. Both take all randomness from the generator they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from data_pipeline import synth_canvas as cv

Params = dict[str, Any]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random scene background: a colour gradient, smooth blotches and a few faint distractor blobs."""
    first, second = (
        cv.hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.2, 0.95)),
        cv.hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.2, 0.95)),
    )
    canvas = cv.gradient_background(rng, size, first, second)
    canvas *= (0.8 + 0.4 * cv.smooth_noise(rng, size, 4))[..., None]
    frame = cv.posed_frame(size)
    for _ in range(rng.integers(0, 3)):
        blob = cv.ellipse(frame, rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.4))
        cv.paint(canvas, blob * 0.5, cv.hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.2, 0.9)))
    return canvas


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shared photometric variation: lighting direction and strength, brightness, colour cast, pixel noise."""
    canvas = cv.light(canvas, rng, strength=rng.uniform(0.0, 0.5), brightness=rng.uniform(0.75, 1.15))
    return cv.finish(canvas, rng, noise=rng.uniform(0.0, 0.04))


# ----------------------------------------------------------------------------------------------- faces

SKIN_LIGHT = np.array([0.98, 0.84, 0.72], dtype=np.float32)
SKIN_DARK = np.array([0.40, 0.26, 0.17], dtype=np.float32)
HAIR = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.28, 0.17, 0.09],
        [0.50, 0.33, 0.18],
        [0.85, 0.70, 0.40],
        [0.62, 0.25, 0.10],
        [0.65, 0.65, 0.65],
    ],
    dtype=np.float32,
)
IRIS = np.array([[0.35, 0.20, 0.08], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.45, 0.45, 0.50]], dtype=np.float32)


def face_identity(rng: np.random.Generator) -> Params:
    """A face identity: fixed head shape and feature geometry (eyes, brows, nose, mouth, jaw, ears) only.

    Colours (skin, hair, eyes, lips), hair style and beard vary from image to image (`face_appearance`), so that
    identity is told apart by fine facial structure, as real identity is, not by a coarse colour cue.
    """
    return {
        "face_w": rng.uniform(0.48, 0.66),
        "face_h": rng.uniform(0.66, 0.86),
        "jaw": rng.uniform(0.70, 1.0),
        "eye_gap": rng.uniform(0.19, 0.32),
        "eye_y": rng.uniform(-0.16, 0.02),
        "eye_r": rng.uniform(0.065, 0.11),
        "eye_aspect": rng.uniform(0.45, 0.75),
        "brow_gap": rng.uniform(0.08, 0.15),
        "brow_w": rng.uniform(0.02, 0.05),
        "brow_slant": rng.uniform(-0.35, 0.35),
        "nose_len": rng.uniform(0.12, 0.26),
        "nose_w": rng.uniform(0.045, 0.10),
        "mouth_y": rng.uniform(0.28, 0.46),
        "mouth_w": rng.uniform(0.11, 0.24),
        "lip": rng.uniform(0.02, 0.05),
        "ear": rng.uniform(0.07, 0.14),
    }


def face_appearance(rng: np.random.Generator) -> Params:
    """What varies between images of one identity besides pose and expression: skin, hair, eye and lip colour, hair
    style and a beard, each drawn from the whole population."""
    return {
        "skin": SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * rng.random() + rng.uniform(-0.04, 0.04, 3),
        "hair": cv.jitter_colour(rng, HAIR[rng.integers(len(HAIR))], 0.06),
        "hairline": rng.uniform(-0.80, -0.42),
        "hair_volume": rng.uniform(0.02, 0.16),
        "hair_sides": rng.uniform(-0.35, 0.45),
        "parting": rng.uniform(-0.3, 0.3),
        "iris": cv.jitter_colour(rng, IRIS[rng.integers(len(IRIS))], 0.05),
        "lip_colour": cv.hsv(rng.uniform(-0.03, 0.03), rng.uniform(0.35, 0.7), rng.uniform(0.45, 0.8)),
        "beard": bool(rng.random() < 0.2),
    }


def face_render(identity: Params, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image of an identity: varies appearance (colours, hair), pose (roll, yaw, pitch), scale, position,
    expression, light and background. Faces are roughly centred and sized, as in the cropped, aligned face sets."""
    p = {**identity, **face_appearance(rng)}
    canvas = _background(rng, size)
    yaw, pitch = rng.uniform(-0.35, 0.35), rng.uniform(-0.06, 0.06)
    frame = cv.posed_frame(
        size,
        angle=rng.uniform(-0.15, 0.15),
        scale=rng.uniform(0.88, 1.04),
        dx=rng.uniform(-0.06, 0.06),
        dy=rng.uniform(-0.04, 0.08),
        squash_x=1.0 - 0.25 * abs(yaw),
    )
    w, h = p["face_w"], p["face_h"]
    skin, hair = p["skin"].astype(np.float32), p["hair"]
    cv.paint(canvas, cv.ellipse(frame, 0, -0.08, w + p["hair_volume"], h * 0.85 + p["hair_volume"]), hair)
    cv.paint(
        canvas,
        cv.box(
            frame, 0, p["hair_sides"] / 2 - 0.15, w + p["hair_volume"] * 0.8, p["hair_sides"] / 2 + 0.2, radius=0.05
        ),
        hair,
    )
    for side in (-1, 1):
        ear_r = p["ear"] * (1.0 + 0.5 * side * yaw)
        cv.paint(canvas, cv.ellipse(frame, side * w * 0.98, p["eye_y"] + 0.08, ear_r * 0.6, ear_r), skin * 0.92)
    face = np.maximum(cv.ellipse(frame, 0, -0.05, w, h * 0.8), cv.ellipse(frame, 0, 0.08, w * p["jaw"], h * 0.85))
    cv.paint(canvas, face, skin)
    if p["beard"]:
        cv.paint(canvas, cv.ellipse(frame, 0, p["mouth_y"] + 0.12, w * p["jaw"] * 0.85, 0.28) * face, hair)
    fringe = cv.box(frame, p["parting"] * 0.3, p["hairline"] - 0.4, w + 0.1, 0.4)
    cv.paint(canvas, fringe * cv.ellipse(frame, 0, -0.08, w + p["hair_volume"], h * 0.85 + p["hair_volume"]), hair)
    features = frame.shifted(yaw * w * 0.45, pitch)
    _face_features(canvas, features, p, rng)
    return _finish(canvas, rng)


def _face_features(canvas: np.ndarray, frame: cv.Frame, p: Params, rng: np.random.Generator) -> None:
    """Eyes, brows, nose and mouth, with this image's expression (openness, brow raise, smile, open mouth)."""
    openness, raise_, smile = rng.uniform(0.5, 1.1), rng.uniform(-0.02, 0.04), rng.uniform(-0.4, 1.4)
    eye_y, eye_r = p["eye_y"], p["eye_r"]
    for side in (-1, 1):
        ex = side * p["eye_gap"]
        cv.paint(
            canvas, cv.ellipse(frame, ex, eye_y, eye_r, eye_r * p["eye_aspect"] * openness), np.float32([0.95] * 3)
        )
        cv.paint(
            canvas,
            cv.ellipse(frame, ex, eye_y, eye_r * 0.5, eye_r * 0.5 * min(1.0, p["eye_aspect"] * openness * 1.6)),
            p["iris"],
        )
        brow_y = eye_y - p["brow_gap"] - raise_
        slant = side * p["brow_slant"] * eye_r
        cv.paint(
            canvas,
            cv.segment(
                frame, ex - side * eye_r * 1.1, brow_y + slant, ex + side * eye_r * 1.1, brow_y - slant, p["brow_w"]
            ),
            p["hair"] * 0.8,
        )
    nose_top, nose_bottom = eye_y + 0.05, eye_y + 0.05 + p["nose_len"]
    nose = cv.convex_polygon(frame, np.array([[0, nose_top], [-p["nose_w"], nose_bottom], [p["nose_w"], nose_bottom]]))
    cv.paint(canvas, nose * 0.45, p["skin"].astype(np.float32) * 0.6)
    mouth_y = max(p["mouth_y"], nose_bottom + 0.08)
    cv.paint(canvas, cv.arc(frame, 0, mouth_y, p["mouth_w"], 0.25 * smile, p["lip"] * 1.6), p["lip_colour"])
    if rng.random() < 0.3:
        cv.paint(
            canvas,
            cv.ellipse(frame, 0, mouth_y + 0.02, p["mouth_w"] * 0.6, rng.uniform(0.015, 0.05)),
            np.float32([0.15, 0.05, 0.05]),
        )


# --------------------------------------------------------------------------------------------- objects

BODY_SHAPES = ("ellipse", "box", "triangle", "polygon", "star", "ring", "cross", "capsule")
TEXTURES = ("plain", "stripes", "checks", "dots")


def object_identity(rng: np.random.Generator) -> Params:
    """An object category: body shape and proportions, 0-3 attached parts, a texture and two colours."""
    hue = rng.random()
    parts = [
        {
            "shape": str(rng.choice(("ellipse", "box", "ring", "segment"))),
            "angle": rng.uniform(0, 2 * np.pi),
            "size": rng.uniform(0.12, 0.35),
            "aspect": rng.uniform(0.3, 1.0),
            "colour": cv.hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.9)),
        }
        for _ in range(rng.integers(0, 4))
    ]
    return {
        "shape": str(rng.choice(BODY_SHAPES)),
        "aspect": rng.uniform(0.45, 1.0),
        "sides": int(rng.integers(5, 9)),
        "texture": str(rng.choice(TEXTURES)),
        "frequency": rng.uniform(3, 9),
        "texture_angle": rng.uniform(0, np.pi),
        "colour": cv.hsv(hue, rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0)),
        "second": cv.hsv(hue + rng.uniform(-0.5, 0.5), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0)),
        "parts": parts,
        "rotates": bool(rng.random() < 0.4),
    }


def _object_body(frame: cv.Frame, p: Params) -> np.ndarray:
    """Coverage of a category's body shape, about 0.5 local units in radius."""
    r, a = 0.5, p["aspect"]
    shapes: dict[str, Callable[[], np.ndarray]] = {
        "ellipse": lambda: cv.ellipse(frame, 0, 0, r, r * a),
        "box": lambda: cv.box(frame, 0, 0, r, r * a, radius=0.05),
        "triangle": lambda: cv.regular_polygon(frame, 0, 0.1, r * 1.1, 3, -np.pi / 2, aspect=a + 0.3),
        "polygon": lambda: cv.regular_polygon(frame, 0, 0, r, p["sides"], aspect=a),
        "star": lambda: cv.star(frame, 0, 0, r * 1.1, p["sides"] - 2),
        "ring": lambda: cv.ring(frame, 0, 0, r * 0.8, r * 0.8 * a, 0.18),
        "cross": lambda: np.maximum(cv.box(frame, 0, 0, r, r * a * 0.35), cv.box(frame, 0, 0, r * a * 0.35, r)),
        "capsule": lambda: cv.segment(frame, -r * 0.7, 0, r * 0.7, 0, r * a * 0.9),
    }
    return shapes[p["shape"]]()


def _object_texture(frame: cv.Frame, p: Params, rng: np.random.Generator) -> np.ndarray:
    """The category's surface pattern as a 0..1 weight between its two colours (random phase per image)."""
    phase = rng.uniform(0, 2 * np.pi)
    if p["texture"] == "stripes":
        return cv.stripes(frame, p["frequency"], p["texture_angle"], phase)
    if p["texture"] == "checks":
        return cv.checks(frame, p["frequency"], phase)
    if p["texture"] == "dots":
        return cv.dots(frame, p["frequency"], 0.25, phase / 10)
    return np.zeros_like(frame.u)


def object_render(p: Params, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image of a category: varies pose, scale, position, colour shade, distractors, light and background."""
    canvas = _background(rng, size)
    angle = rng.uniform(-np.pi, np.pi) if p["rotates"] else rng.uniform(-0.4, 0.4)
    frame = cv.posed_frame(
        size, angle=angle, scale=rng.uniform(0.85, 1.35), dx=rng.uniform(-0.2, 0.2), dy=rng.uniform(-0.2, 0.2)
    )
    colour = cv.jitter_colour(rng, p["colour"], 0.12)
    second = cv.jitter_colour(rng, p["second"], 0.12)
    for part in p["parts"]:
        _draw_part(canvas, frame, part, cv.jitter_colour(rng, part["colour"], 0.1))
    cv.paint(canvas, _object_body(frame, p), cv.blend(colour, second, _object_texture(frame, p, rng)))
    return _finish(canvas, rng)


def _draw_part(canvas: np.ndarray, frame: cv.Frame, part: Params, colour: np.ndarray) -> None:
    """One attached part (handle, knob, leg, antenna) sticking out of the body in its fixed direction."""
    dx, dy = np.cos(part["angle"]) * 0.5, np.sin(part["angle"]) * 0.5
    s = part["size"]
    if part["shape"] == "ellipse":
        mask = cv.ellipse(frame, dx * 1.1, dy * 1.1, s, s * part["aspect"])
    elif part["shape"] == "box":
        mask = cv.box(frame, dx * 1.1, dy * 1.1, s * part["aspect"], s)
    elif part["shape"] == "ring":
        mask = cv.ring(frame, dx * 1.05, dy * 1.05, s, s, 0.07)
    else:
        mask = cv.segment(frame, dx * 0.8, dy * 0.8, dx * (1.3 + s), dy * (1.3 + s), 0.06)
    cv.paint(canvas, mask, colour)


# ------------------------------------------------------------------------------------------------ food

FOOD_TEXTURES = ("blobs", "speckles", "noodles", "layers", "chunks")


def food_identity(rng: np.random.Generator) -> Params:
    """A dish: a palette of three colours, a texture kind and its scale."""
    hue = rng.random()
    return {
        "base": cv.hsv(hue, rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95)),
        "second": cv.hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.2, 1.0), rng.uniform(0.2, 0.95)),
        "accent": cv.hsv(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0)),
        "texture": str(rng.choice(FOOD_TEXTURES)),
        "scale": rng.uniform(0.6, 1.6),
        "accent_amount": rng.uniform(0.05, 0.3),
    }


def _food_texture(frame: cv.Frame, p: Params, rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-pixel food colours: the dish's texture kind mixing its base and second colours."""
    kind, scale = p["texture"], p["scale"]
    if kind == "blobs":
        weight = cv.smooth_noise(rng, size, max(2, int(4 * scale)))
    elif kind == "speckles":
        weight = (rng.random((size, size)) < 0.25 * scale).astype(np.float32)
    elif kind == "noodles":
        warp = cv.smooth_noise(rng, size, 3) * 4.0
        weight = cv.stripes(cv.Frame(frame.u + warp * 0.3, frame.v, frame.pixel), 6 * scale, rng.uniform(0, np.pi), 0.0)
    elif kind == "layers":
        weight = (cv.stripes(frame, 2.5 * scale, np.pi / 2, rng.uniform(0, 6)) > 0.5).astype(np.float32)
    else:
        weight = np.zeros_like(frame.u)
        for _ in range(int(6 * scale) + 3):
            weight = np.maximum(
                weight,
                cv.ellipse(
                    frame, rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 0.12 / scale + 0.05, 0.1 / scale + 0.04
                ),
            )
    return cv.blend(p["base"], p["second"], weight)


def food_render(p: Params, rng: np.random.Generator, size: int) -> np.ndarray:
    """One photo of a dish: plate position and tilt, zoom, texture phase, accents, table, light."""
    table = cv.hsv(rng.uniform(0.05, 0.12), rng.uniform(0.1, 0.6), rng.uniform(0.25, 0.85))
    canvas = cv.gradient_background(rng, size, table, cv.jitter_colour(rng, table, 0.15))
    frame = cv.posed_frame(
        size,
        angle=rng.uniform(-np.pi, np.pi),
        scale=rng.uniform(0.9, 1.6),
        dx=rng.uniform(-0.15, 0.15),
        dy=rng.uniform(-0.15, 0.15),
    )
    tilt = rng.uniform(0.65, 1.0)
    cv.paint(canvas, cv.ellipse(frame, 0, 0, 0.8, 0.8 * tilt), cv.jitter_colour(rng, np.float32([0.92] * 3), 0.06))
    food = cv.ellipse(frame, 0, 0, 0.62, 0.62 * tilt)
    cv.paint(canvas, food, _food_texture(frame, p, rng, size))
    accents = (rng.random((size, size)) < p["accent_amount"] * 0.3).astype(np.float32)
    cv.paint(canvas, accents * food, p["accent"])
    return _finish(canvas, rng)


# ------------------------------------------------------------------------------------------------ cars

CAR_COLOURS = np.array(
    [
        [0.92, 0.92, 0.92],
        [0.1, 0.1, 0.11],
        [0.62, 0.63, 0.66],
        [0.7, 0.1, 0.1],
        [0.12, 0.22, 0.55],
        [0.35, 0.36, 0.38],
        [0.12, 0.32, 0.2],
        [0.85, 0.7, 0.15],
    ],
    dtype=np.float32,
)


def car_identity(rng: np.random.Generator) -> Params:
    """A car model: body length and height, clearance, cabin shape and slants, wheels, window tint, colour."""
    return {
        "length": rng.uniform(1.35, 1.75),
        "height": rng.uniform(0.2, 0.34),
        "clearance": rng.uniform(0.06, 0.14),
        "cabin_start": rng.uniform(0.2, 0.4),
        "cabin_end": rng.uniform(0.72, 0.95),
        "cabin_h": rng.uniform(0.16, 0.3),
        "front_slant": rng.uniform(0.05, 0.35),
        "rear_slant": rng.uniform(0.0, 0.4),
        "wheel_r": rng.uniform(0.11, 0.18),
        "wheelbase": rng.uniform(0.55, 0.75),
        "rim": cv.jitter_colour(rng, np.float32([0.7] * 3), 0.25),
        "window": cv.hsv(0.58, rng.uniform(0, 0.4), rng.uniform(0.15, 0.5)),
        "colour": CAR_COLOURS[rng.integers(len(CAR_COLOURS))],
        "bumper": bool(rng.random() < 0.5),
    }


def car_render(p: Params, rng: np.random.Generator, size: int) -> np.ndarray:
    """One side view of a model: facing, scale, position, slight tilt, colour shade, road and sky, light."""
    sky = cv.hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.5), rng.uniform(0.5, 1.0))
    canvas = cv.gradient_background(rng, size, sky, cv.jitter_colour(rng, sky, 0.2))
    ground_y = rng.uniform(0.3, 0.6)
    road = cv.box(cv.posed_frame(size), 0, ground_y + 1.0, 1.5, 1.0)
    cv.paint(canvas, road, cv.hsv(0, 0, rng.uniform(0.2, 0.6)))
    frame = cv.posed_frame(
        size,
        angle=rng.uniform(-0.08, 0.08),
        scale=rng.uniform(0.95, 1.15),
        dx=rng.uniform(-0.1, 0.1),
        dy=ground_y - 0.05,
    )
    if rng.random() < 0.5:
        frame = frame.mirrored()
    _draw_car(canvas, frame, p, cv.jitter_colour(rng, p["colour"], 0.08))
    return _finish(canvas, rng)


def _draw_car(canvas: np.ndarray, frame: cv.Frame, p: Params, colour: np.ndarray) -> None:
    """Body, cabin with windows, wheels and lights; the car's ground line is v = 0, its front at u > 0."""
    half, body_h, clear = p["length"] / 2, p["height"], p["clearance"]
    body_top = -clear - body_h
    cv.paint(canvas, cv.box(frame, 0, -clear - body_h / 2, half, body_h / 2, radius=0.05), colour)
    c0, c1 = -half + p["cabin_start"] * 2 * half, -half + p["cabin_end"] * 2 * half
    roof = body_top - p["cabin_h"]
    cabin = np.array(
        [
            [c0 - 0.02, body_top + 0.01],
            [c0 + p["rear_slant"], roof],
            [c1 - p["front_slant"], roof],
            [c1, body_top + 0.01],
        ]
    )
    cv.paint(canvas, cv.convex_polygon(frame, cabin), colour)
    inset = np.array([[0.05, -0.01], [0.04, 0.035], [-0.04, 0.035], [-0.05, -0.01]])
    cv.paint(canvas, cv.convex_polygon(frame, cabin + inset), p["window"])
    pillar_x = (c0 + c1) / 2
    cv.paint(canvas, cv.segment(frame, pillar_x, roof, pillar_x, body_top, 0.035), colour)
    for x in (-p["wheelbase"] * half, p["wheelbase"] * half):
        cv.paint(canvas, cv.ellipse(frame, x, -p["wheel_r"], p["wheel_r"], p["wheel_r"]), np.float32([0.06] * 3))
        cv.paint(canvas, cv.ellipse(frame, x, -p["wheel_r"], p["wheel_r"] * 0.5, p["wheel_r"] * 0.5), p["rim"])
    cv.paint(canvas, cv.ellipse(frame, half - 0.04, body_top + 0.06, 0.04, 0.03), np.float32([1.0, 0.95, 0.7]))
    cv.paint(canvas, cv.ellipse(frame, -half + 0.03, body_top + 0.06, 0.03, 0.03), np.float32([0.8, 0.05, 0.05]))
    if p["bumper"]:
        cv.paint(canvas, cv.box(frame, 0, -clear - 0.02, half + 0.02, 0.025), np.float32([0.2] * 3))


DOMAINS: dict[
    str, tuple[Callable[[np.random.Generator], Params], Callable[[Params, np.random.Generator, int], np.ndarray]]
] = {
    "face": (face_identity, face_render),
    "object": (object_identity, object_render),
    "food": (food_identity, food_render),
    "car": (car_identity, car_render),
}
