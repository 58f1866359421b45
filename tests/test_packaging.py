"""The supported Python versions are stated once and agree everywhere: setup.cfg's python_requires (what pip
enforces), the README's set-up line and ruff's target version; and the running interpreter is admitted.

Regression: setup.cfg said >=3.9 while the README said 3.10+ and the code uses 3.10-only syntax
(`zip(strict=True)`, `X | Y` unions at runtime), so pip installed the package where it cannot run.
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup_cfg_minimum() -> tuple[int, int]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    spec = cfg["options"]["python_requires"].strip()
    m = re.fullmatch(r">=\s*3\.(\d+)", spec)
    assert m, f"python_requires should be a plain lower bound '>=3.N', got {spec!r}"
    return 3, int(m.group(1))


def test_python_minimum_is_the_same_in_setup_cfg_readme_and_ruff():
    minimum = _setup_cfg_minimum()
    readme = re.findall(r"Python (\d+)\.(\d+)\+", (REPO / "README.md").read_text(encoding="utf-8"))
    assert readme, "README states no 'Python 3.N+' minimum"
    assert {tuple(map(int, v)) for v in readme} == {minimum}
    # (a regex, not tomllib: that is 3.11+, and this test must run on the minimum too)
    target = re.findall(r'^target-version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"),
                        re.M)
    assert target == [f"py{minimum[0]}{minimum[1]}"]
    assert minimum >= (3, 10), "the code uses zip(strict=True) and PEP 604 unions at runtime (3.10+)"


def test_python_requires_admits_the_running_interpreter():
    assert sys.version_info[:2] >= _setup_cfg_minimum()
