"""ctd station runtime: schema, codec, geometry, metrics, backends and the `ctd` command.

This package never imports torch: a station installs only numpy, opencv and onnxruntime.
"""

__version__ = "0.1.0"
