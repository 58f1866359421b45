"""Writing standard TFLite model metadata, so that MediaPipe Tasks `ImageClassifier`, the TFLite Task Library and
Android Studio's ML Model Binding can use our .tflite files as they are.

    from wbc_edge.export import add_standard_metadata, embed_metadata, read_standard_metadata
    flat = add_standard_metadata(flat, contract)     # export: converter output -> flatbuffer with metadata
    embed_metadata("export/wbc_int8.tflite")         # an existing file, in place (manifest / bundle updated)
    read_standard_metadata("export/wbc_int8.tflite") # -> dict (None when the file has none)

What a file looks like after export (the layout of TFLite Support / Model Maker / MediaPipe's writers):

    [TFLite flatbuffer  + Model.metadata "TFLITE_METADATA" -> buffer holding a ModelMetadata flatbuffer]
    [zip, stored, fixed timestamps: labels.txt, wbc_edge_contract.json]    <- wbc_edge.core.contract, unchanged

- ModelMetadata: name, description, version, author, licence; the contract file as a DESCRIPTIONS
  associated file.
- Input tensor: ImageProperties(RGB), NormalizationOptions(mean 0, std 1) and stats 0..255.  The model takes
  raw pixels 0..255 (x / 127.5 - 1 is a layer inside the graph), so a client computing
  (pixel - mean) / std must change nothing; uint8 models take the pixels as they are (MediaPipe ignores the
  normalisation for integer inputs).
- Output tensor: FeatureProperties, stats (0..1, or 0..255 for uint8 output), and labels.txt as its
  TENSOR_AXIS_LABELS associated file: clients return class *names*.
- A calibration temperature (or an abstain threshold) in the contract, once the model carries one, is stated
  in the output tensor's description: the standard schema has no softmax temperature (its ScoreCalibration
  is a per-class sigmoid), so clients report the uncalibrated softmax and the wbc-edge runtime applies it.

The metadata flatbuffer is built from the official schema: the flatc-generated module vendored in
`wbc_edge.vendor` (MediaPipe 1.2.2, Apache-2.0) and the `flatbuffers` package.  The TFLite *model*
flatbuffer is rewritten with the model schema module the interpreter ships (`ai_edge_litert`, else
TensorFlow), exactly as MediaPipe's MetadataPopulator does (unpack, add one buffer + one metadata entry,
repack), with the schema's 16-byte alignment of buffer data kept.  Every rewrite is checked: the new model
must give bit-identical outputs to the old one on a probe input.

Deterministic: the same flatbuffer + contract always gives the same bytes, adding metadata twice gives the
same bytes as adding it once, and nothing machine-specific goes into the flatbuffer (versions and platform
stay in the contract zip), so `flatbuffer_sha256` in manifest.json still compares across machines.

Export-time only: `wbc_edge.runtime` never imports this module, `flatbuffers` or MediaPipe.
"""

from __future__ import annotations

import numpy as np

from .. import __version__
from ..core.contract import CONTRACT_NAME, LABELS_NAME, ModelContract, is_tflite, strip_contract
from ..core.errors import ModelFileError, WbcEdgeError, first_line
from .metadata_schema import (METADATA_FIELD_NAME, METADATA_IDENTIFIER, NORM_MEAN, NORM_STD,
                              TFLITE_IDENTIFIER, aligned_buffer_class, metadata_schema, model_schema, unpack_model)

MODEL_NAME = "wbc-edge white-blood-cell classifier"
AUTHOR = "wbc-edge"
LICENSE = ("Apache-2.0. Weights trained on the PBC dataset, CC BY 4.0: Acevedo et al., Data in Brief 30 (2020) "
           "105474, doi:10.1016/j.dib.2020.105474")
# Contract fields that calibrate the output; stated in the output description when the contract has them.
CALIBRATION_FIELDS = ("temperature", "abstain_threshold", "min_confidence")

# Schema features and the metadata parser version that introduced them (metadata_schema.fbs "History").
_PARSER_VERSIONS = {"vocabulary_file": "1.0.1", "subgraph_process_units": "1.1.0", "tensor_groups": "1.2.0",
                    "regex_tokenizer": "1.2.1", "audio_properties": "1.3.0", "scann_index_file": "1.4.0",
                    "associated_file_version": "1.4.1", "custom_metadata": "1.5.0"}


def _dtype_name(schema, tensor_type: int) -> str | None:
    t = schema.TensorType
    return {t.FLOAT32: "float32", t.UINT8: "uint8", t.INT8: "int8", t.FLOAT16: "float16",
            t.INT16: "int16"}.get(tensor_type)


def _calibration_text(contract: ModelContract) -> str:
    found = [(name, getattr(contract, name, None)) for name in CALIBRATION_FIELDS]
    found = [(n, v) for n, v in found if v is not None]
    if not found:
        return ""
    what = ", ".join(f"{n} {v:g}" if isinstance(v, (int, float)) else f"{n} {v}" for n, v in found)
    return (f" Calibration in the embedded {CONTRACT_NAME}: {what}. The wbc-edge runtime applies it "
            "(temperature T: p proportional to p_raw^(1/T)); this output is the uncalibrated softmax, with "
            "the same ranking.")


def _scale_guard_text(contract: ModelContract) -> str:
    g = getattr(contract, "scale_guard", None)
    if not g:
        return ""
    return (f" Scale guard (in the embedded {CONTRACT_NAME}; the wbc-edge runtime and the Android bundle's "
            f"ScaleGuard.kt apply it, MediaPipe does not): a cell whose stained nucleus spans less than "
            f"{g['threshold']:g} of the side is magnified about the nucleus first (to {g['target']:g}, at most "
            f"{g['max_zoom']:g}x).")


def build_metadata(contract: ModelContract, *, input_dtype: str, output_dtype: str) -> bytes:
    """The ModelMetadata flatbuffer (file identifier M001) for a model with this contract and tensor types."""
    md = metadata_schema()
    size = int(contract.input_size)
    labels = list(contract.labels)

    img = md.ImagePropertiesT()
    img.colorSpace = md.ColorSpaceType.RGB
    in_content = md.ContentT()
    in_content.contentPropertiesType = md.ContentProperties.ImageProperties
    in_content.contentProperties = img
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = list(NORM_MEAN), list(NORM_STD)
    unit = md.ProcessUnitT()
    unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    in_stats = md.StatsT()
    in_stats.min, in_stats.max = [0.0], [255.0]
    inp = md.TensorMetadataT()
    inp.name = "image"
    inp.description = (f"One whole-cell RGB image, resized to {size}x{size} (no crop), {input_dtype} raw pixel "
                       "values 0..255: normalisation (x / 127.5 - 1) is inside the model, so mean 0 / std 1 "
                       "here. Reference resize: Pillow bilinear with antialiasing (wbc_edge.core.preprocess)."
                       + _scale_guard_text(contract))
    inp.content, inp.processUnits, inp.stats = in_content, [unit], in_stats

    out_content = md.ContentT()
    out_content.contentPropertiesType = md.ContentProperties.FeatureProperties
    out_content.contentProperties = md.FeaturePropertiesT()
    out_stats = md.StatsT()
    out_stats.min, out_stats.max = ([0.0], [255.0]) if output_dtype == "uint8" else ([0.0], [1.0])
    labels_file = md.AssociatedFileT()
    labels_file.name = LABELS_NAME
    labels_file.description = f"The {len(labels)} class names, one per line, in output order."
    labels_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    quant = (" as uint8: p = (q - zero_point) * scale, from the tensor's quantisation"
             if output_dtype == "uint8" else "")
    out = md.TensorMetadataT()
    out.name = "probability"
    out.description = (f"Softmax probabilities of {', '.join(labels)}{quant}; argmax = prediction."
                       + _calibration_text(contract))
    out.content, out.stats, out.associatedFiles = out_content, out_stats, [labels_file]

    sub = md.SubGraphMetadataT()
    sub.name = "wbc_classifier"
    sub.description = "Classifies one white blood cell image into one of the labels."
    sub.inputTensorMetadata, sub.outputTensorMetadata = [inp], [out]

    contract_file = md.AssociatedFileT()
    contract_file.name = CONTRACT_NAME
    contract_file.description = ("wbc-edge model contract (JSON): labels, input contract, quantisation, "
                                 "preprocess version, sha256 of the source model and split manifest")
    contract_file.type = md.AssociatedFileType.DESCRIPTIONS

    model = md.ModelMetadataT()
    model.name = f"{MODEL_NAME} ({contract.variant})"
    model.description = (
        "MobileNetV2 classifier of single white blood cells in peripheral blood smear images ("
        + ", ".join(labels) + f"), {contract.variant}. Trained on PBC (CellaVision DM96, May-Grunwald-Giemsa "
        "stain); not validated on other analysers or stains - fine-tune on local data first. Research use, "
        "not a medical device.")
    src = contract.source_model_sha256
    model.version = f"wbc-edge {__version__}" + (f"; source model sha256 {src[:16]}" if src else "")
    model.author, model.license = AUTHOR, LICENSE
    model.subgraphMetadata = [sub]
    model.associatedFiles = [contract_file]
    model.minParserVersion = min_parser_version(model)

    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), METADATA_IDENTIFIER)
    return bytes(b.Output())


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def min_parser_version(model) -> str:
    """The smallest metadata parser version that understands every field used in `model` (ModelMetadataT):
    MediaPipe's MetadataPopulator computes this in compiled code; here it follows the schema's History."""
    md = metadata_schema()
    used = set()
    files = list(model.associatedFiles or [])
    for sub in model.subgraphMetadata or []:
        if sub.inputProcessUnits or sub.outputProcessUnits:
            used.add("subgraph_process_units")
        if sub.inputTensorGroups or sub.outputTensorGroups:
            used.add("tensor_groups")
        if getattr(sub, "customMetadata", None):
            used.add("custom_metadata")
        files += list(sub.associatedFiles or [])
        for t in list(sub.inputTensorMetadata or []) + list(sub.outputTensorMetadata or []):
            files += list(t.associatedFiles or [])
            if t.content is not None and t.content.contentPropertiesType == md.ContentProperties.AudioProperties:
                used.add("audio_properties")
            for u in t.processUnits or []:
                if u.optionsType == md.ProcessUnitOptions.RegexTokenizerOptions:
                    used.add("regex_tokenizer")
                elif u.optionsType in (md.ProcessUnitOptions.BertTokenizerOptions,
                                       md.ProcessUnitOptions.SentencePieceTokenizerOptions):
                    used.add("subgraph_process_units")  # the tokenizers came with 1.1.0 as well
    for f in files:
        if f.type == md.AssociatedFileType.VOCABULARY:
            used.add("vocabulary_file")
        if f.type == md.AssociatedFileType.SCANN_INDEX_FILE:
            used.add("scann_index_file")
        if getattr(f, "version", None):
            used.add("associated_file_version")
    return max(["1.0.0"] + [_PARSER_VERSIONS[u] for u in used], key=_version_key)


def add_standard_metadata(flat: bytes, contract: ModelContract, *, source: str = "<bytes>",
                          verify: bool = True) -> bytes:
    """`flat` (a TFLite flatbuffer; an appended zip is dropped) with the standard metadata for `contract`.

    Any previous TFLITE_METADATA entry is replaced in place.  The input/output tensors are read from the
    model itself and must agree with the contract (shape (1,S,S,3) / (1,C), dtypes, C == len(labels)),
    else ModelFileError naming `source`.  With `verify`, the rewritten model is run against the original on
    a probe input and must give bit-identical outputs.
    """
    if not is_tflite(flat):
        raise ModelFileError(f"{source}: not a TFLite model (missing 'TFL3' identifier)")
    flat = strip_contract(bytes(flat))
    schema = model_schema()
    model = unpack_model(schema, flat, source)
    if not model.subgraphs:
        raise ModelFileError(f"{source}: TFLite model has no subgraph")
    sg = model.subgraphs[0]
    ins, outs = list(sg.inputs if sg.inputs is not None else []), list(sg.outputs if sg.outputs is not None else [])
    if len(ins) != 1 or len(outs) != 1:
        raise ModelFileError(f"{source}: expected one input and one output tensor, got {len(ins)} and "
                             f"{len(outs)}")
    t_in, t_out = sg.tensors[int(ins[0])], sg.tensors[int(outs[0])]
    in_shape = [int(d) for d in (t_in.shape if t_in.shape is not None else [])]
    out_shape = [int(d) for d in (t_out.shape if t_out.shape is not None else [])]
    in_dtype, out_dtype = _dtype_name(schema, t_in.type), _dtype_name(schema, t_out.type)
    size, labels = int(contract.input_size), list(contract.labels)
    problems = []
    if in_shape != [1, size, size, 3]:
        problems.append(f"input shape {in_shape}, contract says [1, {size}, {size}, 3]")
    if out_shape != [1, len(labels)]:
        problems.append(f"output shape {out_shape}, contract has {len(labels)} labels")
    if in_dtype not in ("float32", "uint8"):
        problems.append(f"input dtype {in_dtype} (MediaPipe takes float32 or uint8 image tensors)")
    for what, declared, actual in (("input", contract.input_dtype, in_dtype),
                                   ("output", contract.output_dtype, out_dtype)):
        if declared and declared != actual:
            problems.append(f"contract says {what} dtype {declared}, the model's is {actual}")
    if problems:
        raise ModelFileError(f"{source}: model and contract disagree: {'; '.join(problems)}")
    if any(b.offset > 1 or b.size > 0 for b in model.buffers or []):
        raise ModelFileError(f"{source}: buffers stored outside the flatbuffer (the >2 GB model layout) are "
                             "not supported")

    meta = build_metadata(contract, input_dtype=in_dtype, output_dtype=out_dtype)
    aligned = aligned_buffer_class(schema)
    buffers = [aligned(data=b.data, offset=b.offset, size=b.size) for b in model.buffers or []]
    entry = None
    for m in model.metadata or []:
        name = m.name.decode("utf-8") if isinstance(m.name, bytes) else m.name
        if name == METADATA_FIELD_NAME:
            entry = m
    if entry is not None:
        buffers[entry.buffer] = aligned(data=np.frombuffer(meta, dtype=np.uint8))
    else:
        buffers.append(aligned(data=np.frombuffer(meta, dtype=np.uint8)))
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_FIELD_NAME, len(buffers) - 1
        model.metadata = list(model.metadata or []) + [entry]
    model.buffers = buffers

    import flatbuffers

    b = flatbuffers.Builder(len(flat) + len(meta) + 4096)
    b.Finish(model.Pack(b), TFLITE_IDENTIFIER)
    out = bytes(b.Output())
    if verify:
        _check_same_model(flat, out, source)
    return out


def _check_same_model(before: bytes, after: bytes, source: str) -> None:
    """The rewritten flatbuffer must be the same model: same tensors in/out, bit-identical outputs."""
    from ..core.quiet import native_stderr_captured
    from ..runtime import load_backend

    backend = load_backend()
    results = []
    for blob in (before, after):
        try:
            with native_stderr_captured():
                it = backend.interpreter_cls(model_content=blob, num_threads=1)
                it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{source}: the interpreter cannot load the model ({first_line(exc)})") from None
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=tuple(int(d) for d in inp["shape"]), dtype=np.uint8)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        results.append(((tuple(inp["shape"]), np.dtype(inp["dtype"]).name, tuple(inp["quantization"]),
                         tuple(out["shape"]), np.dtype(out["dtype"]).name, tuple(out["quantization"])),
                        np.array(it.get_tensor(out["index"]))))
        del it
    (spec_a, y_a), (spec_b, y_b) = results
    if spec_a != spec_b or not np.array_equal(y_a, y_b):
        raise WbcEdgeError(f"{source}: adding the metadata changed the model (tensors {spec_a} -> {spec_b}, "
                           "outputs differ); file left unchanged - please report this")
