"""Image models (gan, dcgan, vae, and the digit classifier that scores them): data,
models, training loops, ONNX export and the quality probe run at export time."""
