"""Adapt a trained model to a new lab's images with a few labelled cells (`wbc-edge adapt`).

Why: even a robust model meets a stain, camera or magnification it has not seen.  A lab can label a handful
of its own cells per class; this module fine-tunes the shipped model on them cheaply (minutes on 2 CPU
cores) and writes an ordinary run directory that `wbc-edge evaluate`, `export` and `bench` accept.

How (the same split of the network as `wbc_edge.train`'s cached mode):
- The model is cut at the input of `block_13_expand`.  The bottom stays frozen; it runs once per local image
  (clean) and once per augmented view of each image used for adapting (`augment` with the robust preset,
  seeded), and its activations are cached.
- The top (blocks 13-16, Conv_1 and the head) is fine-tuned on the cached activations with a low learning
  rate (linear warm-up, cosine decay), BatchNorm in inference mode.  Each batch is half local images and
  half replay images (source-domain images, e.g. PBC), both drawn class-balanced, so a class that is
  missing or tiny locally is kept alive by the source images.  The replay images are trained towards the
  source model's own probabilities (distillation), which keeps its behaviour on the source domain better
  than their labels alone.
- An optional first phase re-fits the head on pooled features (`head_epochs`): needed for a new, random
  head; for a trained wbc-edge model it is off by default, because on PBC val it cost about twice as much
  source accuracy as the fine-tune alone (benchmarks/adapt/README.md).
- There is no model selection on the held-out images: the model after the last step is kept, so the
  held-out accuracy is an honest estimate.  The held-out images are split into `val` (fits the confidence
  temperature and abstain threshold, `wbc_edge.calibration`; argmax is unchanged) and `test`.

The local split is seeded and stratified, and suited to tiny sets: per class, duplicate groups (exact and
near-identical copies, `wbc_edge.data.group_duplicates`) are taken in sha256(seed:group) order - the same
machine-independent order as `wbc_edge.data.make_split` - and fill the adapt set up to `per_class` images
(or all but `holdout_fraction`), always leaving `min_holdout` images of every class for testing.  A group
never straddles the adapt / held-out line.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .atomic import sha256_file
from .augment import AugmentConfig, augment, preset
from .classes import CLASS_INDEX, CLASSES
from .errors import DatasetError, ModelFileError, WbcEdgeError

#: First MobileNetV2 block that is fine-tuned (the cut of train.py's cached mode).
ADAPT_FROM = 13
#: Bad-file reasons that are never the user's images (skipped silently, listed on request).
_HARMLESS = ("system file, not an image",)


@dataclass
class AdaptConfig:
    """Everything `adapt` does, recorded in RUN_DIR/config.json and run.json."""

    source: str                           # a run directory (model.keras, split.csv, run.json) or a .keras file
    data_root: str                        # the local ImageFolder (LOCAL_ROOT); the run's data root
    out_dir: str
    # -- the local split
    per_class: int | None = None          # images per class for adapting (the rest is held out); None: below
    holdout_fraction: float = 0.3         # without per_class: share of each class held out
    min_holdout: int = 1                  # held-out images per class at least (so test has every class)
    val_share: float = 0.5                # of the held-out images: share for calibration (val); rest is test
    seed: int = 42
    skip_bad: bool = False                # skip unreadable files instead of refusing the folder
    # -- augmentation and training
    aug_preset: str = "robust"
    augment: AugmentConfig = field(default_factory=lambda: preset("robust"))
    aug_views: int = 6                    # augmented views cached per adapt image (+ the clean one)
    head_epochs: int = 0                  # phase 1: head re-fit on pooled features (for a new head; 0 = skip)
    head_learning_rate: float = 1e-3
    finetune_epochs: float = 15.0         # phase 2: passes over the local adapt images ...
    min_steps: int = 80                   # ... but at least this many steps
    learning_rate: float = 1e-4           # phase 2 peak (Adam), after a linear warm-up
    warmup: float = 0.1                   # share of phase-2 steps spent warming up
    batch_size: int = 32
    # -- replay of the source domain
    replay: bool = True
    replay_data: str | None = None        # default: config.data_root of the source run.json
    replay_split_manifest: str | None = None  # default: the source run's split.csv (its train split is used)
    replay_images: int = 400              # stratified sample of the replay train split
    replay_views: int = 1                 # augmented views per replay image (+ the clean one)
    replay_share: float = 0.5             # share of each batch (and of the head's loss) from replay
    #: what the replay images are trained towards: "labels" (their classes) or "distill" (the source model's own
    #: probabilities on them - keeps its behaviour on the source domain, not only its labels)
    replay_targets: str = "distill"

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> AdaptConfig:
        if self.per_class is not None and self.per_class < 1:
            raise WbcEdgeError(f"--per-class must be >= 1, got {self.per_class}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise WbcEdgeError(f"--holdout must be in (0, 1), got {self.holdout_fraction}")
        if self.min_holdout < 0:
            raise WbcEdgeError(f"--min-holdout must be >= 0, got {self.min_holdout}")
        if not 0.0 <= self.val_share < 1.0:
            raise WbcEdgeError(f"--val-share must be in [0, 1), got {self.val_share}")
        if not 0.0 < self.replay_share < 1.0:
            raise WbcEdgeError(f"--replay-share must be in (0, 1), got {self.replay_share}")
        for name in ("aug_views", "head_epochs", "min_steps", "replay_views"):
            if getattr(self, name) < 0:
                raise WbcEdgeError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.replay_images < 0:
            raise WbcEdgeError(f"--replay-images must be >= 0, got {self.replay_images}")
        if self.replay_targets not in ("labels", "distill"):
            raise WbcEdgeError(f"replay_targets must be 'labels' or 'distill', got {self.replay_targets!r}")
        if self.batch_size < 2:
            raise WbcEdgeError(f"--batch-size must be >= 2, got {self.batch_size}")
        self.augment.validate()
        return self


@dataclass
class AdaptResult:
    run_dir: Path
    model_path: Path
    heldout: dict
    timings: dict


def _say(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Source model


def resolve_source(source: str | Path) -> tuple[Path, Path | None, dict | None]:
    """(model.keras path, run directory or None, run.json contents or None) of a run dir or a .keras file."""
    src = Path(source).expanduser()
    if src.is_dir():
        model_path = src / "model.keras"
        if not model_path.is_file():
            raise ModelFileError(f"{src}: no model.keras in this run directory (pass a run directory or a "
                                 ".keras file)")
        run_dir = src
    elif src.is_file():
        model_path, run_dir = src, None
        if (src.parent / "run.json").is_file():
            run_dir = src.parent
    else:
        raise ModelFileError(f"{src}: source model not found")
    info = None
    if run_dir is not None and (run_dir / "run.json").is_file():
        try:
            info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise ModelFileError(f"{run_dir / 'run.json'}: not valid JSON ({exc})") from None
    return model_path, run_dir, info


def default_replay(cfg: AdaptConfig, run_dir: Path | None, run_info: dict | None) -> tuple[str | None, str | None]:
    """(replay data root, replay split manifest) from the config, else from the source run, else (None, None)."""
    if not cfg.replay or cfg.replay_images == 0:
        return None, None
    root, manifest = cfg.replay_data, cfg.replay_split_manifest
    if root is None and run_info:
        root = (run_info.get("config") or {}).get("data_root")
        if root is not None and manifest is None and run_dir is not None and (run_dir / "split.csv").is_file():
            manifest = str(run_dir / "split.csv")
    if root is not None and not Path(root).is_dir():
        raise DatasetError(f"{root}: replay data folder not found; pass --replay-data ROOT or --no-replay")
    return root, manifest


# ---------------------------------------------------------------------------------------------------------
# The local folder and its split


def scan_local(root: str | Path, *, skip_bad: bool = False, progress: bool = False):
    """Scan the local ImageFolder; a one-line DatasetError for anything that makes it unusable."""
    from .data import scan_dataset

    scan = scan_dataset(root, progress=progress)
    real_bad = [b for b in scan.bad if b.reason not in _HARMLESS]
    if real_bad and not skip_bad:
        b = real_bad[0]
        more = f" (and {len(real_bad) - 1} more bad files)" if len(real_bad) > 1 else ""
        raise DatasetError(f"{Path(root) / b.path}: {b.reason}{more}; fix or remove it, or pass --skip-bad")
    present = [c for c, n in scan.class_counts.items() if n > 0]
    if len(present) < 2:
        raise DatasetError(f"{root}: only one class ({', '.join(present) or 'none'}) has images; adapting "
                           f"needs labelled images of at least two classes (folders: {', '.join(CLASSES)})")
    return scan


def make_adapt_split(records, groups, *, per_class: int | None = None, holdout_fraction: float = 0.3,
                     min_holdout: int = 1, val_share: float = 0.5, seed: int = 42):
    """Seeded, stratified, group-aware split of a small local set into train (adapt) / val / test.

    Per class with n images: the adapt target is min(per_class, n - min_holdout) with per_class, else
    n - max(min_holdout, round(holdout_fraction * n)).  Groups in sha256(f"{seed}:{group}") order fill the
    adapt set while they fit; the other groups are held out: the first one goes to test, then val is filled
    up to floor(val_share * held-out) images, the rest is test.  Machine-independent (no RNG, no hash()).
    """
    from .data import ManifestRow, SplitManifest, _order_key

    by_path = {r.path: r for r in records}
    class_groups: dict[str, list[tuple[str, list[str]]]] = {c: [] for c in CLASSES}
    group_of = dict(groups.group_of)
    for gid, paths in groups.members.items():
        paths = [p for p in paths if p in by_path]
        if not paths:
            continue
        labels = {by_path[p].label for p in paths}
        if len(labels) > 1:
            # The same bytes under two classes is a real conflict.  A near-duplicate group spanning classes
            # is not: on small, tight crops with a flat background (e.g. 120 px) different cells can hash
            # alike - such a group is split by class (still leak-free within each class).
            shas: dict[str, set[str]] = {}
            for p in paths:
                shas.setdefault(by_path[p].sha256, set()).add(by_path[p].label)
            clash = [p for p in paths if len(shas[by_path[p].sha256]) > 1]
            if clash:
                listed = ", ".join(f"{p} ({by_path[p].label})" for p in clash[:4])
                raise DatasetError(f"label conflict: the same image is filed under "
                                   f"{' and '.join(sorted(shas[by_path[clash[0]].sha256]))}: {listed}; "
                                   "delete the wrong copy")
            for label in sorted(labels):
                sub = [p for p in paths if by_path[p].label == label]
                for p in sub:
                    group_of[p] = f"{gid}-{label}"
                class_groups[label].append((f"{gid}-{label}", sub))
            continue
        class_groups[labels.pop()].append((gid, paths))
    split_of: dict[str, str] = {}
    for label in CLASSES:
        glist = sorted(class_groups[label], key=lambda g: _order_key(seed, g[0]))
        n = sum(len(p) for _, p in glist)
        if n == 0:
            continue
        if per_class is not None:
            target = max(0, min(per_class, n - min_holdout))
        else:
            target = max(0, n - max(min_holdout, int(math.floor(holdout_fraction * n + 0.5))))
        cnt = 0
        held: list[tuple[str, list[str]]] = []
        for gid, paths in glist:
            if cnt + len(paths) <= target:
                split_of[gid] = "train"
                cnt += len(paths)
            else:
                held.append((gid, paths))
        h = sum(len(p) for _, p in held)
        val_target = int(math.floor(val_share * h))
        v_cnt = t_cnt = 0
        for gid, paths in held:
            if t_cnt > 0 and v_cnt + len(paths) <= val_target:
                split_of[gid] = "val"
                v_cnt += len(paths)
            else:
                split_of[gid] = "test"
                t_cnt += len(paths)
    rows = [ManifestRow(r.path, r.label, r.sha256, group_of[r.path], split_of[group_of[r.path]]) for r in records]
    return SplitManifest(rows)


def split_table(manifest) -> str:
    """The split sizes per class, as the table `wbc-edge adapt` prints."""
    s = manifest.summary()
    lines = [f"  {'class':<12} {'adapt':>6} {'val':>5} {'test':>5}"]
    for c in CLASSES:
        lines.append(f"  {c:<12} {s['train'][c]:>6} {s['val'][c]:>5} {s['test'][c]:>5}")
    lines.append(f"  {'total':<12} {sum(s['train'].values()):>6} {sum(s['val'].values()):>5} "
                 f"{sum(s['test'].values()):>5}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The split network and its activation cache


@dataclass
class SplitNet:
    """Views of one flat model: bottom (frozen) -> cut -> top; features = top up to the pooled vector."""

    model: object
    bottom: object
    top: object
    features: object
    keras: object

    @classmethod
    def of(cls, model, cut_block: int = ADAPT_FROM) -> SplitNet:
        from .tfcompat import import_tf

        _, keras = import_tf()
        try:
            cut = model.get_layer(f"block_{cut_block}_expand").input
            pool = model.get_layer("pool").output
            model.get_layer("predictions")
            model.get_layer("head_dropout")
        except ValueError as exc:
            raise ModelFileError(f"{model.name}: not a wbc-edge MobileNetV2 classifier (needs layers "
                                 f"block_{cut_block}_expand, pool, head_dropout, predictions: {exc})") from None
        return cls(model, keras.Model(model.input, cut, name="bottom"), keras.Model(cut, model.output, name="top"),
                   keras.Model(cut, pool, name="top_features"), keras)

    def set_trainable(self) -> None:
        """Top layers trainable, BatchNorm frozen (inference mode), bottom frozen."""
        keras = self.keras
        top_names = {layer.name for layer in self.top.layers}
        for layer in self.model.layers:
            layer.trainable = (layer.name in top_names and not isinstance(layer, keras.layers.BatchNormalization))

    @property
    def size(self) -> int:
        return int(self.model.input_shape[1])


@dataclass
class ActSet:
    """Cached bottom activations of some images: views[0] clean (float32), views[1:] augmented (float16)."""

    views: list
    labels: np.ndarray
    feats: np.ndarray | None = None    # (V, N, F) pooled features of each view (filled by `fit_top`)
    soft: np.ndarray | None = None     # (V, N, C) the source model's probabilities (replay_targets="distill")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ActSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ActSet([v[idx] for v in self.views], self.labels[idx],
                      None if self.feats is None else self.feats[:, idx],
                      None if self.soft is None else self.soft[:, idx])

    def head(self, n_views: int) -> ActSet:
        """Only the first n_views views (clean + n_views - 1 augmented)."""
        return ActSet(self.views[:n_views], self.labels, None if self.feats is None else self.feats[:n_views],
                      None if self.soft is None else self.soft[:n_views])


def bottom_activations(net: SplitNet, paths, n_aug: int, aug: AugmentConfig, seed: int, *,
                       batch_size: int = 32, log=None, label: str = "images") -> list:
    """[clean float32 (N, ...), aug_1 float16, ...]: the frozen bottom on each image and n_aug augmented views.
    View v >= 1 of image i is `augment(preprocess(path), default_rng([seed, v, i]))`."""
    from concurrent.futures import ThreadPoolExecutor

    from .preprocess import preprocess

    size = net.size
    n = len(paths)
    shape = tuple(int(d) for d in net.bottom.output_shape[1:])
    out = [np.empty((n,) + shape, dtype=np.float32)] + [np.empty((n,) + shape, dtype=np.float16)
                                                        for _ in range(n_aug)]
    if n == 0:
        return out
    chunk = 64
    t = time.time()

    def pixels(i: int) -> list[np.ndarray]:
        px = preprocess(paths[i], size)
        return [px] + [augment(px, np.random.default_rng([seed, v, i]), aug) for v in range(1, n_aug + 1)]

    done = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(pixels, i) for i in range(0, min(chunk, n))]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            views = [f.result() for f in pending]
            pending = [pool.submit(pixels, i) for i in range(stop, min(stop + chunk, n))]
            for v in range(n_aug + 1):
                x = np.stack([views[j][v] for j in range(len(views))]).astype(np.float32)
                out[v][start:stop] = net.bottom.predict(x, batch_size=batch_size, verbose=0)
            done = stop
            if log:
                rate = done * (n_aug + 1) / max(time.time() - t, 1e-6)
                log(f"  activations of {label}: {done}/{n} images x {n_aug + 1} views ({rate:.1f} views/s)")
    return out


def pooled_features(net: SplitNet, acts: ActSet, batch_size: int = 128) -> np.ndarray:
    """(V, N, F) pooled features of every view through the (current) frozen top."""
    return np.stack([net.features.predict(np.asarray(v, dtype=np.float32), batch_size=batch_size, verbose=0)
                     for v in acts.views]) if len(acts) else np.zeros((len(acts.views), 0, 1))


# ---------------------------------------------------------------------------------------------------------
# Training


def _balanced_draw(labels: np.ndarray, n: int, n_views: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (image, view) draws: class uniformly among the classes present, image uniformly within it."""
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    cls = rng.integers(len(classes), size=n)
    idx = np.array([by_class[c][rng.integers(len(by_class[c]))] for c in cls], dtype=np.int64)
    return idx, rng.integers(n_views, size=n)


def _gather(views: list, idx: np.ndarray, view: np.ndarray) -> np.ndarray:
    x = np.empty((len(idx),) + views[0].shape[1:], dtype=np.float32)
    for v in range(len(views)):
        sel = view == v
        if sel.any():
            x[sel] = views[v][idx[sel]]
    return x


def _balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights giving every present class the same total weight (mean weight 1)."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = len(labels) / (present.sum() * counts[present])
    return w[labels]


def finetune_steps(cfg: AdaptConfig, n_local: int, local_batch: int) -> int:
    return max(cfg.min_steps, int(math.ceil(cfg.finetune_epochs * n_local / max(local_batch, 1))))


def replay_soft_targets(net: SplitNet, replay: ActSet) -> np.ndarray:
    """(V, N, C) probabilities of the (source) model on every replay view: the distillation targets."""
    return np.stack([predict_top(net, v) for v in replay.views])


def fit_top(net: SplitNet, local: ActSet, replay: ActSet | None, cfg: AdaptConfig, *, seed: int,
            verbose: bool = False) -> dict:
    """Phase 1 (head on pooled features) + phase 2 (top blocks on cached activations), in place on net.model.

    `local`/`replay` hold all their views; `feats` (and, for replay_targets="distill", the replay's `soft`
    targets) are computed from the model as it is now if absent - the benchmark passes them in, computed once
    per init model.  Returns the history: per-epoch records and the step count.
    """
    keras = net.keras
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng([seed, 7])
    history: list[dict] = []
    replay = replay if (replay is not None and len(replay) > 0) else None
    share = cfg.replay_share if replay is not None else 0.0
    timings: dict = {}
    n_cls = int(net.model.output_shape[-1])
    eye = np.eye(n_cls, dtype=np.float32)
    rep_targets = None  # (V, N, C) float targets of the replay views
    if replay is not None:
        if cfg.replay_targets == "distill":
            rep_targets = (replay.soft if replay.soft is not None else replay_soft_targets(net, replay)).astype(np.float32)
        else:
            rep_targets = np.broadcast_to(eye[replay.labels], (len(replay.views),) + (len(replay), n_cls))

    # Phase 1: the head on pooled features of the frozen top, local and replay in the configured share.
    if cfg.head_epochs > 0:
        t = time.time()
        lf = local.feats if local.feats is not None else pooled_features(net, local)
        f_loc = lf.reshape(-1, lf.shape[-1])
        y_loc = np.tile(local.labels, lf.shape[0])
        w_loc = _balanced_weights(y_loc) * (1.0 - share)
        parts_f, parts_y, parts_w = [f_loc], [eye[y_loc]], [w_loc]
        if replay is not None:
            rf = replay.feats if replay.feats is not None else pooled_features(net, replay)
            y_rep = np.tile(replay.labels, rf.shape[0])
            parts_f.append(rf.reshape(-1, rf.shape[-1]))
            parts_y.append(np.asarray(rep_targets).reshape(-1, n_cls))
            # Same total weight share per domain, whatever the counts.
            parts_w.append(_balanced_weights(y_rep) * share * len(y_loc) / max(len(y_rep), 1))
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
        timings["head_s"] = round(time.time() - t, 1)
        _say(f"  head: {cfg.head_epochs} epochs on {len(y)} pooled features, train acc "
             f"{h.history['accuracy'][-1]:.3f} ({timings['head_s']:.0f} s)", verbose)

    # Phase 2: fine-tune the top blocks + head: batches of local + replay activations, class-balanced.
    n_rep = int(round(cfg.batch_size * share))
    n_loc = cfg.batch_size - n_rep
    steps = finetune_steps(cfg, len(local), n_loc)
    if steps > 0:
        t = time.time()
        net.set_trainable()
        warm = int(round(cfg.warmup * steps))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate * (0.1 if warm else 1.0), decay_steps=max(steps - warm, 1),
            alpha=0.01, warmup_target=cfg.learning_rate if warm else None, warmup_steps=warm)
        net.top.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy",
                        metrics=["accuracy"])
        li, lv = _balanced_draw(local.labels, steps * n_loc, len(local.views), rng)
        if replay is not None:
            ri, rv = _balanced_draw(replay.labels, steps * n_rep, len(replay.views), rng)
        n_chunks = min(10, steps)
        bounds = np.linspace(0, steps, n_chunks + 1).round().astype(int)
        seq_cls = _sequence_class(keras)
        n_head = len(history)
        for c in range(n_chunks):
            s0, s1 = bounds[c], bounds[c + 1]

            def batch(i, _s0=s0):
                s = _s0 + i
                sl = slice(s * n_loc, (s + 1) * n_loc)
                xs = [_gather(local.views, li[sl], lv[sl])]
                ys = [eye[local.labels[li[sl]]]]
                if replay is not None:
                    sr = slice(s * n_rep, (s + 1) * n_rep)
                    xs.append(_gather(replay.views, ri[sr], rv[sr]))
                    ys.append(rep_targets[rv[sr], ri[sr]])
                return np.concatenate(xs), np.concatenate(ys).astype(np.float32)

            h = net.top.fit(seq_cls(s1 - s0, batch), epochs=1, verbose=0, shuffle=False)
            history.append({"phase": "finetune", "epoch": n_head + c + 1, "steps": int(s1),
                            "loss": float(h.history["loss"][0]), "accuracy": float(h.history["accuracy"][0])})
        timings["finetune_s"] = round(time.time() - t, 1)
        _say(f"  top: {steps} steps of {n_loc} local + {n_rep} replay, lr {cfg.learning_rate:g} (warm-up {warm}), "
             f"last train acc {history[-1]['accuracy']:.3f} ({timings['finetune_s']:.0f} s)", verbose)
    return {"history": history, "steps": steps, "local_batch": n_loc, "replay_batch": n_rep,
            "phase_boundaries": [n_head] if (n_head := sum(1 for r in history if r["phase"] == "head")) and steps
            else [], "timings": timings}


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


def predict_top(net: SplitNet, acts, batch_size: int = 128) -> np.ndarray:
    """Softmax of the (adapted) model from cached clean activations (== model(x) up to float rounding)."""
    acts = np.asarray(acts, dtype=np.float32)
    if len(acts) == 0:
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    return net.top.predict(acts, batch_size=batch_size, verbose=0)


# ---------------------------------------------------------------------------------------------------------
# The command


def _replay_pool(root: str, manifest_path: str | None, n: int, seed: int, verbose: bool) -> tuple[list[str], np.ndarray, str]:
    """Stratified sample of n replay images: the manifest's train split, or every valid image of root."""
    from .data import SplitManifest, scan_dataset
    from .sampling import stratified_indices

    if manifest_path:
        manifest = SplitManifest.load(manifest_path)
        paths, labels = manifest.files("train", root)
        where = f"{manifest_path} (train split)"
        if not paths:
            raise DatasetError(f"{manifest_path}: split 'train' is empty (replay)")
    else:
        scan = scan_dataset(root, progress=verbose)
        paths = [str(Path(scan.root) / r.path) for r in scan.records]
        labels = np.array([CLASS_INDEX[r.label] for r in scan.records], dtype=np.int64)
        where = f"{root} (all images)"
    idx = stratified_indices(labels, n, seed)
    paths = [str(paths[i]) for i in idx]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: replay image not found ({len(missing)} of {len(paths)} missing); "
                           "check --replay-data / --replay-split-manifest, or pass --no-replay")
    return paths, np.asarray(labels)[idx].astype(np.int64), where


def _prepare_out(run: Path, force: bool) -> None:
    if run.exists() and not run.is_dir():
        raise WbcEdgeError(f"{run}: exists and is not a directory")
    if run.exists() and any(run.iterdir()) and not force:
        what = "holds a finished run (model.keras)" if (run / "model.keras").exists() else "is not empty"
        raise WbcEdgeError(f"{run}: {what}; use --force to replace it or choose another --out")
    run.mkdir(parents=True, exist_ok=True)


def adapt(cfg: AdaptConfig, *, force: bool = False, verbose: bool = True) -> AdaptResult:
    """Adapt cfg.source to the images in cfg.data_root; write an ordinary run directory to cfg.out_dir."""
    from .calibration import Calibration, expected_calibration_error, apply_temperature, fit_calibration, coverage_at
    from .confidence import save_calibration
    from .evaluate import compute_metrics, plot_curves, save_metrics
    from .model import check_classifier, load_model
    from .tfcompat import import_tf, versions

    cfg.validate()
    t0 = time.time()
    timings: dict = {}
    model_path, src_run, src_info = resolve_source(cfg.source)
    local_root = Path(cfg.data_root)
    if not local_root.is_dir():
        raise DatasetError(f"{local_root}: local data folder not found (or not a folder)")
    replay_root, replay_manifest = default_replay(cfg, src_run, src_info)
    run = Path(cfg.out_dir)
    if run.resolve() == (src_run.resolve() if src_run else None):
        raise WbcEdgeError(f"{run}: --out must not be the source run directory")

    # The local folder and its split (before anything heavy: a bad folder fails in a second).
    t = time.time()
    scan = scan_local(local_root, skip_bad=cfg.skip_bad, progress=False)
    groups = scan.duplicates()
    manifest = make_adapt_split(scan.records, groups, per_class=cfg.per_class,
                                holdout_fraction=cfg.holdout_fraction, min_holdout=cfg.min_holdout,
                                val_share=cfg.val_share, seed=cfg.seed)
    manifest.root = scan.root
    summary = manifest.summary()
    adapt_classes = [c for c in CLASSES if summary["train"][c] > 0]
    if len(adapt_classes) < 2:
        raise DatasetError(f"{local_root}: only {len(adapt_classes)} class(es) "
                           f"({', '.join(adapt_classes) or 'none'}) keep images to adapt with after holding out "
                           f"{cfg.min_holdout} per class for testing; add images (two classes at least)")
    timings["scan_split_s"] = round(time.time() - t, 1)
    bad = [b for b in scan.bad if b.reason not in _HARMLESS]
    _say(f"Local images: {len(scan.records)} in {scan.root}"
         + (f" ({len(bad)} bad files skipped, first: {bad[0].path}: {bad[0].reason})" if bad else ""), verbose)
    _say(f"Split (seed {cfg.seed}; "
         + (f"{cfg.per_class} per class for adapting" if cfg.per_class else
            f"{cfg.holdout_fraction:.0%} of each class held out")
         + f", >= {cfg.min_holdout} held out per class; val fits the confidence calibration):", verbose)
    _say(split_table(manifest), verbose)
    for c in CLASSES:
        if scan.class_counts[c] == 0:
            _say(f"  note: no local {c} images: the class is kept by the source model"
                 + (" and replay" if replay_root else " only (no replay)"), verbose)
        elif summary["train"][c] == 0:
            _say(f"  note: {c}: too few images to adapt with (all held out for testing)", verbose)
    _prepare_out(run, force)

    # The model.
    _say(f"Loading {model_path} ...", verbose)
    import_tf()
    model = load_model(model_path)
    check_classifier(model, model_path)
    net = SplitNet.of(model)
    source_sha = sha256_file(model_path)

    # Activations: every local image clean; adapt images also in cfg.aug_views augmented views.
    t = time.time()
    paths_by_split, y_by_split = {}, {}
    for s in ("train", "val", "test"):
        p, y = manifest.files(s, scan.root)
        paths_by_split[s], y_by_split[s] = [str(x) for x in p], np.asarray(y, dtype=np.int64)
    log = (lambda m: _say(m, verbose)) if verbose else None
    local = ActSet(bottom_activations(net, paths_by_split["train"], cfg.aug_views, cfg.augment, cfg.seed,
                                      batch_size=cfg.batch_size, log=log, label="adapt images"), y_by_split["train"])
    held_paths = paths_by_split["val"] + paths_by_split["test"]
    held = bottom_activations(net, held_paths, 0, cfg.augment, cfg.seed, batch_size=cfg.batch_size, log=log,
                              label="held-out images")[0]
    replay, replay_info = None, None
    if replay_root:
        rpaths, ry, where = _replay_pool(replay_root, replay_manifest, cfg.replay_images, cfg.seed, verbose)
        _say(f"Replay: {len(rpaths)} source images from {where}", verbose)
        replay = ActSet(bottom_activations(net, rpaths, cfg.replay_views, cfg.augment, cfg.seed + 1,
                                           batch_size=cfg.batch_size, log=log, label="replay images"), ry)
        replay_info = {"data_root": str(replay_root), "split_manifest": replay_manifest, "images": len(rpaths),
                       "per_class": {c: int(np.sum(ry == i)) for i, c in enumerate(CLASSES)}}
        if replay_manifest:
            replay_info["split_manifest_sha256"] = sha256_file(replay_manifest)
    else:
        _say("Replay: off (no source data given or found in the source run); the source domain may be "
             "forgotten", verbose)
    timings["activations_s"] = round(time.time() - t, 1)

    # Training.
    _say("Training ...", verbose)
    fit = fit_top(net, local, replay, cfg, seed=cfg.seed, verbose=verbose)
    timings.update(fit["timings"])

    # Held-out scoring and confidence calibration (temperature on val, threshold on val, as fit_calibration).
    probs = predict_top(net, held)
    n_val = len(paths_by_split["val"])
    p_val, p_test = probs[:n_val], probs[n_val:]
    y_val, y_test = y_by_split["val"], y_by_split["test"]
    if n_val:
        cal = fit_calibration(p_val, y_val)
        cal.fitted_on = "adapt: local val split; " + cal.fitted_on
    elif len(y_test):
        cal = fit_calibration(p_test, y_test)
        cal.fitted_on = "adapt: local TEST split (no val images: too few) - optimistic; " + cal.fitted_on
    else:
        cal = Calibration(fitted_on="adapt: not fitted (no held-out images)")

    # Artifacts (atomic); run.json last - and first removed, so that a replaced run interrupted half-way is never
    # taken for a finished one.
    (run / "run.json").unlink(missing_ok=True)
    atomic.write_json(run / "config.json", cfg.to_dict())
    split_sha = manifest.save(run / "split.csv")
    with atomic.atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    hist = fit["history"]
    cols = {k: [h.get(k) for h in hist] for k in ("accuracy", "loss")}
    atomic.write_json(run / "history.json", {"epochs": hist, "phase_boundaries": fit["phase_boundaries"], **cols,
                                             "val_accuracy": [None] * len(hist), "val_loss": [None] * len(hist)})
    try:
        plot_curves(cols, run / "curves.png", title=f"adapt {model.name}", phase_boundaries=fit["phase_boundaries"])
    except WbcEdgeError as exc:
        _say(f"(no curves.png: {exc})", verbose)
    test_info = None
    for stale in ("test_metrics.json", "test_confusion.json", "test_confusion.png"):
        (run / stale).unlink(missing_ok=True)  # of a replaced (--force) run
    if len(y_test):
        m = compute_metrics(y_test, p_test.argmax(1), list(CLASSES))
        save_metrics(m, run, prefix="test_", extra={"split": "test", "n": len(y_test)})
        test_info = {"accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy, "macro_f1": m.macro_f1,
                     "accuracy_ci95": list(m.accuracy_ci95) if m.accuracy_ci95 else None}
    y_held = np.concatenate([y_val, y_test])
    heldout = {"n": int(len(y_held))}
    if len(y_held):
        mh = compute_metrics(y_held, probs.argmax(1), list(CLASSES), bootstrap=0)
        scaled = apply_temperature(probs, cal.temperature)
        heldout.update({"accuracy": mh.accuracy, "balanced_accuracy": mh.balanced_accuracy,
                        "per_class_recall": {r["label"]: r["recall"] for r in mh.per_class if r["support"]},
                        "ece_calibrated": expected_calibration_error(scaled, y_held),
                        "at_threshold": coverage_at(scaled, y_held, cal.abstain_threshold)})
    save_calibration(run, cal)
    timings["total_s"] = round(time.time() - t0, 1)
    info = {
        "config": {**cfg.to_dict(), "mode": "adapt"},
        "versions": versions(),
        "source": {"model": str(model_path), "model_sha256": source_sha,
                   "run_dir": str(src_run) if src_run else None},
        "replay": replay_info,
        "timings": timings,
        "split_manifest_sha256": split_sha,
        "split_counts": {s: int(sum(summary[s].values())) for s in summary},
        "split_per_class": summary,
        "finetune": {"steps": fit["steps"], "local_batch": fit["local_batch"], "replay_batch": fit["replay_batch"]},
        "test": test_info,
        "heldout": heldout,
        "model_sha256": sha256_file(run / "model.keras"),
        "calibration": cal.to_dict(),
    }
    atomic.write_json(run / "run.json", info)
    if len(y_held):
        _say(f"Held-out local images (val + test, n = {heldout['n']}, never used for training or selection): "
             f"accuracy {heldout['accuracy']:.2%}, balanced accuracy {heldout['balanced_accuracy']:.2%}", verbose)
        _say("  recall: " + ", ".join(f"{c} {r:.0%} (n={int(np.sum(y_held == CLASS_INDEX[c]))})"
                                      for c, r in heldout["per_class_recall"].items()), verbose)
    if test_info:
        _say(f"Test split (n = {len(y_test)}): accuracy {test_info['accuracy']:.2%}, balanced accuracy "
             f"{test_info['balanced_accuracy']:.2%}", verbose)
    _say(f"Confidence: temperature {cal.temperature:.3f}, abstain below {cal.abstain_threshold:.3f} "
         f"({cal.fitted_on.split(';')[0]})", verbose)
    _say(f"Done in {timings['total_s'] / 60:.1f} min -> {run / 'model.keras'} (export with: wbc-edge export {run})",
         verbose)
    return AdaptResult(run, run / "model.keras", heldout, timings)
