"""What both model kinds share: writing and checking an ONNX file (onnx_export), training
checkpoints (checkpoint), atomic writes (fileio), and the training loops' settings."""
