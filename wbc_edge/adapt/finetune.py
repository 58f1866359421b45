"""Training the top of the network on cached activations: local images and replay, class-balanced.

Why this recipe (benchmarks/adapt/README.md has the measurements): the top (blocks 13-16 + head) is
fine-tuned with a low learning rate (linear warm-up, cosine decay), BatchNorm in inference mode.  Each batch is
half local images and half replay images, both drawn class-balanced, so a class that is missing or tiny
locally is kept alive by the source images; the replay images are trained towards the source model's own
probabilities (distillation), which keeps its behaviour on the source domain better than their labels alone.
An optional first phase re-fits the head on pooled features (`head_epochs`): needed for a new, random head;
for a trained wbc-edge model it is off by default, because on PBC val it cost about twice as much source
accuracy as the fine-tune alone.  There is no model selection: the model after the last step is kept.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..core.progress import Progress, resolve
from .config import AdaptConfig
from .network import ActSet, SplitNet, pooled_features, replay_soft_targets


def balanced_draw(labels: np.ndarray, n: int, n_views: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (image, view) draws: class uniformly among the classes present, image uniformly within it."""
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    cls = rng.integers(len(classes), size=n)
    idx = np.array([by_class[c][rng.integers(len(by_class[c]))] for c in cls], dtype=np.int64)
    return idx, rng.integers(n_views, size=n)


def gather(views: list, idx: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Activations of (image idx[j], view view[j]) for every j, as one float32 batch."""
    x = np.empty((len(idx),) + views[0].shape[1:], dtype=np.float32)
    for v in range(len(views)):
        sel = view == v
        if sel.any():
            x[sel] = views[v][idx[sel]]
    return x


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights giving every present class the same total weight (mean weight 1)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = len(labels) / (present.sum() * counts[present])
    return w[labels]


def finetune_steps(cfg: AdaptConfig, n_local: int, local_batch: int) -> int:
    """Phase-2 steps: `finetune_epochs` passes over the local images, at least `min_steps`."""
    return max(cfg.min_steps, int(math.ceil(cfg.finetune_epochs * n_local / max(local_batch, 1))))


def _sequence_class(keras):
    class Seq(keras.utils.Sequence):
        def __init__(self, n, fn):
            super().__init__()
            self.n, self.fn = n, fn

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return self.fn(i)

    return Seq


def _fit_head(net: SplitNet, local: ActSet, replay: ActSet | None, rep_targets, share: float, eye: np.ndarray,
              cfg: AdaptConfig, history: list[dict]) -> str:
    """Phase 1: the head on pooled features of the frozen top, local and replay in the configured share."""
    keras = net.keras
    n_cls = eye.shape[0]
    lf = local.feats if local.feats is not None else pooled_features(net, local)
    f_loc = lf.reshape(-1, lf.shape[-1])
    y_loc = np.tile(local.labels, lf.shape[0])
    w_loc = balanced_weights(y_loc, n_cls) * (1.0 - share)
    parts_f, parts_y, parts_w = [f_loc], [eye[y_loc]], [w_loc]
    if replay is not None:
        rf = replay.feats if replay.feats is not None else pooled_features(net, replay)
        y_rep = np.tile(replay.labels, rf.shape[0])
        parts_f.append(rf.reshape(-1, rf.shape[-1]))
        parts_y.append(np.asarray(rep_targets).reshape(-1, n_cls))
        # Same total weight share per domain, whatever the counts.
        parts_w.append(balanced_weights(y_rep, n_cls) * share * len(y_loc) / max(len(y_rep), 1))
    feats, y, w = np.concatenate(parts_f), np.concatenate(parts_y), np.concatenate(parts_w)
    w = (w / w.mean()).astype(np.float32)
    inp = keras.Input(shape=feats.shape[1:], name="features")
    out = net.model.get_layer("predictions")(net.model.get_layer("head_dropout")(inp))
    head = keras.Model(inp, out, name="head")
    for layer in head.layers:
        layer.trainable = True
    head.compile(optimizer=keras.optimizers.Adam(cfg.head_learning_rate),
                 loss="categorical_crossentropy", metrics=["accuracy"])
    h = head.fit(feats, y, sample_weight=w, epochs=cfg.head_epochs, batch_size=cfg.batch_size, shuffle=True,
                 verbose=0)
    for e in range(len(h.history["loss"])):
        history.append({"phase": "head", "epoch": e + 1, **{k: float(v[e]) for k, v in h.history.items()}})
    return f"{cfg.head_epochs} epochs on {len(y)} pooled features, train acc {h.history['accuracy'][-1]:.3f}"


def fit_top(net: SplitNet, local: ActSet, replay: ActSet | None, cfg: AdaptConfig, *, seed: int,
            progress: Progress | bool | None = None) -> dict:
    """Phase 1 (head on pooled features) + phase 2 (top blocks on cached activations), in place on net.model.

    `local`/`replay` hold all their views; `feats` (and, for replay_targets="distill", the replay's `soft`
    targets) are computed from the model as it is now if absent - the benchmark passes them in, computed once
    per init model.  Returns the history: per-epoch records and the step count.
    """
    progress = resolve(progress)
    keras = net.keras
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng([seed, 7])
    history: list[dict] = []
    replay = replay if (replay is not None and len(replay) > 0) else None
    share = cfg.replay_share if replay is not None else 0.0
    timings: dict = {}
    n_cls = net.num_classes
    eye = np.eye(n_cls, dtype=np.float32)
    rep_targets = None  # (V, N, C) float targets of the replay views
    if replay is not None:
        if cfg.replay_targets == "distill":
            rep_targets = (replay.soft if replay.soft is not None else replay_soft_targets(net, replay)).astype(np.float32)
        else:
            rep_targets = np.broadcast_to(eye[replay.labels], (len(replay.views),) + (len(replay), n_cls))

    if cfg.head_epochs > 0:
        t = time.time()
        what = _fit_head(net, local, replay, rep_targets, share, eye, cfg, history)
        timings["head_s"] = round(time.time() - t, 1)
        progress.say(f"  head: {what} ({timings['head_s']:.0f} s)")

    # Phase 2: fine-tune the top blocks + head: batches of local + replay activations, class-balanced.
    n_rep = int(round(cfg.batch_size * share))
    n_loc = cfg.batch_size - n_rep
    steps = finetune_steps(cfg, len(local), n_loc)
    n_head = len(history)
    if steps > 0:
        t = time.time()
        net.set_trainable()
        warm = int(round(cfg.warmup * steps))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate * (0.1 if warm else 1.0), decay_steps=max(steps - warm, 1),
            alpha=0.01, warmup_target=cfg.learning_rate if warm else None, warmup_steps=warm)
        net.top.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy",
                        metrics=["accuracy"])
        li, lv = balanced_draw(local.labels, steps * n_loc, len(local.views), rng)
        if replay is not None:
            ri, rv = balanced_draw(replay.labels, steps * n_rep, len(replay.views), rng)
        n_chunks = min(10, steps)
        bounds = np.linspace(0, steps, n_chunks + 1).round().astype(int)
        seq_cls = _sequence_class(keras)
        swa, swa_n = None, 0
        with progress.task(steps, f"Fine-tuning the top ({n_loc} local + {n_rep} replay per step)") as advance:
            for c in range(n_chunks):
                s0, s1 = bounds[c], bounds[c + 1]

                def batch(i, _s0=s0):
                    s = _s0 + i
                    sl = slice(s * n_loc, (s + 1) * n_loc)
                    xs = [gather(local.views, li[sl], lv[sl])]
                    ys = [eye[local.labels[li[sl]]]]
                    if replay is not None:
                        sr = slice(s * n_rep, (s + 1) * n_rep)
                        xs.append(gather(replay.views, ri[sr], rv[sr]))
                        ys.append(rep_targets[rv[sr], ri[sr]])
                    return np.concatenate(xs), np.concatenate(ys).astype(np.float32)

                h = net.top.fit(seq_cls(s1 - s0, batch), epochs=1, verbose=0, shuffle=False)
                history.append({"phase": "finetune", "epoch": n_head + c + 1, "steps": int(s1),
                                "loss": float(h.history["loss"][0]), "accuracy": float(h.history["accuracy"][0])})
                if cfg.swa and c >= n_chunks // 2:  # the low-rate half of the cosine schedule
                    w = net.top.get_weights()
                    swa = w if swa is None else [a + b for a, b in zip(swa, w, strict=True)]
                    swa_n += 1
                advance(int(s1 - s0))
        if swa is not None and swa_n > 1:
            net.top.set_weights([a / swa_n for a in swa])
            history[-1]["swa_chunks"] = swa_n
        timings["finetune_s"] = round(time.time() - t, 1)
        swa_note = f", SWA of {swa_n} chunk ends" if swa_n > 1 else ""
        progress.say(f"  top: {steps} steps of {n_loc} local + {n_rep} replay, lr {cfg.learning_rate:g} "
                     f"(warm-up {warm}{swa_note}), last train acc {history[-1]['accuracy']:.3f} ({timings['finetune_s']:.0f} s)")
    return {"history": history, "steps": steps, "local_batch": n_loc, "replay_batch": n_rep,
            "phase_boundaries": [n_head] if n_head and steps else [], "timings": timings}
