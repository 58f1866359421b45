"""Every command in the README and in docs/*.md names files that a fresh clone has (issue 30: the new-lab
commands named `runs/robust/robust_s3/...`, which only the machine that trained it had, and `Tecom=...`
placeholders; issue 34 moved most of the README's commands into docs/).

Checked statically, in a second: each shell block's commands are split into words; a word that is a path in
the repository (or in ../shared, the data every developer and CI run has beside it) must exist - or be
written by an earlier command of the same block (`--out`), or be a glob that matches.  Commands run from the
repository root, so their paths are relative to it in docs/ too.  Absolute and `~` paths are other machines'
(the multi-worker and Raspberry Pi examples) and are not checked.  Also: the README stays a five-minute read
(<= 200 lines, issue 34) and the relative links of these files lead to files (and headings) that exist."""

from __future__ import annotations

import fnmatch
import functools
import glob
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PLACEHOLDER = r"\b(RUN_DIR\d?|ROOT|MODELS?|LAB|CSV|DIR|NAME|PATH|IMAGE|FOLDER|FILE)\b"
COMMANDS = ("wbc-edge", ".venv/bin/wbc-edge", ".venv/bin/python", "python3", "sudo", "SHARED=", "pip")
#: the README and the guides split out of it (issue 34); paths relative to the repository
DOCS = ["README.md"] + sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
README_MAX_LINES = 200
#: the README's set-up section: exactly these two commands (`.ci/run` runs the same test command)
SETUP = ["python3 -m venv .venv && .venv/bin/pip install -e '.[train,dev]'", ".venv/bin/python -m pytest"]


def _blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        cmds = []
        for line in joined.splitlines():
            line = line.split(" #")[0].strip() if not line.strip().startswith("#") else ""
            if line and line.startswith(COMMANDS):
                cmds.append(line)
        out.append(cmds)
    return out


def _inline_commands(text: str) -> list[str]:
    """`wbc-edge ...` commands written inline in the prose (backticks), joined across line breaks."""
    flat = re.sub(r"\n", " ", text)
    found = re.findall(r"`((?:\.venv/bin/)?wbc-edge [^`]+)`", flat)
    # A synopsis (the commands table: `wbc-edge evaluate RUN_DIR/model.keras ROOT [--split ...]`) is not a
    # command to run: it has [options] or upper-case placeholders.
    return [c for c in found if "/" in c and "[" not in c and not re.search(PLACEHOLDER, c)]


def _path_words(cmd: str) -> list[tuple[str, bool]]:
    """(path-like word, is it an --out value) of a command."""
    words = shlex.split(cmd)
    out = []
    for i, w in enumerate(words):
        if i == 0 or w in ("&&", "|", ";"):
            continue
        value = w.split("=", 1)[1] if re.match(r"^[A-Za-z][\w ]*=", w) else w
        if words[i - 1] == "venv":
            out.append((value, True))
            continue
        if "/" not in value or value.startswith(("/", "~", "-", "http")) or "{" in value:
            continue
        out.append((value, words[i - 1] in ("--out", "--json", "--markdown", "--plot", "venv")))
    return out


@functools.lru_cache(maxsize=1)
def _tracked() -> frozenset[str] | None:
    """Files and folders git tracks, or None outside a git checkout (a source tarball: then what is on disk)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names: set[str] = set()
    for f in out.decode("utf-8", "replace").split("\0"):
        parts = f.split("/")
        names.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(names)


def _in_a_clone(word: str) -> bool:
    """Whether a fresh clone has this path: on disk is not enough, since an ignored `runs/...` folder exists only
    on the machine that trained it (CI failed on exactly that after it passed here)."""
    tracked = _tracked()
    path = word.rstrip("/")
    if path.startswith("./"):
        path = path[2:]
    if tracked is None or path.startswith("../"):
        return (REPO / path).exists()
    return path in tracked


def _glob_in_a_clone(pattern: str) -> bool:
    tracked = _tracked()
    if tracked is None or pattern.startswith("../"):
        return bool(glob.glob(str(REPO / pattern)))
    return any(fnmatch.fnmatchcase(name, pattern) for name in tracked)


def _problems(cmds: list[str]) -> list[str]:
    written: list[str] = [".venv"]  # the README's install command makes it
    bad = []
    for cmd in cmds:
        if re.search(r"=\.\.\.(\s|$)|\bLAB\b|<[a-z ]+>", cmd):
            bad.append(f"placeholder in: {cmd}")
        for word, is_out in _path_words(cmd):
            if is_out:
                written.append(word.rstrip("/"))
                continue
            if any(word == w or word.startswith(w + "/") for w in written):
                continue
            if word.startswith("../shared/") and not SHARED.is_dir():
                continue
            if any(ch in word for ch in "*?[") and _glob_in_a_clone(word):
                continue
            if not _in_a_clone(word):
                bad.append(f"{word} (in: {cmd})")
    return bad


@pytest.mark.parametrize("doc", DOCS)
def test_the_readmes_commands_name_files_a_clone_has(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    blocks = _blocks(text)
    bad = [p for cmds in blocks for p in _problems(cmds)]
    bad += _problems(_inline_commands(text))
    assert not bad, "\n".join(bad)


def test_the_parser_found_the_commands():
    blocks = {doc: _blocks((REPO / doc).read_text(encoding="utf-8")) for doc in DOCS}
    assert {"docs/RESULTS.md", "docs/DEPLOY.md", "docs/TRAINING.md", "docs/NEW_LAB.md"} <= set(blocks)
    assert sum(len(cmds) for bs in blocks.values() for cmds in bs) >= 10
    assert blocks["README.md"][0] == SETUP  # the set-up section: the two commands, as they are
    assert ".venv/bin/wbc-edge bench export/*.tflite --data samples/pbc_sample" in blocks["README.md"][1]


def test_the_readme_is_a_five_minute_read():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}: move detail into docs/)"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS + ["benchmarks/README.md"])
def test_relative_links_lead_to_files_that_exist(doc):
    """Text moved from the README into docs/ (issue 34) links relative to its new place: `../benchmarks/...`."""
    path = REPO / doc
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http:", "https:", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading with that anchor)")
    assert not bad, f"{doc}: " + "; ".join(bad)


@pytest.mark.parametrize("cmd, ok", [
    ("wbc-edge adapt runs/robust/robust_s3 LAB --out runs/lab", False),
    ("wbc-edge crossdomain export/reference/model.keras --data Tecom=... --out x", False),
    ("wbc-edge crossdomain export/wbc_int8.tflite --data samples/pbc_sample --out runs/r", True),
    ("wbc-edge bench runs/r/*.tflite --data samples/pbc_sample", True),
])
def test_the_check_itself_catches_a_missing_path_and_a_placeholder(cmd, ok):
    cmds = ["wbc-edge train samples/pbc_sample --out runs/r", cmd]
    assert (not _problems(cmds)) == ok


def test_a_path_only_this_machine_has_is_not_in_a_clone():
    """The check reads git's list, not the disk: `.venv` exists here and in CI, but a clone does not ship it."""
    if _tracked() is None or not (REPO / ".venv").is_dir():
        pytest.skip("needs a git checkout with its .venv")
    assert not _in_a_clone(".venv")
    assert _in_a_clone("README.md") and _in_a_clone("wbc_edge/") and _in_a_clone("../shared")
    assert _glob_in_a_clone("export/*.tflite") and not _glob_in_a_clone(".venv/*")
