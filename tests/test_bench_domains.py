"""`wbc-edge bench --domain`: agreement with the reference on other labs' folders, gated, in the report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from wbc_edge.cli import main


def test_bench_domains_are_reported_and_gated(tiny_tflite, sample_root, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", str(tiny_tflite["float32"]), str(tiny_tflite["int8"]), "--data", str(sample_root),
            "--limit", "5", "--runs", "2", "--warmup", "0", "--batch-throughput-images", "0", "--no-ttfp",
            "--domain", f"labA={sample_root}", "--json", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    dom = result["domains"]["domains"][0]
    assert dom["name"] == "labA" and dom["n"] == 40
    int8 = dom["results"][str(tiny_tflite["int8"])]
    assert 0 <= int8["agreement_pct"] <= 100
    assert "## Other domains" in res.output and "labA" in res.output
    # An impossible agreement threshold fails the gate, naming the domain.
    res = CliRunner().invoke(main, args + ["--min-agreement", "100"])
    if int8["agreement_pct"] < 100:
        assert res.exit_code == 1 and "on labA" in res.output
    else:
        assert res.exit_code == 0
