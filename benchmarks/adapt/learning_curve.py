"""Few-shot adaptation learning curve: the two Zheng 2018 sets as "the new lab".

    nice -n 19 .venv/bin/python benchmarks/adapt/learning_curve.py \
        --model runs/robust/robust_s3/model.keras --shared ../shared --out benchmarks/adapt/results_s3

For each set (zheng2018_tecom, zheng2018_cellavision), k in --ks labelled images per class (fewer where a class
has fewer: `wbc_edge.adapt.make_adapt_split` with per_class=k always holds out >= 1 image per class) and each
seed in --seeds, the rest of the set is the test set.  `--summary-only` re-derives the summary from
OUT/runs.jsonl without running anything (benchmarks/adapt/curve_report.py).  Arms:
  pbc       the PBC-trained model adapted with the `wbc-edge adapt` recipe (AdaptConfig defaults), PBC replay
  imagenet  the same recipe and replay started from ImageNet weights with a new (random) head - which is
            first fitted on pooled features (head_epochs=20), and whose replay images are trained towards their
            labels (with no source model there is nothing to distill)
  pbc_head  (optional, --arms) the PBC model with the ImageNet arm's head phase (head_epochs=20) first - the
            same two phases as the ImageNet arm, so the two differ only in the init (and distilled replay)
  pbc_noreplay (optional, --arms) the PBC model adapted without replay - what replay buys against forgetting
  pbc_interp (optional, --arms) the default + `--keep-source`: weights interpolated back towards the PBC model
  pbc_st    (optional, --arms; needs --val-share) the default + self-training (selftrain.py, a probe): the
            val half of the held-out images, labels hidden, is the lab's unlabelled pool; the adapted model (the
            pbc arm's, reused when it ran just before) pseudo-labels it and adapting re-runs from the PBC model
            with those added.  Scored on the test half only, like every arm with --val-share
  pbc_stt   (optional, --arms; needs --val-share) pbc_st, transductive: the pool is all held-out images (val and
            test halves, labels hidden) - a lab that adapts on the very images it then classifies; test half scored
  imagenet_st (optional, --arms; needs --val-share) the same self-training from the ImageNet control (teacher:
            the imagenet arm's model) - the fair control for pbc_st
  unadapted the PBC model as is, on the same held-out images
Reported: balanced accuracy over the held-out images (Tecom also over EO/LY/MO/NE only; its one basophil is
always held out), mean +- sd over seeds; PBC test accuracy (leak-free split, 2,057 images) after adaptation.

Variants (`--variant NAME:FIELD=VALUE`) override AdaptConfig fields; `adapt_from` (the cut) and `aug_preset` (the
views' augmentation) get their own cached activations (files prefixed cut<N>_ / aug_<preset>_); `aug_views` above
the default caches the target images with that many views (files suffixed _v<N>), and each arm uses its first ones.

Speed: the bottom of the network (below block_13) is frozen.  In cached-mode PBC training cut at block 13 it
is the ImageNet bottom itself - so the bottom activations of every target image (clean + the recipe's
augmented views) and of the replay images are computed once and shared by both inits when their bottoms are
equal (checked); a model trained from a lower cut (`--finetune-from 7`) has its own bottom, and the ImageNet
arm then gets its own activations (cached as imagenet_*).  PBC test and the PBC val check are only scored
with PBC-init arms.  Pooled features for the head phase are computed once per init model.  Only the k-subset
changes between seeds and k.  Caches go to --cache (outside the project: they are derived from the Zheng
sets, which are never shipped).  Per-run results are appended to OUT/runs.jsonl, so an interrupted run resumes.

The recipe is AdaptConfig's defaults.  They were chosen without looking at held-out target images: on dev
seeds 100/101 (not reported) only the fit on the k labelled images and PBC *val* accuracy were compared
(benchmarks/adapt/README.md says which settings and why).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from curve_report import groups, load_records, ms, pct, to_markdown, write_summary  # noqa: E402  (this folder)
from selftrain import THRESHOLD, pseudo_label, with_pseudo  # noqa: E402  (this folder)
from wbc_edge.core.labels import WBC5, WBC5_LABELS  # noqa: E402

#: The Zheng sets and the PBC model have the five WBC classes; indices follow the model's output order.
CLASSES = WBC5
CLASS_INDEX = {c: i for i, c in enumerate(WBC5)}

SETS = ("zheng2018_tecom", "zheng2018_cellavision")
BIG4 = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
WEIGHTS = "weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
PBC_SPLIT = "benchmarks/training/pbc224_cached/split.csv"
AUG_SEED = 0  # augmented views of the target images: default_rng([AUG_SEED, view, image index in the set])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def cached(path: Path, fn):
    """np arrays in an .npz, computed once."""
    if path.exists():
        with np.load(path) as z:
            return [z[f"a{i}"] for i in range(len(z.files))]
    arrs = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"a{i}": a for i, a in enumerate(arrs)})
    os.replace(tmp, path)
    return arrs


def recall_mean(y, pred, classes) -> float | None:
    rs = [float(np.mean(pred[y == CLASS_INDEX[c]] == CLASS_INDEX[c])) for c in classes if np.any(y == CLASS_INDEX[c])]
    return float(np.mean(rs)) if rs else None


def score(y, probs) -> dict:
    pred = probs.argmax(1)
    present = [c for c in CLASSES if np.any(y == CLASS_INDEX[c])]
    return {"n": int(len(y)), "accuracy": float(np.mean(pred == y)),
            "balanced_accuracy": recall_mean(y, pred, present),
            "balanced_accuracy_big4": recall_mean(y, pred, BIG4),
            "recall": {c: recall_mean(y, pred, [c]) for c in present}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/robust/robust_s42/model.keras")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default="benchmarks/adapt/results")
    ap.add_argument("--cache", default="/tmp/wbc_adapt_cache")
    ap.add_argument("--no-scale-guard", action="store_true",
                    help="feed the images without the model's scale guard (the curves recorded before 2026-12-03)")
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--arms", nargs="+", default=["pbc", "imagenet"],
                    help="of pbc, imagenet, pbc_head, pbc_noreplay, pbc_interp and the --variant names")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=VALUE[,FIELD=VALUE...]",
                    help="recipe development: an extra arm, the default recipe from the PBC model with AdaptConfig "
                         "fields overridden (e.g. lr3e4:learning_rate=3e-4); name it in --arms")
    ap.add_argument("--val-share", type=float, default=0.0,
                    help="recipe development: this share of each seed's held-out images is scored as 'val' (what "
                         "a lab has to choose with: `wbc-edge adapt` splits its held-out images the same way) and "
                         "only the rest as the test set ('target'); 0 (the reported curve): all held-out images "
                         "are the test set.  Use a separate --out: the records are not comparable")
    ap.add_argument("--pbc-test-arms", nargs="+", default=["pbc", "pbc_head", "pbc_noreplay", "pbc_interp"],
                    help="arms whose PBC test accuracy is measured after each adaptation")
    ap.add_argument("--summary-only", action="store_true",
                    help="no runs: re-derive learning_curve.{md,json,png} from OUT/runs.jsonl and the meta of "
                         "OUT/learning_curve.json (no TensorFlow)")
    args = ap.parse_args()

    os.chdir(REPO)
    out = Path(args.out)
    variants = parse_variants(args.variant)
    known = {"pbc", "imagenet", "pbc_head", "pbc_noreplay", "pbc_interp", *ST_BASE, *variants}
    if unknown := [a for a in args.arms if a not in known]:
        ap.error(f"unknown arm(s) {unknown}: not a built-in arm and not named by --variant")
    if not 0.0 <= args.val_share < 1.0:
        ap.error("--val-share must be in [0, 1)")
    if set(ST_BASE) & set(args.arms) and args.val_share <= 0:
        ap.error(f"arms {', '.join(ST_BASE)} need --val-share > 0: their unlabelled pool is (part of) the "
                 "held-out images")
    if args.summary_only:
        meta = json.loads((out / "learning_curve.json").read_text())["meta"]
        records = list(load_records(out / "runs.jsonl", meta["model_sha256"]).values())
        print(to_markdown(write_summary(records, covering(meta, records), out), meta))
        return
    from wbc_edge.adapt import (ADAPT_FROM, ActSet, AdaptConfig, SplitNet, bottom_activations, choose_alpha, fit_top,
                                make_adapt_split,
                                pooled_features, predict_top, replay_pool, replay_soft_targets, scan_local)
    from wbc_edge.data.augment import preset
    from wbc_edge.data import SplitManifest
    from wbc_edge.core.progress import Progress
    from wbc_edge.model.network import ModelConfig, build_model, load_model
    from wbc_edge.core.tfcompat import import_tf, versions

    shared = Path(args.shared)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    cfg = AdaptConfig(source=args.model, data_root="", out_dir="")  # the recipe: defaults, as `wbc-edge adapt`
    model_sha = sha256(Path(args.model))
    cache = cache / model_sha[:12]
    # The source run's scale guard, applied to every image as `wbc-edge adapt` applies it (the pixels the runtime
    # feeds); its activations are cached apart from the unguarded ones of the first curves.
    from wbc_edge.data.run_files import load_scale_guard

    guard = None if args.no_scale_guard else load_scale_guard(Path(args.model).parent)
    t_start = time.time()
    tf, keras = import_tf()

    # The recipe per arm.  The ImageNet start has a random head: it is first fitted on pooled features (20
    # epochs), and its replay images are trained towards their labels (there is no source model to distill).
    # Interpolation (WiSE-FT back towards the init, `--keep-source`) only in its own arm: from ImageNet it
    # would mix towards a random head, and the other arms isolate one ingredient each.
    arm_cfg = {"pbc": cfg, "pbc_noreplay": dataclasses.replace(cfg, replay=False),
               "pbc_interp": dataclasses.replace(cfg, interpolate=True),
               "pbc_head": dataclasses.replace(cfg, head_epochs=20),
               "imagenet": dataclasses.replace(cfg, head_epochs=20, replay_targets="labels"),
               # aug_preset names the views' augmentation, so it brings its AugmentConfig (cached per preset)
               **{name: dataclasses.replace(cfg, **over, **({"augment": preset(over["aug_preset"])}
                                                             if "aug_preset" in over else {}))
                  for name, over in variants.items()}}

    # The two init models, each cut where its arms cut it (a variant may set adapt_from).
    pbc_model = load_model(args.model)
    keras.utils.set_random_seed(1234)  # the new head's random init
    imagenet_model = build_model(ModelConfig(weights=str(shared / WEIGHTS)))
    arm_cfg.update({st: arm_cfg[base] for st, base in ST_BASE.items()})
    init_of = {arm: "imagenet" if ST_BASE.get(arm, arm) == "imagenet" else "pbc" for arm in arm_cfg}
    # Every (init, cut, augmentation preset) the requested arms need; the default always (the un-adapted
    # scores use it).  Activations are cached per triple; the networks per (init, cut).
    def key_of(arm: str) -> tuple[str, int, str]:
        return init_of[arm], arm_cfg[arm].adapt_from, arm_cfg[arm].aug_preset

    triples = list(dict.fromkeys([("pbc", cfg.adapt_from, cfg.aug_preset)] + [key_of(a) for a in args.arms]))
    # Target images are cached with as many views as the most-viewed arm needs; an arm uses the first
    # 1 + aug_views of them (view v of image i is drawn from default_rng([AUG_SEED, v, i]), so the first six of a
    # 12-view cache are the 6-view cache's views).  Caches keep their names where the count is the default's.
    n_views = max([cfg.aug_views] + [arm_cfg[a].aug_views for a in args.arms])
    vsuf = "" if n_views == cfg.aug_views else f"_v{n_views}"
    pairs = list(dict.fromkeys((init, cut) for init, cut, _ in triples))
    models = {"pbc": pbc_model, "imagenet": imagenet_model}
    nets: dict = {}

    def net_of(init: str, cut: int):
        """The (init, cut) view of the model, built once (a SplitNet is three Keras models)."""
        if (init, cut) not in nets:
            nets[(init, cut)] = SplitNet.of(models[init], cut)
        return nets[(init, cut)]

    for init, cut in pairs:
        net_of(init, cut)
    pbc = nets[("pbc", cfg.adapt_from)]
    init_weights = {"pbc": pbc_model.get_weights(), "imagenet": imagenet_model.get_weights()}

    def pre(init: str, cut: int, aug: str = cfg.aug_preset) -> str:
        """Cache-name prefix of the bottom that computes (init, cut)'s activations (the PBC model's where the
        two bottoms are equal, as they are below block 13 for a model trained in cached mode from block 13),
        with the augmentation preset of the views where it is not `robust` (the first caches' preset)."""
        cut_pre = ("" if cut == ADAPT_FROM else f"cut{cut}_") + ("" if aug == "robust" else f"aug_{aug}_")
        cut_pre = (f"guard{guard.threshold:g}_" if guard else "") + cut_pre
        if init == "pbc" or same_bottom[cut]:
            return cut_pre
        return "imagenet_" + cut_pre

    same_bottom = {}
    for init, cut in pairs:
        if init == "imagenet" and cut not in same_bottom:
            a, b = net_of("pbc", cut).bottom, net_of(init, cut).bottom
            same_bottom[cut] = all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
    log(f"model {args.model} sha256 {model_sha[:16]}...; cuts {sorted({c for _, c in pairs})}; "
        f"bottoms identical: {same_bottom}")

    def bottom_net(init: str, cut: int):
        return net_of(init, cut) if init == "imagenet" and not same_bottom[cut] else net_of("pbc", cut)

    timing: dict = {}

    # Bottom activations, once: target sets (clean + aug views), replay pool (clean + replay views), PBC test.
    t = time.time()
    targets = {}
    for name in args.sets:
        root = shared / "data" / name
        scan = scan_local(root, WBC5_LABELS)
        groups = scan.duplicates()
        paths = [str(Path(scan.root) / r.path) for r in scan.records]
        y = np.array([CLASS_INDEX[r.label] for r in scan.records], dtype=np.int64)
        acts = {}
        for init, cut, aug in triples:
            views = cached(cache / f"{pre(init, cut, aug)}{name}_v{n_views}.npz",
                           lambda net=bottom_net(init, cut), paths=paths, name=name, aug=aug:
                           bottom_activations(net, paths, n_views, preset(aug), AUG_SEED, progress=Progress(), guard=guard,
                                              label=name))
            acts[(init, cut, aug)] = ActSet(views, y)
        targets[name] = {"scan": scan, "groups": groups, "acts": acts[triples[0]], "acts_by": acts}
        log(f"{name}: {len(y)} images, per class {dict(zip(CLASSES, np.bincount(y, minlength=5).tolist(), strict=True))}")
    pbc_root = shared / "data" / "pbc"
    # Replay pools: the default size, and any other size a variant asks for (`replay_images`); cache names of the
    # default size are those of the first curves.
    def rkey(arm: str) -> tuple[str, int, str, int]:
        return (*key_of(arm), arm_cfg[arm].replay_images)

    rtriples = list(dict.fromkeys([(*triples[0], cfg.replay_images)] + [rkey(a) for a in args.arms]))
    pools = {n: replay_pool(str(pbc_root), PBC_SPLIT, n, cfg.seed, WBC5_LABELS) for n in {t[3] for t in rtriples}}
    rpaths, _, where = pools[cfg.replay_images]
    replays = {(init, cut, aug, n): ActSet(cached(
        cache / f"{pre(init, cut, aug)}replay_{n}_v{cfg.replay_views}.npz",
        lambda net=bottom_net(init, cut), aug=aug, n=n: bottom_activations(
            net, pools[n][0], cfg.replay_views, preset(aug), cfg.seed + 1, progress=Progress(), guard=guard, label="replay")),
        pools[n][1]) for init, cut, aug, n in rtriples}
    test_rows = [r for r in SplitManifest.load(PBC_SPLIT).rows if r.split == "test"]
    tpaths = [pbc_root.joinpath(*r.path.split("/")) for r in test_rows]
    ty = [CLASS_INDEX[r.label] for r in test_rows]
    ty = np.asarray(ty, dtype=np.int64)
    # The source val images `--keep-source` checks (the sample `wbc-edge adapt` draws).
    cpaths, cy, _ = replay_pool(str(pbc_root), PBC_SPLIT, cfg.source_check_images, cfg.seed + 2, WBC5_LABELS,
                                split="val")
    pbc_cuts = sorted({cut for init, cut in pairs if init == "pbc"})
    pbc_test, check = {}, {}
    for cut in pbc_cuts:
        net = net_of("pbc", cut)
        pbc_test[cut] = cached(cache / f"{pre('pbc', cut)}pbc_test_f32.npz", lambda net=net: [bottom_activations(
            net, [str(p) for p in tpaths], 0, cfg.augment, 0, progress=Progress(), guard=guard, label="PBC test")[0]])[0]
        check[cut] = cached(cache / f"{pre('pbc', cut)}pbc_check_{cfg.source_check_images}.npz",
                            lambda net=net: [bottom_activations(net, cpaths, 0, cfg.augment, 0, progress=Progress(), guard=guard,
                                                                label="PBC val check")[0]])[0]
    timing["activations_s"] = round(time.time() - t, 1)

    # Pooled features per (init, cut) (the head phase's input), once.
    t = time.time()
    feats = {}
    for init, cut, aug in triples:
        net = nets[(init, cut)]
        p = pre("pbc", cut, aug)  # the features are the init's, whichever bottom fed them
        feats[(init, cut, aug)] = {name: cached(cache / f"{p}feats_{init}_{name}{vsuf}.npz",
                                                lambda net=net, a=targets[name]["acts_by"][(init, cut, aug)]: [
                                                    pooled_features(net, a)])[0] for name in args.sets}
        for i2, c2, a2, n in rtriples:
            if (i2, c2, a2) == (init, cut, aug):
                rn = "" if n == cfg.replay_images else f"_{n}"
                feats[(init, cut, aug)][f"replay{rn}"] = cached(
                    cache / f"{p}feats_{init}_replay{rn}.npz",
                    lambda net=net, a=replays[(init, cut, aug, n)]: [pooled_features(net, a)])[0]
    timing["features_s"] = round(time.time() - t, 1)

    pbc_test_arms = set(args.pbc_test_arms) | set(variants) | {"pbc_st"}
    if "imagenet" in pbc_test_arms and not all(same_bottom.values()):
        raise SystemExit("--pbc-test-arms imagenet: PBC test is cached through the PBC model's bottom, which is "
                         "not ImageNet's here")
    pbc_model.set_weights(init_weights["pbc"])
    soft_pbc = {(cut, aug, n): cached(
        cache / f"{pre('pbc', cut, aug)}soft_pbc_replay{'' if n == cfg.replay_images else f'_{n}'}.npz",
        lambda cut=cut, aug=aug, n=n: [replay_soft_targets(nets[("pbc", cut)], replays[("pbc", cut, aug, n)])])[0]
        for init, cut, aug, n in rtriples if init == "pbc"}

    # Un-adapted PBC model on every target image, and on PBC test.
    pbc.model.set_weights(init_weights["pbc"])
    base_probs = {name: predict_top(pbc, targets[name]["acts"].views[0]) for name in args.sets}
    base_pbc_test = score(ty, predict_top(pbc, pbc_test[cfg.adapt_from]))
    log(f"un-adapted PBC test accuracy {base_pbc_test['accuracy']:.4f}")

    runs_file = out / "runs.jsonl"
    done = load_records(runs_file, model_sha) if runs_file.exists() else {}
    for name in args.sets:
        tg = targets[name]
        for k in args.ks:
            for seed in args.seeds:
                # val_share only carves 'val' out of the held-out images: the adapt subset is the same either way.
                split = make_adapt_split(tg["scan"].records, tg["groups"], per_class=k, seed=seed,
                                         val_share=args.val_share)
                part = np.array([r.split for r in split.rows])  # rows sorted by path == scan order
                assert [r.path for r in split.rows] == [r.path for r in tg["scan"].records]
                tr, va, te = (np.flatnonzero(part == s) for s in ("train", "val", "test"))
                y_te, y_va = tg["acts"].labels[te], tg["acts"].labels[va]
                key0 = (name, k, seed, "unadapted")
                if key0 not in done:
                    rec = {"set": name, "k": k, "seed": seed, "arm": "unadapted", "model_sha256": model_sha,
                           "n_adapt": int(len(tr)), "adapt_per_class": np.bincount(tg["acts"].labels[tr], minlength=5).tolist(),
                           "test_per_class": np.bincount(y_te, minlength=5).tolist(),
                           "target": score(y_te, base_probs[name][te]), "pbc_test": base_pbc_test}
                    if len(va):
                        rec["val"] = score(y_va, base_probs[name][va])
                    done[key0] = rec
                    with open(runs_file, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                teachers = {}  # base arm -> its adapted weights of this (set, k, seed): the <base>_st arm's teacher
                for arm in args.arms:
                    if (name, k, seed, arm) in done:
                        continue
                    init, cut, aug = key = key_of(arm)
                    net = nets[(init, cut)]
                    net.model.set_weights(init_weights[init])
                    acts = ActSet(tg["acts_by"][key].views, tg["acts_by"][key].labels,
                                  feats[key][name]).head(1 + arm_cfg[arm].aug_views)
                    local = acts.subset(tr)
                    n_rep = arm_cfg[arm].replay_images
                    rn = "" if n_rep == cfg.replay_images else f"_{n_rep}"
                    rep = ActSet(replays[(*key, n_rep)].views, pools[n_rep][1], feats[key][f"replay{rn}"]) \
                        if arm_cfg[arm].replay else None
                    if rep is not None and init == "pbc" and arm_cfg[arm].replay_targets == "distill":
                        rep.soft = soft_pbc[(cut, aug, n_rep)]  # distillation targets: the PBC model's probabilities
                    t = time.time()
                    pseudo = None
                    if arm in ST_BASE:
                        if ST_BASE[arm] in teachers:
                            net.model.set_weights(teachers[ST_BASE[arm]])
                        else:
                            fit_top(net, local, rep, arm_cfg[ST_BASE[arm]], seed=seed)
                        pool_idx = np.concatenate([va, te]) if arm == "pbc_stt" else va  # labels hidden
                        pool = [v[pool_idx] for v in acts.views]
                        pl = pseudo_label(net, pool, THRESHOLD, CLASSES)
                        pseudo = {**pl.to_dict(), "correct": int(np.sum(pl.labels == acts.labels[pool_idx][pl.index]))}
                        net.model.set_weights(init_weights[init])
                        local = with_pseudo(local, pool, pl)
                    fit = fit_top(net, local, rep, arm_cfg[arm], seed=seed)
                    fit_s = time.time() - t
                    if arm in ST_BASE.values():
                        teachers[arm] = net.model.get_weights()
                    interp = None
                    if arm_cfg[arm].interpolate:
                        c = arm_cfg[arm]
                        interp = choose_alpha(net, init_weights[init], net.model.get_weights(), check[cut], cy, c.alphas,
                                              c.max_source_drop).to_dict()
                    rec = {"set": name, "k": k, "seed": seed, "arm": arm, "model_sha256": model_sha,
                           "n_adapt": int(len(tr)), "adapt_per_class": np.bincount(acts.labels[tr], minlength=5).tolist(),
                           "test_per_class": np.bincount(y_te, minlength=5).tolist(),
                           "steps": fit["steps"], "fit_s": round(fit_s, 1),
                           "target": score(y_te, predict_top(net, acts.views[0][te]))}
                    if pseudo is not None:  # its val half was trained on (pseudo labels): no val score
                        rec["pseudo"] = pseudo
                        rec["val_share"] = args.val_share
                    elif len(va):
                        rec["val"] = score(y_va, predict_top(net, acts.views[0][va]))
                        rec["val_share"] = args.val_share
                    if interp is not None:
                        rec["interpolation"] = interp
                    if arm in pbc_test_arms:
                        rec["pbc_test"] = score(ty, predict_top(net, pbc_test[cut]))
                        # Forgetting as a recipe may be chosen on it: the 500 PBC *val* images --keep-source checks.
                        rec["pbc_val"] = score(np.asarray(cy, dtype=np.int64), predict_top(net, check[cut]))
                    done[(name, k, seed, arm)] = rec
                    with open(runs_file, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    pt = f", PBC test {rec['pbc_test']['accuracy']:.4f}" if "pbc_test" in rec else ""
                    log(f"{name} k={k} seed={seed} {arm}: bal. acc {rec['target']['balanced_accuracy']:.4f} "
                        f"(EO/LY/MO/NE {rec['target']['balanced_accuracy_big4']:.4f}){pt} [{fit_s:.0f} s]")
    timing["total_s"] = round(time.time() - t_start, 1)
    meta = {"model": args.model, "model_sha256": model_sha,
            "recipe": {arm: {k: v for k, v in c.to_dict().items() if k not in ("source", "data_root", "out_dir")}
                       for arm, c in arm_cfg.items()},
            "aug_seed": AUG_SEED, "imagenet_head_seed": 1234, "scale_guard": guard.to_dict() if guard else None, "pbc_split": PBC_SPLIT,
            "pbc_split_sha256": sha256(Path(PBC_SPLIT)), "replay": {"from": where, "images": len(rpaths)},
            "versions": versions(), "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                            "load_avg_at_end": os.getloadavg()},
            "timing_this_invocation": timing, "ks": args.ks, "seeds": args.seeds, "sets": args.sets}
    if args.val_share > 0 or variants:
        meta["val_share"], meta["variants"] = args.val_share, variants
        print(write_dev_summary(list(done.values()), {**covering(meta, list(done.values())), "seeds": args.seeds}, out))
    else:
        print(to_markdown(write_summary(list(done.values()), covering(meta, list(done.values())), out), meta))


def covering(meta: dict, records: list[dict]) -> dict:
    """meta with sets / ks / seeds widened to every one the records hold, so a summary covers all of OUT's runs,
    not only the last invocation's (e.g. one invocation per set with its own --ks)."""
    sets = list(meta["sets"]) + sorted({r["set"] for r in records} - set(meta["sets"]))
    return {**meta, "sets": sets, "ks": sorted(set(meta["ks"]) | {r["k"] for r in records}),
            "seeds": sorted(set(meta["seeds"]) | {r["seed"] for r in records})}


#: Self-training arms and the arm whose adapted model is their teacher (same init, same recipe).
ST_BASE = {"pbc_st": "pbc", "pbc_stt": "pbc", "imagenet_st": "imagenet"}

#: Fields a --variant may not change: the cached activations were computed with them (`replay_images` may: each
#: pool size gets its own activations; `aug_views` may: the target images are cached with the largest count asked).
CACHED_FIELDS = ("augment", "replay_views", "seed", "source_check_images")


def parse_variants(specs: list[str]) -> dict[str, dict]:
    """{name: {field: value}} from NAME:FIELD=VALUE[,FIELD=VALUE] (values typed like AdaptConfig's defaults)."""
    from wbc_edge.adapt import AdaptConfig

    base = AdaptConfig(source="", data_root="", out_dir="")
    fields = {f.name for f in dataclasses.fields(AdaptConfig)}
    out: dict[str, dict] = {}
    for spec in specs:
        name, _, body = spec.partition(":")
        if not name or not body or name in out:
            raise SystemExit(f"--variant {spec!r}: expected a new NAME:FIELD=VALUE[,FIELD=VALUE]")
        over = {}
        for item in body.split(","):
            key, _, raw = item.partition("=")
            if key not in fields or key in CACHED_FIELDS:
                raise SystemExit(f"--variant {spec!r}: {key!r} is not an AdaptConfig field a variant may change")
            default = getattr(base, key)
            if isinstance(default, bool):
                over[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)):
                over[key] = type(default)(float(raw)) if isinstance(default, int) else float(raw)
            else:
                over[key] = raw
        out[name] = over
    return out


def write_dev_summary(records: list[dict], meta: dict, out: Path) -> str:
    """Recipe development: per set / k / arm, mean +- sd of val and test balanced accuracy and PBC test."""
    def m(vals) -> str:
        return pct(ms(vals))

    key = {"zheng2018_tecom": "balanced_accuracy_big4"}
    lines = [f"val share {meta['val_share']}; seeds {meta['seeds']}; variants {json.dumps(meta['variants'])}", "",
             "| set | k | arm | val bal. acc % | test bal. acc % | PBC val acc % (500) | PBC test acc % | n val / test |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for name, k, arm, rs in groups(records, meta, list(dict.fromkeys(r["arm"] for r in records))):
        kk = key.get(name, "balanced_accuracy")
        lines.append(f"| {name} | {k} | {arm} | {m([r.get('val', {}).get(kk) for r in rs])} | "
                     f"{m([r['target'][kk] for r in rs])} | "
                     f"{m([r['pbc_val']['accuracy'] for r in rs if 'pbc_val' in r])} | "
                     f"{m([r['pbc_test']['accuracy'] for r in rs if 'pbc_test' in r])} | "
                     f"{rs[0].get('val', {}).get('n', 0)} / {rs[0]['target']['n']} |")
    text = "\n".join(lines) + "\n"
    (out / "dev_summary.md").write_text(text)
    (out / "dev_meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return text


if __name__ == "__main__":
    main()
