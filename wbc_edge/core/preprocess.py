"""The one preprocessing path: file | PIL image | ndarray -> RGB uint8 (size, size, 3).

Training, calibration, evaluation and the on-device runtime all call `preprocess`, so the pixels a .tflite
model sees are bit-identical to the pixels the Keras model was trained on.  Normalisation to MobileNetV2's
[-1, 1] range lives inside the model graph, never here.  This module must not import TensorFlow: the
runtime (numpy + Pillow + LiteRT) reuses it on a Raspberry Pi.

Conversions, the same everywhere:
- EXIF orientation is applied (a phone photo rotated by its tag is seen upright).
- 16-bit grey/PNG is scaled to 8 bit by its full range (>> 8), palette/grey/CMYK/YCbCr become RGB.
- Transparency is composited over white (a slide's empty background), not dropped to black.
- Resize: Pillow bilinear with antialiasing to exactly (size, size) - PBC cells are centred in a nearly
  square crop, so no cropping is done and nothing of the cell is cut off.
"""

from __future__ import annotations

import errno
import os
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError, first_line

PREPROCESS_VERSION = "wbc-edge-preprocess-1 (EXIF transpose, RGB, alpha over white, PIL bilinear resize)"
DEFAULT_SIZE = 224
RESAMPLE = Image.Resampling.BILINEAR
# Refuse decompression bombs before decoding: 50 Mpx is ~150 MB of RGB, far above any microscope crop.
MAX_PIXELS = 50_000_000
# Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS (~89 Mpx), already past our own limit,
# which refuses such an image with a one-line error: the warning only adds noise to that error.  A filter
# for this one warning class, set once at import (catch_warnings per call is not thread-safe).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "TIFF"})

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(src: str | os.PathLike | Image.Image, *, max_pixels: int | None = None) -> Image.Image:
    """Decode a file (or take a PIL image) and return a fully loaded RGB PIL image.

    Raises BadImageError(path, reason) - one line, naming the file - for anything that is not a decodable
    JPEG/PNG/BMP/TIFF of sane size.  `max_pixels` defaults to the module's MAX_PIXELS (read at call time).
    """
    if isinstance(src, Image.Image):
        return to_rgb(src)
    if max_pixels is None:
        max_pixels = MAX_PIXELS
    path = Path(src)
    try:
        if path.is_dir():
            raise BadImageError(path, "is a directory, not an image")
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        # Pillow itself raises DecompressionBombError above 2 x Image.MAX_IMAGE_PIXELS (~179 Mpx) while
        # opening; our own, lower limit is checked on the header below, before any pixel is decoded.  (No
        # warnings.catch_warnings() here: it is not thread-safe, and scan_dataset decodes in threads.)
        with Image.open(path) as im:
            if im.format not in ACCEPTED_FORMATS:
                raise BadImageError(path, f"unsupported image format {im.format} "
                                          f"(accepted: JPEG, PNG, BMP, TIFF)")
            w, h = im.size
            if w * h > max_pixels:
                raise BadImageError(path, f"image too large ({w}x{h} = {w * h:,} pixels > {max_pixels:,} "
                                          "pixel limit; decompression bomb?)")
            if w < 1 or h < 1:
                raise BadImageError(path, f"image has no pixels ({w}x{h})")
            im.load()
            return to_rgb(im)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image (cannot identify image file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, f"image too large, decompression bomb refused ({first_line(exc)})") from None
    except PermissionError:
        raise BadImageError(path, "permission denied") from None
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadImageError(path, "symlink loop (the link points back to itself)") from None
        if exc.errno is not None:  # the OS could not read the file (EIO, EACCES on a parent, ...)
            raise BadImageError(path, f"cannot read file ({exc.strerror or first_line(exc)})") from None
        # Pillow's decoders raise errno-less OSErrors: "image file is truncated", "broken data stream", ...
        raise BadImageError(path, f"corrupt or truncated image ({first_line(exc)})") from None
    except (SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise BadImageError(path, f"corrupt image ({type(exc).__name__}: {first_line(exc)})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, the same way for every consumer (see module docstring)."""
    im = ImageOps.exif_transpose(im) or im
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.uint32 if mode == "I" else np.uint16)
        if mode == "I" and arr.max(initial=0) <= 255:
            arr8 = arr.astype(np.uint8)
        else:
            arr8 = (arr.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def preprocess(src: ImageSource, size: int = DEFAULT_SIZE) -> np.ndarray:
    """file path | PIL image | ndarray (HxW, HxWx1/3/4, uint8) -> uint8 array (size, size, 3), RGB."""
    if isinstance(src, np.ndarray):
        im = _array_to_image(src)
    else:
        im = load_image(src)
    if im.size != (size, size):
        im = im.resize((size, size), RESAMPLE)
    out = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(out)


def preprocess_batch(sources, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Stack `preprocess` over many sources -> uint8 (N, size, size, 3)."""
    sources = list(sources)
    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    for i, s in enumerate(sources):
        out[i] = preprocess(s, size)
    return out


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise BadImageError(None, f"array input must be uint8 RGB pixels 0..255, got dtype {arr.dtype} "
                                  "(convert explicitly; floats in [0,1] would be silently wrong)")
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))
    raise BadImageError(None, f"array input must be HxW or HxWx{{1,3,4}}, got shape {arr.shape}")
