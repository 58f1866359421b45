"""The lightweight on-device runtime: a .tflite classifier with numpy + Pillow + a TFLite interpreter only.

    from wbc_edge.runtime import Classifier
    clf = Classifier("wbc_int8.tflite")            # labels, input size, dtypes from the embedded contract
    pred = clf.predict("cell.jpg")                 # -> Prediction(label, index, probabilities, confidence)
    pred.top_k(3)                                  # [("neutrophil", 0.91), ("monocyte", 0.05), ...]

Modules: `backend` (which interpreter: LiteRT -> tflite-runtime -> tf.lite, found lazily on first use),
`model_file` + `tflite_check` (is the file a sound .tflite, what does its contract say - checked before
any interpreter sees it), `classifier` (Classifier), `prediction` (Prediction), `images` (find_images).
Importing this package never imports TensorFlow, so `wbc-edge predict` starts in well under a second.
"""

from __future__ import annotations

from .backend import Backend, load_backend
from .classifier import Classifier
from .images import IMAGE_SUFFIXES, find_images
from .prediction import Prediction

__all__ = ["Classifier", "Prediction", "Backend", "load_backend", "find_images", "IMAGE_SUFFIXES"]
