"""Artifact files: atomic writes (a temp file in the target directory, fsync, then os.replace) and the
sha256 that names them in run.json / manifest.json / bench results.

An interrupted or failed write (Ctrl-C, disk full) therefore never leaves a truncated file under the final
name; the previous version, if any, stays intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`, on error delete it.

    For writers that insist on a file name (Keras' model.save, matplotlib's savefig).  `suffix` defaults
    to the target's suffix, because some writers choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix="".join(path.suffixes) if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            # mkstemp creates 0600 files; artifacts get the usual permissions (0666 minus the umask).
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)  # make the rename itself durable (power loss), where the OS allows
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            if tmp_path.is_dir():
                import shutil

                shutil.rmtree(tmp_path, ignore_errors=True)
            else:
                tmp_path.unlink()
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp_path)):
            exc.filename = str(path)  # "disk full" names the artifact, not a temp file that no longer exists
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike, error_cls: type[Exception], *, missing: str, unreadable: str):
    """The JSON value in a file, or a one-line `error_cls` naming the file: "`path`: `missing`" when it does
    not exist, "`path`: `unreadable` (reason)" when it cannot be read or parsed.  The one reader behind
    manifests, bench results and run.json, so every caller reports a bad file the same way."""
    from .errors import first_line

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error_cls(f"{p}: {missing}") from None
    except (OSError, ValueError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise error_cls(f"{p}: {unreadable} ({first_line(exc)})") from None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed (models and manifests are recorded by their hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
