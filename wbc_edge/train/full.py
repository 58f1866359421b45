"""Full mode: ordinary end-to-end fine-tuning with augmentation in a tf.data pipeline.

What a GPU machine or a cluster should run: every layer sees every augmented image each epoch (the cached
mode's shortcut - a frozen bottom and a few cached views - is for 2-CPU machines).  Supports tf.distribute
(`distribute.make_strategy`) and resumes through Keras' BackupAndRestore; the epoch history lives in
state.json, because after a resume fit() only knows the epochs it ran itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.progress import Progress
from ..core.tfcompat import import_tf
from .callbacks import best_weights_callback, epoch_reporter, history_callback, precise_batchnorm_callback
from .config import TrainConfig
from .distribute import make_strategy
from .initial import initial_model, starts_pretrained
from .inputs import class_weights, load_pixels
from .run_dir import RunState


class FullTrainer:
    """End-to-end fine-tuning (GPU / tf.distribute); augmentation inside the input pipeline."""

    def __init__(self, cfg: TrainConfig, run: Path, data: dict, progress: Progress):
        self.cfg, self.run_dir, self.data, self.progress = cfg, run, data, progress
        self.tf, self.keras = import_tf()
        self.strategy = make_strategy(cfg.distribute)
        with self.strategy.scope():
            self.model, self.narrowed = initial_model(cfg, run, data, progress, self.keras)
            if starts_pretrained(cfg):
                # Pretrained init: BatchNorm stays in inference mode (frozen statistics), as in cached mode -
                # small CPU batches would otherwise replace ImageNet's statistics with noisy PBC-only ones.
                for layer in self.model.layers:
                    if isinstance(layer, self.keras.layers.BatchNormalization):
                        layer.trainable = False
            self.model.compile(optimizer=self.keras.optimizers.Adam(cfg.learning_rate),
                               loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.size = cfg.model.input_size

    def _dataset(self, split: str, training: bool):
        tf, cfg = self.tf, self.cfg
        paths, labels = self.data[split]
        size, aug, seed = self.size, cfg.augment, cfg.seed
        num_classes = cfg.model.num_classes
        weights = class_weights(labels, num_classes) if (training and cfg.class_weights) else None

        def load(i, position):
            # `position` (Dataset.counter) restarts each epoch; with the reshuffled order it still gives an
            # image a different augmentation every epoch, deterministically for a given seed.
            i = int(i)
            rng = np.random.default_rng([seed, int(position), i]) if training else None
            return load_pixels(paths[i], size, rng, aug).astype(np.float32)

        idx = tf.data.Dataset.range(len(paths))
        if training:
            idx = idx.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((idx, counter))

        def mapper(i, c):
            x = tf.numpy_function(load, [i, c], tf.float32)
            x.set_shape((size, size, 3))
            y = tf.gather(tf.constant(labels, dtype=tf.int64), i)
            if weights is not None:
                w = tf.gather(tf.constant([weights[k] for k in range(num_classes)], dtype=tf.float32), y)
                return x, y, w
            return x, y

        ds = ds.map(mapper, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Under several replicas a final batch smaller than the replica count leaves one replica an empty
        # batch, which TF's CPU kernels reject: drop the remainder when training (a different subset of
        # images is dropped every epoch, because the order is reshuffled).
        drop = training and self.strategy.num_replicas_in_sync > 1
        return ds.batch(cfg.batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)

    def _precise_bn_views(self) -> np.ndarray | None:
        """The fixed, seeded sample of augmented train views precise BatchNorm averages over; None where
        BatchNorm is frozen (an ImageNet start) or `precise_bn` is 0."""
        cfg = self.cfg
        if starts_pretrained(cfg) or cfg.precise_bn == 0:
            return None
        paths = self.data["train"][0]
        pick = np.sort(np.random.default_rng([cfg.seed, 0xB4]).choice(
            len(paths), min(cfg.precise_bn, len(paths)), replace=False))
        return np.stack([load_pixels(paths[i], self.size, np.random.default_rng([cfg.seed, 0xB4, int(i)]),
                                     cfg.augment) for i in pick]).astype(np.float32)

    def run(self):
        cfg, keras = self.cfg, self.keras
        t = time.time()
        ckdir = self.run_dir / "checkpoints"
        ckdir.mkdir(parents=True, exist_ok=True)
        # Legacy-h5 weights: the Keras-v3 '.weights.h5' loader cannot assign into MirroredStrategy's
        # on-read (BatchNorm moving statistics) variables.
        best_w = ckdir / "best_weights.h5"
        state = RunState(self.run_dir / "state.json")
        callbacks = [
            keras.callbacks.BackupAndRestore(str(ckdir / "backup")),
            # After a resume the best value so far must carry over, or a worse epoch would overwrite it.
            best_weights_callback(keras, best_w, state.get("best_val_accuracy")),
            history_callback(keras, state),
            epoch_reporter(keras, self.progress, "train", cfg.epochs),
        ]
        if cfg.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.early_stopping))
        val = self._dataset("val", False)
        views = self._precise_bn_views()
        if views is not None:
            # First, so that the backup, the best weights and the history see the re-estimated statistics.
            callbacks.insert(0, precise_batchnorm_callback(keras, views, val))
        self.progress.say(f"End-to-end training: {cfg.epochs} epochs, {self.strategy.num_replicas_in_sync} "
                          "replica(s)" + (f", BatchNorm re-estimated on {len(views)} train views before each val"
                                          if views is not None else "") + " ...")
        self.model.fit(self._dataset("train", True), validation_data=None if views is not None else val,
                       epochs=cfg.epochs, callbacks=callbacks, verbose=0)
        if best_w.exists():
            self.model.load_weights(best_w)
        # fit()'s own History holds only this process's epochs; the state file has all of them.
        history = sorted(state.get("history", []), key=lambda r: r["epoch"])
        timings = {"train_s": round(time.time() - t, 1)}
        if self.narrowed:
            timings["narrowed"] = self.narrowed
        return self.model, history, [], timings
