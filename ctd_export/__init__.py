"""ctd export: fused ONNX graph with metadata, parity gate, FP16/INT8, TensorRT engine."""
