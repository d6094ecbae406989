"""Inference: a trained net on a user's images (pycaffe, OpenCV DNN, ONNX Runtime; tiles in bounded
memory), upscale and its formats, ONNX export, the through-plane pass, the float32 rounding bound."""
