"""Tables in the docs that are copies of a measured result: each between

    <!-- include: benchmarks/two_labs/report.md -->
    ... (written by this script: every Markdown table of that file, in order) ...
    <!-- end: include -->

in any docs/*.md, README.md or benchmarks/**/README.md.  The result file is what the measuring script wrote
(report.py, screens.py, table.py, ...); this script copies its tables, so a doc never holds a number typed by hand
for a result that has a file.  `--check` writes nothing and exits 1 when a block differs from its source
(tests/test_generated_tables.py runs it).

    .venv/bin/python benchmarks/docs_includes.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- include: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- end: include -->)", re.S)


def docs() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "benchmarks").rglob("README.md"))]
    return [p for p in found if p.is_file()]


def tables_of(src: Path) -> str:
    """Every Markdown table of `src`, in order, separated by one blank line."""
    out, current = [], []
    for line in src.read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return "\n\n".join(out) + "\n"


def render(text: str, where: Path) -> tuple[str, list[str]]:
    """(the text with every include block refreshed, problems: a missing source or one without a table)."""
    problems: list[str] = []

    def fill(m: re.Match) -> str:
        src = REPO / m.group("src")
        if not src.is_file():
            problems.append(f"{where.relative_to(REPO)}: include source {m.group('src')} not found")
            return m.group(0)
        body = tables_of(src)
        if not body.strip():
            problems.append(f"{where.relative_to(REPO)}: {m.group('src')} has no table")
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text), problems


def run(check: bool) -> list[str]:
    """The stale or broken blocks (check) / the files rewritten (write)."""
    found: list[str] = []
    for path in docs():
        text = path.read_text(encoding="utf-8")
        if "<!-- include:" not in text:
            continue
        new, problems = render(text, path)
        found += problems
        if new != text:
            if check:
                found.append(f"{path.relative_to(REPO)}: an include block differs from its source")
            else:
                path.write_text(new, encoding="utf-8")
                found.append(f"rewrote {path.relative_to(REPO)}")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    found = run(a.check)
    print("\n".join(found) if found else "all include blocks current")
    sys.exit(1 if a.check and found else 0)


if __name__ == "__main__":
    main()
