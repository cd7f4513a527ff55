"""MediaPipe's ImageSegmenter on exported .tflite files, through the client in its own
environment (clients/mediapipe_segment.py, `make mediapipe-env`), and its category masks'
agreement with the kit's class ids (deploy.segment)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(REPO, "clients", "mediapipe_segment.py")
PYTHON_ENV = "ICNET_MEDIAPIPE_PYTHON"


def mediapipe_python() -> str | None:
    """The MediaPipe environment's interpreter: $ICNET_MEDIAPIPE_PYTHON, else
    `.venv-mediapipe/bin/python` of the checkout; None when there is none."""
    path = os.environ.get(PYTHON_ENV) or os.path.join(REPO, ".venv-mediapipe", "bin", "python")
    return path if os.path.isfile(path) else None


def category_masks(model: str, images: Sequence[np.ndarray], python: str,
                   timeout_s: float = 600) -> np.ndarray:
    """MediaPipe's category masks [N, H, W] of uint8 RGB `images` under `model`.

    Raises:
      RuntimeError: the client failed (its one-line error).
    """
    with tempfile.TemporaryDirectory(prefix="mediapipe_") as tmp:
        images_path, masks_path = os.path.join(tmp, "images.npy"), os.path.join(tmp, "masks.npy")
        np.save(images_path, np.stack([np.asarray(i, np.uint8) for i in images]))
        done = subprocess.run([python, CLIENT, model, images_path, masks_path],
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"exit code {done.returncode}")
        return np.load(masks_path)
