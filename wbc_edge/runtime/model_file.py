"""Reading a .tflite file before any interpreter sees it: is it a TFLite flatbuffer at all, what does its
embedded contract say, and is the flatbuffer structurally sound?

Why a separate step: an interpreter handed a Keras archive, an image or a truncated download either fails
with an opaque message or (tflite-runtime 2.14 on 32-bit Pi OS) crashes the process.  Every problem found
here is a one-line ModelFileError that names the file and says what it looks like instead.
"""

from __future__ import annotations

from pathlib import Path

from ..core.contract import ModelContract, is_tflite, read_contract, strip_contract
from ..core.errors import ModelFileError, first_line
from .tflite_check import flatbuffer_problem

__all__ = ["read_model_file", "read_model_bytes", "describe_bytes", "read_embedded_contract"]


def read_model_file(path: Path) -> ModelContract | None:
    """Check `path` is a sound .tflite file; return its embedded contract (None when it has none)."""
    data = read_model_bytes(path)
    contract = read_embedded_contract(path, data)
    # Bounds-check the flatbuffer first: tflite-runtime 2.14 (32-bit Pi OS) does not verify it and a
    # truncated file would crash the process (wbc_edge.runtime.tflite_check).
    problem = flatbuffer_problem(strip_contract(data))
    if problem:
        raise ModelFileError(f"{path}: not a loadable TFLite model (corrupt or truncated?): {problem}")
    return contract


def read_model_bytes(path: Path) -> bytes:
    """The file's bytes; ModelFileError when it is missing, a folder, unreadable or not a TFLite model."""
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected a .tflite file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({first_line(exc)})") from None
    if not is_tflite(data):
        raise ModelFileError(f"{path}: not a TFLite model ({describe_bytes(data)}; expected a .tflite "
                             "flatbuffer with the 'TFL3' identifier)")
    return data


def describe_bytes(data: bytes) -> str:
    """What a file that is not a TFLite model probably is ("a zip archive - a Keras .keras model?")."""
    if not data:
        return "empty file"
    if data[:4] == b"PK\x03\x04":
        return "a zip archive - a Keras .keras model?"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file - a Keras .h5 model?"
    if data[:2] in (b"\xff\xd8", b"\x89P") or data[:4] in (b"GIF8", b"II*\x00", b"MM\x00*"):
        return "an image file"
    if len(data) < 8:
        return f"only {len(data)} bytes"
    try:
        data[:512].decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "unknown binary content"


def read_embedded_contract(path: Path, data: bytes) -> ModelContract | None:
    """The contract embedded in `data` (None without one); a broken one is a ModelFileError naming `path`."""
    try:
        return read_contract(data)
    except ModelFileError as exc:
        msg = str(exc)
        if msg.startswith("<bytes>: "):
            msg = msg[len("<bytes>: "):]
        raise ModelFileError(f"{path}: {msg}") from None
    except (TypeError, ValueError) as exc:  # a contract with unknown/invalid field values
        raise ModelFileError(f"{path}: embedded contract is invalid ({first_line(exc)})") from None
