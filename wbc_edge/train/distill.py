"""Distillation (issue 33): a small student learns from a trained teacher's softened outputs on the same views.

Why: a small MobileNetV2 trained on one lab's labels alone loses most off-domain; the teacher's soft outputs
carry what it learned about how classes resemble each other (a large lymphocyte is "a bit monocyte"), which a
student can copy from far fewer parameters (Hinton et al. 2015).

How, in cached mode: the teacher sees each cached view at its own input size - the same image through the
same seeded augmentation (`ActivationCache.view_pixels(..., size=teacher size)`) - once; its probabilities
softened by `distill_temperature` are stored beside the activation cache (teacher_<split>_v<view>.npy,
resumable per chunk).  Targets are packed as [label, teacher probabilities] so the Keras loss sees both:
loss = (1 - a) x cross-entropy(label) + a x T^2 x KL(teacher_T || student_T), a = `distill_alpha`.
The student's softmax output is turned back into logits up to a constant (log p), so no graph change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..core.errors import ModelFileError, WbcEdgeError
from ..core.progress import Progress
from ..model.network import model_input_size

CHUNK = 256


def resolve_teacher(spec: str) -> Path:
    """RUN_DIR (its model.keras) or a .keras file -> the model file; a one-line error otherwise."""
    p = Path(spec).expanduser()
    model = p / "model.keras" if p.is_dir() else p
    if not model.is_file():
        raise WbcEdgeError(f"--teacher {spec}: no model there (expected RUN_DIR with model.keras, or a .keras file)")
    return model


def teacher_labels(model_path: Path) -> list[str] | None:
    """The teacher's class names from run.json beside it (None when it stores none)."""
    from ..data.run_files import model_labels

    try:
        return list(model_labels(model_path))
    except Exception:  # noqa: BLE001 - a model without run.json: labels unknown, checked by output count only
        return None


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the teacher's probabilities at the distillation temperature."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class TeacherTargets:
    """The teacher's softened probabilities per cached split and view."""

    def __init__(self, cfg, cache, labels: list[str], cache_dir: Path, state, progress: Progress):
        from ..model.network import load_model

        self.cfg, self.cache, self.state, self.progress, self.dir = cfg, cache, state, progress, cache_dir
        self.path = resolve_teacher(cfg.teacher)
        self.sha = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.model = load_model(self.path)
        self.size = model_input_size(self.model)
        n_out = int(self.model.output_shape[-1])
        names = teacher_labels(self.path)
        if names is not None and list(names) != list(labels):
            raise ModelFileError(f"{self.path}: the teacher's classes ({', '.join(names)}) differ from the data's "
                                 f"({', '.join(labels)}): distil within one label set")
        if n_out != len(labels):
            raise ModelFileError(f"{self.path}: the teacher has {n_out} outputs, the data {len(labels)} classes")

    def shared_file(self, split: str, view: int) -> Path | None:
        """Where one split/view's teacher targets are shared between runs (`TrainConfig.shared_cache`), or None.
        They depend on the teacher, T, the images and the view's pixels at the teacher's size - not on the
        student - so students of every size and width reuse them (the teacher pass is most of a student's time)."""
        import json
        from dataclasses import asdict

        from ..core.preprocess import PREPROCESS_VERSION

        if not self.cfg.shared_cache:
            return None
        ident = json.dumps({"teacher": self.sha, "T": self.cfg.distill_temperature, "size": self.size, "split": split,
                            "view": view, "seed": self.cfg.seed if (split == "train" and view > 0) else None,
                            "augment": asdict(self.cfg.augment) if (split == "train" and view > 0) else None,
                            "preprocess": PREPROCESS_VERSION,
                            "paths": [str(Path(p).resolve()) for p in self.cache.data[split][0]]}, sort_keys=True)
        return Path(self.cfg.shared_cache) / f"teacher_{split}_{hashlib.sha256(ident.encode()).hexdigest()[:16]}.npy"

    def soft(self, split: str, view: int, n: int) -> np.ndarray:
        """(n, classes) float32 softened teacher probabilities for one split/view (computed once, resumable)."""
        shared = self.shared_file(split, view)
        shape = (n, int(self.model.output_shape[-1]))
        if shared is not None and shared.exists():
            arr = np.load(shared)
            if arr.shape == shape:
                self.progress.say(f"  teacher {split} view {view}: reusing {shared}")
                return arr
        arr = self._compute(split, view, n)
        if shared is not None:
            from ..core import atomic

            shared.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(shared) as tmp:
                np.save(tmp, arr)
        return arr

    def _compute(self, split: str, view: int, n: int) -> np.ndarray:
        path = self.dir / f"teacher_{split}_v{view}_{self.sha[:12]}_T{self.cfg.distill_temperature:g}.npy"
        key = f"teacher_{split}_v{view}"
        done = int(self.state.get(key, 0))
        shape = (n, int(self.model.output_shape[-1]))
        arr = np.load(path, mmap_mode="r+") if path.exists() and done else None
        if arr is None or arr.shape != shape:
            arr, done = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape), 0
        if done < n:
            with self.progress.task(n - done, f"teacher {split} view {view}") as advance:
                for lo in range(done, n, CHUNK):
                    hi = min(lo + CHUNK, n)
                    px = np.stack([self.cache.view_pixels(split, view, i, size=self.size)
                                   for i in range(lo, hi)]).astype(np.float32)
                    p = self.model.predict(px, batch_size=self.cfg.batch_size, verbose=0)
                    arr[lo:hi] = soften(p, self.cfg.distill_temperature)
                    arr.flush()
                    self.state.set(**{key: hi})
                    advance(hi - lo)
        return np.asarray(arr)

    def record(self) -> dict:
        return {"model": str(self.path), "sha256": self.sha, "input_size": self.size,
                "temperature": self.cfg.distill_temperature, "alpha": self.cfg.distill_alpha}


def pack(labels: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """[label, teacher probabilities...] per row: the y_true the distillation loss unpacks."""
    return np.concatenate([np.asarray(labels, dtype=np.float32)[:, None], soft.astype(np.float32)], axis=1)


def distill_loss(tf, keras, alpha: float, temperature: float):
    """(1 - alpha) x sparse cross-entropy + alpha x T^2 x KL(teacher_T || student_T) on packed targets."""
    t = float(temperature)

    def loss(y_true, y_pred):
        label = tf.cast(y_true[:, 0], tf.int32)
        teacher = y_true[:, 1:]
        ce = keras.losses.sparse_categorical_crossentropy(label, y_pred)
        log_s = tf.nn.log_softmax(tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)) / t, axis=-1)
        kl = tf.reduce_sum(teacher * (tf.math.log(tf.clip_by_value(teacher, 1e-7, 1.0)) - log_s), axis=-1)
        return (1.0 - alpha) * ce + alpha * t * t * kl

    return loss


def packed_accuracy(tf):
    """Top-1 accuracy on packed targets (the label is column 0)."""

    def accuracy(y_true, y_pred):
        return tf.cast(tf.equal(tf.cast(y_true[:, 0], tf.int64), tf.argmax(y_pred, axis=-1)), tf.float32)

    return accuracy


__all__ = ["TeacherTargets", "distill_loss", "pack", "packed_accuracy", "resolve_teacher", "soften", "teacher_labels"]
