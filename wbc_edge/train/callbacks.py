"""Keras callbacks of the trainers: epoch lines through `Progress`, the full mode's resumable history and its
atomically saved best weights.  (Factories, because keras.callbacks is importable only once TensorFlow is.)
"""

from __future__ import annotations

from pathlib import Path

from ..core.progress import Progress
from .run_dir import RunState, save_weights_atomic


def epoch_reporter(keras, progress: Progress, label: str, total: int):
    """A line per finished epoch (loss, accuracy, val accuracy when there is one) - instead of Keras' own
    console output, so the library reports only through `progress`."""

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"{k} {float(logs[k]):.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                     if k in logs]
            progress.say(f"  {label} epoch {epoch + 1}/{total}: {', '.join(parts)}")

    return Report()


def history_callback(keras, state: RunState):
    """Record each finished epoch (and the best val accuracy) in state.json, so that history.json and the
    curves cover every epoch even when BackupAndRestore resumed the run part-way."""

    class History(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rec = {"phase": "full", "epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            history = [r for r in state.get("history", []) if r["epoch"] != epoch + 1] + [rec]
            best = max([r.get("val_accuracy", -1.0) for r in history] + [-1.0])
            state.set(history=history, best_val_accuracy=best)

    return History()


def best_weights_callback(keras, path: Path, best: float | None, monitor: str = "val_accuracy"):
    """Save the weights whenever `monitor` beats the best so far (`best` carries over a resume), atomically:
    Keras' ModelCheckpoint writes straight to the final name, so an interruption mid-save would leave a
    truncated file that the final `load_weights` then reads."""

    class BestWeights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = float("-inf") if best is None else float(best)

        def on_epoch_end(self, epoch, logs=None):
            current = (logs or {}).get(monitor)
            if current is not None and float(current) > self.best:
                self.best = float(current)
                save_weights_atomic(self.model, path)

    return BestWeights()


def precise_batchnorm_callback(keras, views, val_data):
    """Full mode when BatchNorm trains: at each epoch's end, BatchNorm statistics re-estimated on `views` (a
    fixed sample of augmented training views, `model.batchnorm`) and then the val set scored, into the epoch's
    logs before the callbacks after it (best weights, history, the epoch line) read them.  fit() then runs
    without its own validation, which would score the lagging moving averages."""
    from ..model.batchnorm import precise_batchnorm

    class PreciseBatchNorm(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            precise_batchnorm(self.model, views, keras)
            scores = self.model.evaluate(val_data, verbose=0, return_dict=True)
            if logs is not None:
                logs.update({f"val_{k}": float(v) for k, v in scores.items()})

    return PreciseBatchNorm()
