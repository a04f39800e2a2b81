"""Procedural synthetic faces with exactly known landmarks: the built-in data set of `ctd demo`
and of the CI integration test.

What it is for: a data set that needs no download and holds no real face, on which the whole
pipeline (training, export, `ctd infer` with PFL in px, mm and 3D, `ctd bench`) runs end to end
in minutes. Identities vary (face shape, eye size and shape, palpebral fissure length, nose and
mouth geometry, skin tone), as do head poses, scale, lighting, backgrounds, sensor noise and blur;
the eye corners are the drawn corners of the eye opening, at exactly the annotated pixel.

Landmarks are in pixels of their image, origin at the centre of the top-left pixel, x right, y
down (DESIGN.md "Pixels"); ctd_train.synthetic.render says how the drawing keeps that exact.

What it is not: a benchmark. Errors measured on it say nothing about accuracy on real faces
(use ../shared/data/imm-face or your own annotated photographs for that).

`generate(out_dir, n_subjects, images_per_subject, seed, size)` writes the folder format
(ctd_runtime.annotations) with metadata.csv, pixel-spacing sidecars and 3dMD-style captures;
`demo_data(...)` returns a cached copy, generated atomically on first use.
"""

from ctd_train.synthetic.folder import VERSION, default_cache_dir, demo_data, generate, true_pfl_3d

__all__ = ["VERSION", "default_cache_dir", "demo_data", "generate", "true_pfl_3d"]
