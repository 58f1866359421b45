"""The network a run starts from: `build_model`, then - with `--narrow-from` - a wider trained network's
strongest channels copied in (`model.narrow`), and with `--narrow-recalibrate` BatchNorm re-estimated on this
run's own training views.

Why here and not in `model`: re-estimating BatchNorm needs the run's images and augmentation.  The result is
saved in the run directory on first use and loaded on resume, so an interrupted run continues from the very
weights its cached activations were computed with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.progress import Progress
from ..model.narrow import load_source, narrow_into, recalibrate_batchnorm
from ..model.network import build_model, resolve_weights
from .config import TrainConfig
from .inputs import load_pixels
from .run_dir import save_weights_atomic

__all__ = ["RECALIBRATION_IMAGES", "initial_model", "narrow_model", "starts_pretrained"]

#: Training views BatchNorm statistics are re-estimated on after narrowing (augmented as in training, seeded).
RECALIBRATION_IMAGES = 512


def starts_pretrained(cfg: TrainConfig) -> bool:
    """Whether full mode keeps BatchNorm frozen: with an ImageNet file, whose statistics were estimated on more
    images than a CPU batch holds.  Not for a narrowed network: its statistics no longer match what its layers
    receive, and a one-shot re-estimate was measured to hurt (`narrow_model`), so they train with the weights."""
    return cfg.model.narrow_from is None and resolve_weights(cfg.model.weights, cfg.model.alpha) is not None


def initial_model(cfg: TrainConfig, run: Path, data: dict, progress: Progress, keras):
    """(the model to train, built and narrowed as the config says; the narrowing record for run.json, or {})."""
    model = build_model(cfg.model)
    if not cfg.model.narrow_from:
        return model, {}
    saved = run / "checkpoints" / "narrowed.weights.h5"
    note = saved.with_name("narrowed.json")
    if saved.exists() and note.exists():
        model.load_weights(saved)
        progress.say(f"Narrowed start: {saved} (saved by this run)")
        return model, json.loads(note.read_text(encoding="utf-8"))
    record = narrow_model(model, cfg, data, progress, keras)
    saved.parent.mkdir(parents=True, exist_ok=True)
    save_weights_atomic(model, saved)
    atomic.write_json(note, record)  # after the weights: its presence means both are complete
    return model, record


def narrow_model(model, cfg: TrainConfig, data: dict, progress: Progress, keras) -> dict:
    """Copy `cfg.model.narrow_from`'s strongest channels into `model`; with `cfg.narrow_recalibrate`, then
    re-estimate BatchNorm on RECALIBRATION_IMAGES augmented training views.  Off by default, as measured: a
    linear probe of the alpha-0.5 copy of the shipped model at 128 px (1,000 PBC train / 500 val images) reads
    63.8 % at the cache cut with the source's statistics and 45.0 % re-estimated (benchmarks/small/README.md)."""
    source = load_source(cfg.model.narrow_from)
    progress.say(f"Narrowing {cfg.model.narrow_from} ({source.count_params():,} parameters) to alpha "
                 f"{cfg.model.alpha:g} ({model.count_params():,}) ...")
    done = narrow_into(model, source, keras)
    record = {"source": str(cfg.model.narrow_from), "layers_copied": done["copied"],
              "kept_fresh": done["kept_fresh"], "batchnorm_recalibrated_on": 0}
    if not cfg.narrow_recalibrate:
        return record
    paths = data["train"][0]
    rng = np.random.default_rng([cfg.seed, 7919])
    pick = np.sort(rng.choice(len(paths), size=min(RECALIBRATION_IMAGES, len(paths)), replace=False))
    size = cfg.model.input_size
    pixels = np.empty((len(pick), size, size, 3), dtype=np.float32)
    with progress.task(len(pick), "recalibration views") as advance:
        for j, i in enumerate(pick):
            pixels[j] = load_pixels(paths[i], size, np.random.default_rng([cfg.seed, 7919, int(i)]), cfg.augment)
            advance(1)
    n_bn = sum(1 for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    with progress.task(n_bn, "BatchNorm statistics") as advance:
        recalibrate_batchnorm(model, pixels, keras, advance=advance)
    return {**record, "batchnorm_recalibrated_on": int(len(pick))}
