"""Training: MobileNetV2 on a leak-free split, in two modes, resumable (re-run the same command on RUN_DIR).

`cached` (default, CPU-practical): the frozen lower part of the backbone runs once per image and augmented
view and its activations are cached; then the head, then the top blocks train on the cache (`cached`).
`full`: ordinary end-to-end fine-tuning with augmentation in a tf.data pipeline - what a GPU machine or a
cluster should run; tf.distribute via `distribute` (`full`).

The stages, one module each:
- `config`       TrainConfig (the recipe; the CLI's defaults are its defaults), TrainResult
- `run_dir`      RUN_DIR: create / resume / --force, config.json check, the split and class list, state.json,
                 atomic weight saves, the fine-tune's per-epoch files
- `inputs`       the manifest's splits as (paths, class indices), pixels, class weights
- `activations`  the cached mode's activation cache (resumable, shareable between runs)
- `selection`    the shifted val, the selection score, the weight average (SWA)
- `cached`       head + top-block fine-tune on the cache
- `full`         end-to-end training (tf.distribute, BackupAndRestore)
- `distribute`   strategies, and which worker of a multi-worker run writes
- `callbacks`    Keras callbacks: epoch lines via Progress, resumable history, atomic best weights
- `pipeline`     `train()`: the above in order, then the final artifacts and run.json
"""

from .activations import ActivationCache
from .cached import CachedTrainer, activation_sequence
from .callbacks import best_weights_callback, epoch_reporter, history_callback
from .config import DISTRIBUTE, FINETUNE_BLOCKS, MODES, TrainConfig, TrainResult
from .distribute import make_strategy, worker_out_dir, worker_role
from .full import FullTrainer
from .inputs import class_weights, load_pixels, load_splits
from .pipeline import fit_run_calibration, history_columns, train
from .run_dir import (PENDING_SPLIT, WORKERS_DIR, FinetuneFiles, PreparedRun, RunState, prepare_run,
                      save_weights_atomic)
from .selection import describe, selection_score, swa_add, swa_load

__all__ = [
    "DISTRIBUTE", "FINETUNE_BLOCKS", "MODES", "PENDING_SPLIT", "WORKERS_DIR",
    "ActivationCache", "CachedTrainer", "FinetuneFiles", "FullTrainer", "PreparedRun", "RunState",
    "TrainConfig", "TrainResult", "activation_sequence", "best_weights_callback", "class_weights", "describe",
    "epoch_reporter", "fit_run_calibration", "history_callback", "history_columns", "load_pixels",
    "load_splits", "make_strategy", "prepare_run", "save_weights_atomic", "selection_score",
    "swa_add", "swa_load", "train", "worker_out_dir", "worker_role",
]
