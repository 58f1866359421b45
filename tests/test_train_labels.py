"""Labels from the data: training on a 3-class and an 8-class synthetic ImageFolder sizes the model's head
from the class folders, records the class list in config.json / run.json, and the run exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_train_config
from PIL import Image

#: Folder name -> canonical class.  Aliases on purpose: the folder spelling must not matter.
THREE = {"Neutrophils": "neutrophil", "lymph": "lymphocyte", "blast": "blast"}
EIGHT = {name: name for name in ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
                                 "neutrophil", "platelet")}


def synthetic_imagefolder(root, folders, per_class=10, size=64, seed=0):
    """PNG noise images with a class-specific mean colour (distinct images: no duplicate groups)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(folders):
        (root / name).mkdir(parents=True)
        base = np.array([(37 * c) % 256, (91 * c + 60) % 256, (53 * c + 120) % 256], dtype=np.float32)
        for i in range(per_class):
            px = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"img_{i:02d}.png")
    return root


@pytest.mark.parametrize("folders", [THREE, EIGHT], ids=["3-class", "8-class"])
def test_training_takes_its_classes_from_the_data(tmp_path, folders):
    from wbc_edge.core.contract import read_contract
    from wbc_edge.export import ExportConfig, export_model
    from wbc_edge.model.network import load_model
    from wbc_edge.train import train

    root = synthetic_imagefolder(tmp_path / "data", folders)
    out = tmp_path / "run"
    cfg = tiny_train_config(root, out, None, split_manifest=None, head_epochs=1, finetune_epochs=1, aug_views=0)
    result = train(cfg, progress=False)

    expected = sorted(folders.values())  # canonical names, alphabetical: the order a dataset gives
    run = json.loads((out / "run.json").read_text())
    assert run["labels"] == expected == result.labels
    assert run["config"]["labels"] == expected and run["config"]["model"]["num_classes"] == len(expected)
    assert json.loads((out / "config.json").read_text())["labels"] == expected
    assert json.loads((out / "test_metrics.json").read_text())["labels"] == expected
    model = load_model(out / "model.keras")
    assert model.output_shape == (None, len(expected))

    # The run exports as it is: the contract carries the run's labels.
    res = export_model(ExportConfig(out, out_dir=tmp_path / "export", variants=("float32",), force=True),
                       progress=False)
    contract = read_contract(res.files["float32"])
    assert contract.labels == expected

    # ... and benches on its own data with its own classes (train -> export -> bench end to end).
    from wbc_edge.bench import BenchConfig, run_bench

    bench = run_bench(BenchConfig([res.files["float32"]], data=root, split_manifest=out / "split.csv",
                                  split="test", runs=2, warmup=0, batch_throughput_images=0, ttfp=False))
    assert bench["data"]["n_images"] > 0 and set(bench["data"]["class_counts"]) == set(expected)
    assert bench["variants"][0]["labels"] == expected


def test_a_resumed_run_keeps_its_recorded_labels_and_old_runs_mean_the_five(tmp_path, sample_root):
    """config.json of a run started before labels were stored (no `labels` key, 5-class head) is still
    accepted on resume; a stored class list that the data no longer matches is refused."""
    from wbc_edge.data import split_dataset
    from wbc_edge.core.errors import DatasetError
    from wbc_edge.core.labels import WBC5
    from wbc_edge.train import prepare_run

    split = tmp_path / "split.csv"
    split_dataset(sample_root, split, seed=1, progress=False)
    out = tmp_path / "run"
    cfg = tiny_train_config(sample_root, out, split)
    prepared = prepare_run(cfg, progress=False)
    assert prepared.labels.to_list() == list(WBC5) and prepared.config.model.num_classes == 5

    # What the previous version wrote: no labels key.
    stored = json.loads((out / "config.json").read_text())
    del stored["labels"]
    (out / "config.json").write_text(json.dumps(stored))
    again = prepare_run(cfg, progress=False)
    assert again.resumed and again.labels.to_list() == list(WBC5)

    # A run recorded with other classes cannot silently continue on this data.
    stored["labels"] = ["basophil", "eosinophil", "lymphocyte"]
    (out / "config.json").write_text(json.dumps(stored))
    with pytest.raises(DatasetError, match="split's classes .* differ from the labels .*config.json records"):
        prepare_run(cfg, progress=False)
