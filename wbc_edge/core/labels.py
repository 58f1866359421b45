"""The class list of a dataset, a run and a model: read from the data, then carried by every stage.

A model's output vector is indexed by its label list, so the list is decided once - from the class folder
names when training starts - and then stored (split manifest rows, run.json, the model contract's
labels.txt) and read back by every later stage instead of being assumed.  Folder names are canonicalised
so that common spellings of the five WBC classes ("Neutrophils", "EOS", "lymph") meet the same class, and
the order is alphabetical by canonical name: the 5-class PBC set therefore keeps the order
basophil, eosinophil, lymphocyte, monocyte, neutrophil that every earlier model was trained with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from .errors import DatasetError, ModelFileError, WbcEdgeError

#: The five white-blood-cell classes of the reference task (and of every model shipped so far).
WBC5: tuple[str, ...] = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")

#: Common spellings of the five WBC classes (and of PBC's other three) -> canonical name.  Keys are
#: compared after `_normalise` (lower case, runs of space/hyphen/dot -> "_").
ALIASES: dict[str, str] = {
    **{k: "basophil" for k in ("basophils", "baso", "basos", "ba")},
    **{k: "eosinophil" for k in ("eosinophils", "eos", "eo", "eosino")},
    **{k: "lymphocyte" for k in ("lymphocytes", "lymph", "lymphs", "lym", "ly", "lympho")},
    **{k: "monocyte" for k in ("monocytes", "mono", "monos", "mo")},
    **{k: "neutrophil" for k in ("neutrophils", "neut", "neuts", "neu", "ne", "neutrophile", "segmented_neutrophil",
                                 "seg_neutrophil", "neutrophil_segmented")},
    **{k: "erythroblast" for k in ("erythroblasts", "erb", "nrbc")},
    **{k: "ig" for k in ("immature_granulocyte", "immature_granulocytes", "igs")},
    **{k: "platelet" for k in ("platelets", "plt", "thrombocyte", "thrombocytes")},
}

_MAX_NAME = 64


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")


def canonical_name(name: str) -> str:
    """The canonical class name of a folder or label name: an alias' target, else the normalised name."""
    key = _normalise(name)
    return ALIASES.get(key, key)


def _check_name(name: str, where: str) -> None:
    if not name:
        raise DatasetError(f"{where}: empty class name")
    if len(name) > _MAX_NAME or not name.isprintable() or "/" in name or "\\" in name:
        raise DatasetError(f"{where}: class name {name!r} is not usable (printable, no slashes, "
                           f"at most {_MAX_NAME} characters)")


@dataclass(frozen=True)
class Labels:
    """An ordered list of class names; position = index in the model's output vector."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if len(names) < 2:
            raise DatasetError(f"a classifier needs at least two classes, got {list(names)}")
        for n in names:
            _check_name(n, "labels")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DatasetError(f"labels: class {dup[0]!r} appears twice in {list(names)}")

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_names(cls, names: Iterable[str], *, where: str = "labels") -> "Labels":
        """Canonicalise names (aliases merged) and sort them: the order a dataset's folders give.

        Two names that mean the same class (e.g. 'Neutrophil' and 'neutrophils') are an error, not a merge:
        the user should merge the folders knowingly."""
        seen: dict[str, str] = {}
        for raw in names:
            canon = canonical_name(raw)
            _check_name(canon, f"{where}: {raw!r}")
            if canon in seen:
                raise DatasetError(f"{where}: '{seen[canon]}' and '{raw}' both mean class '{canon}'; merge them")
            seen[canon] = raw
        return cls(tuple(sorted(seen)))

    @classmethod
    def from_list(cls, names: Sequence[str]) -> "Labels":
        """An already-ordered stored list (labels.txt, run.json, a contract): the order is kept as is."""
        return cls(tuple(str(n) for n in names))

    # -- use -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getitem__(self, i: int) -> str:
        return self.names[i]

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        """Index of a canonical name; DatasetError naming the known classes if it is not one."""
        try:
            return self.names.index(name)
        except ValueError:
            raise DatasetError(f"unknown label {name!r} (known: {', '.join(self.names)})") from None

    def lookup(self, name: str) -> str | None:
        """The canonical class a folder/label name means, if it is one of these labels, else None."""
        canon = canonical_name(name)
        return canon if canon in self.names else None

    def to_list(self) -> list[str]:
        return list(self.names)

    def is_wbc5(self) -> bool:
        return self.names == WBC5


#: The labels of every model trained on the 5-class reference set; a default only where nothing is stored
#: (models and runs made before labels were stored).
WBC5_LABELS = Labels(WBC5)


def stored_labels(raw, where: str) -> Labels | None:
    """A run's stored class list (run.json / config.json `labels`), checked; None when it stores none.

    The one reading of a stored list, so that export, adapt, bench and evaluate refuse the same bad lists with
    the same message."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ModelFileError(f"{where}: labels must be a list of class names, got {raw!r}")
    try:
        return Labels.from_list(raw)
    except WbcEdgeError as exc:
        raise ModelFileError(f"{where}: labels: {exc}") from None


def legacy_labels(num_outputs: int | None, where: str, hint: str = "pass its run directory") -> Labels:
    """The class list of a model whose run stored none: the five WBC classes, what every model made before
    labels were stored was trained on - refused when the model is known to have another number of outputs."""
    if num_outputs is None or num_outputs == len(WBC5):
        return WBC5_LABELS
    raise ModelFileError(f"{where}: {num_outputs} outputs and no stored labels ({hint})")
