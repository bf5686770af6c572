"""Drawing primitives for the synthetic image domains: anti-aliased shapes, textures, lighting and noise.

Everything works on small float32 RGB canvases in [0, 1]. Shapes are given by signed distances in a
*local frame*: image coordinates in [-1, 1] mapped through a pose (rotation, scale, translation), so
one drawing routine renders an object at any pose without resampling.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

Colour = np.ndarray  # shape (3,), float32 RGB in [0, 1]


@dataclass(frozen=True)
class Frame:
    """Local coordinates (u, v) of every pixel under a pose, and the size of one pixel in those units."""

    u: np.ndarray
    v: np.ndarray
    pixel: float

    def shifted(self, du: float, dv: float) -> Frame:
        """The same frame with its origin moved by (du, dv) local units."""
        return Frame(self.u - du, self.v - dv, self.pixel)

    def mirrored(self) -> Frame:
        """The frame flipped left-right (u -> -u)."""
        return Frame(-self.u, self.v, self.pixel)


def image_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x (right) and y (down), both in [-1, 1]."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(axis, axis)


def posed_frame(
    size: int, angle: float = 0.0, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0, squash_x: float = 1.0
) -> Frame:
    """Local frame of an object rotated by `angle` (radians), scaled, shifted and squashed horizontally."""
    x, y = image_grid(size)
    x, y = x - dx, y - dy
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * x + sin * y) / (scale * squash_x)
    v = (-sin * x + cos * y) / scale
    return Frame(u.astype(np.float32), v.astype(np.float32), 2.0 / size / scale)


def coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a shape from its signed distance (negative inside)."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def ellipse(frame: Frame, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Coverage of an axis-aligned ellipse (approximate distance, exact for circles)."""
    du, dv = (frame.u - cx) / rx, (frame.v - cy) / ry
    return coverage((np.sqrt(du * du + dv * dv) - 1.0) * min(rx, ry), frame.pixel)


def box(frame: Frame, cx: float, cy: float, hw: float, hh: float, radius: float = 0.0) -> np.ndarray:
    """Coverage of an axis-aligned box with half sizes (hw, hh) and rounded corners."""
    qx = np.abs(frame.u - cx) - (hw - radius)
    qy = np.abs(frame.v - cy) - (hh - radius)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    inside = np.minimum(np.maximum(qx, qy), 0)
    return coverage(outside + inside - radius, frame.pixel)


def convex_polygon(frame: Frame, points: np.ndarray) -> np.ndarray:
    """Coverage of a convex polygon given counter-clockwise or clockwise vertices (n, 2)."""
    points = np.asarray(points, dtype=np.float32)
    centre = points.mean(axis=0)
    distance = np.full(frame.u.shape, -np.inf, dtype=np.float32)
    for start, end in zip(points, np.roll(points, -1, axis=0)):
        edge = end - start
        normal = np.array([edge[1], -edge[0]], dtype=np.float32) / (np.hypot(*edge) + 1e-9)
        if np.dot(centre - start, normal) > 0:
            normal = -normal
        distance = np.maximum(distance, (frame.u - start[0]) * normal[0] + (frame.v - start[1]) * normal[1])
    return coverage(distance, frame.pixel)


def regular_polygon(
    frame: Frame, cx: float, cy: float, radius: float, sides: int, rotation: float = 0.0, aspect: float = 1.0
) -> np.ndarray:
    """Coverage of a regular polygon (stretched vertically by `aspect`)."""
    angles = rotation + np.arange(sides) * 2 * np.pi / sides
    points = np.stack([cx + radius * np.cos(angles), cy + radius * aspect * np.sin(angles)], axis=1)
    return convex_polygon(frame, points)


def star(frame: Frame, cx: float, cy: float, radius: float, points: int, inner: float = 0.45) -> np.ndarray:
    """Coverage of a star: the union of its spikes (triangles) and its inner polygon."""
    mask = regular_polygon(frame, cx, cy, radius * inner, points, -np.pi / 2)
    for k in range(points):
        tip = -np.pi / 2 + k * 2 * np.pi / points
        half = np.pi / points
        triangle = np.array(
            [
                [cx + radius * np.cos(tip), cy + radius * np.sin(tip)],
                [cx + radius * inner * np.cos(tip - half), cy + radius * inner * np.sin(tip - half)],
                [cx + radius * inner * np.cos(tip + half), cy + radius * inner * np.sin(tip + half)],
            ]
        )
        mask = np.maximum(mask, convex_polygon(frame, triangle))
    return mask


def ring(frame: Frame, cx: float, cy: float, rx: float, ry: float, thickness: float) -> np.ndarray:
    """Coverage of an elliptical ring of the given line thickness."""
    du, dv = (frame.u - cx) / rx, (frame.v - cy) / ry
    distance = np.abs(np.sqrt(du * du + dv * dv) - 1.0) * min(rx, ry) - thickness / 2
    return coverage(distance, frame.pixel)


def segment(frame: Frame, x0: float, y0: float, x1: float, y1: float, thickness: float) -> np.ndarray:
    """Coverage of a line segment with round caps."""
    px, py = frame.u - x0, frame.v - y0
    ex, ey = x1 - x0, y1 - y0
    t = np.clip((px * ex + py * ey) / (ex * ex + ey * ey + 1e-9), 0.0, 1.0)
    return coverage(np.hypot(px - t * ex, py - t * ey) - thickness / 2, frame.pixel)


def arc(frame: Frame, cx: float, cy: float, half_width: float, curvature: float, thickness: float) -> np.ndarray:
    """Coverage of a parabolic arc y = cy - curvature * (1 - (x/half_width)^2) * half_width (a smile if > 0)."""
    t = (frame.u - cx) / half_width
    curve = cy + curvature * half_width * (t * t - 1.0)
    distance = np.abs(frame.v - curve) - thickness / 2
    distance = np.maximum(distance, (np.abs(t) - 1.0) * half_width)
    return coverage(distance, frame.pixel)


def paint(canvas: np.ndarray, mask: np.ndarray, colour: Colour | np.ndarray) -> None:
    """Composite a colour (or a per-pixel colour image) onto the canvas through a coverage mask, in place."""
    alpha = mask[..., None]
    canvas *= 1.0 - alpha
    canvas += alpha * colour


def hsv(h: float, s: float, v: float) -> Colour:
    """An RGB colour from hue (wraps), saturation and value (both clipped to [0, 1])."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), dtype=np.float32)


def jitter_colour(rng: np.random.Generator, colour: Colour, amount: float) -> Colour:
    """A colour moved randomly in RGB by up to `amount`, clipped to [0, 1]."""
    return np.clip(colour + rng.uniform(-amount, amount, 3), 0.0, 1.0).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: a `cells` x `cells` grid of random values, bicubically upsampled."""
    grid = rng.random((cells + 3, cells + 3), dtype=np.float32)
    field = cv2.resize(grid, (size + 3 * size // cells, size + 3 * size // cells), interpolation=cv2.INTER_CUBIC)
    offset = size // cells
    field = field[offset : offset + size, offset : offset + size]
    low, high = field.min(), field.max()
    return (field - low) / (high - low + 1e-6)


def stripes(frame: Frame, frequency: float, angle: float, phase: float) -> np.ndarray:
    """Soft stripes in [0, 1] along direction `angle` in the local frame."""
    along = frame.u * np.cos(angle) + frame.v * np.sin(angle)
    return 0.5 + 0.5 * np.sin(along * frequency * np.pi + phase)


def checks(frame: Frame, frequency: float, phase: float) -> np.ndarray:
    """A soft checkerboard pattern in [0, 1]."""
    wave = np.sin(frame.u * frequency * np.pi + phase) * np.sin(frame.v * frequency * np.pi + phase)
    return np.clip(0.5 + wave * 4.0, 0.0, 1.0)


def dots(frame: Frame, frequency: float, radius: float, phase: float) -> np.ndarray:
    """A regular grid of round dots (coverage in [0, 1]) with spacing 2/frequency."""
    period = 2.0 / frequency
    du = (frame.u + phase) % period - period / 2
    dv = (frame.v + phase) % period - period / 2
    return coverage(np.hypot(du, dv) - radius * period, frame.pixel)


def blend(first: Colour, second: Colour, weight: np.ndarray) -> np.ndarray:
    """Per-pixel colour image mixing two colours by weight (0 = first, 1 = second)."""
    return first + (second - first) * weight[..., None]


def gradient_background(rng: np.random.Generator, size: int, first: Colour, second: Colour) -> np.ndarray:
    """A canvas filled with a linear gradient between two colours in a random direction."""
    x, y = image_grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    weight = np.clip(0.5 + 0.5 * (x * np.cos(angle) + y * np.sin(angle)), 0.0, 1.0)
    return blend(first, second, weight).astype(np.float32)


def light(canvas: np.ndarray, rng: np.random.Generator, strength: float, brightness: float) -> np.ndarray:
    """Directional lighting (a linear shading ramp), global brightness and a slight colour cast."""
    size = canvas.shape[0]
    x, y = image_grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + strength * (x * np.cos(angle) + y * np.sin(angle)) / 1.4
    tint = 1.0 + rng.uniform(-0.06, 0.06, 3).astype(np.float32)
    return canvas * (shade[..., None] * brightness) * tint


def finish(canvas: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Add Gaussian pixel noise and convert to uint8 RGB."""
    canvas = canvas + rng.normal(0.0, noise, canvas.shape).astype(np.float32)
    return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
