"""TensorRT engines on the machine that runs them: the build (`build`), the manifest that says what
an engine was built from and for which TensorRT and GPU (`manifest`), and this machine's side of
that check (`environment`). Needs neither torch nor onnx: a station with `pip install
'ctd[tensorrt]'` builds its own engine (`ctd build-engine model.fp16.onnx`). TensorRT and the CUDA
binding are imported only when a build or a GPU query runs.
"""
