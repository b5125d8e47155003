"""Spec -> torch module, the training loop, ONNX export and the parity check. The only torch importer."""
