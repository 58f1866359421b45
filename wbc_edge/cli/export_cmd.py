"""`wbc-edge export`: a thin layer over `wbc_edge.export.export_model` (TensorFlow imported in the body)."""

from __future__ import annotations

import click

ANDROID_DEFAULT = "android_assets"


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--float32", "v_float32", is_flag=True, help="float32 (the graph as trained).")
@click.option("--float16", "v_float16", is_flag=True, help="float16 weights (float32 I/O).")
@click.option("--dynamic", "v_dynamic", is_flag=True, help="Dynamic-range: int8 weights, float activations.")
@click.option("--int8", "v_int8", is_flag=True,
              help="Full-integer int8 post-training quantisation, uint8 raw-pixel input, uint8 output.")
@click.option("--qat", "v_qat", is_flag=True,
              help="Full-integer int8 after a short quantization-aware fine-tune (tfmot).")
@click.option("--all", "v_all", is_flag=True,
              help="Every variant: float32, float16, dynamic, int8, qat_int8.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: RUN_DIR/export, or export/ beside MODEL).")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False),
              help="ImageFolder root the split manifest's paths refer to (default: data_root in run.json).")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False),
              help="Split CSV (default: split.csv beside the model).")
@click.option("--calibration-size", type=click.IntRange(1), default=300, show_default=True,
              help="Representative images (stratified, seeded, from the train split) for int8 calibration.")
@click.option("--calibration-augment", type=click.Choice(["robust", "colour", "scale", "basic", "none"]),
              default="robust", show_default=True,
              help="Augmentation recipe applied to a share of the int8 calibration (and QAT) images, so the "
                   "int8 ranges also cover other labs' pixels; 'none' calibrates on clean images only.")
@click.option("--calibration-augmented-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of the calibration / QAT images that are augmented.")
@click.option("--parity-data", "parity_domains", multiple=True, metavar="[NAME=]ROOT",
              help="Also gate agreement with Keras on every image of this labelled ImageFolder (another lab's "
                   "images); repeatable. Only agreement is gated there (thresholds as below).")
@click.option("--min-domain-agreement", type=click.FloatRange(0, 100), default=None,
              help="Agreement (%) required on each --parity-data domain (default: the variant's own "
                   "--min-int8-agreement / --min-float-agreement); 0 records it without gating.")
@click.option("--parity-split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True,
              help="Split the exported files are compared with Keras on.")
@click.option("--parity-limit", type=click.IntRange(1), default=None,
              help="Compare on a stratified subset of N images of the parity split (default: all).")
@click.option("--max-int8-drop", type=float, default=1.0, show_default=True,
              help="int8 variants fail when accuracy drops by more than this many percentage points.")
@click.option("--min-int8-agreement", type=click.FloatRange(0, 100), default=98.0, show_default=True,
              help="int8 variants fail below this top-1 agreement with Keras (%).")
@click.option("--min-float-agreement", type=click.FloatRange(0, 100), default=99.0, show_default=True,
              help="float32/float16/dynamic fail below this top-1 agreement with Keras (%).")
@click.option("--qat-epochs", type=click.IntRange(1), default=2, show_default=True,
              help="QAT fine-tune epochs.")
@click.option("--qat-images", type=click.IntRange(1), default=2048, show_default=True,
              help="Train-split images (stratified) used for the QAT fine-tune.")
@click.option("--save-qat-model", is_flag=True, help="Also save the QAT Keras model as qat_model.h5.")
@click.option("--android", "android_dir", is_flag=False, flag_value=ANDROID_DEFAULT, default=None,
              type=click.Path(file_okay=False), metavar="[DIR]",
              help="Also write an Android bundle (best int8 model, labels.txt, wbc_model.json, README.md) "
                   f"to DIR (default: ./{ANDROID_DEFAULT}). Put it after SOURCE or write --android=DIR.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed of the calibration / subset sampling.")
@click.option("--threads", "num_threads", type=click.IntRange(1), default=None,
              help="Interpreter threads for the parity run (default: min(4, CPUs)).")
@click.option("--force", is_flag=True, help="Write into a non-empty --out / over existing bundle files.")
@click.option("--quiet", is_flag=True)
def export(source, v_float32, v_float16, v_dynamic, v_int8, v_qat, v_all, out_dir, data_root, split_manifest,
           calibration_size, calibration_augment, calibration_augmented_fraction, parity_domains, min_domain_agreement, parity_split, parity_limit, max_int8_drop, min_int8_agreement,
           min_float_agreement, qat_epochs, qat_images, save_qat_model, android_dir, seed, num_threads, force,
           quiet):
    """Export SOURCE (a RUN_DIR with model.keras + split.csv + run.json, or a .keras file) to TFLite.

    Without a variant flag the default set is written: float32, float16 and int8.  Files are
    wbc_<variant>.tflite (float32, float16, dynamic, int8, qat_int8), each with its contract (labels,
    input size, quantisation, preprocess version, source/split sha256) and the standard TFLite metadata
    (labels file, RGB input, normalisation: MediaPipe Tasks ImageClassifier uses the files as they are)
    embedded, plus manifest.json.  `wbc-edge metadata add` adds that metadata to older files.
    int8 files take raw uint8 RGB pixels (scale 1.0, zero point 0) and give uint8 probabilities.

    Every file is compared with the Keras model on the parity split; a variant that fails its gate is kept
    but marked "failed" in manifest.json and the command exits with status 1.
    """
    from ..export import ExportConfig, export_model

    if v_all:
        variants = ("float32", "float16", "dynamic", "int8", "qat_int8")
    else:
        flags = ((v_float32, "float32"), (v_float16, "float16"), (v_dynamic, "dynamic"), (v_int8, "int8"),
                 (v_qat, "qat_int8"))
        chosen = [name for flag, name in flags if flag]
        variants = tuple(chosen) or ("float32", "float16", "int8")
    cfg = ExportConfig(source=source, out_dir=out_dir, variants=variants, data_root=data_root,
                       split_manifest=split_manifest, calibration_size=calibration_size,
                       calibration_augment=None if calibration_augment == "none" else calibration_augment,
                       calibration_augmented_fraction=calibration_augmented_fraction,
                       parity_domains=tuple(parity_domains), min_domain_agreement=min_domain_agreement,
                       parity_split=parity_split, parity_limit=parity_limit, max_int8_drop=max_int8_drop,
                       min_int8_agreement=min_int8_agreement, min_float_agreement=min_float_agreement,
                       qat_epochs=qat_epochs, qat_images=qat_images,
                       save_qat_model=save_qat_model, android_dir=android_dir, force=force, seed=seed,
                       num_threads=num_threads, verbose=not quiet)
    result = export_model(cfg)
    if not quiet:
        for v in result.manifest["variants"]:
            p = v.get("parity") or {}
            click.echo(f"  {v['file']:<24} {v.get('bytes', 0) / 1e6:7.2f} MB  agreement "
                       f"{p.get('agreement_pct', float('nan')):6.2f}%  "
                       f"Δacc {p.get('delta_accuracy_pp', 0):+.2f} pp  {v['status']}")
            for name, d in (v.get("parity_domains") or {}).items():
                click.echo(f"  {'':<24} {'':>10}  agreement {d['agreement_pct']:6.2f}%  on {name} (n={d['n']})")
