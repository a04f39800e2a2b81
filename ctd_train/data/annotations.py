"""The annotated-folder format (images/ + annotations.csv) lives in `ctd_runtime.annotations`: it
needs no torch, and the station's `ctd evaluate MODEL.onnx --data DIR` reads it too. These names
stay importable from here for the training package."""

from ctd_runtime.annotations import (  # noqa: F401
    ANNOTATIONS_FILE,
    IMAGES_DIR,
    AnnotatedImages,
    check_inside,
    first_outside,
    read_annotations,
    read_image,
    write_annotations,
)
