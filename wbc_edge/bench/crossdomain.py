"""One cross-domain report: how a model (Keras or any .tflite) does on several labelled image folders.

Why a report of its own: the number that matters to a lab is not PBC test accuracy but how the model holds
up on *their* microscope, and whether the int8 file they deploy still agrees with the float model there.
So for every domain (an ImageFolder root; the first may be restricted to a split of a manifest, e.g. PBC's
leak-free test split) it gives n, accuracy, balanced accuracy, macro-F1 and per-class recall - plus the
balanced accuracy over the classes with enough images to mean something (Tecom has one basophil) - and, for
each .tflite, top-1 agreement with the float reference on that domain.

The classes are the models' own: the reference's labels (a .tflite's contract, or what a .keras model's run
stored), every other model's outputs are mapped to them by name, and each domain folder is read in that
order (`scan_dataset(root, labels=...)`), so a 3- or 8-class model is reported on its own classes.
TensorFlow is imported only when a model is a .keras file; .tflite models run on `wbc_edge.runtime`.
Every image is fed through the one `preprocess`, never augmented, then through the reference's scale guard
(`wbc_edge.core.scale_guard`; off with `scale_guard=False`) - the pixels the runtime feeds - and every model of the
report gets those same pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ModelFileError, WbcEdgeError
from ..core.labels import Labels
from ..core.preprocess import preprocess_batch
from ..core.progress import Progress, resolve
from ..data.scan import skipped_note
from ..core.scale_guard import guard_batch
from ..model.network import model_input_size

FORMAT = "wbc-edge-crossdomain-1"


@dataclass(frozen=True)
class Domain:
    """A labelled ImageFolder; with `split_manifest`, only that manifest's `split` part of it."""

    root: str
    name: str | None = None
    split_manifest: str | None = None
    split: str = "test"

    @property
    def label(self) -> str:
        base = self.name or Path(self.root).resolve().name
        return f"{base} ({self.split})" if self.split_manifest and not self.name else base


@dataclass
class CrossDomainConfig:
    models: list[str]
    domains: list[Domain]
    reference: str | None = None   # default: the .keras among models, else the unquantised (float32) .tflite
    min_class_images: int = 10     # balanced accuracy is also given over classes with at least this many
    min_agreement: float | None = None  # gate (%): every .tflite vs the reference, on every domain
    num_threads: int | None = None
    limit: int | None = None       # at most this many images per domain (stratified, seeded)
    seed: int = 42
    progress: bool = True
    labels: list[str] | None = None  # None: the reference's (else the first model's) labels
    scale_guard: bool = True       # apply the reference's (else the first model's) scale guard, as the runtime does


def _kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    raise WbcEdgeError(f"{path}: not a model file this report can run (expected .keras or .tflite)")


def _reference(cfg: CrossDomainConfig) -> str | None:
    """--reference, else the first .keras among the models, else the first unquantised .tflite (the export
    registry's float graph as trained, by its contract's variant), else None (no agreement column)."""
    if cfg.reference:
        return cfg.reference
    keras_models = [m for m in cfg.models if _kind(m) == "keras"]
    if keras_models:
        return keras_models[0]
    from ..export.variants import is_unquantised
    from ..core.contract import read_contract
    from ..export.variants import VARIANTS, spec_for_file

    for m in cfg.models:
        contract = read_contract(m)
        spec = VARIANTS.get(contract.variant) if contract is not None else spec_for_file(Path(m).name)
        if is_unquantised(spec):
            return m
    return None


class _Runner:
    """Probabilities of one model over uint8 pixels (Keras in-process, .tflite through the runtime), in the
    model's own output order (`labels`)."""

    def __init__(self, path: str, num_threads: int | None):
        self.path, self.kind = path, _kind(path)
        if self.kind == "keras":
            from ..model.network import check_classifier, check_model_file, load_model

            check_model_file(path)  # before TensorFlow's start-up
            from ..calibrate.confidence import feature_model, load_feature_distance
            from ..data.run_files import load_calibration, load_scale_guard
            from ..data.run_files import model_labels
            from ..core.tfcompat import import_tf

            keras = import_tf()[1]
            self.labels = model_labels(path)
            self.model = load_model(path)
            check_classifier(self.model, path, self.labels)
            self.size = model_input_size(self.model)
            cal = load_calibration(Path(path).parent)
            self.temperature = cal.temperature if cal else 1.0
            self.threshold = cal.abstain_threshold if cal else 0.0
            self.guard = load_scale_guard(Path(path).parent)
            self.distance = load_feature_distance(Path(path).parent)  # None: no "far from training" column
            # With a feature distance, one pass gives both the pooled features and the probabilities.
            self.both = None if self.distance is None else keras.Model(
                self.model.input, [feature_model(self.model).output, self.model.output])
            self.last_pixels = self.last_features = None  # the features of the last __call__, for its pixels
        else:
            from ..runtime import Classifier

            self.model = Classifier(path, num_threads=num_threads)
            self.labels = Labels.from_list(self.model.labels)
            self.size = self.model.input_size
            self.temperature, self.threshold = self.model.temperature, self.model.abstain_threshold
            self.guard = self.model.scale_guard
            self.distance = None  # a .tflite has no feature output

    def order(self, labels: Labels) -> np.ndarray:
        """Column indices that put this model's outputs into `labels` order (matched by name)."""
        if self.kind == "tflite":
            return self.model.output_order(labels)
        if sorted(self.labels) != sorted(labels):
            raise ModelFileError(f"{self.path}: model labels ({','.join(self.labels)}) differ from the "
                                 f"report's ({','.join(labels)})")
        return np.array([self.labels.index(x) for x in labels], dtype=np.int64)

    def far_from_training(self, pixels: np.ndarray) -> dict | None:
        """How far these pixels lie from the model's training data (`wbc_edge.calibrate.feature_distance`), or None."""
        if self.distance is None:
            return None
        if self.last_pixels is not pixels:  # the report scores a domain first, so this is the rare path
            self(pixels)
        return self.distance.summary(self.last_features)

    def __call__(self, pixels: np.ndarray, advance=None) -> np.ndarray:
        """Probabilities in chunks of 32 images; `advance(n)` after each (a progress bar over a domain)."""
        advance = advance or (lambda n: None)
        chunks = [pixels[s:s + 32] for s in range(0, len(pixels), 32)]

        def each(fn):
            for c in chunks:
                yield fn(c)
                advance(len(c))

        if self.kind != "keras":
            return np.concatenate(list(each(self.model.predict_pixels)))
        if self.both is None:
            return np.concatenate(list(each(lambda c: self.model(c.astype(np.float32), training=False).numpy())
                                        )).astype(np.float32)
        outs = list(each(lambda c: self.both(c.astype(np.float32), training=False)))
        self.last_pixels, self.last_features = pixels, np.concatenate([f.numpy() for f, _ in outs])
        return np.concatenate([p.numpy() for _, p in outs]).astype(np.float32)


def _calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    from ..core.calibration import apply_temperature

    return apply_temperature(probs, temperature) if temperature != 1.0 else probs


def domain_metrics(y: np.ndarray, probs: np.ndarray, labels: list[str], min_class_images: int,
                   temperature: float = 1.0, threshold: float = 0.0) -> dict:
    """The per-domain figures of the report for one model's (raw) probabilities; with a temperature also
    the calibration error after scaling and what the abstain threshold accepts on this domain."""
    from ..core.calibration import coverage_at, expected_calibration_error, risk_coverage
    from ..metrics import balanced_accuracy_interval, compute_metrics

    cal = _calibrated(probs, temperature)
    rc = risk_coverage(cal, y)
    step = max(1, len(y) // 50)  # the curve, thinned to ~50 points for the JSON
    confidence = {"temperature": temperature, "ece": expected_calibration_error(probs, y),
                  "ece_calibrated": expected_calibration_error(cal, y),
                  "at_threshold": coverage_at(cal, y, threshold),
                  "risk_coverage": {k: v[::step] + v[-1:] for k, v in rc.items()}}
    m = compute_metrics(y, probs.argmax(1), labels, bootstrap=0)
    counts = np.bincount(y, minlength=len(labels))
    big = [i for i in range(len(labels)) if counts[i] >= min_class_images]
    recall = {pc["label"]: pc["recall"] for pc in m.per_class}
    return {
        "n": m.n, "accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy, "macro_f1": m.macro_f1,
        # what this many images per class can tell apart (a class of 1-7 images, as in Tecom / CellaVision, is wide)
        "balanced_accuracy_interval95": list(balanced_accuracy_interval(y, probs.argmax(1))),
        "balanced_accuracy_big_classes": float(np.mean([m.per_class[i]["recall"] for i in big])) if big else None,
        "big_classes": [labels[i] for i in big],
        "per_class_recall": {k: v for k, v in recall.items() if counts[labels.index(k)] > 0},
        "support": {labels[i]: int(counts[i]) for i in range(len(labels))},
        "confusion": m.confusion,
        "confidence": confidence,
    }


def _load_domain(d: Domain, size: int, cfg: CrossDomainConfig,
                 labels: Labels) -> tuple[list[str], np.ndarray, np.ndarray, str, list[dict]]:
    from ..data.sampling import stratified_indices
    from ..model.scoring import collect_inputs

    inputs = collect_inputs(d.root, "all" if not d.split_manifest else d.split, d.split_manifest,
                            labels=labels, progress=False)
    paths, labels = inputs.paths, inputs.labels
    if cfg.limit and cfg.limit < len(paths):
        idx = stratified_indices(labels, cfg.limit, cfg.seed)
        paths, labels = [paths[i] for i in idx], labels[idx]
    return paths, labels, preprocess_batch(paths, size), inputs.source, inputs.skipped


def run_report(cfg: CrossDomainConfig, *, progress: Progress | bool | None = None) -> dict:
    """Score every model on every domain; returns the JSON-ready result (see `to_markdown`).

    progress: a `wbc_edge.core.progress.Progress` (default: stderr lines when cfg.progress, else silent)."""
    from ..metrics import accepted_agreement

    progress = resolve(cfg.progress if progress is None else progress)
    if not cfg.models:
        raise WbcEdgeError("no models given")
    if not cfg.domains:
        raise WbcEdgeError("no domains given (--data ROOT, once per domain)")
    names = [d.label for d in cfg.domains]
    if len(set(names)) != len(names):
        raise WbcEdgeError(f"two domains share a name ({', '.join(names)}); give them NAME=ROOT")
    ref_path = _reference(cfg)
    paths = list(dict.fromkeys(([ref_path] if ref_path else []) + list(cfg.models)))
    t0 = time.time()
    runners = {p: _Runner(p, cfg.num_threads) for p in paths}
    sizes = {r.size for r in runners.values()}
    if len(sizes) != 1:
        raise WbcEdgeError(f"the models take different input sizes ({sorted(sizes)}); report them separately")
    size = sizes.pop()
    labels = Labels.from_list(cfg.labels) if cfg.labels else runners[ref_path or paths[0]].labels
    orders = {p: r.order(labels) for p, r in runners.items()}  # ModelFileError when the classes differ
    guard = runners[ref_path or paths[0]].guard if cfg.scale_guard else None
    result: dict = {"format": FORMAT, "reference": ref_path, "models": list(cfg.models), "labels": list(labels),
                    "min_class_images": cfg.min_class_images, "domains": [], "gate": None,
                    "scale_guard": guard.to_dict() if guard else None}
    failures = []
    for d in cfg.domains:
        t = time.time()
        _, y, pixels, source, skipped = _load_domain(d, size, cfg, labels)
        if skipped:
            progress.say(f"  {d.label}: " + skipped_note(str(d.root), skipped))
        pixels, zooms = guard_batch(pixels, guard)
        rec: dict = {"name": d.label, "root": str(d.root), "source": source, "n": int(len(y)),
                     "skipped": skipped, "magnified": int(np.sum(zooms != 1.0)), "results": {}}
        with progress.task(len(y) * len(runners), f"{d.label}: {len(runners)} model(s)") as advance:
            probs = {p: r(pixels, advance)[:, orders[p]] for p, r in runners.items()}
        for p in cfg.models:
            row = domain_metrics(y, probs[p], list(labels), cfg.min_class_images, runners[p].temperature,
                                 runners[p].threshold)
            if ref_path and p != ref_path:
                pred, ref_pred = probs[p].argmax(1), probs[ref_path].argmax(1)
                row["agreement_pct"] = 100.0 * float(np.mean(pred == ref_pred))
                row["flips"] = int(np.sum(pred != ref_pred))
                row["max_abs_dprob"] = float(np.max(np.abs(probs[p] - probs[ref_path])))
                # The flips a user sees: on the images this model accepts (calibrated top-1 >= its threshold).
                row.update(accepted_agreement(probs[p], probs[ref_path], runners[p].temperature,
                                              runners[p].threshold))
                if cfg.min_agreement is not None and row["agreement_pct"] < cfg.min_agreement - 1e-9:
                    failures.append({"model": p, "domain": d.label,
                                     "reason": f"top-1 agreement {row['agreement_pct']:.2f}% < "
                                               f"{cfg.min_agreement:g}%"})
            far = runners[p].far_from_training(pixels)
            if far is not None:
                row["far_from_training"] = far
            rec["results"][p] = row
        rec["seconds"] = round(time.time() - t, 1)
        result["domains"].append(rec)
        progress.say(f"  {d.label}: {len(y)} images scored by {len(runners)} model(s) in {rec['seconds']:.0f} s")
    if cfg.min_agreement is not None:
        result["gate"] = {"min_agreement_pct": cfg.min_agreement, "passed": not failures, "failures": failures}
    result["seconds"] = round(time.time() - t0, 1)
    return result


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _interval(r: dict) -> str:
    iv = r.get("balanced_accuracy_interval95")  # absent in reports written before 2026-12-03
    return "" if not iv else f" ({100 * iv[0]:.0f}-{100 * iv[1]:.0f})"


def _guard_line(result: dict) -> str:
    g = result.get("scale_guard")
    if not g:
        return "Scale guard: off (every image fed as preprocessed)."
    counts = ", ".join(f"{d['name']} {d.get('magnified', 0)} of {d['n']}" for d in result["domains"])
    return (f"Scale guard: images whose nucleus is under {g['threshold']:.3f} of the side were magnified (to "
            f"{g['target']:.3f}, at most {g['max_zoom']:g}x) for every model: {counts}.")


def _accepted(r: dict) -> str:
    if r.get("accepted_n") is None:
        return "-"
    pct = r["accepted_agreement_pct"]
    return f"{'-' if pct is None else f'{pct:.2f}'} ({r['accepted_n']})"


def to_markdown(result: dict) -> str:
    lines = ["# Cross-domain report", "",
             f"Reference for agreement: `{result['reference']}`" if result["reference"] else
             "No float reference: agreement not computed.", "",
             f"Balanced accuracy is the mean recall over the classes present, with its 95 % posterior interval "
             f"(Brodersen et al. 2010) in brackets; 'bal. (n≥{result['min_class_images']})' "
             "uses only classes with at least that many images.", "", _guard_line(result), "",
             "| model | domain | n | acc % | bal. acc % | bal. (n≥" + str(result["min_class_images"])
             + ") % | macro-F1 | agree % | flips | agree on accepted % (n) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in result["domains"]:
        for model, r in d["results"].items():
            agree = "-" if "agreement_pct" not in r else f"{r['agreement_pct']:.2f}"
            lines.append(f"| {Path(model).name} | {d['name']} | {r['n']} | {_pct(r['accuracy'])} | "
                         f"{_pct(r['balanced_accuracy'])}{_interval(r)} | {_pct(r['balanced_accuracy_big_classes'])} | "
                         f"{r['macro_f1']:.3f} | {agree} | {r.get('flips', '-')} | {_accepted(r)} |")
    far_rows = [(d["name"], m, r["far_from_training"]) for d in result["domains"] for m, r in d["results"].items()
                if r.get("far_from_training")]
    if far_rows:
        q = far_rows[0][2]["quantile"]
        lines += ["", f"Far from the training data (Keras models with a feature distance, `wbc_edge.calibrate.feature_distance`): "
                  f"the share of a domain's images whose pooled features lie beyond the distance that holds "
                  f"{100 * q:.0f} % of the model's own val images (so about {100 * (1 - q):.0f} % of in-domain images count as far), "
                  "and the median distance relative to val's. A domain far from the training data needs adapting (`wbc-edge adapt`) "
                  "before its accuracy or confidence can be trusted.", "",
                  "| model | domain | far from training % | median distance / val median |", "|---|---|---:|---:|"]
        lines += [f"| {Path(m).name} | {name} | {100 * f['far_share']:.1f} | {f['median_ratio']:.2f} |"
                  for name, m, f in far_rows]
    skipped = [skipped_note(d["root"], d["skipped"]) for d in result["domains"] if d.get("skipped")]
    if skipped:
        lines += [""] + [f"Not scored: {s}." for s in skipped]
    lines += ["", "Per-class recall (%):", ""]
    labels = list(result["domains"][0]["results"][next(iter(result["domains"][0]["results"]))]["support"])
    lines += ["| model | domain | " + " | ".join(f"{lab} (n)" for lab in labels) + " |",
              "|---|---|" + "---:|" * len(labels)]
    for d in result["domains"]:
        for model, r in d["results"].items():
            cells = [f"{_pct(r['per_class_recall'].get(lab))} ({r['support'][lab]})" if r["support"][lab] else "-"
                     for lab in labels]
            lines.append(f"| {Path(model).name} | {d['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Confidence (temperature-scaled when the model carries a temperature): ECE before -> after, "
              "and what the model's abstain threshold accepts:", "",
              "| model | domain | T | ECE % | ECE calibrated % | threshold | coverage % | accepted acc % | "
              "accepted & wrong % |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d in result["domains"]:
        for model, r in d["results"].items():
            c = r["confidence"]
            at = c["at_threshold"]
            lines.append(f"| {Path(model).name} | {d['name']} | {c['temperature']:.3g} | {100 * c['ece']:.1f} | "
                         f"{100 * c['ece_calibrated']:.1f} | {at['threshold']:.3f} | {_pct(at['coverage'])} | "
                         f"{_pct(at['accepted_accuracy'])} | {_pct(at.get('accepted_and_wrong'))} |")
    gate = result.get("gate")
    if gate:
        lines += ["", f"Gate (agreement ≥ {gate['min_agreement_pct']:g} % on every domain): "
                  + ("passed" if gate["passed"] else "FAILED: " + "; ".join(
                      f"{Path(f['model']).name} on {f['domain']}: {f['reason']}" for f in gate["failures"]))]
    return "\n".join(lines) + "\n"
