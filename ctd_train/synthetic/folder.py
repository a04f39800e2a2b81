"""Write a synthetic data set in the project's folder format, and the cached copy the demo uses.

    DIR/images/SSS-T.jpg (+ SSS-T.jpg.json)   photographs and their pixel-spacing sidecars
    DIR/annotations.csv                        all 58 IMM-style points (imm14 / imm58 select from them)
    DIR/metadata.csv                           per image: image_type (IMM's numbering), pose, lighting,
                                               yaw/pitch/roll, px per mm, true PFL (px, mm, 3D mm), capture
    DIR/captures/SSS-1.obj/.mtl/.jpg           3dMD-style captures of the first subjects' frontal image
    DIR/captures.json                          each capture's true 3D eye corners and PFL
    DIR/demo_data.json                         the generator version and arguments

Image types follow IMM (README of the IMM data): 1 frontal, 5 the same pose under a spotlight
(the test-retest pair), 3 / 4 turned ~25 degrees to the subject's right / left, 2 and 6 other
frontal poses and lights. Subject s gets the first `images_per_subject` of TYPE_ORDER.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ctd_runtime.annotations import IMAGES_DIR, write_annotations
from ctd_runtime.atomic import remove_stale_temps, temp_dir, write_bytes_atomic, write_json_atomic, write_text_atomic
from ctd_runtime.errors import CtdError
from ctd_runtime.pfl import SIDECAR_KEY, sidecar_path
from ctd_train.synthetic import capture3d, face3d
from ctd_train.synthetic.face3d import Identity, Pose
from ctd_train.synthetic.render import Look, render_face

VERSION = "1"          # bump when the drawn images or their annotation change
TYPE_ORDER = (1, 5, 3, 4, 2, 6)
TYPE_NAMES = {1: "frontal, even light", 2: "frontal, another pose and light", 3: "turned to the subject's right",
              4: "turned to the subject's left", 5: "frontal, same pose as 1, spotlight",
              6: "frontal, another pose and light"}
RIGHT_EYE = (25, 21)   # endocanthion, exocanthion (imm58 indices): the PFL pair
JPEG_QUALITY = 95
MARGIN_PX = 8.0


@dataclass(frozen=True)
class Shot:
    """One image to draw: its type, pose and look."""

    image_type: int
    pose: Pose
    look: Look


def _look(rng: np.random.Generator, spot: bool) -> Look:
    angle = rng.uniform(0, 2 * np.pi)
    strength = 0.0 if not spot and rng.uniform() < 0.3 else rng.uniform(0.2, 0.9)
    return Look(light_dir=(float(strength * np.cos(angle)), float(strength * np.sin(angle))),
                light_gain=float(rng.uniform(0.8, 1.1)), spot=spot, background=int(rng.integers(2 ** 31)),
                noise_sigma=float(rng.uniform(1.0, 5.0)), blur_sigma=float(rng.choice([0.0, rng.uniform(0.4, 1.1)])))


def _placed(ident: Identity, yaw: float, pitch: float, roll: float, scale: float, size: tuple[int, int],
            rng: np.random.Generator) -> Pose:
    """A pose whose 58 points lie at least MARGIN_PX inside the image, at a random position."""
    pts = Pose(yaw, pitch, roll, scale, 0.0, 0.0).project(face3d.with_depth(ident, face3d.landmarks_2d(ident)))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    room = np.asarray(size, np.float64) - 1.0 - 2 * MARGIN_PX - (hi - lo)
    if np.any(room < 0):
        raise CtdError(f"a face at {scale:.2f} px/mm does not fit a {size[0]}x{size[1]} image")
    t = MARGIN_PX - lo + rng.uniform(0.15, 0.85, 2) * room
    return Pose(yaw, pitch, roll, scale, float(t[0]), float(t[1]))


def plan_shots(ident: Identity, n: int, size: tuple[int, int], rng: np.random.Generator) -> list[Shot]:
    """The first `n` image types of one subject (type 5 repeats type 1's pose, moved by <= 2 px)."""
    if not 1 <= n <= len(TYPE_ORDER):
        raise CtdError(f"images per subject must be 1..{len(TYPE_ORDER)} (one per image type), got {n}")
    unit = min(size[0] / 640.0, size[1] / 480.0)
    base = (rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-5, 5), rng.uniform(1.3, 1.8) * unit)
    shots: dict[int, Shot] = {}
    for kind in TYPE_ORDER[:n]:
        if kind == 1:
            shots[1] = Shot(1, _placed(ident, *base, size, rng), _look(rng, False))
        elif kind == 5:
            p = shots[1].pose
            dx, dy = rng.uniform(-2, 2, 2)
            shots[5] = Shot(5, Pose(p.yaw, p.pitch, p.roll, p.scale, p.tx + dx, p.ty + dy), _look(rng, True))
        else:
            yaw = {3: -1.0, 4: 1.0}.get(kind, 0.0) * rng.uniform(20, 28) + rng.uniform(-4, 4)
            pose = _placed(ident, yaw, rng.uniform(-5, 5), rng.uniform(-8, 8), rng.uniform(1.3, 1.8) * unit, size, rng)
            shots[kind] = Shot(kind, pose, _look(rng, False))
    return [shots[k] for k in TYPE_ORDER[:n]]


def generate(out_dir: str | Path, n_subjects: int = 20, images_per_subject: int = 6, seed: int = 0,
             size: tuple[int, int] = (640, 480), n_captures: int = 3) -> Path:
    """Draw the data set into `out_dir` (created; must not hold a data set already); its path.
    The same arguments give byte-identical files."""
    out = Path(out_dir)
    if (out / "annotations.csv").exists():
        raise CtdError("the folder already holds a data set (annotations.csv); give an empty or new folder", path=out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    names, subjects, points, meta, captures = [], [], [], [], []
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, s])
        ident = face3d.sample_identity(rng)
        subject = f"{s:03d}"
        for shot in plan_shots(ident, images_per_subject, size, rng):
            name = f"{subject}-{shot.image_type}.jpg"
            drawn = render_face(ident, shot.pose, shot.look, size, rng)
            data = _jpeg(drawn.image)
            write_bytes_atomic(out / IMAGES_DIR / name, data)
            write_json_atomic(sidecar_path(out / IMAGES_DIR / name), {SIDECAR_KEY: 1.0 / shot.pose.scale})
            capture = ""
            if shot.image_type == 1 and s < n_captures:
                capture = _capture(out, subject, name, data, ident, shot.pose, size, captures)
            names.append(name)
            subjects.append(subject)
            points.append(drawn.points)
            meta.append(_meta_row(name, subject, shot, ident, drawn.points, capture, size))
    write_annotations(out, names, subjects, np.stack(points), decimals=4)
    _write_csv(out / "metadata.csv", meta)
    write_json_atomic(out / "captures.json", captures)
    write_json_atomic(out / "demo_data.json", {"version": VERSION, "n_subjects": n_subjects, "seed": seed,
                                               "images_per_subject": images_per_subject, "size": list(size),
                                               "n_captures": n_captures})
    return out


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def true_pfl_3d(ident: Identity) -> tuple[float, np.ndarray]:
    """The subject's right-eye PFL on the surface (3D chord, mm) and the two corners (2, 3)."""
    corners = face3d.with_depth(ident, face3d.landmarks_2d(ident)[list(RIGHT_EYE)])
    return float(np.linalg.norm(corners[0] - corners[1])), corners


def _capture(out: Path, subject: str, name: str, data: bytes, ident: Identity, pose: Pose,
             size: tuple[int, int], captures: list[dict]) -> str:
    folder = out / "captures"
    folder.mkdir(exist_ok=True)
    stem = Path(name).stem
    write_bytes_atomic(folder / name, data)
    obj = capture3d.write_capture(folder, stem, name, ident, pose, size)
    pfl3, corners = true_pfl_3d(ident)
    rel = obj.relative_to(out).as_posix()
    captures.append({"obj": rel, "texture": f"captures/{name}", "image": name, "subject": subject,
                     "pfl_3d_mm": pfl3, "endocanthion_mm": corners[0].tolist(),
                     "exocanthion_mm": corners[1].tolist()})
    return rel


def _meta_row(name: str, subject: str, shot: Shot, ident: Identity, pts: np.ndarray, capture: str,
              size: tuple[int, int]) -> dict:
    p = shot.pose
    pfl_px = float(np.linalg.norm(pts[RIGHT_EYE[0]] - pts[RIGHT_EYE[1]]))
    return {"image": name, "subject": subject, "image_type": shot.image_type,
            "description": TYPE_NAMES[shot.image_type], "pose": "frontal" if shot.image_type in (1, 2, 5, 6)
            else ("right" if shot.image_type == 3 else "left"), "lighting": "spot" if shot.look.spot else "ambient",
            "yaw_deg": round(p.yaw, 4), "pitch_deg": round(p.pitch, 4), "roll_deg": round(p.roll, 4),
            "px_per_mm": round(p.scale, 6), "pixel_spacing_mm": 1.0 / p.scale, "pfl_px": round(pfl_px, 4),
            "pfl_mm": round(pfl_px / p.scale, 4), "pfl_3d_mm": round(true_pfl_3d(ident)[0], 4),
            "width": size[0], "height": size[1], "capture": capture}


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def default_cache_dir() -> Path:
    """$CTD_CACHE_DIR/demo-data, else ~/.cache/ctd/demo-data (XDG_CACHE_HOME honoured)."""
    if os.environ.get("CTD_CACHE_DIR"):
        return Path(os.environ["CTD_CACHE_DIR"]) / "demo-data"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ctd" / "demo-data"


def demo_data(seed: int = 0, n_subjects: int = 20, images_per_subject: int = 6, n_captures: int = 3,
              size: tuple[int, int] = (640, 480), cache_dir: str | Path | None = None) -> Path:
    """The data set's folder, generated on first use under the cache dir. It is drawn in a
    temporary folder beside it and renamed into place, so a killed generation never leaves a
    half folder (its temporary is removed by the next call); a folder present is complete."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{VERSION}-{seed}-{n_subjects}x{images_per_subject}-c{n_captures}-{size[0]}x{size[1]}"
    final = cache / name
    if final.is_dir():
        return final
    remove_stale_temps(cache, name)
    with temp_dir(cache, name) as tmp:
        generate(tmp / "data", n_subjects, images_per_subject, seed, size, n_captures)
        try:
            os.rename(tmp / "data", final)
        except OSError:
            if not final.is_dir():  # another process did not just finish the same folder
                raise
    return final


__all__ = ["VERSION", "generate", "demo_data", "default_cache_dir", "true_pfl_3d", "plan_shots"]
