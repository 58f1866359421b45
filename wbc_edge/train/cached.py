"""Cached mode (the default, CPU-practical): head on frozen features, then the top blocks on cached
activations.

1. head phase: the classifier head is trained (Adam, `head_epochs`, the paper's 15 by default) on pooled
   features computed from the activation cache by the frozen top blocks - seconds per epoch;
2. fine-tune phase: the top blocks (from `block_<finetune_from>` up, BatchNorm kept in inference mode) and
   the head are fine-tuned on the cached activations with a linear warm-up then cosine decay, and the model
   kept is whichever of head-only, each epoch and the average of the second half's epochs (SWA) scores best
   on `selection.selection_score`.
Since the model is one flat graph, the bottom and top are views of the same layers: the result is the
ordinary full model, exactly equal to top(bottom(x)).  Every phase resumes from state.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..data.augment import feature_style_jitter, feature_style_mix
from ..core.progress import Progress
from ..core.tfcompat import import_tf
from .activations import ActivationCache
from .callbacks import epoch_reporter
from .config import TrainConfig
from .initial import initial_model
from .inputs import sample_weights, source_ids, within_lab_weights
from .run_dir import FinetuneFiles, RunState, save_weights_atomic
from .selection import describe, selection_score, swa_add, swa_load


class CachedTrainer:
    def __init__(self, cfg: TrainConfig, run: Path, data: dict, progress: Progress):
        self.cfg, self.run_dir, self.data, self.progress = cfg, run, data, progress
        self.tf, self.keras = import_tf()
        self.model, self.narrowed = initial_model(cfg, run, data, progress, self.keras)
        keras = self.keras
        cut = self.model.get_layer(f"block_{cfg.finetune_from}_expand").input
        self.bottom = keras.Model(self.model.input, cut, name="bottom")
        self.top = keras.Model(cut, self.model.output, name="top")
        self.features = keras.Model(cut, self.model.get_layer("pool").output, name="top_features")
        self.state = RunState(run / "state.json")
        self.cache = ActivationCache(cfg, self.bottom, data, run / "checkpoints" / "cache", self.state, progress)
        self.labels = cfg.labels
        self.files = FinetuneFiles(run / "checkpoints")
        self.teacher = None
        if cfg.teacher:
            from .distill import TeacherTargets

            self.teacher = TeacherTargets(cfg, self.cache, list(cfg.labels), run / "checkpoints" / "cache",
                                          self.state, progress)

    def extract(self, split: str, view: int) -> np.ndarray:
        """Bottom activations of one split and view (see `ActivationCache.extract`)."""
        return self.cache.extract(split, view)

    def run(self):
        cfg = self.cfg
        timings: dict = dict(self.state.get("timings", {}))
        if self.narrowed:
            timings["narrowed"] = self.narrowed
        t = time.time()
        self.progress.say(f"Caching activations at block_{cfg.finetune_from} input "
                          f"({self.bottom.output_shape[1:]}, float16) ...")
        acts = {}
        for split in ("train", "val"):  # the test split is scored on the final model, not from the cache
            acts[split] = [self.extract(split, v) for v in range(self.cache.views(split))]
        timings.setdefault("extract_s", round(time.time() - t, 1))
        self.acts = acts
        self.soft = None
        if self.teacher is not None:  # the teacher's softened outputs on the same views (distill.py)
            t = time.time()
            self.progress.say(f"Teacher {self.teacher.path} on the same views at {self.teacher.size} px ...")
            self.soft = {"train": [self.teacher.soft("train", v, len(self.data["train"][1]))
                                   for v in range(len(acts["train"]))],
                         "val": [self.teacher.soft("val", 0, len(self.data["val"][1]))]}
            timings.setdefault("teacher_s", round(time.time() - t, 1))
            timings["distillation"] = self.teacher.record()
        history: list[dict] = list(self.state.get("history", []))
        y_train = self.data["train"][1]
        cw = sample_weights(y_train, cfg.model.num_classes, source_ids(self.data["train"][0], cfg),
                            classes=cfg.class_weights, domains=cfg.domain_balance)
        self._head_phase(acts, history, timings, cw)
        n_head = sum(1 for h in history if h["phase"] == "head")
        if cfg.finetune_epochs > 0:
            if cfg.lab_batches:  # the labs balanced by sampling: weights balance classes within each lab only
                cw = within_lab_weights(y_train, source_ids(self.data["train"][0], cfg), classes=cfg.class_weights)
            self._finetune_phase(acts, history, timings, cw, n_head)
        self.state.set(timings=timings)
        # Probabilities of the selected model on clean and shifted val, for the confidence calibration.
        self.val_probs = [self.top.predict(a, batch_size=128, verbose=0) for a in acts["val"]]
        return self.model, history, [n_head] if cfg.finetune_epochs > 0 else [], timings

    # -- phase 1 ---------------------------------------------------------------------------------------------
    def _head_phase(self, acts: dict, history: list, timings: dict, cw) -> None:
        """The head on pooled features of the frozen top."""
        cfg, keras = self.cfg, self.keras
        if self.state.get("head_done"):
            self.model.load_weights(self.files.head)
            return
        t = time.time()
        y_train, y_val = self.data["train"][1], self.data["val"][1]
        if cfg.head_epochs:  # 0: the fine-tune starts from the initial head (Keras refuses epochs=0)
            self.progress.say(f"Head phase: {cfg.head_epochs} epochs on frozen features ...")
            feats_train = np.concatenate([self.features.predict(a, batch_size=128, verbose=0)
                                          for a in acts["train"]])
            y_rep = np.concatenate([y_train] * len(acts["train"]))
            feats_val = self.features.predict(acts["val"][0], batch_size=128, verbose=0)
            inp = keras.Input(shape=feats_train.shape[1:], name="features")
            out = self.model.get_layer("predictions")(self.model.get_layer("head_dropout")(inp))
            head = keras.Model(inp, out, name="head")
            loss, metrics = self._loss()
            head.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss, metrics=metrics)
            if self.soft is not None:  # packed [label, teacher probabilities] targets
                from .distill import pack

                y_rep = pack(y_rep, np.concatenate(self.soft["train"]))
                y_val = pack(y_val, self.soft["val"][0])
            if self.soft is not None and cw and not isinstance(cw, np.ndarray):
                cw = np.array([cw[int(c)] for c in y_train], dtype=np.float32)  # packed y: class_weight can't read it
            per_image = isinstance(cw, np.ndarray)  # several labs: per-image weights, repeated for each view
            h = head.fit(feats_train, y_rep, validation_data=(feats_val, y_val), epochs=cfg.head_epochs,
                         batch_size=cfg.batch_size, class_weight=None if per_image else cw,
                         sample_weight=np.tile(cw, len(acts["train"])) if per_image else None, shuffle=True, verbose=0,
                         callbacks=[epoch_reporter(keras, self.progress, "head", cfg.head_epochs)])
            for e in range(len(h.history["loss"])):
                history.append({"phase": "head", "epoch": e + 1,
                                **{k: float(v[e]) for k, v in h.history.items()}})
        save_weights_atomic(self.model, self.files.head)  # also the fine-tune's head-only baseline
        timings["head_s"] = round(time.time() - t, 1)
        self.state.set(head_done=True, history=history, timings=timings)

    # -- phase 2 ---------------------------------------------------------------------------------------------
    def _finetune_phase(self, acts: dict, history: list, timings: dict, cw, n_head: int) -> None:
        """The top blocks on cached activations: linear warm-up then cosine decay (steadier than a constant
        rate: the first large steps no longer wreck the head's solution), and the weights of the second half's
        epochs averaged (SWA; valid as is because BatchNorm stays frozen).  The model kept is whichever of
        head-only, each epoch and the average scores best on the selection criterion."""
        cfg, keras, tf, say = self.cfg, self.keras, self.tf, self.progress.say
        y_train, y_val = self.data["train"][1], self.data["val"][1]
        t = time.time()
        self._set_trainable()
        steps = math.ceil(len(y_train) / cfg.batch_size)
        warm = int(round(cfg.finetune_warmup * steps))
        total = cfg.finetune_epochs * steps
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.finetune_learning_rate * (0.1 if warm else 1.0),
            decay_steps=max(total - warm, 1), alpha=0.01,
            warmup_target=cfg.finetune_learning_rate if warm else None, warmup_steps=warm)
        loss, metrics = self._loss()
        self.top.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=metrics)
        ckpt = tf.train.Checkpoint(model=self.top, optimizer=self.top.optimizer)
        ckdir = self.run_dir / "checkpoints" / "finetune"
        # Numbered by epoch, two kept: the one state.json records survives a save it has not recorded yet.
        mgr = tf.train.CheckpointManager(ckpt, str(ckdir), max_to_keep=2)
        start_epoch = int(self.state.get("finetune_epoch", 0))
        files = self.files
        best = self.state.get("best")
        if best is None:
            # The head-only model (the head phase's weights, which the model holds until the first restore)
            # is the baseline to beat.
            best = {**self._score(acts, y_val), "epoch": 0}
            self.state.set(best=best)
        if start_epoch:
            numbered = ckdir / f"ckpt-{start_epoch}"
            ckpt.restore(str(numbered) if numbered.with_suffix(".index").exists() else mgr.latest_checkpoint)
            say(f"Fine-tune phase: resuming after epoch {start_epoch}")
        say(f"Fine-tune phase: blocks >= {cfg.finetune_from} + head, {cfg.finetune_epochs} epochs, warm-up {warm} "
            f"steps + cosine from lr {cfg.finetune_learning_rate:g} (head-only {describe(best)}) ...")
        stale = int(self.state.get("stale", 0))
        stopped = bool(self.state.get("stopped", False))
        swa_from = cfg.finetune_epochs // 2 + 1  # epochs swa_from..finetune_epochs are averaged
        for epoch in range(start_epoch, 0 if stopped else cfg.finetune_epochs):
            seq = activation_sequence(acts["train"], y_train, cfg.batch_size, cw,
                                      np.random.default_rng([cfg.seed, 1000 + epoch]), keras,
                                      feature_style=cfg.feature_style, pairs=cfg.consistency > 0,
                                      soft_views=None if self.soft is None else self.soft["train"],
                                      style_mix=cfg.style_mix, lab_batches=cfg.lab_batches,
                                      domains=(source_ids(self.data["train"][0], cfg)
                                               if cfg.style_mix or cfg.lab_batches else None))
            te = time.time()
            h = self.top.fit(seq, epochs=1, verbose=0, shuffle=False)
            score = self._score(acts, y_val)
            rec = {"phase": "finetune", "epoch": n_head + epoch + 1, "loss": float(h.history["loss"][0]),
                   "accuracy": float(h.history["accuracy"][0]), **score, "seconds": round(time.time() - te, 1)}
            history.append(rec)
            improved = score["select"] > best["select"]
            if improved:
                best = {**score, "epoch": epoch + 1}
                save_weights_atomic(self.model, files.best_path(epoch + 1))
                stale = 0
            else:
                stale += 1
            swa_now = None
            if cfg.swa and epoch + 1 >= swa_from:
                swa_now = files.swa_path(epoch + 1)
                swa_add(self.model, files.swa(epoch) if epoch + 1 > swa_from else None, swa_now,
                        epoch + 1 - swa_from)
            mgr.save(checkpoint_number=epoch + 1)
            stopped = bool(cfg.early_stopping and stale >= cfg.early_stopping)
            # The commit point of the epoch: everything above is named by epoch, so nothing is overwritten.
            self.state.set(finetune_epoch=epoch + 1, best=best, history=history, stale=stale, stopped=stopped)
            files.prune({files.best(best["epoch"]), swa_now})
            say(f"  fine-tune epoch {epoch + 1}/{cfg.finetune_epochs}: loss {rec['loss']:.4f}, {describe(score)} "
                f"({rec['seconds']:.0f} s){'  *best' if improved else ''}")
            if stopped:
                say(f"  early stopping: no improvement of the selection score for {stale} epochs")
                break
        chosen = "the head-only model" if best["epoch"] == 0 else f"fine-tune epoch {best['epoch']}"
        swa_file = files.swa(cfg.finetune_epochs)
        if cfg.swa and swa_file.exists() and not stopped:
            n_avg = swa_load(self.model, swa_file)
            swa = self._score(acts, y_val)
            say(f"  average of epochs {swa_from}..{cfg.finetune_epochs} (SWA, {n_avg}): {describe(swa)}")
            timings["swa"] = {**swa, "epochs": [swa_from, cfg.finetune_epochs]}
            if swa["select"] >= best["select"]:
                best, chosen = {**swa, "epoch": "swa"}, f"the average of epochs {swa_from}..{cfg.finetune_epochs}"
            else:
                self.model.load_weights(files.best(best["epoch"]))
        else:
            self.model.load_weights(files.best(best["epoch"]))
        timings["selected"] = best
        say(f"Selected: {chosen} ({describe(best)})")
        timings["finetune_s"] = round(timings.get("finetune_s", 0) + time.time() - t, 1)

    def _loss(self):
        """(loss, metrics) of both phases: cross-entropy, + consistency, or the distillation loss."""
        cfg, tf, keras = self.cfg, self.tf, self.keras
        if self.soft is not None:
            from .distill import distill_loss, packed_accuracy

            return distill_loss(tf, keras, cfg.distill_alpha, cfg.distill_temperature), [packed_accuracy(tf)]
        if cfg.consistency:
            return consistency_loss(tf, keras, cfg.consistency), ["accuracy"]
        return "sparse_categorical_crossentropy", ["accuracy"]

    def _score(self, acts: dict, y_val: np.ndarray) -> dict:
        return selection_score(self.top, acts["val"], y_val, self.labels)

    def _set_trainable(self) -> None:
        """Top blocks + head trainable; BatchNorm layers frozen (inference mode) for stable small-batch fine-tuning."""
        top_names = {layer.name for layer in self.top.layers}
        for layer in self.model.layers:
            layer.trainable = (layer.name in top_names
                               and not isinstance(layer, self.keras.layers.BatchNormalization))


def consistency_loss(tf, keras, weight: float):
    """Cross-entropy plus `weight` x the Jensen-Shannon divergence between the two halves of the batch - each
    image's clean view and its augmented view (`activation_sequence(pairs=True)`), as in AugMix (Hendrycks et
    al. 2020): the top is asked to give an image the same answer under the shift, not only the right one.
    Per sample (each pair's divergence added to both of its members), so class weights apply as usual."""

    def loss(y_true, y_pred):
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        n = tf.shape(y_pred)[0] // 2
        p = tf.clip_by_value(y_pred[:n], 1e-7, 1.0)
        q = tf.clip_by_value(y_pred[n:], 1e-7, 1.0)
        log_m = tf.math.log(0.5 * (p + q))
        jsd = 0.5 * (tf.reduce_sum(p * (tf.math.log(p) - log_m), -1) + tf.reduce_sum(q * (tf.math.log(q) - log_m), -1))
        return ce + weight * tf.concat([jsd, jsd], 0)

    return loss


def activation_sequence(views, labels, batch_size, class_weight, rng, keras, feature_style: float = 0.0,
                        pairs: bool = False, soft_views=None, style_mix: float = 0.0, domains=None,
                        lab_batches: bool = False):
    """Keras Sequence over cached activations: a random augmented view per image and epoch, shuffled, with
    `feature_style` the share of each batch whose feature statistics are jittered (`augment.feature_style_jitter`;
    batch i's draw depends only on (rng, i), so the order Keras asks in does not matter).  With `pairs`, each
    batch is the images' clean views followed by one augmented view of each (`consistency_loss`'s halves).
    With `soft_views` (a distillation teacher's probabilities per view), y is [label, the teacher's
    probabilities on the view drawn] (`distill.pack`).  With `style_mix` and each image's lab in `domains`, that
    share of each batch takes a blend of its own and another lab's feature statistics (`augment.feature_style_mix`).
    With `lab_batches`, every batch holds an equal share of each lab in `domains` (`lab_batch_indices`).
    (Built in a function because keras.utils.Sequence is only importable once TensorFlow is.)"""

    class Seq(keras.utils.Sequence):
        def __init__(self):
            super().__init__()
            n = len(labels)
            self.order = rng.permutation(n)
            self.view = rng.integers(1, len(views), size=n) if pairs else rng.integers(len(views), size=n)
            self.style_seed = int(rng.integers(2**62))
            self.sw = None
            if isinstance(class_weight, np.ndarray):  # per-image weights (several labs)
                self.sw = class_weight.astype(np.float32)
            elif class_weight:
                self.sw = np.array([class_weight[int(c)] for c in labels], dtype=np.float32)

            self.batches = lab_batch_indices(domains, batch_size, rng) if lab_batches else None

        def __len__(self):
            return math.ceil(len(labels) / batch_size)

        def __getitem__(self, i):
            idx = (np.sort(self.batches[i]) if self.batches is not None
                   else np.sort(self.order[i * batch_size:(i + 1) * batch_size]))
            x = np.empty((len(idx),) + views[0].shape[1:], dtype=np.float32)
            for v in range(len(views)):
                sel = self.view[idx] == v
                if sel.any():
                    x[sel] = views[v][idx[sel]]
            y = labels[idx]
            if soft_views is not None:
                soft = np.empty((len(idx), soft_views[0].shape[1]), dtype=np.float32)
                for v in range(len(views)):
                    sel = self.view[idx] == v
                    if sel.any():
                        soft[sel] = soft_views[v][idx[sel]]
                y = np.concatenate([np.asarray(y, dtype=np.float32)[:, None], soft], axis=1)
            sw = self.sw[idx] if self.sw is not None else None
            if pairs:
                x = np.concatenate([np.asarray(views[0][idx], dtype=np.float32), x])
                y = np.concatenate([y, y])
                sw = np.concatenate([sw, sw]) if sw is not None else None
            if feature_style:
                x = feature_style_jitter(x, np.random.default_rng([self.style_seed, i]), feature_style)
            if style_mix:
                d = domains[idx]
                x = feature_style_mix(x, np.concatenate([d, d]) if pairs else d,
                                      np.random.default_rng([self.style_seed, i, 1]), style_mix)
            return (x, y, sw) if sw is not None else (x, y)

    return Seq()


def lab_batch_indices(domains: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches (as many as plain batching gives) with an equal share of each lab: each lab's images
    in a fresh random order, started again when used up, so a small lab's images recur within the epoch and a
    large lab's are partly left for the next one.  (`--lab-batches`; the remainder of a batch goes to the first
    labs.)"""
    labs = np.unique(domains)
    n_batches = math.ceil(len(domains) / batch_size)
    shares = [batch_size // len(labs) + (1 if k < batch_size % len(labs) else 0) for k in range(len(labs))]
    streams = []
    for lab, share in zip(labs, shares):  # noqa: B905 - same length by construction
        members = np.flatnonzero(domains == lab)
        need = n_batches * share
        reps = math.ceil(need / len(members))
        streams.append(np.concatenate([rng.permutation(members) for _ in range(reps)])[:need].reshape(n_batches, share))
    return [np.concatenate([s[b] for s in streams]) for b in range(n_batches)]

