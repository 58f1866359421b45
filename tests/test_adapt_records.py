"""The adapt recipe-development records (benchmarks/adapt/dev/) must be what their scripts give from the committed
per-run records: a table edited by hand, or a run record changed after its table was written, fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "benchmarks" / "adapt" / "dev"


def _run(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "adapt" / script), *args],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_val_test_agreement_record_is_reproduced_from_the_run_records():
    out = _run("dev_agreement.py")
    assert out.strip() == (DEV / "agreement.md").read_text().strip()
    assert "36 (variant, set, k) pairs" in out


def test_each_recent_screen_table_is_the_comparison_of_its_runs():
    for name, cand in (("views12", "v12"), ("basic_views", "basic"), ("cut15", "c15"), ("views3", "v3")):
        record = (DEV / f"{name}.md").read_text()
        label = {"v12": "aug_views 12", "basic": "basic views", "c15": "cut 15", "v3": "aug_views 3"}[cand]
        table = _run("dev_compare.py", "--candidate", f"{DEV / (name + '_runs.jsonl')}:{cand}",
                     "--baseline", f"{DEV / 'swa_runs.jsonl'}:swa", "--name", label)
        assert table.strip() in record, name
