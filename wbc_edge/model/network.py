"""MobileNetV2 classifier builder and safe loader (tf_keras).

Design choices that later stages rely on:
- Input is RGB pixels 0..255 as float32 (what `preprocess` produces, cast); a `Rescaling` layer maps them to
  MobileNetV2's [-1, 1] inside the graph.  So every consumer - training, calibration, TFLite runtime -
  feeds the same uint8 pixels, and an int8 TFLite model gets an input scale of ~1 (raw pixels).
- One flat functional graph (the backbone is built on our input tensor, not nested as a sub-model),
  because tfmot's quantize_model refuses nested models.
- No Lambda layers anywhere: models load in Keras safe mode, and nothing in a model file is executed.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..core.errors import ModelFileError, WbcEdgeError
from ..core.labels import WBC5_LABELS, Labels
from ..core.tfcompat import import_tf
from ..core.preprocess import DEFAULT_SIZE

IMAGENET_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
#: `ModelConfig.last_block` values: the 14x14 and 7x7 stages (at 224 px), as the cached mode's cuts; below a
#: run's cut (--finetune-from, 13 by default) the cut would fall above the end of the network (refused).
LAST_BLOCKS = tuple(range(10, 17))


@dataclass
class ModelConfig:
    alpha: float = 1.0
    input_size: int = DEFAULT_SIZE
    weights: str = "imagenet"  # "imagenet" | "none" | path to a no-top .h5
    #: A wider trained network whose strongest channels initialise this one (`narrow.narrow_into`); used with
    #: weights "none" (issue 33: small widths without their ImageNet file).
    narrow_from: str | None = None
    dropout: float = 0.2
    #: The last MobileNetV2 block kept (LAST_BLOCKS).  16 is the whole network (its 1x1 Conv_1 to 1280 channels);
    #: below that the blocks above are dropped and a 1x1 convolution to 4x the block's channels ("head_conv")
    #: ends the backbone.  Most parameters sit in the top blocks (1.0: 0.72 of 2.26 M up to block 13), so this
    #: is how a small file keeps the ImageNet start that only the 1.0 width has here (issue 33).
    last_block: int = 16
    #: Size of the softmax head.  Training sets it from the run's labels (the data's classes); the default is
    #: the five-class reference task, for models built without data (tests, benchmarks).
    num_classes: int = len(WBC5_LABELS)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_weights(weights: str | None, alpha: float) -> str | None:
    """Map the user's --weights value to what keras.applications accepts, with clear errors."""
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelFileError(
            f"{path}: weights file not found (expected a MobileNetV2 alpha={alpha} no-top Keras .h5 such as "
            f"{IMAGENET_WEIGHTS_FILE}, or 'imagenet' / 'none')")
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89HDF\r\n\x1a\n":
            raise ModelFileError(f"{path}: not an HDF5 (.h5) weights file")
    return str(path)


def build_model(cfg: ModelConfig | None = None):
    """Build the flat uint8-pixel -> softmax MobileNetV2 classifier (a tf_keras.Model)."""
    cfg = cfg or ModelConfig()
    tf, keras = import_tf()
    weights = resolve_weights(cfg.weights, cfg.alpha)
    size = int(cfg.input_size)
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    try:
        backbone = keras.applications.MobileNetV2(
            input_tensor=x, include_top=False, alpha=cfg.alpha, weights=weights)
    except ValueError as exc:
        raise ModelFileError(f"{cfg.weights}: cannot load weights for MobileNetV2 alpha={cfg.alpha}, "
                             f"{size}px ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # download failures surface as various URL/IO errors
        if weights == "imagenet":
            raise WbcEdgeError(
                "could not download the ImageNet MobileNetV2 weights (offline?): pass --weights PATH to a "
                f"local {IMAGENET_WEIGHTS_FILE}, or copy it to ~/.keras/models/ ({exc})") from None
        raise
    last = int(cfg.last_block)
    if last not in LAST_BLOCKS:
        raise WbcEdgeError(f"last block {last} is not one of {LAST_BLOCKS[0]}..{LAST_BLOCKS[-1]} (16: the whole "
                           "MobileNetV2)")
    if last == LAST_BLOCKS[-1]:
        features = backbone.output
    else:
        names = {layer.name for layer in backbone.layers}
        end = backbone.get_layer(f"block_{last}_add" if f"block_{last}_add" in names else f"block_{last}_project_BN")
        features = keras.layers.Conv2D(4 * int(end.output.shape[-1]), 1, name="head_conv")(end.output)
        features = keras.layers.ReLU(6.0, name="head_relu")(features)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    y = keras.layers.Dropout(cfg.dropout, name="head_dropout")(y)
    outputs = keras.layers.Dense(cfg.num_classes, activation="softmax", name="predictions")(y)
    cut = "" if last == LAST_BLOCKS[-1] else f"_b{last}"
    return keras.Model(inputs, outputs, name=f"wbc_mobilenetv2_{cfg.alpha:g}_{size}{cut}")


def model_input_size(model) -> int:
    """The square input size of a Keras model (the one place it is read from a model)."""
    shape = model.input_shape
    return int(shape[1])


# --- safe loading -------------------------------------------------------------------------------------

_UNSAFE_CLASSES = ("Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__")
#: The only modules a model config may name.  tf_keras imports the `module` of every serialised object with
#: importlib - even in safe mode - so an edited config.json naming any other module would run that module's
#: code (or hand an arbitrary function to a layer) while loading.
_SAFE_MODULE_ROOTS = ("keras", "tf_keras")


def _config_class_names(obj) -> set[str]:
    """Every class_name and registered_name in a Keras config (Keras falls back to registered_name)."""
    names: set[str] = set()
    if isinstance(obj, dict):
        for key in ("class_name", "registered_name"):
            if isinstance(obj.get(key), str):
                names.add(obj[key])
        for v in obj.values():
            names |= _config_class_names(v)
    elif isinstance(obj, list):
        for v in obj:
            names |= _config_class_names(v)
    return names


def _foreign_modules(obj) -> list[tuple[str, str]]:
    """(module, class_name) of every serialised object whose module is not Keras' own.  `builtins` is not
    exempt: it would hand eval/exec/open to a layer as a callable."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        mod = obj.get("module")
        if "module" in obj and mod is not None:
            root = mod.split(".")[0] if isinstance(mod, str) else None
            if root not in _SAFE_MODULE_ROOTS:
                out.append((str(mod), str(obj.get("class_name"))))
        for v in obj.values():
            out += _foreign_modules(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _foreign_modules(v)
    return out


def check_classifier(model, path: str | os.PathLike, labels: Labels | Sequence[str] | None = None) -> int:
    """Check that a loaded Keras model is a wbc-edge classifier: input (None, S, S, 3), output
    (None, len(labels)) - one probability per expected class (`labels`: the model's run's class list;
    None only for models made before labels were stored, which all have the five WBC classes).
    Returns S; raises ModelFileError naming the file otherwise."""
    labels = WBC5_LABELS if labels is None else labels
    num_classes = len(labels)
    try:
        in_shape = tuple(model.input_shape)
        out_shape = tuple(model.output_shape)
    except (AttributeError, ValueError, TypeError) as exc:  # several inputs/outputs: a list of shapes
        raise ModelFileError(f"{path}: expected one image input and one output ({exc})") from None
    if len(in_shape) != 4 or in_shape[3] != 3 or in_shape[1] is None or in_shape[1] != in_shape[2]:
        raise ModelFileError(f"{path}: expected input shape (None, S, S, 3) (a square RGB image), got "
                             f"{in_shape}")
    if len(out_shape) != 2 or out_shape[1] != num_classes:
        raise ModelFileError(f"{path}: expected output shape (None, {num_classes}) (one probability per "
                             f"class: {', '.join(labels)}), got {out_shape}")
    return int(in_shape[1])


def load_model(path: str | os.PathLike):
    """Load a reference `.keras` model in safe mode; refuse anything that would run code.

    Lambda layers (marshalled Python bytecode) and references to any module other than Keras' own are
    refused before Keras even parses the file, and Keras' own safe_mode is kept on.  Legacy .h5 full models
    are refused (they bypass safe mode).
    """
    p = check_model_file(path)
    tf, keras = import_tf()
    try:
        return keras.models.load_model(p, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = msg if len(msg) <= 300 else msg[:300] + " ..."
        raise ModelFileError(f"{p}: cannot load Keras model ({msg})") from None


def check_model_file(path: str | os.PathLike) -> Path:
    """The checks `load_model` makes before Keras parses anything, TensorFlow-free: a wrong, damaged or
    unsafe file fails in a fraction of a second, not after TensorFlow's start-up (6-7 s).  Returns the path."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: model file not found")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory; pass the .keras file (e.g. RUN_DIR/model.keras)")
    if p.suffix != ".keras":
        raise ModelFileError(f"{p}: expected a Keras v3 '.keras' model file (legacy .h5/SavedModel are not "
                             "loaded: they can carry code that safe mode cannot check)")
    try:
        with zipfile.ZipFile(p) as zf:
            config = json.loads(zf.read("config.json"))
        names, foreign = _config_class_names(config), _foreign_modules(config)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, RecursionError,
            OSError) as exc:
        raise ModelFileError(f"{p}: not a valid .keras model archive ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    unsafe = sorted(names & set(_UNSAFE_CLASSES))
    if unsafe:
        raise ModelFileError(f"{p}: refusing to load a model with {', '.join(unsafe)} layer(s): they contain "
                             "arbitrary Python code")
    if foreign:
        mod, cls = foreign[0]
        raise ModelFileError(f"{p}: refusing to load: its config refers to module '{mod}' (class '{cls}'); "
                             "only Keras' own layers are loaded (importing another module runs its code)")
    return p
