"""Adapt a trained model to a new lab's images with a few labelled cells (`wbc-edge adapt`).

Why: even a robust model meets a stain, camera or magnification it has not seen.  A lab can label a handful
of its own cells per class; this package fine-tunes the shipped model on them cheaply (minutes on 2 CPU
cores) and writes an ordinary run directory that `wbc-edge evaluate`, `export` and `bench` accept.

The stages, one module each:
- `config`   AdaptConfig: the recipe (the CLI's defaults), AdaptResult
- `source`   the source model, its run and its class list (run.json `labels`; WBC5 for older runs)
- `split`    the local folder (checked against the source labels) and its seeded, group-aware hold-out split
- `network`  the model cut at block_13 and the cached activations of its frozen bottom
- `replay`   source-domain images mixed into every batch against forgetting
- `finetune` training the top on local + replay activations (distillation towards the source model)
- `interpolate` WiSE-FT: weights mixed back towards the source, alpha chosen on source val images
- `pipeline` `adapt()`: the above in order, writing the run directory atomically
"""

from __future__ import annotations

from .config import AdaptConfig, AdaptResult
from .finetune import balanced_draw, balanced_weights, finetune_steps, fit_top, gather
from .interpolate import AlphaChoice, choose_alpha, interpolate_weights
from .network import (ADAPT_FROM, ActSet, SplitNet, bottom_activations, pooled_features, predict_top,
                      replay_soft_targets)
from .pipeline import adapt
from .replay import default_replay, replay_pool
from .source import check_outputs, resolve_source, source_labels
from .split import HARMLESS, make_adapt_split, scan_local, split_table

__all__ = [
    "ADAPT_FROM", "HARMLESS", "ActSet", "AlphaChoice", "choose_alpha", "interpolate_weights", "AdaptConfig", "AdaptResult", "SplitNet", "adapt", "balanced_draw",
    "balanced_weights", "bottom_activations", "check_outputs", "default_replay", "finetune_steps", "fit_top",
    "gather", "make_adapt_split", "pooled_features", "predict_top", "replay_pool", "replay_soft_targets",
    "resolve_source", "scan_local", "source_labels", "split_table",
]
