"""The model adapting starts from: its file, its run directory and the class list its outputs mean.

Why a module of its own: a source can be a run directory or a bare .keras file, and the class list must come
from what was stored with it (run.json `labels`), never from a global - a lab's 3-class model adapts as a
3-class model.  Only models made before labels were stored fall back to the five WBC classes, and that
fallback is checked against the model's output count once it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..core.atomic import read_json
from ..core.errors import ModelFileError
from ..core.labels import Labels, legacy_labels, stored_labels


def resolve_source(source: str | Path) -> tuple[Path, Path | None, dict | None]:
    """(model.keras path, run directory or None, run.json contents or None) of a run dir or a .keras file."""
    src = Path(source).expanduser()
    if src.is_dir():
        model_path = src / "model.keras"
        if not model_path.is_file():
            raise ModelFileError(f"{src}: no model.keras in this run directory (pass a run directory or a "
                                 ".keras file)")
        run_dir = src
    elif src.is_file():
        model_path, run_dir = src, None
        if (src.parent / "run.json").is_file():
            run_dir = src.parent
    else:
        raise ModelFileError(f"{src}: source model not found")
    info = None
    if run_dir is not None and (run_dir / "run.json").is_file():
        info = read_json(run_dir / "run.json", ModelFileError, missing="not found", unreadable="not valid JSON")
    return model_path, run_dir, info


def source_labels(run_info: dict | None, where: str | Path) -> Labels:
    """The class list of the source model: run.json `labels` (in output order), else the five WBC classes.

    The fallback is for runs made before labels were stored; `check_outputs` refuses it for a model whose
    output count is not five."""
    labels = stored_labels((run_info or {}).get("labels"), f"{where}: run.json")
    return labels if labels is not None else legacy_labels(None, str(where))


def check_outputs(model, labels: Labels, model_path: str | Path, stored: bool) -> None:
    """The model must have one output per label; name what is wrong when it does not."""
    n_out = int(model.output_shape[-1])
    if n_out == len(labels):
        return
    if stored:
        raise ModelFileError(f"{model_path}: the model has {n_out} outputs but its run.json lists {len(labels)} "
                             f"labels ({', '.join(labels)})")
    raise ModelFileError(f"{model_path}: the model has {n_out} outputs and no stored class list (no run.json "
                         f"with 'labels' next to it); pass its run directory")
