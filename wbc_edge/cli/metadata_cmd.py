"""`wbc-edge metadata`: the standard TFLite metadata (MediaPipe Tasks, TFLite Task Library, Android Studio) of
existing .tflite files.  `wbc-edge export` writes it already; this adds it to files exported before.

    wbc-edge metadata add export/*.tflite android_assets/wbc_int8.tflite
    wbc-edge metadata show export/wbc_int8.tflite [--json]
"""

from __future__ import annotations

import json

import click


@click.group("metadata")
def metadata() -> None:
    """Standard TFLite metadata (labels, RGB input, normalisation) for MediaPipe Tasks & co."""


@metadata.command("add")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--no-records", is_flag=True,
              help="Do not update manifest.json / wbc_model.json / README.md beside the files.")
def add(models, no_records) -> None:
    """Add (or refresh) the standard metadata of MODELS (.tflite with a wbc-edge contract), in place.

    \b
    Each file is rewritten atomically; the model itself is unchanged (checked: bit-identical outputs on a
    probe input) and its contract zip is kept byte for byte.  A manifest.json beside a file (export/) gets
    its bytes / sha256 / flatbuffer_sha256 updated, an Android bundle (wbc_model.json, README.md) too.
    Running it again changes nothing.
    """
    from ..export.metadata_files import embed_metadata

    for m in models:
        info = embed_metadata(m, update_records=not no_records)
        what = "metadata added" if info["changed"] else "unchanged (already has this metadata)"
        click.echo(f"{m}: {what}; {info['bytes']:,} bytes, sha256 {info['sha256'][:16]}...")
        for r in info["records"]:
            click.echo(f"  updated {r}")


@metadata.command("show")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole metadata as JSON.")
def show(model, as_json) -> None:
    """Print MODEL's standard TFLite metadata and check it (exit 1 when it is missing or inconsistent)."""
    from ..core.errors import WbcEdgeError
    from ..export.metadata_read import check_standard_metadata, read_standard_metadata

    meta = read_standard_metadata(model)
    if meta is None:
        raise WbcEdgeError(f"{model}: no standard TFLite metadata (MediaPipe would refuse a float model and "
                           f"name no class); add it with `wbc-edge metadata add {model}`")
    if as_json:
        click.echo(json.dumps(meta, indent=2))
    else:
        sub = meta["subgraphMetadata"][0]
        inp, out = sub["inputTensorMetadata"][0], sub["outputTensorMetadata"][0]
        norm = next((u["options"] for u in inp.get("processUnits", [])
                     if u.get("optionsType") == "NormalizationOptions"), None)
        files = [f"{f['name']} ({f['type']})" for f in out.get("associatedFiles", []) + meta.get("associatedFiles", [])]
        click.echo(f"{model}: {meta.get('name')}")
        click.echo(f"  version: {meta.get('version')}; min parser {meta.get('minParserVersion')}")
        click.echo(f"  input '{inp.get('name')}': {inp['content']['contentPropertiesType']} "
                   f"{inp['content'].get('contentProperties', {}).get('colorSpace', '')}, normalisation {norm}")
        click.echo(f"  output '{out.get('name')}': associated files {', '.join(files)}")
    problems = check_standard_metadata(model)
    if problems:
        raise WbcEdgeError("; ".join(problems))
    if not as_json:
        click.echo("  ok: MediaPipe Tasks ImageClassifier / TFLite Task Library can use it as it is")
