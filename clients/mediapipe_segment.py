"""MediaPipe Tasks' ImageSegmenter on a kit-exported .tflite, as an app would run it.

Runs in its own environment (`make mediapipe-env`: MediaPipe needs absl-py 2.x, the kit's
TensorFlow Model Optimization absl-py 1.x), so it imports only mediapipe, numpy and the
standard library. Usage (what deploy.export and the tests call):

  .venv-mediapipe/bin/python clients/mediapipe_segment.py MODEL.tflite IMAGES.npy MASKS.npy

IMAGES.npy holds uint8 RGB images [N, H, W, 3]; MASKS.npy gets the category masks [N, H, W]
(uint8 class ids at each image's size). On a model MediaPipe refuses, it prints one line
`error: ...` and exits 1.
"""

import sys

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(f"usage: {argv[0]} MODEL.tflite IMAGES.npy MASKS.npy", file=sys.stderr)
        return 2
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    model, images_path, masks_path = argv[1:]
    images = np.load(images_path)
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=model),
        running_mode=vision.RunningMode.IMAGE, output_category_mask=True,
        output_confidence_masks=False)
    try:
        with vision.ImageSegmenter.create_from_options(options) as segmenter:
            masks = [segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                data=np.ascontiguousarray(image)))
                     .category_mask.numpy_view().copy() for image in images]
    except (RuntimeError, ValueError) as e:
        print(f"error: {model}: MediaPipe ImageSegmenter: {' '.join(str(e).split())[:400]}",
              file=sys.stderr)
        return 1
    np.save(masks_path, np.stack(masks).reshape(len(masks), *images.shape[1:3]).astype(np.uint8))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
