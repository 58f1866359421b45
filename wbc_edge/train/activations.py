"""The cached mode's activation cache: the frozen bottom of the network run once per image and view.

Why: fine-tuning all of MobileNetV2 at 224 px runs at ~5 img/s on 2 CPU cores (~7 h for 15 epochs of PBC).
The layers below `block_<finetune_from>` are frozen anyway, so their output is computed once - for the
clean image and for each augmented view - and stored as a float16 memmap under checkpoints/cache/; the
trainable top then trains on it in about a minute per epoch.  The cache resumes per chunk, and the views
that do not depend on the training seed can be shared between runs (`TrainConfig.shared_cache`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.atomic import sha256_file
from ..data.augment import SHIFTED_VAL_SEED, shifted_val_view
from ..model.network import resolve_weights
from ..core.preprocess import PREPROCESS_VERSION, preprocess
from ..core.progress import Progress
from .config import TrainConfig
from .inputs import load_pixels
from .run_dir import RunState

#: Images per chunk: decoded in threads while TensorFlow runs the previous chunk; the resume granularity.
CHUNK = 256


class ActivationCache:
    """Bottom activations per split and view: view 0 = the clean image, train views >= 1 = augmented views,
    val view 1 = the held-out shifted view (`data.augment.shifted_val_view`)."""

    def __init__(self, cfg: TrainConfig, bottom, data: dict, cache_dir: Path, state: RunState,
                 progress: Progress):
        self.cfg, self.bottom, self.data, self.state, self.progress = cfg, bottom, data, state, progress
        self.cache_dir = cache_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.size = cfg.model.input_size

    def views(self, split: str) -> int:
        if split == "train":
            return 1 + self.cfg.aug_views
        return 2 if self.cfg.shifted_val else 1

    def file(self, split: str, view: int) -> Path:
        return self.cache_dir / f"act_{split}_v{view}.npy"

    def shared_file(self, split: str, view: int) -> Path | None:
        """Where a seed-independent view's activations are shared between runs, or None.

        Clean views and the fixed-seed shifted val do not depend on the training seed or the augmentation
        recipe - only on the frozen bottom (pretrained weights, alpha, size, cut) and the images - so seeds
        and ablations of one recipe can reuse them.  Never with random init (the bottom differs per seed).
        """
        cfg = self.cfg
        weights = resolve_weights(cfg.model.weights, cfg.model.alpha)
        if not cfg.shared_cache or weights is None or (split == "train" and view > 0):
            return None
        kind = "shifted" if view > 0 else "clean"
        ident = json.dumps({"weights": weights if weights == "imagenet" else sha256_file(weights),
                            "alpha": cfg.model.alpha, "size": cfg.model.input_size, "cut": cfg.finetune_from,
                            "view": kind, "shifted_seed": SHIFTED_VAL_SEED, "preprocess": PREPROCESS_VERSION,
                            "paths": [str(Path(p).resolve()) for p in self.data[split][0]]}, sort_keys=True)
        return Path(cfg.shared_cache) / f"act_{split}_{kind}_{hashlib.sha256(ident.encode()).hexdigest()[:16]}.npy"

    def extract(self, split: str, view: int) -> np.ndarray:
        """Bottom activations for a split/view, cached in a memmap; resumes from the last full chunk."""
        shared = self.shared_file(split, view)
        shape = (len(self.data[split][0]),) + tuple(int(d) for d in self.bottom.output_shape[1:])
        if shared is not None and shared.exists():
            arr = np.load(shared, mmap_mode="r")
            if arr.shape == shape:
                self.progress.say(f"  cache {split} view {view}: reusing {shared}")
                return arr
        arr = self._compute(split, view)
        if shared is not None:
            shared.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(shared) as tmp:
                shutil.copyfile(self.file(split, view), tmp)
        return arr

    def _compute(self, split: str, view: int) -> np.ndarray:
        paths, _ = self.data[split]
        path = self.file(split, view)
        key = f"extract_{split}_v{view}"
        done = int(self.state.get(key, 0))
        shape = (len(paths),) + tuple(int(d) for d in self.bottom.output_shape[1:])
        arr = None
        if path.exists() and done > 0:
            arr = np.load(path, mmap_mode="r+")
            if arr.shape != shape:
                done, arr = 0, None
        if arr is None:
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
            done = 0
        if done >= len(paths):
            return arr
        # Decoding + augmenting (~20 ms per image for the robust preset) runs in threads while TensorFlow
        # predicts the previous chunk; Pillow and numpy release the GIL for most of it.
        with ThreadPoolExecutor(max_workers=2) as pool, \
                self.progress.task(len(paths) - done, f"cache {split} view {view}") as advance:
            def submit(lo):
                hi = min(lo + CHUNK, len(paths))
                return [pool.submit(self.view_pixels, split, view, i) for i in range(lo, hi)]

            pending = submit(done)
            for start in range(done, len(paths), CHUNK):
                stop = min(start + CHUNK, len(paths))
                px = np.stack([f.result() for f in pending]).astype(np.float32)
                pending = submit(stop) if stop < len(paths) else []
                arr[start:stop] = self.bottom.predict(px, batch_size=self.cfg.batch_size,
                                                      verbose=0).astype(np.float16)
                arr.flush()
                self.state.set(**{key: stop})  # resumable per chunk
                advance(stop - start)
        return arr

    def view_pixels(self, split: str, view: int, i: int, size: int | None = None) -> np.ndarray:
        """View 0 is the clean image; train views >= 1 are augmented (seeded by seed, view, image); val
        view 1 is the held-out shifted view, seeded independently of the training seed so that every seed's
        model is selected on the same shifted val.  `size`: the same view at another input size (a
        distillation teacher's: the same seeded draws)."""
        path, size = self.data[split][0][i], size or self.size
        if view == 0:
            return load_pixels(path, size, None, self.cfg.augment)
        if split == "train":
            return load_pixels(path, size, np.random.default_rng([self.cfg.seed, view, i]), self.cfg.augment)
        return shifted_val_view(preprocess(path, size), i)
