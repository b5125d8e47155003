"""onnxruntime sessions, signature checks and predictions. Never imports torch."""
