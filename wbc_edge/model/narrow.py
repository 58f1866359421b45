"""Initialise a narrower MobileNetV2 from a wider one: each layer keeps the source's strongest channels.

Why: the ImageNet files for alpha 0.35-0.75 are not reachable everywhere (issue 33), and a small student from
a random start needs end-to-end training for hours on a CPU - in cached mode its frozen bottom would stay
random.  A width-reduced copy of a trained 1.0 network (the teacher, or the ImageNet 1.0 file) starts from
features that already see cells.  Which channels survive: the ones with the largest BatchNorm scale |gamma|
after their convolution (network slimming, Liu et al. 2017); channels joined by a residual Add are one group
and keep one shared set, ranked by the sum of their |gamma|.  Dropping channels shifts what the next layers
receive; `recalibrate_batchnorm` re-estimates BatchNorm's moving statistics on real images where that helps
(in cached mode on PBC it did not: train.initial says what was measured).

Layers are matched by name (keras.applications names them the same at every width); the classifier head is
copied when the source has one of the same shape (a teacher), else it keeps its fresh initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import ModelFileError
from ..core.preprocess import DEFAULT_SIZE
from ..core.tfcompat import import_tf
from .network import IMAGENET_WEIGHTS_FILE, load_model

__all__ = ["load_source", "narrow_into", "recalibrate_batchnorm", "resolve_source"]


def resolve_source(spec: str) -> Path:
    """RUN_DIR (its model.keras), a .keras model, or a MobileNetV2 1.0 no-top .h5 weights file; a one-line error
    otherwise (checked before a run directory is made)."""
    p = Path(spec).expanduser()
    path = p / "model.keras" if p.is_dir() else p
    if not path.is_file():
        raise ModelFileError(f"--narrow-from {spec}: nothing there (expected RUN_DIR with model.keras, a .keras "
                             f"model, or a MobileNetV2 1.0 no-top .h5 such as {IMAGENET_WEIGHTS_FILE})")
    if path.suffix not in (".keras", ".h5"):
        raise ModelFileError(f"--narrow-from {path}: not a .keras model or a .h5 weights file")
    return path


def load_source(spec: str):
    """The wide network to narrow: a trained classifier (loaded safely, `network.load_model`) or the
    keras.applications MobileNetV2 1.0 backbone holding an .h5 file's weights."""
    path = resolve_source(spec)
    if path.suffix == ".keras":
        return load_model(path)
    _, keras = import_tf()
    try:
        return keras.applications.MobileNetV2(input_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3), include_top=False,
                                              alpha=1.0, weights=str(path))
    except (ValueError, OSError) as exc:
        raise ModelFileError(f"--narrow-from {path}: not MobileNetV2 1.0 no-top weights "
                             f"({str(exc).splitlines()[0]})") from None


def _inbound(layer) -> list:
    """The layers feeding `layer` in its (functional) model; [] for an input."""
    if not layer._inbound_nodes:
        return []
    found = layer._inbound_nodes[0].inbound_layers
    return list(found) if isinstance(found, (list, tuple)) else [found]


def _kind(layer, keras) -> str:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return "changer"  # sets its own number of output channels
    if isinstance(layer, keras.layers.InputLayer):
        return "input"
    if isinstance(layer, keras.layers.Add):
        return "add"
    return "pass"  # BatchNorm, ReLU, padding, pooling, dropout, rescaling: channels pass through


class _Groups:
    """Union-find over the layers that set a channel count: residual Adds join their producers."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
        return ra


def _channel_producers(model, keras) -> tuple[dict[str, str], _Groups]:
    """{layer name: the layer whose output channels it carries} and the residual groups."""
    producer: dict[str, str] = {}
    groups = _Groups()
    for layer in model.layers:
        kind, inbound = _kind(layer, keras), _inbound(layer)
        if kind in ("changer", "input"):
            producer[layer.name] = layer.name
            groups.find(layer.name)
        elif kind == "add":
            roots = [producer[i.name] for i in inbound]
            for r in roots[1:]:
                groups.union(roots[0], r)
            producer[layer.name] = roots[0]
        else:
            producer[layer.name] = producer[inbound[0].name]
    return producer, groups


def _importance(source, producer: dict[str, str], keras) -> dict[str, np.ndarray]:
    """|gamma| of the BatchNorm right after each channel-setting layer of `source` (L1 of the kernel's output
    slices where no BatchNorm follows)."""
    out: dict[str, np.ndarray] = {}
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            p = producer[layer.name]
            if p not in out and layer.gamma is not None:
                out[p] = np.abs(layer.gamma.numpy())
    for layer in source.layers:
        if _kind(layer, keras) == "changer" and layer.name not in out:
            k = layer.get_weights()[0]
            out[layer.name] = np.abs(k).reshape(-1, k.shape[-1]).sum(0)
    return out


def _selection(target, source, keras) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """{channel-setting layer: the source channel indices its target keeps}, and the target's producers."""
    producer, groups = _channel_producers(target, keras)
    src_producer, _ = _channel_producers(source, keras)
    score = _importance(source, src_producer, keras)
    members: dict[str, list[str]] = {}
    for layer in target.layers:
        if _kind(layer, keras) == "changer":
            members.setdefault(groups.find(layer.name), []).append(layer.name)
    chosen: dict[str, np.ndarray] = {}
    for names in members.values():
        width = {int(target.get_layer(n).get_weights()[0].shape[-1]) for n in names}
        src = [source.get_layer(n) for n in names if n in {sl.name for sl in source.layers}]
        if not src:  # the head of a backbone-only source (the ImageNet file): kept fresh by narrow_into
            continue
        if len(width) != 1:
            raise ModelFileError(f"cannot narrow {names[0]}: the residual group {names} has widths {sorted(width)}")
        k = width.pop()
        if len({len(score[s.name]) for s in src}) > 1:  # e.g. alpha <= 0.25: Conv1 and block 0 become a residual
            raise ModelFileError(f"cannot narrow to this width: {names} are joined by a residual Add here but have "
                                 "different widths in the source (choose another --alpha)")
        total = sum(score[s.name] for s in src)
        if k > len(total):
            raise ModelFileError(f"cannot narrow {names[0]}: the target has {k} channels, the source only "
                                 f"{len(total)} (the source must be at least as wide)")
        keep = np.sort(np.argsort(-total, kind="stable")[:k])
        for n in names:
            chosen[n] = keep
    for layer in target.layers:
        if _kind(layer, keras) == "input":
            chosen[layer.name] = np.arange(int(layer.output.shape[-1]))
    return chosen, producer


def narrow_into(target, source, keras) -> dict:
    """Copy `source`'s weights into the narrower `target` (same layer names), channel by channel.

    Returns {"copied": n layers, "kept_fresh": [names without a same-shaped source layer]}."""
    chosen, producer = _selection(target, source, keras)
    names = {layer.name for layer in source.layers}
    copied, fresh = 0, []
    for layer in target.layers:
        w = layer.get_weights()
        if not w:
            continue
        if layer.name not in names:
            fresh.append(layer.name)
            continue
        sw = source.get_layer(layer.name).get_weights()
        kind = _kind(layer, keras)
        inbound = _inbound(layer)
        in_idx = chosen[producer[inbound[0].name]] if inbound else None
        new = []
        for t, s in zip(w, sw):  # noqa: B905 - same layer type, same weight list
            if kind == "changer":
                out_idx = chosen[layer.name]
                s = s[..., out_idx] if s.ndim == 1 else np.take(np.take(s, in_idx, axis=-2), out_idx, axis=-1)
            elif kind == "depthwise":
                s = np.take(s, in_idx, axis=-2) if s.ndim == 4 else s[in_idx]
            else:  # BatchNorm and other per-channel weights follow the channels they normalise
                s = s[chosen[producer[layer.name]]] if s.shape != t.shape else s
            new.append(s)
        if [a.shape for a in new] != [a.shape for a in w]:
            if layer.name == target.layers[-1].name:  # a head of another size (other classes): keep it fresh
                fresh.append(layer.name)
                continue
            raise ModelFileError(f"cannot narrow layer {layer.name}: source shapes {[a.shape for a in sw]} do not "
                                 f"reduce to {[a.shape for a in w]}")
        layer.set_weights(new)
        copied += 1
    return {"copied": copied, "kept_fresh": fresh}


def recalibrate_batchnorm(model, pixels: np.ndarray, keras, batch_size: int = 64,
                          advance: Callable[[int], None] | None = None) -> int:
    """Re-estimate every BatchNorm's moving mean and variance on `pixels` (the model's input), in network order,
    so each layer sees the statistics its narrowed inputs really have.  Returns the number of layers updated."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        probe = keras.Model(model.input, bn.input)
        total = total_sq = None
        n = 0
        for lo in range(0, len(pixels), batch_size):
            a = probe(pixels[lo:lo + batch_size], training=False).numpy().astype(np.float64)
            a = a.reshape(-1, a.shape[-1])
            total = a.sum(0) if total is None else total + a.sum(0)
            total_sq = (a * a).sum(0) if total_sq is None else total_sq + (a * a).sum(0)
            n += len(a)
        mean = total / n
        var = np.maximum(total_sq / n - mean * mean, 0.0)
        gamma_beta = [w for w in bn.get_weights()[:-2]]
        bn.set_weights(gamma_beta + [mean.astype(np.float32), var.astype(np.float32)])
        if advance:
            advance(1)
    return len(bns)
