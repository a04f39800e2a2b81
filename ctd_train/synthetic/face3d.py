"""A procedural face in 3D (mm): identity parameters, the 58 IMM-style landmarks, dense feature
curves for drawing, the face surface (a depth field) and the pose that projects it into an image.

Face coordinates: origin between the two endocanthi, X towards the image right (the subject's
left), Y down, Z towards the camera (the nose tip has Z > 0). Every landmark lies on the surface
Z = depth(X, Y). Projection is weak perspective (scaled orthographic): image px = s (R p)_xy + t,
so lengths parallel to the image plane are exactly 1 / s mm per px (the pixel spacing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_POINTS = 58
LID_T = (0.25, 0.5, 0.75)   # where the lid points sit along the fissure, lateral (0) -> medial (1)


@dataclass(frozen=True)
class Identity:
    """One synthetic person: feature sizes in mm, tilts in degrees, colours as BGR in [0, 1]."""

    pfl: float               # in-plane palpebral fissure length (mm) of the drawn template
    intercanthal: float      # distance between the endocanthi
    eye_open_up: float       # upper lid height above the fissure axis at mid-fissure
    eye_open_down: float     # lower lid depth below it
    lid_skew: float          # moves the lid peak along the fissure (> 0: laterally), |.| < 0.5
    canthal_tilt: float      # lateral corner raised by this angle
    brow_height: float
    face_half_width: float
    chin_y: float
    nose_length: float       # nasion (eye line) to subnasale
    nose_half_width: float   # alae
    nose_projection: float
    mouth_half_width: float
    upper_lip: float
    lower_lip: float
    skin: tuple[float, float, float]
    iris: tuple[float, float, float]
    hair: tuple[float, float, float]
    gaze: tuple[float, float]  # iris offset in mm (x, y)


_SKINS = np.array([[0.62, 0.75, 0.93], [0.50, 0.64, 0.85], [0.36, 0.50, 0.72],
                   [0.24, 0.36, 0.55], [0.14, 0.22, 0.36]])            # BGR, light -> dark
_IRISES = np.array([[0.10, 0.20, 0.35], [0.55, 0.40, 0.25], [0.25, 0.40, 0.30], [0.08, 0.12, 0.20]])


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random adult-proportioned identity (PFL ~ N(28, 1.8) mm, clipped to 22-34 mm)."""
    tone = rng.uniform(0, len(_SKINS) - 1)
    lo = int(min(tone, len(_SKINS) - 2))
    skin = _SKINS[lo] + (tone - lo) * (_SKINS[lo + 1] - _SKINS[lo])
    hair_v = rng.uniform(0.03, 0.35)
    return Identity(
        pfl=float(np.clip(rng.normal(28.0, 1.8), 22.0, 34.0)),
        intercanthal=float(np.clip(rng.normal(32.0, 2.5), 26.0, 38.0)),
        eye_open_up=float(rng.uniform(5.5, 8.0)), eye_open_down=float(rng.uniform(3.0, 4.8)),
        lid_skew=float(rng.uniform(-0.25, 0.3)), canthal_tilt=float(rng.uniform(-2.0, 7.0)),
        brow_height=float(rng.uniform(12.0, 18.0)), face_half_width=float(rng.uniform(62.0, 74.0)),
        chin_y=float(rng.uniform(108.0, 126.0)), nose_length=float(rng.uniform(44.0, 56.0)),
        nose_half_width=float(rng.uniform(15.0, 20.0)), nose_projection=float(rng.uniform(16.0, 24.0)),
        mouth_half_width=float(rng.uniform(22.0, 28.0)), upper_lip=float(rng.uniform(6.0, 10.0)),
        lower_lip=float(rng.uniform(8.0, 12.0)),
        skin=tuple(float(c) for c in np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)),
        iris=tuple(float(c) for c in _IRISES[rng.integers(len(_IRISES))] * rng.uniform(0.8, 1.2)),
        hair=tuple(float(c) for c in np.clip(hair_v * rng.uniform(0.7, 1.3, 3), 0, 1)),
        gaze=(float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-0.8, 0.8))),
    )


def depth(ident: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Z of the face surface at (x, y): a head ellipsoid, shallow eye sockets and a nose ridge.
    Smooth everywhere (second derivatives below ~0.1 / mm near the eyes), so a 1.5 mm mesh of it
    is within ~0.03 mm of the surface."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b, c, yc = ident.face_half_width + 14.0, 135.0, 95.0, 20.0
    head = c * np.sqrt(np.clip(1.0 - (x / a) ** 2 - ((y - yc) / b) ** 2, 0.02, None)) - c
    ex = ident.intercanthal / 2 + ident.pfl / 2
    sockets = -3.5 * (np.exp(-((x - ex) ** 2 + y ** 2) / 120.0) + np.exp(-((x + ex) ** 2 + y ** 2) / 120.0))
    t = y / ident.nose_length                      # 0 at the eye line, 1 at the subnasale
    rise = np.clip(t / 0.85, 0.0, 1.0)
    ridge = np.where(t <= 0.85, 0.25 + 0.75 * rise * rise * (3 - 2 * rise),
                     np.exp(-((t - 0.85) / 0.14) ** 2))
    ridge = np.where(t < 0.0, 0.25 * np.exp(-(t / 0.15) ** 2), ridge)
    nose = ident.nose_projection * ridge * np.exp(-(x / (0.55 * ident.nose_half_width)) ** 2)
    return head + sockets + nose


def lid_curves(ident: Identity, side: float, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) lid curves (n, 2) of one eye from its lateral (t = 0) to its medial corner
    (t = 1); side -1 is the subject's right eye (image left), +1 the left. Both curves start and
    end exactly at the corners; the lids leave a corner at a finite angle (a visible corner)."""
    return _lid_at(ident, side, np.linspace(0.0, 1.0, n))


def _lid_at(ident: Identity, side: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tilt = np.deg2rad(ident.canthal_tilt)
    endo = np.array([side * ident.intercanthal / 2, 0.0])
    exo = endo + np.array([side * ident.pfl * np.cos(tilt), -ident.pfl * np.sin(tilt)])
    axis = (endo - exo) / ident.pfl
    up = np.array([axis[1], -axis[0]]) * (1 if axis[0] > 0 else -1)  # the normal with y < 0
    ts = t + ident.lid_skew * t * (1 - t)      # monotone in t, slopes 1 +- skew at the corners
    base = exo + np.outer(t, endo - exo)
    g = np.sin(np.pi * ts)[:, None]
    return base + up * ident.eye_open_up * g, base - up * ident.eye_open_down * g


def catmull_rom(points: np.ndarray, n: int) -> np.ndarray:
    """A smooth curve through `points` (m, d), n samples, passing through every point."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    seg = np.minimum((np.linspace(0, 1, n) * (len(points) - 1)).astype(int), len(points) - 2)
    u = (np.linspace(0, 1, n) * (len(points) - 1) - seg)[:, None]
    p0, p1, p2, p3 = p[seg], p[seg + 1], p[seg + 2], p[seg + 3]
    return 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2
                  + (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)


def landmarks_2d(ident: Identity) -> np.ndarray:
    """The 58 IMM-style points (58, 2) in face-plane mm (X, Y); Z comes from `depth`."""
    pts = np.zeros((N_POINTS, 2))
    phi = np.linspace(np.pi, 0.0, 13)
    yj = 8.0
    pts[0:13] = np.column_stack([ident.face_half_width * np.cos(phi), yj + (ident.chin_y - yj) * np.sin(phi)])
    for first, side in ((13, 1.0), (21, -1.0)):
        upper = _lid_at(ident, side, np.array([0.0, *LID_T, 1.0]))[0]   # lateral corner .. medial corner
        lower = _lid_at(ident, side, np.array(LID_T[::-1]))[1]          # lower lid, medial -> lateral
        pts[first:first + 8] = np.vstack([upper, lower])
    for first, side in ((29, 1.0), (34, -1.0)):
        bx = side * (ident.intercanthal / 2 + np.linspace(-2.0, ident.pfl + 6.0, 5))
        by = -ident.brow_height - 4.0 * np.sin(np.linspace(0.3, 2.6, 5)) + np.linspace(0, 3.0, 5)
        pts[first:first + 5] = np.column_stack([bx, by])
    pts[39:47] = _mouth(ident)
    pts[47:58] = _nose(ident)
    return pts


def _mouth(ident: Identity) -> np.ndarray:
    ym = ident.nose_length + ident.upper_lip + 8.0
    mw, cb = ident.mouth_half_width, 0.3 * ident.mouth_half_width
    return np.array([
        [-mw, ym], [-cb, ym - ident.upper_lip], [0.0, ym - 0.8 * ident.upper_lip], [cb, ym - ident.upper_lip],
        [mw, ym], [0.5 * mw, ym + 0.8 * ident.lower_lip], [0.0, ym + ident.lower_lip],
        [-0.5 * mw, ym + 0.8 * ident.lower_lip],
    ])


def _nose(ident: Identity) -> np.ndarray:
    nl, nw = ident.nose_length, ident.nose_half_width
    right = np.array([[-7.0, 0.0], [-7.5, 0.35 * nl], [-0.6 * nw, 0.65 * nl], [-nw, 0.9 * nl], [-0.45 * nw, nl]])
    left = right[::-1] * np.array([-1.0, 1.0])
    return np.vstack([right, [[0.0, nl]], left])


def with_depth(ident: Identity, xy: np.ndarray) -> np.ndarray:
    """(..., 2) face-plane points -> (..., 3) points on the surface."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.concatenate([xy, depth(ident, xy[..., 0], xy[..., 1])[..., None]], axis=-1)


@dataclass(frozen=True)
class Pose:
    """Head rotation (degrees; yaw < 0 turns the face to the subject's right), scale (px per mm)
    and the image position (px) of the face origin."""

    yaw: float
    pitch: float
    roll: float
    scale: float
    tx: float
    ty: float

    def rotation(self) -> np.ndarray:
        y, p, r = np.deg2rad([self.yaw, self.pitch, self.roll])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        return rz @ rx @ ry

    def project(self, points_3d: np.ndarray) -> np.ndarray:
        """(..., 3) face mm -> (..., 2) image px (pixel centres at integers, x right, y down)."""
        rotated = np.asarray(points_3d, dtype=np.float64) @ self.rotation().T
        return self.scale * rotated[..., :2] + np.array([self.tx, self.ty])

    def camera_depth(self, points_3d: np.ndarray) -> np.ndarray:
        """Z towards the camera after rotation (mm): larger is nearer."""
        return (np.asarray(points_3d, dtype=np.float64) @ self.rotation().T)[..., 2]
