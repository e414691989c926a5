"""Post-training rounding, Brevitas QAT, SVD compression and ONNX export of trained nets."""
