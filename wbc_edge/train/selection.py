"""Model selection in cached mode: the score each candidate (head-only, every fine-tune epoch, the weight
average) is judged by, the held-out "shifted val" it looks at, and the running weight average (SWA).

Why a shifted val: selecting on clean val accuracy alone keeps the epoch that fits PBC best, which is often
not the one that holds up on other labs' images.  The shifted val is the val split seen through a fixed,
seeded family of shifts (`data.augment.shifted_val_view`) that training never uses, and its seed does not depend on
the training seed, so every seed's model is selected on the same images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.labels import Labels

def selection_score(top, val_views: list, y_val: np.ndarray, labels: Labels) -> dict:
    """Selection criterion on the val split: clean accuracy, and - with the shifted val (a second view) - the
    mean of clean accuracy and shifted balanced accuracy, so the model kept is good in-domain *and* robust.
    `top` maps cached activations to probabilities; `val_views` = [clean, shifted?] activations."""
    from ..metrics import compute_metrics

    out = {}
    probs = top.predict(val_views[0], batch_size=128, verbose=0)
    out["val_loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_val)), y_val], 1e-7, 1.0))))
    out["val_accuracy"] = float(np.mean(probs.argmax(1) == y_val))
    out["select"] = out["val_accuracy"]
    if len(val_views) > 1:
        shifted = top.predict(val_views[1], batch_size=128, verbose=0).argmax(1)
        out["shifted_val_balanced_accuracy"] = compute_metrics(y_val, shifted, labels, bootstrap=0).balanced_accuracy
        out["select"] = 0.5 * (out["val_accuracy"] + out["shifted_val_balanced_accuracy"])
    return out


def describe(score: dict) -> str:
    """One line for the user: the parts of a selection score."""
    text = f"val acc {score['val_accuracy']:.4f}"
    if "shifted_val_balanced_accuracy" in score:
        text += f", shifted val bal. acc {score['shifted_val_balanced_accuracy']:.4f}"
    return text + f", select {score['select']:.4f}"


def swa_add(model, previous: Path | None, out: Path, k: int) -> None:
    """Fold the model's current weights into the running average of `k` epochs in `previous` (k = 0 or no
    file: start a new average) and write the result to `out`."""
    now = model.get_weights()
    if k > 0 and previous is not None and previous.exists():
        with np.load(previous) as z:
            avg = [z[f"w{i}"] + (w - z[f"w{i}"]) / (k + 1) for i, w in enumerate(now)]
    else:
        avg, k = now, 0
    buf = io.BytesIO()
    np.savez(buf, count=k + 1, **{f"w{i}": w for i, w in enumerate(avg)})
    atomic.write_bytes(out, buf.getvalue())


def swa_load(model, swa_file: Path) -> int:
    """Set the model to the averaged weights; returns how many epochs were averaged."""
    with np.load(swa_file) as z:
        model.set_weights([z[f"w{i}"] for i in range(len(z.files) - 1)])
        return int(z["count"])
