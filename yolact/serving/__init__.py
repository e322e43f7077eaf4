"""Deployment: the SavedModel for TF Serving (whole pipeline in one graph) and the ONNX
network. TensorFlow-only code, fenced here."""
