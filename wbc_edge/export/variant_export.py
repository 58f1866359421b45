"""One variant, stage by stage: (QAT fine-tune) -> conversion -> metadata -> writing -> parity gate.

`export_variant` fills the variant's manifest entry as it goes, so a failure leaves every number measured
before it; the failure itself is a `StageFailed` naming the stage (wbc_edge.export.stages).  What all
variants of one export share (the loaded model, labels, calibration and parity pixels, the base contract)
is the `ExportJob` the pipeline builds once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.contract import ModelContract, embed_contract
from ..core.labels import Labels
from ..core.progress import Progress
from . import convert, parity, stages
from .calibration_data import calibration_batch, sample_pixels
from .config import ExportConfig
from .metadata_read import metadata_summary
from .metadata_write import add_standard_metadata
from .stages import StageFailed, stage
from .tensors import check_input_quantisation, dtype_name, quant_or_none, tensor_details
from .variants import VariantSpec

INT_INPUT_NORMALISATION = ("in-graph: x / 127.5 - 1 (MobileNetV2); uint8 input = raw RGB pixels 0..255 as an "
                           "Android Bitmap holds them (scale 1.0, zero point 0)")
INT_OUTPUT = ("softmax probabilities as uint8: p = (q - output_zero_point) * output_scale, one per label, in "
              "label order")


@dataclass
class ExportJob:
    """What every variant of one export shares."""

    cfg: ExportConfig
    model: object
    size: int
    labels: Labels
    base_contract: dict
    cal_pixels: np.ndarray | None        # uint8 calibration images (augmented share included)
    ref: parity.Reference                # the parity split, with Keras probabilities
    domains: dict[str, parity.Reference]
    out_dir: Path
    tmp_dir: Path
    num_threads: int
    progress: Progress
    qat_train: tuple[list[str], np.ndarray] | None = None  # (paths, labels) of the train split, for QAT
    float_saved_model: Path | None = field(default=None)

    def saved_model(self) -> Path:
        """The float model as a SavedModel, exported once and shared by the float-model variants."""
        if self.float_saved_model is None:
            self.progress.say("Exporting the SavedModel for conversion ...")
            self.float_saved_model = self.tmp_dir / "saved_model"
            convert.saved_model(self.model, self.float_saved_model)
        return self.float_saved_model


def _qat_model(spec: VariantSpec, job: ExportJob, entry: dict) -> tuple[object, Path]:
    from . import qat

    cfg = job.cfg
    job.progress.say(f"[{spec.name}] quantization-aware fine-tune ...")
    tpaths, tlabels = job.qat_train
    pixels, labels, n_aug = sample_pixels(tpaths, tlabels, cfg.qat_images, job.size, cfg.seed + 1,
                                          augment_preset=cfg.calibration_augment,
                                          augmented_fraction=cfg.calibration_augmented_fraction)
    qmodel, info = qat.train_qat(job.model, job.cal_pixels, pixels, labels, epochs=cfg.qat_epochs,
                                 batch_size=cfg.qat_batch_size, learning_rate=cfg.qat_learning_rate,
                                 seed=cfg.seed, progress=job.progress)
    info["augmented_images"] = n_aug
    if cfg.save_qat_model:
        qat.save_qat_model(qmodel, job.out_dir / "qat_model.h5")
        info["saved"] = "qat_model.h5"
    entry["qat"] = info
    sm = job.tmp_dir / f"{spec.name}_saved_model"
    convert.saved_model(qmodel, sm)
    return qmodel, sm


def _contract(spec: VariantSpec, job: ExportJob, in_det: dict, out_det: dict) -> ModelContract:
    in_scale, in_zp = quant_or_none(in_det)
    out_scale, out_zp = quant_or_none(out_det)
    contract = ModelContract(variant=spec.name, input_dtype=dtype_name(in_det["dtype"]),
                             output_dtype=dtype_name(out_det["dtype"]), input_scale=in_scale,
                             input_zero_point=in_zp, output_scale=out_scale, output_zero_point=out_zp,
                             **job.base_contract)
    if contract.input_dtype == "uint8":
        contract.normalisation = INT_INPUT_NORMALISATION
    if contract.output_dtype == "uint8":
        contract.output = INT_OUTPUT
    return contract


def _tensor_record(det: dict, dtype: str) -> dict:
    scale, zp = quant_or_none(det)
    return {"shape": [int(d) for d in det["shape"]], "dtype": dtype, "scale": scale, "zero_point": zp}


def export_variant(spec: VariantSpec, job: ExportJob, entry: dict, files: dict[str, Path]) -> None:
    """Export one variant into `entry` (its manifest record) and `files`; StageFailed on failure."""
    say = job.progress.say
    t0 = time.perf_counter()
    if spec.qat:
        with stage(stages.QAT):
            model, sm = _qat_model(spec, job, entry)
    else:
        with stage(stages.CONVERSION):
            model, sm = job.model, job.saved_model()
    with stage(stages.CONVERSION):
        cal = calibration_batch(job.cal_pixels, job.cfg.calibration_transform) if spec.representative_data \
            else None
        say(f"[{spec.name}] converting ({spec.summary}"
            + (f", {len(cal)} calibration images" if cal is not None and not spec.qat else "") + ") ...")
        tc = time.perf_counter()
        record: dict = {}
        flat = convert.to_tflite(sm, spec, cal, model, record)
        entry.update(record)  # what a converter hook reports (int8_mixed: float_layers)
        entry["conversion_seconds"] = round(time.perf_counter() - tc, 2)
        if spec.qat:
            entry["qat_seconds"] = round(tc - t0, 2)
        if cal is not None:
            entry["calibration_size"] = int(len(cal))
        in_det, out_det = tensor_details(flat)
        got = (dtype_name(in_det["dtype"]), dtype_name(out_det["dtype"]))
        if got != (spec.input_dtype, spec.output_dtype):
            raise StageFailed(stages.CONVERSION, f"the converted model has {got[0]} input / {got[1]} output, "
                                                 f"the spec says {spec.input_dtype} / {spec.output_dtype}")
    with stage(stages.METADATA):
        contract = _contract(spec, job, in_det, out_det)
        # Standard TFLite metadata (MediaPipe Tasks / Task Library / Android Studio) inside the flatbuffer,
        # then our contract zip after it (wbc_edge.export.metadata_write).
        flat = add_standard_metadata(flat, contract, source=spec.file)
        data = embed_contract(flat, contract)
        summary = metadata_summary(flat)
    with stage(stages.WRITING):
        path = job.out_dir / spec.file
        atomic.write_bytes(path, data)
        files[spec.name] = path
    entry.update({
        "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "flatbuffer_bytes": len(flat), "flatbuffer_sha256": hashlib.sha256(flat).hexdigest(),
        "tflite_metadata": summary,
        "input": _tensor_record(in_det, contract.input_dtype),
        "output": _tensor_record(out_det, contract.output_dtype),
    })
    with stage(stages.GATE):
        reasons = _gate(spec, job, path, in_det, entry)
    p = entry["parity"]
    say(f"[{spec.name}] {len(data) / 1e6:.2f} MB, converted in {entry['conversion_seconds']:.1f} s; parity on "
        f"{p['n']}: accuracy {p['accuracy']:.2%} (Δ {p['delta_accuracy_pp']:+.2f} pp), agreement "
        f"{p['agreement_pct']:.2f}%, max |Δp| {p['max_abs_dprob']:.2e} -> "
        + ("ok" if not reasons else f"FAILED: {'; '.join(reasons)}"))
    if reasons:
        raise StageFailed(stages.GATE, "; ".join(reasons))


def _gate(spec: VariantSpec, job: ExportJob, path: Path, in_det: dict, entry: dict) -> list[str]:
    """Run the file on the parity split (and domains); the reasons it fails its gate (empty: passes)."""
    problem = check_input_quantisation(in_det) if spec.input_dtype == "uint8" else None
    tp = time.perf_counter()
    probs = parity.predict_file(path, job.ref.pixels, job.num_threads)
    conf = {"temperature": job.base_contract.get("temperature"),
            "abstain_threshold": job.base_contract.get("abstain_threshold")}
    entry["parity"] = parity.parity_record(probs, job.ref, job.labels, parity.gate_for(spec, job.cfg), **conf)
    reasons = ([problem] if problem else []) + entry["parity"]["reasons"]
    if job.domains:
        entry["parity_domains"] = {}
        gate = parity.gate_for(spec, job.cfg, off_domain=True)
        for name, ref in job.domains.items():
            d = parity.parity_record(parity.predict_file(path, ref.pixels, job.num_threads), ref, job.labels,
                                     gate, **conf)
            entry["parity_domains"][name] = d
            reasons += [f"{name}: {r}" for r in d["reasons"]]
            acc = "" if d.get("accepted_agreement_pct") is None else \
                f" ({d['accepted_agreement_pct']:.2f}% on the {d['accepted_n']} it accepts)"
            job.progress.say(f"[{spec.name}]   {name}: agreement {d['agreement_pct']:.2f}% on {d['n']} images{acc}, "
                             f"accuracy {d['accuracy']:.2%} (Keras {d['keras_accuracy']:.2%})")
    entry["parity_seconds"] = round(time.perf_counter() - tp, 2)
    return reasons
