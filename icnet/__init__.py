"""ICNet for TensorFlow 2 (tf_keras): model, weights, data, losses and metrics."""

import os

# Keep TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
