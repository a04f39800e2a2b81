"""Draw a procedural face: anti-aliased OpenCV polygons composited in float, then light and noise.

Sub-pixel convention: a point (x, y) is in pixels, origin at the centre of the top-left pixel, x
right, y down (DESIGN.md "Pixels", OpenCV's own). Filled polygons are drawn as area coverage
(`coverage`: OpenCV fill supersampled 4x; the eye opening by `exact_coverage`, 8 x 8 sub-pixel
samples per pixel tested against the polygon in float64), so a drawn eye corner is the tip of the
covered area at its annotated position; thin
strokes (lashes, creases, the mouth line) use OpenCV's LINE_AA. Each feature is drawn as a coverage mask (0..1) and
blended over what lies below it; the eye opening's mask is kept, so a test can check that the
visible corner of the sclera is where the annotation says.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ctd_train.synthetic import face3d
from ctd_train.synthetic.face3d import Identity, Pose

SHIFT = 6
_ONE = 1 << SHIFT


@dataclass(frozen=True)
class Look:
    """What varies per image beyond pose: lighting, background, noise and blur."""

    light_dir: tuple[float, float]  # the side the light comes from (image x, y), length <= 1
    light_gain: float
    spot: bool                      # a bright spotlight on the face (IMM's image type 5)
    background: int                 # seed of the background pattern
    noise_sigma: float              # sensor noise, in 8-bit levels
    blur_sigma: float               # optical blur, px (0: none)


@dataclass
class Rendered:
    image: np.ndarray               # BGR uint8
    points: np.ndarray              # (58, 2) image px
    eye_masks: dict[int, np.ndarray]  # first landmark index of the eye (13, 21) -> coverage (H, W)


def coverage(shape: tuple[int, int], polygons: list[np.ndarray], factor: int = 4) -> np.ndarray:
    """Area coverage (H, W) float32 in [0, 1] of filled polygons given in image px.

    OpenCV's LINE_AA polygon fill grows a polygon by about half a pixel (the tip of an eye corner
    would move ~1 px outwards), so the polygons are filled without anti-aliasing at `factor` x the
    resolution, inside their bounding box only, and box-averaged down: a pixel's value is the
    fraction of its factor^2 sub-pixel centres inside the polygon."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    allp = np.vstack(polygons)
    x0, y0 = np.maximum(np.floor(allp.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(allp.max(axis=0)).astype(int) + 2, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    canvas = np.zeros(((y1 - y0) * factor, (x1 - x0) * factor), np.uint8)
    # image px (x, y) -> sub-pixel grid: sub-pixel k of pixel i has its centre at i - 0.5 + (k + 0.5) / factor
    hi = [np.round(((p - [x0, y0]) * factor + (factor - 1) / 2) * _ONE).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, hi, 1, cv2.LINE_8, SHIFT)
    out[y0:y1, x0:x1] = cv2.resize(canvas.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def exact_coverage(shape: tuple[int, int], polygon: np.ndarray, factor: int = 8) -> np.ndarray:
    """Coverage (H, W) of one polygon as the fraction of each pixel's factor^2 sub-pixel centres
    inside it (even-odd rule, numpy): free of a rasteriser's rounding, for the eye opening whose
    corners are landmarks (OpenCV's fill includes span ends, which moves a sharp tip outwards by
    ~0.15 px even at 8x)."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 2, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    sub = (np.arange(factor) + 0.5) / factor - 0.5
    xs = (np.arange(x0, x1)[:, None] + sub).ravel()
    ys = (np.arange(y0, y1)[:, None] + sub).ravel()
    px, py = np.meshgrid(xs, ys)
    inside = np.zeros(px.shape, bool)
    a, b = polygon, np.roll(polygon, -1, axis=0)
    for (ax, ay), (bx, by) in zip(a, b):
        if ay == by:
            continue
        cross = (ay > py) != (by > py)
        xint = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= cross & (px < xint)
    blocks = inside.reshape(y1 - y0, factor, x1 - x0, factor).mean(axis=(1, 3))
    out[y0:y1, x0:x1] = blocks
    return out


def stroke(shape: tuple[int, int], curve: np.ndarray, thickness: float) -> np.ndarray:
    """Coverage of an anti-aliased open polyline `thickness` px wide."""
    canvas = np.zeros(shape, np.uint8)
    cv2.polylines(canvas, [np.round(curve * _ONE).astype(np.int32)], False, 255,
                  max(1, int(round(thickness))), cv2.LINE_AA, SHIFT)
    return canvas.astype(np.float32) / 255.0


def blend(image: np.ndarray, mask: np.ndarray, colour: np.ndarray | tuple[float, ...], alpha: float = 1.0) -> None:
    """image <- image (1 - a m) + colour a m, in place; colour is BGR or an (H, W, 3) layer.
    Only the mask's bounding box is touched (the features are small)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    colour = np.asarray(colour, np.float32)
    m = (mask[box] * alpha)[..., None]
    image[box] *= 1.0 - m
    image[box] += m * (colour[box] if colour.ndim == 3 else colour)


def background(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random backdrop (a studio wall, a curtain, a room): low-res noise upsampled."""
    w, h = size
    rng = np.random.default_rng(seed)
    grey = rng.uniform(0.2, 0.8)
    base = grey + rng.uniform(-0.15, 0.15, 3)
    coarse = base + rng.normal(0, 0.06, (6, 8, 3)) + rng.normal(0, 0.05, (6, 8, 1))
    fine = rng.normal(0, 0.03, (h // 8, w // 8, 3))
    img = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += cv2.resize(fine.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0.0, 1.0)


def render_face(ident: Identity, pose: Pose, look: Look, size: tuple[int, int], rng: np.random.Generator) -> Rendered:
    """The face of `ident` in `pose`, drawn into a `size` = (width, height) image."""
    w, h = size
    shape = (h, w)
    proj = _Projector(ident, pose)
    img = background(size, look.background)
    skin = np.asarray(ident.skin, np.float32)
    _draw_head(img, shape, ident, proj, skin)
    eye_masks = {first: _draw_eye(img, shape, ident, proj, side, skin) for first, side in ((13, 1.0), (21, -1.0))}
    _draw_brows(img, shape, ident, proj)
    _draw_nose(img, shape, ident, proj, skin)
    _draw_mouth(img, shape, ident, proj, skin)
    _light(img, look, proj)
    out = _sensor(img, look, rng)
    return Rendered(out, proj.points(face3d.landmarks_2d(ident)), eye_masks)


class _Projector:
    """Face-plane mm curves -> image px through the surface depth and the pose."""

    def __init__(self, ident: Identity, pose: Pose) -> None:
        self.ident, self.pose = ident, pose

    def points(self, xy: np.ndarray) -> np.ndarray:
        return self.pose.project(face3d.with_depth(self.ident, xy))

    @property
    def px_per_mm(self) -> float:
        return self.pose.scale


def _face_outline(ident: Identity, n: int = 120) -> np.ndarray:
    """The closed face outline (mm): the jaw below the eye line, a rounded forehead above it."""
    phi = np.linspace(np.pi, 0.0, n)
    a, yj = ident.face_half_width, 8.0
    jaw = np.column_stack([a * np.cos(phi), yj + (ident.chin_y - yj) * np.sin(phi)])
    top = np.column_stack([a * np.cos(phi[::-1]) * 1.02, yj - 95.0 * np.abs(np.sin(phi[::-1])) ** 0.9])
    return np.vstack([jaw, top[1:-1]])


def _draw_head(img: np.ndarray, shape: tuple[int, int], ident: Identity, proj: _Projector, skin: np.ndarray) -> None:
    outline = _face_outline(ident)
    neck = np.array([[-0.55, 60.0], [0.55, 60.0], [0.62, 260.0], [-0.62, 260.0]]) * [ident.face_half_width, 1.0]
    blend(img, coverage(shape, [proj.points(neck)]), skin * 0.72)
    hair = outline * [1.10, 1.0] + [0.0, -6.0]
    hair = hair[hair[:, 1] < 40.0]
    blend(img, coverage(shape, [proj.points(hair)]), ident.hair)
    face = coverage(shape, [proj.points(outline)])
    edge = cv2.distanceTransform((face > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    shade = np.clip(edge / (18.0 * proj.px_per_mm), 0.0, 1.0)[..., None]
    blend(img, face, skin * (0.78 + 0.22 * shade))
    hairline = outline[outline[:, 1] < -30.0]
    fringe = np.vstack([hairline, np.column_stack([hairline[::-1, 0] * 0.8, -58.0 - 10.0 * np.cos(
        np.linspace(-1.3, 1.3, len(hairline)))])])
    blend(img, coverage(shape, [proj.points(fringe)]), ident.hair)


def _draw_eye(img: np.ndarray, shape: tuple[int, int], ident: Identity, proj: _Projector, side: float,
              skin: np.ndarray) -> np.ndarray:
    """Socket shading, the eye opening (sclera, iris, pupil clipped by the lids), lid margin and
    crease; returns the opening's coverage."""
    upper, lower = face3d.lid_curves(ident, side)
    centre = (upper[0] + upper[-1]) / 2
    socket = np.array([centre + 1.25 * (p - centre) for p in np.vstack([upper, lower[::-1]])])
    blend(img, cv2.GaussianBlur(coverage(shape, [proj.points(socket)]), (0, 0), 2.0 * proj.px_per_mm),
          skin * 0.7, 0.5)
    crease = upper[6:-6] + [0.0, -0.45 * ident.eye_open_up]
    blend(img, cv2.GaussianBlur(stroke(shape, proj.points(crease), 0.6 * proj.px_per_mm), (0, 0), 1.0),
          skin * 0.55, 0.6)
    opening = exact_coverage(shape, proj.points(np.vstack([upper, lower[-2:0:-1]])))
    layer = np.empty_like(img)
    layer[:] = np.array([0.86, 0.88, 0.92], np.float32)
    iris_c = centre + np.array(ident.gaze)
    _disc(layer, shape, proj, iris_c, 5.8, np.asarray(ident.iris, np.float32))
    _disc(layer, shape, proj, iris_c, 2.0, np.array([0.04, 0.04, 0.05], np.float32))
    _disc(layer, shape, proj, iris_c + [-1.5, -1.5], 0.7, np.array([0.95, 0.95, 0.95], np.float32))
    lid_shadow = stroke(shape, proj.points(upper[8:-8]), 1.2 * proj.px_per_mm)  # the corners stay bright
    blend(layer, cv2.GaussianBlur(lid_shadow, (0, 0), 0.6 * proj.px_per_mm), (0.25, 0.25, 0.3), 0.4)
    blend(img, opening, layer)
    lashes = proj.points(upper[5:-5]) + [0.0, -0.6]
    blend(img, stroke(shape, lashes, max(1.0, 0.5 * proj.px_per_mm)), (0.08, 0.07, 0.07), 0.85)
    return opening


def _disc(layer: np.ndarray, shape: tuple[int, int], proj: _Projector, centre_mm: np.ndarray, r_mm: float,
          colour: np.ndarray) -> None:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = centre_mm + r_mm * np.column_stack([np.cos(t), np.sin(t)])
    blend(layer, coverage(shape, [proj.points(circle)]), colour)


def _draw_brows(img: np.ndarray, shape: tuple[int, int], ident: Identity, proj: _Projector) -> None:
    pts = face3d.landmarks_2d(ident)
    for first in (29, 34):
        line = face3d.catmull_rom(pts[first:first + 5], 30)
        width = np.interp(np.linspace(0, 1, 30), [0, 0.3, 1], [4.5, 4.0, 1.5])[:, None]
        poly = np.vstack([line + [0, 1] * width * 0.5, (line - [0, 1] * width * 0.5)[::-1]])
        blend(img, coverage(shape, [proj.points(poly)]), np.asarray(ident.hair) * 0.8, 0.85)


def _draw_nose(img: np.ndarray, shape: tuple[int, int], ident: Identity, proj: _Projector, skin: np.ndarray) -> None:
    pts = face3d.landmarks_2d(ident)
    sigma = 1.2 * proj.px_per_mm
    for side in (pts[47:51], pts[54:58][::-1]):
        side_line = stroke(shape, proj.points(face3d.catmull_rom(side, 20)), 2.0 * proj.px_per_mm)
        blend(img, cv2.GaussianBlur(side_line, (0, 0), sigma), skin * 0.6, 0.45)
    base = face3d.catmull_rom(pts[50:55], 30)
    blend(img, cv2.GaussianBlur(stroke(shape, proj.points(base + [0, 1.0]), 2.5 * proj.px_per_mm), (0, 0), sigma),
          skin * 0.45, 0.55)
    for k in (51, 53):
        c = pts[k] + [0.0, -2.2]
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        nostril = c + np.column_stack([3.2 * np.cos(t), 1.6 * np.sin(t)])
        blend(img, coverage(shape, [proj.points(nostril)]), skin * 0.25, 0.9)
    tip = np.array([[0.0, 0.8 * ident.nose_length]])
    glow = np.zeros(shape, np.float32)
    cx, cy = proj.points(tip)[0]
    cv2.circle(glow, (int(round(cx)), int(round(cy))), max(1, int(3 * proj.px_per_mm)), 1.0, -1, cv2.LINE_AA)
    blend(img, cv2.GaussianBlur(glow, (0, 0), 2.0 * proj.px_per_mm), np.minimum(skin * 1.25, 1.0), 0.5)


def _draw_mouth(img: np.ndarray, shape: tuple[int, int], ident: Identity, proj: _Projector, skin: np.ndarray) -> None:
    m = face3d.landmarks_2d(ident)[39:47]
    upper = face3d.catmull_rom(m[0:5], 40)
    lower = face3d.catmull_rom(np.vstack([m[4:8], m[:1]]), 40)
    lip_colour = np.clip(skin * np.array([0.62, 0.58, 0.95]), 0, 1)
    blend(img, coverage(shape, [proj.points(np.vstack([upper, lower[1:-1]]))]), lip_colour)
    seam = face3d.catmull_rom(np.array([m[0], (m[2] + m[6]) / 2 + [0, -0.5], m[4]]), 30)
    blend(img, stroke(shape, proj.points(seam), max(1.0, 0.8 * proj.px_per_mm)), lip_colour * 0.35, 0.9)


def _light(img: np.ndarray, look: Look, proj: _Projector) -> None:
    """Directional falloff over the whole frame, optionally a spotlight on the face."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lx, ly = look.light_dir
    ramp = ((xx - w / 2) * lx + (yy - h / 2) * ly) / max(w, h)
    field = look.light_gain * (1.0 + 0.8 * ramp)
    if look.spot:
        cx, cy = proj.points(np.array([[0.0, 10.0]]))[0]
        r = 60.0 * proj.px_per_mm
        field = field + 0.45 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    img *= field[..., None]


def _sensor(img: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Blur, then noise, then 8-bit quantisation."""
    out = img * 255.0
    if look.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), look.blur_sigma)
    if look.noise_sigma > 0:
        out = out + rng.normal(0.0, look.noise_sigma, out.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
