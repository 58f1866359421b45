"""Lazy, consistent, quiet TensorFlow import.

tfmot only quantizes tf-keras (Keras 2) models, so every Keras model in wbc-edge is a tf_keras model.
`TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is first imported for `tf.keras` to be tf_keras;
this module is the one place that does it.  Call `import_tf()` inside functions, never at module import
time, so that commands which do not need TensorFlow (predict, data check, runtime bench) start fast.

Quiet by default: TensorFlow's C++ start-up lines (the oneDNN notice, "could not find cuda drivers", the
"failed call to cuInit" error every CPU-only machine prints) say nothing a user can act on.  They are kept
off the console - TF_CPP_MIN_LOG_LEVEL=3 for TensorFlow's own log, and stderr captured while the native
libraries load, because some lines are written before TensorFlow's logging honours that setting.  If the
import fails, the captured lines are replayed.  `wbc-edge --debug` (or WBC_EDGE_DEBUG=1) shows everything;
a TF_CPP_MIN_LOG_LEVEL the user set is kept.  TF_ENABLE_ONEDNN_OPTS is not touched: it changes numerics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from .quiet import DEBUG_ENV, debug_enabled, native_stderr_captured

__all__ = ["DEBUG_ENV", "debug_enabled", "import_tf", "versions"]


def import_tf():
    """Return (tensorflow, tf_keras), importing them on first use."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if "tensorflow" in sys.modules and "tf_keras" in sys.modules:
        return sys.modules["tensorflow"], sys.modules["tf_keras"]
    quiet = not debug_enabled()
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with native_stderr_captured(quiet):
            import tensorflow as tf
            import tf_keras as keras

            # CUDA is probed on the first device query, not at import: do it here, while fd 2 is captured,
            # or "failed call to cuInit" reaches the console later, mid-command, on every CPU-only machine.
            tf.config.list_physical_devices()
    except ImportError as exc:  # pragma: no cover - depends on the install
        from .errors import WbcEdgeError

        raise WbcEdgeError(
            f"this command needs the training extra (TensorFlow, tf-keras): pip install 'wbc-edge[train]' ({exc})"
        ) from None
    if quiet:
        tf.get_logger().setLevel(logging.ERROR)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
    return tf, keras


def versions() -> dict:
    """Versions of everything that influences a model's numbers, for run.json / manifest.json."""
    import platform

    import numpy
    import PIL

    out = {"python": sys.version.split()[0], "numpy": numpy.__version__, "pillow": PIL.__version__,
           "platform": platform.platform(), "machine": platform.machine()}
    from .. import __version__

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
