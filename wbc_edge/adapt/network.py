"""The network cut in two, and the cached activations of its frozen bottom.

Why: adapting on 2 CPU cores in minutes is only possible if the expensive part of MobileNetV2 runs once per
image.  The model is cut at the input of `block_13_expand` (the cut of `wbc_edge.train`'s cached mode): the
bottom stays frozen and runs once per local image (clean) and once per augmented view of each image used for
adapting (`augment`, seeded); only the top (blocks 13-16, Conv_1 and the head) is trained, on the cached
activations.  `AdaptConfig.adapt_from` moves the cut lower (more of the network adapts, each step costs more).
`predict_top` on clean activations equals `model(x)` up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.augment import AugmentConfig, augment
from ..core.errors import ModelFileError
from ..core.progress import Progress, resolve
from ..core.scale_guard import ScaleGuard, guard_pixels
from ..model.network import model_input_size

#: First MobileNetV2 block that is fine-tuned (the cut of train's cached mode).
ADAPT_FROM = 13


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
        from ..core.tfcompat import import_tf

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
        return model_input_size(self.model)

    @property
    def num_classes(self) -> int:
        return int(self.model.output_shape[-1])


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
                       batch_size: int = 32, progress: Progress | bool | None = None,
                       label: str = "images", guard: ScaleGuard | None = None) -> list:
    """[clean float32 (N, ...), aug_1 float16, ...]: the frozen bottom on each image and n_aug augmented views.
    View v >= 1 of image i is `augment(preprocess(path), default_rng([seed, v, i]))`, where preprocess is
    followed by the source model's scale guard when given (the pixels the runtime will feed)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..core.preprocess import preprocess

    progress = resolve(progress)
    size = net.size
    n = len(paths)
    shape = tuple(int(d) for d in net.bottom.output_shape[1:])
    out = [np.empty((n,) + shape, dtype=np.float32)] + [np.empty((n,) + shape, dtype=np.float16)
                                                        for _ in range(n_aug)]
    if n == 0:
        return out
    chunk = 64

    def pixels(i: int) -> list[np.ndarray]:
        px = guard_pixels(preprocess(paths[i], size), guard)[0]
        return [px] + [augment(px, np.random.default_rng([seed, v, i]), aug) for v in range(1, n_aug + 1)]

    what = f"Activations of {label} ({n_aug + 1} views each)" if n_aug else f"Activations of {label}"
    with ThreadPoolExecutor(max_workers=2) as pool, progress.task(n, what) as advance:
        pending = [pool.submit(pixels, i) for i in range(0, min(chunk, n))]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            views = [f.result() for f in pending]
            pending = [pool.submit(pixels, i) for i in range(stop, min(stop + chunk, n))]
            for v in range(n_aug + 1):
                x = np.stack([views[j][v] for j in range(len(views))]).astype(np.float32)
                out[v][start:stop] = net.bottom.predict(x, batch_size=batch_size, verbose=0)
            advance(stop - start)
    return out


def pooled_features(net: SplitNet, acts: ActSet, batch_size: int = 128) -> np.ndarray:
    """(V, N, F) pooled features of every view through the (current) frozen top."""
    return np.stack([net.features.predict(np.asarray(v, dtype=np.float32), batch_size=batch_size, verbose=0)
                     for v in acts.views]) if len(acts) else np.zeros((len(acts.views), 0, 1))


def predict_top(net: SplitNet, acts, batch_size: int = 128) -> np.ndarray:
    """Softmax of the (adapted) model from cached clean activations (== model(x) up to float rounding)."""
    acts = np.asarray(acts, dtype=np.float32)
    if len(acts) == 0:
        return np.zeros((0, net.num_classes), dtype=np.float32)
    return net.top.predict(acts, batch_size=batch_size, verbose=0)


def replay_soft_targets(net: SplitNet, replay: ActSet) -> np.ndarray:
    """(V, N, C) probabilities of the (source) model on every replay view: the distillation targets."""
    return np.stack([predict_top(net, v) for v in replay.views])
