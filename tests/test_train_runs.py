"""RUN_DIR under interruptions: what an interrupted fine-tune resumes from, atomic weight saves, and a
multi-worker RUN_DIR that a non-chief worker created first."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_train_config


@pytest.fixture(scope="module")
def sample_split(sample_root, tmp_path_factory):
    from wbc_edge.data import split_dataset

    out = tmp_path_factory.mktemp("split") / "split.csv"
    split_dataset(sample_root, out, seed=1, progress=False)
    return out


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _litter(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name)


def _same_weights(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class _Script:
    """Replaces the selection score's `select` by a scripted sequence (one value per call, in order: the
    head-only baseline first, then each fine-tune epoch) and records the model's weights at each call."""

    def __init__(self, monkeypatch):
        from wbc_edge.train import CachedTrainer

        self.values: list[float] = []
        self.weights: list[list] = []
        real = CachedTrainer._score

        def scored(trainer, acts, y_val):
            out = real(trainer, acts, y_val)
            out["select"] = self.values.pop(0)
            self.weights.append(trainer.model.get_weights())
            return out

        monkeypatch.setattr(CachedTrainer, "_score", scored)


def _interrupt_when_committing(monkeypatch, epoch: int, *, before: bool):
    """Ctrl-C when state.json records fine-tune epoch `epoch`: just before (the epoch's files are written,
    the record is not) or just after."""
    from wbc_edge.train import RunState

    original = RunState.set

    def interrupting(self, **kv):
        if before and kv.get("finetune_epoch") == epoch:
            raise KeyboardInterrupt
        original(self, **kv)
        if not before and kv.get("finetune_epoch") == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunState, "set", interrupting)
    return original


def test_resume_before_any_epoch_beat_the_baseline_keeps_the_head_only_weights(sample_root, sample_split,
                                                                                tmp_path, monkeypatch):
    """The baseline (head-only) weights must survive a resume: the resumed process holds partly fine-tuned
    weights, and a baseline re-saved then would be fine-tuned weights selected as "head-only"."""
    from wbc_edge.model.network import load_model
    from wbc_edge.train import train

    out = tmp_path / "run"
    cfg = tiny_train_config(sample_root, out, sample_split, head_epochs=1, finetune_epochs=2, swa=False)
    script = _Script(monkeypatch)
    script.values = [2.0, 0.0]  # baseline unbeatable, fine-tune epoch 1 worse
    _interrupt_when_committing(monkeypatch, 1, before=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    head_only = script.weights[0]
    head_file = out / "checkpoints" / "head.weights.h5"
    head_sha = _sha(head_file)
    assert not _same_weights(script.weights[1], head_only), "fine-tune epoch 1 changed the weights"

    monkeypatch.undo()
    script = _Script(monkeypatch)
    script.values = [0.0]  # resumed: fine-tune epoch 2, worse again
    result = train(cfg, progress=False)
    assert result.timings["selected"]["epoch"] == 0
    assert _sha(head_file) == head_sha, "the head-only weights were overwritten on resume"
    assert _same_weights(load_model(out / "model.keras").get_weights(), head_only)
    assert _litter(out) == []


def test_an_epoch_saved_but_not_recorded_is_not_what_the_resumed_run_selects(sample_root, sample_split,
                                                                              tmp_path, monkeypatch):
    """Interrupted after fine-tune epoch 2 saved its weights and checkpoint but before state.json recorded
    it: the resumed run must continue from epoch 1's checkpoint, and - when the re-run epochs do not beat
    epoch 1 - keep epoch 1's weights, not the unrecorded epoch 2's."""
    from wbc_edge.model.network import load_model
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train import train

    tf, _ = import_tf()
    out = tmp_path / "run"
    cfg = tiny_train_config(sample_root, out, sample_split, head_epochs=1, finetune_epochs=3, swa=False)
    script = _Script(monkeypatch)
    script.values = [0.1, 0.5, 0.9]  # baseline, epoch 1 (best), epoch 2 (better, but never recorded)
    _interrupt_when_committing(monkeypatch, 2, before=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    epoch1 = script.weights[1]
    assert json.loads((out / "state.json").read_text())["finetune_epoch"] == 1

    monkeypatch.undo()
    restored = []
    real_restore = tf.train.Checkpoint.restore
    monkeypatch.setattr(tf.train.Checkpoint, "restore",
                        lambda self, path, *a, **k: restored.append(str(path)) or real_restore(self, path, *a, **k))
    script = _Script(monkeypatch)
    script.values = [0.2, 0.2]  # epochs 2 and 3 re-run: worse than epoch 1
    result = train(cfg, progress=False)
    assert [Path(p).name for p in restored] == ["ckpt-1"]
    assert result.timings["selected"]["epoch"] == 1
    assert _same_weights(load_model(out / "model.keras").get_weights(), epoch1)


class _FullDisk:
    """A model whose save_weights writes part of the file, then fails like a full disk."""

    def save_weights(self, path):
        Path(path).write_bytes(b"\x89HDF partial")
        raise OSError(28, "No space left on device")


def test_weight_saves_are_atomic(tmp_path):
    from wbc_edge.train import save_weights_atomic

    target = tmp_path / "best.weights.h5"
    target.write_bytes(b"previous weights")
    with pytest.raises(OSError, match="No space"):
        save_weights_atomic(_FullDisk(), target)
    assert target.read_bytes() == b"previous weights"
    assert _litter(tmp_path) == []


def test_full_mode_best_weights_are_saved_atomically(sample_root, sample_split, tmp_path, monkeypatch):
    """Full mode: a failing best-weights save leaves no truncated file under the final name (Keras'
    ModelCheckpoint wrote it in place)."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train import train

    _, keras = import_tf()

    def full_disk(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"\x89HDF partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    out = tmp_path / "run"
    cfg = tiny_train_config(sample_root, out, sample_split, mode="full", epochs=1)
    with pytest.raises(OSError, match="No space"):
        train(cfg, progress=False)
    assert not (out / "checkpoints" / "best_weights.h5").exists()
    assert _litter(out) == []


def test_chief_accepts_a_run_dir_a_worker_created_first(sample_root, sample_split, tmp_path):
    """Multi-worker start-up: a non-chief worker may create RUN_DIR/.workers/worker_1 before the chief
    looks at RUN_DIR; the chief must not call that "not a wbc-edge run" - but anything else still is."""
    from wbc_edge.core.errors import WbcEdgeError
    from wbc_edge.train import WORKERS_DIR, prepare_run, worker_out_dir

    out = tmp_path / "run"
    worker_cfg = tiny_train_config(sample_root, worker_out_dir(str(out), 1), sample_split)
    prepare_run(worker_cfg, progress=False)
    assert [p.name for p in out.iterdir()] == [WORKERS_DIR]
    prepared = prepare_run(tiny_train_config(sample_root, out, sample_split), progress=False)
    assert not prepared.resumed and (out / "config.json").is_file()

    other = tmp_path / "other"
    (other / WORKERS_DIR).mkdir(parents=True)
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(WbcEdgeError, match="not a wbc-edge run"):
        prepare_run(tiny_train_config(sample_root, other, sample_split), progress=False)
