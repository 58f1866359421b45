"""The generated bench tables are what the recorded bench JSON gives now (issue 34): the headline table in
README.md, the full one in docs/RESULTS.md and the bench's own in benchmarks/README.md, each between
`<!-- generated: bench ... -->` and `<!-- end: bench -->`, written by benchmarks/readme_bench_tables.py.

Fast and without TensorFlow: the script reads one JSON and three Markdown files.  Regenerate with
`.venv/bin/python benchmarks/readme_bench_tables.py` after a re-record."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "readme_bench_tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_bench_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_block_is_current(tables):
    assert tables.DEFAULT_RECORD.is_file()
    assert [rel for rel, _ in tables.TARGETS] == ["README.md", "docs/RESULTS.md", "benchmarks/README.md"]
    stale = tables.check()
    assert not stale, ("stale generated tables (run .venv/bin/python benchmarks/readme_bench_tables.py): "
                       + "; ".join(stale))


def test_the_readme_holds_the_headline_and_results_the_full_table(tables):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    results = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    block = readme.split(tables.START)[1].split(tables.END)[0]
    assert "`wbc_int8.tflite`" in block and "wbc_qat_int8" not in block  # the headline: a few rows
    full = results.split(tables.START)[1].split(tables.END)[0]
    assert all(f"wbc_{v}.tflite" in full for v in tables.ORDER)


def test_check_names_a_stale_or_missing_block_and_writes_nothing(tables, tmp_path):
    for rel, _ in tables.TARGETS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, tmp_path / rel)
    assert tables.check(repo=tmp_path) == []
    results = tmp_path / "docs" / "RESULTS.md"
    edited = results.read_text(encoding="utf-8").replace("98.78 %", "99.99 %")
    results.write_text(edited, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace(tables.END, ""), encoding="utf-8")
    stale = tables.check(repo=tmp_path)
    assert [s.split(" ")[0] for s in stale] == ["README.md", "docs/RESULTS.md"]
    assert results.read_text(encoding="utf-8") == edited  # check mode wrote nothing
    (tmp_path / "README.md").write_text((REPO / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    assert tables.write(repo=tmp_path) == ["docs/RESULTS.md"]
    assert tables.check(repo=tmp_path) == []


def test_the_command_line_check_exits_0_when_current():
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stale: nothing" in r.stdout


def test_included_result_tables_are_copies_of_their_source_files(tmp_path, monkeypatch):
    """benchmarks/docs_includes.py: a doc's `<!-- include: FILE -->` block holds FILE's tables as the measuring
    script wrote them; --check names a block that drifted, or one whose source is gone, and writes nothing."""
    spec = importlib.util.spec_from_file_location("docs_includes", REPO / "benchmarks" / "docs_includes.py")
    inc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inc)
    assert inc.run(check=True) == [], "stale include blocks: run .venv/bin/python benchmarks/docs_includes.py"
    assert any("<!-- include:" in p.read_text(encoding="utf-8") for p in inc.docs())

    (tmp_path / "docs").mkdir()
    (tmp_path / "res.md").write_text("# r\n\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nmore\n\n| c |\n|---|\n")
    doc = tmp_path / "docs" / "X.md"
    doc.write_text("x\n<!-- include: res.md -->\n| a | b |\n|---|---|\n| 1 | 9 |\n<!-- end: include -->\n")
    monkeypatch.setattr(inc, "REPO", tmp_path)
    assert inc.run(check=True) == ["docs/X.md: an include block differs from its source"]
    assert "| 1 | 9 |" in doc.read_text()  # check mode wrote nothing
    assert inc.run(check=False) == ["rewrote docs/X.md"]
    assert doc.read_text() == ("x\n<!-- include: res.md -->\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| c |\n|---|\n"
                               "<!-- end: include -->\n")
    (tmp_path / "res.md").unlink()
    assert inc.run(check=True) == ["docs/X.md: include source res.md not found"]
