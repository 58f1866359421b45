"""`wbc-edge export`: a thin layer over `wbc_edge.export.export_model` (TensorFlow imported in the body).

The variant flags (--float32 ... --qat, --all) are generated from the variant registry
(`wbc_edge.export.variants`) when this module is imported; `--variant NAME` takes any registered variant,
including one registered later.  Every other default is ExportConfig's (`config_default`).
"""

from __future__ import annotations

import click

from ..data.augment import PRESETS
from ..export import variants as registry
from ..export.config import config_default

ANDROID_DEFAULT = "android_assets"


def _d(name: str):
    return config_default(name)


def _join(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _help() -> str:
    flags = ", ".join(f"{s.name} ({s.cli_flag or '--variant ' + s.name})" for s in registry.specs())
    return f"""Export SOURCE (a RUN_DIR with model.keras + split.csv + run.json, or a .keras file) to TFLite.

    Without a variant flag the default set is written: {_join(registry.default_names())}.  Variants: {flags}.
    Files are wbc_<variant>.tflite, each with its contract (labels, input size, quantisation, preprocess
    version, source/split sha256) and the standard TFLite metadata (labels file, RGB input, normalisation:
    MediaPipe Tasks ImageClassifier uses the files as they are) embedded, plus manifest.json.  `wbc-edge
    metadata add` adds that metadata to older files.  int8 files take raw uint8 RGB pixels (scale 1.0, zero
    point 0) and give uint8 probabilities.

    Every file is compared with the Keras model on the parity split; a variant that fails (its manifest
    entry names the stage: conversion, QAT fine-tune, metadata, writing or parity gate) is marked "failed"
    in manifest.json (a file that was written is kept) and the command exits with status 1.
    """


def _variant_flags(f):
    """One --<flag> per registered variant that has one, then --all and --variant."""
    in_all = [s.name for s in registry.specs() if s.in_all]
    f = click.option("--variant", "v_names", multiple=True, metavar="NAME",
                     help="A registered variant by name (repeatable): " + ", ".join(registry.names()) + ".")(f)
    f = click.option("--all", "v_all", is_flag=True, help=f"Every variant: {', '.join(in_all)}.")(f)
    for spec in reversed(registry.specs()):
        if spec.cli_flag:
            f = click.option(spec.cli_flag, f"v_{spec.name}", is_flag=True, help=spec.help)(f)
    return f


def chosen_variants(v_all: bool, v_names, flags: dict) -> tuple[str, ...]:
    """The variants the flags name, in registry order; the default set when none."""
    if v_all:
        return tuple(s.name for s in registry.specs() if s.in_all)
    chosen = [s.name for s in registry.specs() if flags.get(f"v_{s.name}")] + list(v_names)
    return tuple(dict.fromkeys(chosen)) or registry.default_names()


@click.command(help=_help())
@click.argument("source", type=click.Path(exists=True))
@_variant_flags
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: RUN_DIR/export, or export/ beside MODEL).")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False),
              help="ImageFolder root the split manifest's paths refer to (default: data_root in run.json).")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False),
              help="Split CSV (default: split.csv beside the model).")
@click.option("--labels", "labels", default=None, metavar="NAMES|FILE",
              help="Class names in output order (comma-separated, or a labels.txt), for a model whose run.json "
                   "stores none; a 5-output model without them is taken as the five WBC classes.")
@click.option("--calibration-size", type=click.IntRange(1), default=_d("calibration_size"), show_default=True,
              help="Representative images (stratified, seeded, from the train split) for int8 calibration.")
@click.option("--calibration-augment", type=click.Choice(list(PRESETS)),
              default=_d("calibration_augment") or "none", show_default=True,
              help="Augmentation recipe applied to a share of the int8 calibration (and QAT) images, so the "
                   "int8 ranges also cover other labs' pixels; 'none' calibrates on clean images only.")
@click.option("--calibration-augmented-fraction", type=click.FloatRange(0, 1),
              default=_d("calibration_augmented_fraction"), show_default=True,
              help="Share of the calibration / QAT images that are augmented.")
@click.option("--parity-data", "parity_domains", multiple=True, metavar="[NAME=]ROOT",
              help="Also gate agreement with Keras on every image of this labelled ImageFolder (another lab's "
                   "images); repeatable. Only agreement is gated there (thresholds as below).")
@click.option("--min-domain-agreement", type=click.FloatRange(0, 100), default=_d("min_domain_agreement"),
              help="Agreement (%) required on each --parity-data domain (default: the variant's own "
                   "--min-int8-agreement / --min-float-agreement); 0 records it without gating.")
@click.option("--parity-split", type=click.Choice(["test", "val", "train"]), default=_d("parity_split"),
              show_default=True, help="Split the exported files are compared with Keras on.")
@click.option("--parity-limit", type=click.IntRange(1), default=_d("parity_limit"),
              help="Compare on a stratified subset of N images of the parity split (default: all).")
@click.option("--max-int8-drop", type=float, default=_d("max_int8_drop"), show_default=True,
              help="int8 variants fail when accuracy drops by more than this many percentage points.")
@click.option("--min-int8-agreement", type=click.FloatRange(0, 100), default=_d("min_int8_agreement"),
              show_default=True, help="int8 variants fail below this top-1 agreement with Keras (%).")
@click.option("--min-float-agreement", type=click.FloatRange(0, 100), default=_d("min_float_agreement"),
              show_default=True, help="float32/float16/dynamic fail below this top-1 agreement with Keras (%).")
@click.option("--qat-epochs", type=click.IntRange(1), default=_d("qat_epochs"), show_default=True,
              help="QAT fine-tune epochs.")
@click.option("--qat-images", type=click.IntRange(1), default=_d("qat_images"), show_default=True,
              help="Train-split images (stratified) used for the QAT fine-tune.")
@click.option("--save-qat-model", is_flag=True, default=_d("save_qat_model"),
              help="Also save the QAT Keras model as qat_model.h5.")
@click.option("--android", "android_dir", is_flag=False, flag_value=ANDROID_DEFAULT, default=_d("android_dir"),
              type=click.Path(file_okay=False), metavar="[DIR]",
              help="Also write an Android bundle (best int8 model, labels.txt, wbc_model.json, README.md) "
                   f"to DIR (default: ./{ANDROID_DEFAULT}). Put it after SOURCE or write --android=DIR.")
@click.option("--int8-float-layers", "float_layers", type=click.IntRange(0), default=None, metavar="K",
              help=f"{registry.tuner('float_layers').name}: how many of the worst int8 layers (ranked on the "
                   "calibration images) stay float (default "
                   f"{registry.tuner('float_layers').options['float_layers']}; `wbc-edge diagnose` recommends "
                   f"one).  Implies {registry.tuner('float_layers').cli_flag}.")
@click.option("--seed", type=int, default=_d("seed"), show_default=True,
              help="Seed of the calibration / subset sampling.")
@click.option("--threads", "num_threads", type=click.IntRange(1), default=_d("num_threads"),
              help="Interpreter threads for the parity run (default: min(4, CPUs)).")
@click.option("--force", is_flag=True, default=_d("force"),
              help="Write into a non-empty --out / over existing bundle files.")
@click.option("--quiet", is_flag=True)
def export(source, v_all, v_names, out_dir, data_root, split_manifest, labels, calibration_size,
           calibration_augment, calibration_augmented_fraction, parity_domains, min_domain_agreement,
           parity_split, parity_limit, max_int8_drop, min_int8_agreement, min_float_agreement, qat_epochs,
           qat_images, save_qat_model, android_dir, float_layers, seed, num_threads, force, quiet, **flags):
    from .. import export as export_pkg
    from ..export.config import ExportConfig
    from .progress import ClickProgress

    variants, variant_options = chosen_variants(v_all, v_names, flags), {}
    if float_layers is not None:
        tuned = registry.tuner("float_layers").name
        variants = tuple(dict.fromkeys([*variants, tuned]))
        variant_options[tuned] = {"float_layers": float_layers}
    cfg = ExportConfig(source=source, out_dir=out_dir, variants=variants, variant_options=variant_options,
                       data_root=data_root, split_manifest=split_manifest, labels=_labels(labels),
                       calibration_size=calibration_size,
                       calibration_augment=None if calibration_augment == "none" else calibration_augment,
                       calibration_augmented_fraction=calibration_augmented_fraction,
                       parity_domains=tuple(parity_domains), min_domain_agreement=min_domain_agreement,
                       parity_split=parity_split, parity_limit=parity_limit, max_int8_drop=max_int8_drop,
                       min_int8_agreement=min_int8_agreement, min_float_agreement=min_float_agreement,
                       qat_epochs=qat_epochs, qat_images=qat_images, save_qat_model=save_qat_model,
                       android_dir=android_dir, force=force, seed=seed, num_threads=num_threads,
                       verbose=not quiet)
    result = export_pkg.export_model(cfg, ClickProgress(enabled=not quiet))
    if not quiet:
        for v in result.manifest["variants"]:
            p = v.get("parity") or {}
            click.echo(f"  {v['file']:<24} {v.get('bytes', 0) / 1e6:7.2f} MB  agreement "
                       f"{p.get('agreement_pct', float('nan')):6.2f}%  "
                       f"Δacc {p.get('delta_accuracy_pp', 0):+.2f} pp  {v['status']}")
            for name, d in (v.get("parity_domains") or {}).items():
                click.echo(f"  {'':<24} {'':>10}  agreement {d['agreement_pct']:6.2f}%  on {name} (n={d['n']})")


def _labels(value: str | None) -> tuple[str, ...] | None:
    """--labels: a labels.txt (one name per line) or comma-separated names."""
    if not value:
        return None
    from pathlib import Path

    p = Path(value)
    if p.is_file():
        from ..core.errors import DatasetError

        try:
            text = p.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{p}: cannot read labels ({exc})") from None
        return tuple(x.strip() for x in text.splitlines() if x.strip())
    return tuple(x.strip() for x in value.split(",") if x.strip())
