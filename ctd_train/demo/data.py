"""The data of a demo: what it trains on, which schema, and the held-out part the station step
measures (an annotated folder, plus the 3dMD-style captures where there are any).

Synthetic (no --data): two cached sets of `ctd_train.synthetic`, the training set and a held-out
set of other identities (another seed) with OBJ captures. `--data DIR`: the user's folder, checked
with the same readers `ctd train` uses (a bad one is a CtdError naming the file); after training
its test split is linked into OUT/heldout, and its OBJ files, if any, are the captures.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ctd_runtime.annotations import ANNOTATIONS_FILE, IMAGES_DIR, AnnotatedImages, read_annotations, write_annotations
from ctd_runtime.captures import find_captures
from ctd_runtime.errors import CtdError
from ctd_runtime.pfl import sidecar_path
from ctd_runtime.schema import builtin_schemas_for
from ctd_train.config import split_sizes
from ctd_train.demo.config import DemoConfig

CAPTURES_FILE = "captures.json"   # the synthetic sets' truth of each capture (ctd_train.synthetic.folder)
HELDOUT_DIR = "heldout"


@dataclass
class DemoData:
    """`train`: the folder both methods train on; `heldout`: an annotated folder of images no
    training saw (None for --data until the trainings have made their split); `captures`: OBJ
    files to measure in 3D; `captures_truth`: the true 3D PFL (mm) by resolved OBJ path, and
    `capture_images` the image (in `captures_root`'s annotations) each OBJ's texture shows."""

    train: Path
    schema: str
    synthetic: bool
    description: str
    heldout: Path | None = None
    captures: list[Path] = field(default_factory=list)
    captures_truth: dict[str, float] = field(default_factory=dict)
    capture_images: dict[str, str] = field(default_factory=dict)
    captures_root: Path | None = None
    num_images: int = 0
    num_subjects: int = 0


def synthetic_data(config: DemoConfig, cache_dir: str | Path | None = None) -> DemoData:
    """The training and held-out synthetic sets (drawn on first use, then cached)."""
    from ctd_train.synthetic import demo_data

    train = demo_data(seed=config.seed, n_subjects=config.subjects, images_per_subject=config.images_per_subject,
                      n_captures=0, cache_dir=cache_dir)
    heldout = demo_data(seed=config.seed + 1, n_subjects=config.heldout_subjects,
                        images_per_subject=config.images_per_subject, n_captures=config.heldout_captures,
                        cache_dir=cache_dir)
    captures = sorted((heldout / "captures").glob("*.obj")) if config.heldout_captures else []
    n = config.subjects * config.images_per_subject
    truth_3d, images_of = captures_truth(heldout)
    return DemoData(train=train, schema="imm14", synthetic=True, heldout=heldout, captures=captures,
                    captures_truth=truth_3d, capture_images=images_of, captures_root=heldout, num_images=n,
                    num_subjects=config.subjects,
                    description=f"synthetic faces: {config.subjects} identities x {config.images_per_subject} "
                                f"images for training, validation and test; {config.heldout_subjects} other "
                                f"identities held out, {len(captures)} of them with an OBJ capture")


def captures_truth(root: Path) -> tuple[dict[str, float], dict[str, str]]:
    """From a synthetic set's captures.json ({} without one): {resolved OBJ path: true 3D PFL in
    mm} and {resolved OBJ path: the annotated image its texture is}."""
    path = root / CAPTURES_FILE
    if not path.is_file():
        return {}, {}
    try:
        entries = json.loads(path.read_text())
        keys = [str((root / e["obj"]).resolve()) for e in entries]
        return ({k: float(e["pfl_3d_mm"]) for k, e in zip(keys, entries)},
                {k: str(e["image"]) for k, e in zip(keys, entries)})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CtdError(f"cannot read the captures' truth ({type(e).__name__}: {e})", path=path) from None


def user_data(folder: str | Path) -> DemoData:
    """A user's annotated folder, checked now: every image decodes and holds its points (the
    readers of `ctd train`), a built-in schema fits its point count, and it has subjects enough
    for a training, a validation and a test split. Its OBJ files are the captures."""
    root = Path(folder)
    if not root.is_dir():
        raise CtdError("--data folder not found" if not root.exists() else "--data is not a folder", path=root)
    images = read_annotations(root, validate_images=True)
    csv_path = root / ANNOTATIONS_FILE
    schemas = builtin_schemas_for(images.num_points)
    if not schemas:
        raise CtdError(f"{images.num_points} points per image: no built-in schema has that many (imm14 wants the "
                       "58 IMM points, ibug68 the 68 iBUG points); `ctd train --schema FILE.json` trains on others",
                       path=csv_path)
    subjects = len(set(images.subjects))
    try:
        split_sizes(subjects, None, None)
    except CtdError as e:
        raise CtdError(str(e), path=csv_path) from None
    captures = [c.path for c in find_captures([root]) if c.is_mesh]
    truth_3d, images_of = captures_truth(root)
    return DemoData(train=root, schema=schemas[0], synthetic=False, captures=captures,
                    captures_truth=truth_3d, capture_images=images_of, captures_root=root, num_images=len(images),
                    num_subjects=subjects,
                    description=f"your folder {root}: {len(images)} images of {subjects} subjects, schema "
                                f"{schemas[0]}, {len(captures)} OBJ captures")


def link_heldout(data: DemoData, test_names: list[str], out: Path) -> Path:
    """OUT/heldout: the test split of a user's folder as an annotated folder of its own (images and
    their pixel-spacing sidecars linked, or copied where links fail), so the station step and the
    bench measure only images no training saw."""
    images = read_annotations(data.train, validate_images=False)
    index = {name: i for i, name in enumerate(images.image_names)}
    missing = [n for n in test_names if n not in index]
    if missing:
        raise CtdError(f"the run's split names an image the data lacks: {missing[0]}",
                       path=data.train / ANNOTATIONS_FILE)
    subset = images.subset([index[n] for n in test_names])
    dest = out / HELDOUT_DIR
    for name, src in zip(test_names, subset.image_paths):
        _link(src, dest / IMAGES_DIR / name)
        if sidecar_path(src).is_file():
            _link(sidecar_path(src), sidecar_path(dest / IMAGES_DIR / name))
    write_annotations(dest, test_names, subset.subjects, subset.points)
    return dest


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def heldout_images(data: DemoData) -> AnnotatedImages:
    """The held-out folder's annotations (images already checked)."""
    if data.heldout is None:
        raise CtdError("the held-out images are not ready (the trainings make the split of --data)")
    return read_annotations(data.heldout, validate_images=False)
