"""Which TFLite interpreter this machine has: LiteRT, then tflite-runtime, then tf.lite as a last resort.

Found lazily, on the first `Classifier` (or `load_backend()` call), and cached for the process.  TensorFlow is
imported only when neither of the first two can be imported, so the runtime stays TensorFlow-free wherever
LiteRT (or, on 32-bit Raspberry Pi OS, tflite-runtime) is installed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from ..core.errors import WbcEdgeError

__all__ = ["Backend", "load_backend", "dist_version"]


@dataclass(frozen=True)
class Backend:
    """The interpreter found: its name, version, Interpreter class and OpResolverType enum (or None)."""

    name: str                 # "ai-edge-litert" | "tflite-runtime" | "tensorflow"
    version: str
    interpreter_cls: type
    op_resolver_type: object  # the OpResolverType enum, or None where the backend has none


_LOCK = threading.Lock()
_CACHED: Backend | None = None


def load_backend() -> Backend:
    """Find the TFLite interpreter (LiteRT, then tflite-runtime, then tf.lite); cached after the first call.

    Raises WbcEdgeError naming what was tried when none can be imported.
    """
    global _CACHED
    with _LOCK:
        if _CACHED is None:
            _CACHED = _find_backend()
        return _CACHED


def _find_backend() -> Backend:
    failures = []
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as litert

        return Backend("ai-edge-litert", dist_version("ai-edge-litert", ai_edge_litert), litert.Interpreter,
                       getattr(litert, "OpResolverType", None))
    except ImportError as exc:
        failures.append(f"ai_edge_litert ({exc})")
    try:
        # tflite-runtime 2.14 is built against numpy 1.x; under numpy 2 its import fails (ImportError or
        # AttributeError '_ARRAY_API not found') - either way, fall through to the next backend.
        import tflite_runtime
        from tflite_runtime import interpreter as tflr

        return Backend("tflite-runtime", dist_version("tflite-runtime", tflite_runtime), tflr.Interpreter,
                       getattr(tflr, "OpResolverType", None))
    except (ImportError, AttributeError) as exc:
        failures.append(f"tflite_runtime ({exc})")
    try:
        from ..core.quiet import debug_enabled, native_stderr_captured

        if not debug_enabled():
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with native_stderr_captured():
            import tensorflow as tf

        lite = tf.lite
        return Backend("tensorflow", tf.__version__, lite.Interpreter,
                       getattr(lite.experimental, "OpResolverType", None))
    except (ImportError, AttributeError) as exc:
        failures.append(f"tensorflow ({exc})")
    raise WbcEdgeError("no TFLite interpreter found: pip install ai-edge-litert (or tflite-runtime on 32-bit "
                       "ARM); tried " + "; ".join(failures))


def dist_version(dist: str, module) -> str:
    """The installed distribution's version, else the module's __version__ (a vendored/unpacked module)."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - a vendored/unpacked module has no dist metadata
        return str(getattr(module, "__version__", "unknown"))
