"""`ctd demo`: the whole pipeline on the built-in synthetic faces (or `--data DIR`), in minutes,
with nothing downloaded beyond the install.

    data (synthetic or --data) -> train FT and CTD-ED from dlib-resnet29 -> comparison table + CED
    -> export model.onnx + model.int8.onnx (parity gate) -> infer on held-out images and 3dMD-style
    captures (PFL in px, mm, 3D mm; overlays; results) -> a short bench -> a summary

Modules: `config` (DemoConfig and its budgets, demo_config.json), `data` (the data of a demo
and its held-out part), `steps` (one function per step over the existing Python APIs), `truth`
(PFL errors of the inference results against the known truth), `summary` (the closing summary and
demo_summary.json), `pipeline` (`run_demo`: the steps in order, saying what each does), `cli`
(the command; imports no torch). This package's `__init__` imports nothing, so `ctd --help`
stays fast and torch-free.
"""
