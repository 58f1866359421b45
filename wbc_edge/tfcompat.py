"""Lazy, consistent TensorFlow import.

tfmot only quantizes tf-keras (Keras 2) models, so every Keras model in wbc-edge is a tf_keras model.
`TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is first imported for `tf.keras` to be tf_keras;
this module is the one place that does it.  Call `import_tf()` inside functions, never at module import
time, so that commands which do not need TensorFlow (predict, data check, runtime bench) start fast.
"""

from __future__ import annotations

import os


def import_tf():
    """Return (tensorflow, tf_keras), importing them on first use."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_keras as keras
    except ImportError as exc:  # pragma: no cover - depends on the install
        from .errors import WbcEdgeError

        raise WbcEdgeError(
            f"this command needs the training extra (TensorFlow, tf-keras): pip install 'wbc-edge[train]' ({exc})"
        ) from None
    return tf, keras


def versions() -> dict:
    """Versions of everything that influences a model's numbers, for run.json / manifest.json."""
    import platform
    import sys

    import numpy
    import PIL

    out = {"python": sys.version.split()[0], "numpy": numpy.__version__, "pillow": PIL.__version__,
           "platform": platform.platform(), "machine": platform.machine()}
    from . import __version__

    out["wbc_edge"] = __version__
    try:
        tf, keras = import_tf()
        out["tensorflow"] = tf.__version__
        out["tf_keras"] = keras.__version__
    except Exception:  # noqa: BLE001 - runtime-only installs have no TF
        pass
    try:
        import tensorflow_model_optimization as tfmot

        out["tfmot"] = tfmot.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        from importlib.metadata import version

        out["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        pass
    return out
