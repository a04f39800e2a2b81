"""Datasets and importers: the annotated-folder format, IMM ASF and iBUG .pts importers,
subject-wise splits, augmentation and the torch crop dataset.

Only `dataset` imports torch; the readers, importers and splits need numpy and OpenCV only.
"""
