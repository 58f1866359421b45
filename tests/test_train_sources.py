"""Training on several labelled labs (issue 31): each lab split on its own (its declared groups kept
together), one root of links, per-lab weights that keep a small lab alive, per-lab metrics in run.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wbc_edge.data import Source, SplitManifest, link_sources, parse_sources, source_of, split_sources
from wbc_edge.core.errors import DatasetError
from wbc_edge.train.inputs import sample_weights


def _second_lab(sample_root, dest, classes=None, drop=()):
    """Another 'lab': the samples with inverted colours (so no file is a copy of the first lab's), its crops
    declared in groups of two (a manifest.csv `group` column, as LISC's)."""
    rows = []
    for p in sorted(sample_root.glob("*/*.jpg")):
        cls = p.parent.name
        if cls in drop:
            continue
        cls_out = (classes or {}).get(cls, cls)
        (dest / cls_out).mkdir(parents=True, exist_ok=True)
        with Image.open(p) as im:
            Image.fromarray(255 - np.asarray(im.convert("RGB"))).save(dest / cls_out / f"{p.stem}.png")
        rows.append(f"{cls_out}/{p.stem}.png,{cls_out}")
    rows = [f"{r},cell-{r.split(',')[1]}-{i // 2}" for i, r in enumerate(rows)]
    (dest / "manifest.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return dest


def test_each_lab_is_split_on_its_own_and_paths_name_the_lab(sample_root, tmp_path):
    lab = _second_lab(sample_root, tmp_path / "lab")
    res = split_sources(parse_sources([f"pbc={sample_root}", f"lab={lab}"]), seed=1, progress=False)
    rows = res.manifest.rows
    assert {source_of(r.path) for r in rows} == {"pbc", "lab"} and len(rows) == 80
    for name in ("pbc", "lab"):
        mine = [r for r in rows if source_of(r.path) == name]
        assert {r.split for r in mine} == {"train", "val", "test"}  # every lab has its own val and test
        assert all(r.group.startswith(name + ":") for r in mine)
    # the declared groups (pairs of crops) never straddle splits
    by_group: dict[str, set] = {}
    for r in rows:
        by_group.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert sum(1 for g in by_group if g.startswith("lab:")) == 20
    assert [r["name"] for r in res.report] == ["pbc", "lab"] and res.report[1]["groups"] == 20


def test_a_lab_may_lack_a_class_but_not_add_one(sample_root, tmp_path):
    lacking = _second_lab(sample_root, tmp_path / "lacking", drop=("basophil",))
    res = split_sources(parse_sources([f"pbc={sample_root}", f"lab={lacking}"]), progress=False)
    assert res.report[1]["missing_classes"] == ["basophil"] and list(res.labels) == list(res.manifest.label_set)
    extra = _second_lab(sample_root, tmp_path / "extra", classes={"basophil": "blast"})
    with pytest.raises(DatasetError, match="source lab .* has class\\(es\\) blast that source pbc"):
        split_sources(parse_sources([f"pbc={sample_root}", f"lab={extra}"]), progress=False)
    with pytest.raises(DatasetError, match="two sources are named"):
        parse_sources([f"a={sample_root}", f"a={extra}"])
    with pytest.raises(DatasetError, match="not a directory"):
        parse_sources([f"a={tmp_path / 'nope'}"])


def test_links_make_one_root_and_a_real_folder_is_never_replaced(sample_root, tmp_path):
    root = link_sources(tmp_path / "run", [Source("pbc", str(sample_root))])
    assert (root / "pbc" / "basophil").is_dir() and (root / "pbc").is_symlink()
    link_sources(tmp_path / "run", [Source("pbc", str(sample_root))])  # idempotent
    (root / "real").mkdir()
    with pytest.raises(DatasetError, match="not a link made by wbc-edge"):
        link_sources(tmp_path / "run", [Source("real", str(sample_root))])


def test_domain_balanced_weights_make_every_lab_weigh_the_same():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.integers(0, 5, 1000), rng.integers(0, 4, 50)])  # the small lab lacks class 4
    src = np.repeat([0, 1], [1000, 50])
    w = sample_weights(y, 5, src)
    assert w.mean() == pytest.approx(1.0)
    assert w[src == 0].sum() == pytest.approx(w[src == 1].sum())          # each lab half the loss
    for s in (0, 1):
        per_class = [w[(src == s) & (y == c)].sum() for c in np.unique(y[src == s])]
        assert np.allclose(per_class, per_class[0])                          # and classes balanced within
    assert isinstance(sample_weights(y, 5, None), dict)                      # one lab: class weights as before
    plain = sample_weights(y, 5, src, domains=False)
    assert isinstance(plain, dict)


def test_tiny_two_lab_run_records_each_labs_metrics(sample_root, tmp_path):
    """End to end on the tiny model: `train pbc=... lab=...` writes a run whose split names each file's lab,
    whose data root is the links folder, and whose run.json scores each lab on its own val and test cells."""
    from click.testing import CliRunner

    from wbc_edge.cli import main

    lab = _second_lab(sample_root, tmp_path / "lab")
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", f"pbc={sample_root}", f"lab={lab}", "--out", str(out), "--weights",
                                    "none", "--alpha", "0.35", "--input-size", "96", "--head-epochs", "1",
                                    "--finetune-epochs", "1", "--aug-views", "1", "--batch-size", "8", "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["data_root"] == str(out / "sources") and len(info["config"]["sources"]) == 2
    assert set(info["sources"]) == {"pbc", "lab"}
    for name in ("pbc", "lab"):
        for split in ("val", "test"):
            rec = info["sources"][name][split]
            assert rec["n"] > 0 and 0.0 <= rec["balanced_accuracy"] <= 1.0
    split = SplitManifest.load(out / "split.csv")
    assert {source_of(r.path) for r in split.rows} == {"pbc", "lab"}
    assert sum(info["sources"][n]["test"]["n"] for n in ("pbc", "lab")) == info["split_counts"]["test"]


def test_config_refuses_what_several_labs_cannot_do(sample_root, tmp_path):
    from wbc_edge.core.errors import WbcEdgeError
    from wbc_edge.train import TrainConfig

    two = [{"name": "a", "root": str(sample_root)}, {"name": "b", "root": str(sample_root)}]
    with pytest.raises(WbcEdgeError, match="drop --split-manifest"):
        TrainConfig(data_root="", out_dir=str(tmp_path), sources=two, split_manifest="x.csv",
                    model=_tiny()).validate()
    with pytest.raises(WbcEdgeError, match="need --mode cached"):
        TrainConfig(data_root="", out_dir=str(tmp_path), sources=two, mode="full", model=_tiny()).validate()
    TrainConfig(data_root="", out_dir=str(tmp_path), sources=two, mode="full", domain_balance=False,
                model=_tiny()).validate()
    with pytest.raises(WbcEdgeError, match="two or more labs"):
        TrainConfig(data_root="", out_dir=str(tmp_path), sources=two[:1], model=_tiny()).validate()


def _tiny():
    from wbc_edge.model.network import ModelConfig

    return ModelConfig(alpha=0.35, input_size=96, weights="none")


def test_lab_batches_hold_an_equal_share_of_each_lab_and_weights_balance_classes_within_labs():
    """`--lab-batches`: as many batches as plain batching, each with half its images from each lab (the small
    lab's recur), seeded; the loss weights then balance
    classes inside each lab only (mean 1 per lab), and a run without two labs refuses the flag."""
    import math

    from wbc_edge.core.errors import WbcEdgeError
    from wbc_edge.train import TrainConfig
    from wbc_edge.train.cached import lab_batch_indices
    from wbc_edge.train.inputs import within_lab_weights

    dom = np.array([0] * 90 + [1] * 10)
    batches = lab_batch_indices(dom, 8, np.random.default_rng(0))
    assert len(batches) == math.ceil(100 / 8)
    assert all(len(b) == 8 and (dom[b] == 1).sum() == 4 for b in batches)
    again = lab_batch_indices(dom, 8, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    seen = np.concatenate(batches)
    assert set(seen[dom[seen] == 1].tolist()) == set(range(90, 100))  # every small-lab image recurs
    y = np.array([0] * 80 + [1] * 10 + [0] * 5 + [1] * 5)
    w = within_lab_weights(y, dom)
    assert np.isclose(w[dom == 0].mean(), 1) and np.isclose(w[dom == 1].mean(), 1)
    assert np.isclose(w[(dom == 0) & (y == 0)].sum(), w[(dom == 0) & (y == 1)].sum())
    assert np.allclose(within_lab_weights(y, dom, classes=False), 1)
    with pytest.raises(WbcEdgeError, match="--lab-batches needs"):
        TrainConfig(data_root="d", out_dir="o", lab_batches=True).validate()
