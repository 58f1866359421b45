"""wbc_edge.bench + `wbc-edge bench` (run / merge) + the benchmark_model parser and adb script.

Tiny .tflite models are made here from conftest's `discriminative_tiny_model_path` (float32 and full-int8
with uint8 I/O, contracts embedded), plus a deliberately broken copy of the int8 model whose embedded
labels are rotated (a wrong contract: every prediction is relabelled), which must trip the gate.
Without TensorFlow set WBC_EDGE_TEST_TFLITE_DIR to a folder with tiny_float32.tflite / tiny_int8.tflite
(benchmarks/arm/make_tiny_models.py); the Keras-reference test then skips.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import import_blocker
from click.testing import CliRunner

from wbc_edge import bench
from wbc_edge.bench import (LATENCY_KEYS, RESULT_KEYS, ROW_KEYS, SCHEMA_VERSION, VARIANT_KEYS, BenchConfig,
                            merge, run_bench, to_markdown)
from wbc_edge.bench.android import parse_benchmark_model, to_result
from wbc_edge.core.contract import embed_contract, read_contract
from wbc_edge.core.errors import WbcEdgeError
from wbc_edge.core.labels import WBC5 as CLASSES

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "benchmark_model"
PREMADE = os.environ.get("WBC_EDGE_TEST_TFLITE_DIR")
SUBPROCESS_PYTHON = os.environ.get("WBC_EDGE_TEST_PYTHON", sys.executable)
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
FAST = ["--runs", "3", "--warmup", "1", "--batch-throughput-images", "4"]


# ------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tflite) -> dict:
    """{'dir', 'float32', 'int8', 'permuted', 'keras' (or None)}: files in one export-like folder."""
    out = tmp_path_factory.mktemp("bench_models")
    for v in ("float32", "int8"):
        shutil.copyfile(tiny_tflite[v], out / f"wbc_{v}.tflite")
    keras_path = tiny_tflite["keras"]
    # the broken model: int8 with its embedded labels rotated by one (a wrong contract)
    data = (out / "wbc_int8.tflite").read_bytes()
    c = read_contract(data)
    c.labels = list(CLASSES[1:]) + [CLASSES[0]]
    broken = out / "broken" / "int8_wrong_labels.tflite"
    broken.parent.mkdir()
    broken.write_bytes(embed_contract(data, c))
    return {"dir": out, "float32": out / "wbc_float32.tflite", "int8": out / "wbc_int8.tflite",
            "permuted": broken, "keras": keras_path}


@pytest.fixture()
def cli():
    from wbc_edge.cli import main

    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def _load(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------------
# run: gate, schema, markdown
# ------------------------------------------------------------------------------------------------------

def test_gate_passes_on_good_models(cli, models, sample_root, tmp_path):
    out = tmp_path / "good.json"
    res = cli("bench", models["float32"], models["int8"], "--data", sample_root, *FAST, "--json", out,
              "--max-accuracy-drop", "30", "--min-agreement", "60")
    assert res.exit_code == 0, res.output
    r = _load(out)
    assert r["gate"] == {"max_accuracy_drop_pp": 30.0, "min_agreement_pct": 60.0, "checked": True,
                         "passed": True, "failures": []}
    assert r["reference"]["name"] == "float32" and r["reference"]["how"] == "the float32 .tflite among MODELS"
    f32 = next(v for v in r["variants"] if v["name"] == "float32")
    assert f32["is_reference"] and f32["parity"]["agreement_pct"] == 100.0


def test_gate_trips_on_wrong_labels(cli, models, sample_root, tmp_path):
    out, md = tmp_path / "bad.json", tmp_path / "bad.md"
    res = cli("bench", models["float32"], models["int8"], models["permuted"], "--data", sample_root, *FAST,
              "--json", out, "--markdown", md, "--max-accuracy-drop", "30", "--min-agreement", "60")
    assert res.exit_code == 1, res.output
    msg = [x for x in res.output.splitlines() if x.startswith("Gate FAILED")]
    assert len(msg) == 1 and "int8_wrong_labels" in msg[0], res.output
    assert re.search(r"accuracy drop \d+\.\d\d pp > 30 pp", msg[0])
    assert re.search(r"agreement \d+\.\d\d% < 60%", msg[0])
    r = _load(out)  # written before the exit
    assert md.is_file() and "**FAILED**" in md.read_text()
    assert r["gate"]["passed"] is False
    assert [f["variant"] for f in r["gate"]["failures"]] == ["int8_wrong_labels"]
    bad = next(v for v in r["variants"] if v["name"] == "int8_wrong_labels")
    good = next(v for v in r["variants"] if v["name"] == "wbc_int8")  # duplicate variant: file stems
    # same outputs, relabelled: every top-1 moves one class on, so it never agrees with the reference
    assert bad["parity"]["agreement_pct"] < 25 and good["parity"]["agreement_pct"] >= 60
    assert bad["parity"]["n_disagreements"] == len(bad["parity"]["disagreements"]) > 0
    d = bad["parity"]["disagreements"][0]
    assert set(d) == {"path", "true", "reference_label", "reference_conf", "variant_label", "variant_conf"}
    assert CLASSES.index(d["variant_label"]) != CLASSES.index(d["reference_label"])
    assert (REPO / "samples" / "pbc_sample" / d["path"]).is_file()


def test_json_schema_is_stable(models, sample_root, tmp_path):
    # an export manifest.json beside the float32 file: its Keras parity record is carried into the result
    export = tmp_path / "export"
    export.mkdir()
    for k in ("float32", "int8"):
        shutil.copyfile(models[k], export / models[k].name)
    parity = {"n": 10, "agreement_pct": 100.0, "delta_accuracy_pp": 0.0, "max_abs_dprob": 1e-6}
    (export / "manifest.json").write_text(json.dumps({
        "parity_reference": {"split": "test", "n": 10, "keras_accuracy": 0.9},
        "variants": [{"variant": "float32", "file": "wbc_float32.tflite", "status": "ok", "reason": None,
                      "parity": parity, "sha256": "x"}]}))
    r = run_bench(BenchConfig([export / "wbc_float32.tflite", export / "wbc_int8.tflite"], data=sample_root,
                              threads=(1, 2), runs=3, warmup=1, batch_throughput_images=4, ttfp=False))
    json.dumps(r)  # plain JSON types only
    assert tuple(r) == RESULT_KEYS
    assert r["schema_version"] == SCHEMA_VERSION == 1 and r["kind"] == "wbc-edge-bench"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", r["created"])
    s = r["system"]
    assert all(isinstance(s[k], str) and s[k] for k in ("device", "cpu", "arch", "os"))
    assert isinstance(s["cpu_flags"], list)
    sw = r["software"]
    assert sw["runtime_backend"] == "ai-edge-litert" and sw["runtime_backend_version"]
    assert sw["python"] and sw["numpy"] == np.__version__
    d = r["data"]
    assert d["n_images"] == 40 and re.fullmatch(r"[0-9a-f]{64}", d["sha256"]) and d["split_manifest"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", d["images_sha256"]) and sum(d["class_counts"].values()) == 40
    assert r["reference"]["export_parity"]["parity"] == parity
    assert r["reference"]["export_parity_reference"]["keras_accuracy"] == 0.9
    assert len(r["variants"]) == 2
    for v in r["variants"]:
        assert tuple(v) == VARIANT_KEYS
        assert isinstance(v["size_mb"], float) and re.fullmatch(r"[0-9a-f]{64}", v["sha256"])
        assert v["labels"] == list(CLASSES) and v["input_size"] > 0
        p = v["parity"]
        for k in ("accuracy", "balanced_accuracy", "macro_f1", "delta_accuracy_pp", "agreement_pct",
                  "mean_abs_dprob", "max_abs_dprob"):
            assert isinstance(p[k], float), k
        assert set(p["per_class_recall_delta_pp"]) == set(CLASSES)
        assert [lat["threads"] for lat in v["latency"]] == [1, 2]
        for lat in v["latency"]:
            assert tuple(lat) == LATENCY_KEYS
            assert lat["runs"] == 3 and lat["warmup"] == 1 and lat["throughput_images"] == 4
            assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
            assert lat["throughput_img_s"] > 0 and lat["load_ms"] > 0 and lat["xnnpack"] is True
            assert lat["backend"] == "ai-edge-litert"
            dlg = lat["delegate"]
            assert dlg["partitions"] >= 1 and 0 < dlg["ops_delegated"] <= dlg["ops_total"]
            if os.path.exists("/proc/self/statm"):
                assert lat["rss_after_mb"] > 0 and lat["process_peak_rss_mb"] >= lat["rss_after_mb"] * 0.5
    assert len(r["rows"]) == 4
    for row in r["rows"]:
        assert tuple(row) == ROW_KEYS
    assert r["memory"]["process_peak_rss_mb"] > 0 and "process-wide" in r["memory"]["note"]
    assert r["gate"]["checked"] is False and r["gate"]["passed"] is True
    assert r["ttfp"] is None


def test_markdown_has_a_row_per_variant_and_thread_count(cli, models, sample_root, tmp_path):
    md = tmp_path / "r.md"
    res = cli("bench", models["float32"], models["int8"], "--data", sample_root, *FAST, "--threads", "1,2",
              "--markdown", md)
    assert res.exit_code == 0, res.output
    text = md.read_text()
    main_table = text.split("## Parity")[0]
    assert "| Variant | Size MB | Acc | ΔAcc pp | Agree | p50 ms | p90 ms | img/s | threads |" in text
    for name in ("float32 (ref)", "int8"):
        rows = [x for x in main_table.splitlines() if x.startswith(f"| {name} | ")]
        assert [x.rstrip(" |").rsplit("| ", 1)[-1] for x in rows] == ["1", "2"], text
    assert text in res.output  # also printed


def test_split_manifest_limit_and_plot(models, sample_root, sample_split_csv, tmp_path):
    r = run_bench(BenchConfig([models["float32"], models["permuted"]], data=sample_root,
                              split_manifest=sample_split_csv, split="test", limit=5, runs=2, warmup=0,
                              batch_throughput_images=0, ttfp=False))
    d = r["data"]
    assert d["split"] == "test" and d["n_images"] == 5 and d["limit"] == 5
    assert d["sha256"] == hashlib.sha256(Path(sample_split_csv).read_bytes()).hexdigest()
    assert d["class_counts"] == {c: 1 for c in CLASSES}  # class-balanced subset
    assert r["variants"][1]["latency"][0]["throughput_img_s"] is None
    png = tmp_path / "acc_vs_latency.png"
    pytest.importorskip("matplotlib")
    bench.plot(r, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_manifest_is_verified(models, sample_root, sample_split_csv, tmp_path):
    """A manifest whose files are missing under --data, or whose split lacks a class, is a DatasetError
    (as in evaluate), not images silently "skipped"."""
    from wbc_edge.data import SplitManifest
    from wbc_edge.core.errors import DatasetError

    manifest = SplitManifest.load(sample_split_csv)
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    (root / manifest.paths("test")[0]).unlink()
    cfg = dict(split_manifest=sample_split_csv, split="test", runs=1, warmup=0, batch_throughput_images=0,
               ttfp=False)
    with pytest.raises(DatasetError, match=r"1 of \d+ files in the split manifest are missing"):
        run_bench(BenchConfig([models["float32"]], data=root, **cfg))
    no_baso = tmp_path / "no_basophil.csv"
    SplitManifest([r for r in manifest.rows if not (r.split == "test" and r.label == "basophil")]).save(no_baso)
    with pytest.raises(DatasetError, match="split 'test' has no images of class.*basophil"):
        run_bench(BenchConfig([models["float32"]], data=sample_root, **{**cfg, "split_manifest": no_baso}))


def test_no_float32_model_falls_back_to_first_and_says_so(models, sample_root):
    r = run_bench(BenchConfig([models["int8"], models["permuted"]], data=sample_root, runs=1, warmup=0,
                              batch_throughput_images=0, ttfp=False, min_agreement=99))
    assert r["reference"]["name"] == "wbc_int8" and r["reference"]["how"] == "the first of MODELS"
    assert any("no unquantised (float32) .tflite among MODELS" in n for n in r["notes"])
    assert not r["gate"]["passed"]


def test_bench_errors_are_one_line(cli, models, sample_root, tmp_path):
    res = cli("bench", models["int8"], "--data", sample_root, "--threads", "0")
    assert res.exit_code == 2 and "--threads" in res.output
    keras_like = tmp_path / "m.keras"
    keras_like.write_bytes(b"PK")
    res = cli("bench", keras_like, "--data", sample_root)
    assert res.exit_code == 1 and "MODELS must be .tflite files" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("bench", models["int8"], "--data", empty)
    assert res.exit_code == 1 and res.output.startswith("Error: ")


def test_cli_fails_loudly_when_a_command_module_is_broken(monkeypatch):
    """Every command module exists: one that cannot be imported is an error, not a missing command."""
    import importlib

    import wbc_edge.cli  # noqa: F401 - loaded, so that monkeypatch restores it afterwards

    monkeypatch.setitem(sys.modules, "wbc_edge.cli.bench_cmd", None)  # its import now raises ImportError
    monkeypatch.delitem(sys.modules, "wbc_edge.cli")
    with pytest.raises(ImportError, match="wbc_edge.cli.bench_cmd"):
        importlib.import_module("wbc_edge.cli")


def test_bench_group_dispatch(cli):
    res = cli("bench", "--help")
    assert res.exit_code == 0 and "merge" in res.output and "run" in res.output
    res = cli("bench", "run", "--help")
    assert res.exit_code == 0 and "--max-accuracy-drop" in res.output and "--min-agreement" in res.output
    res = cli("bench", "merge", "--help")
    assert res.exit_code == 0 and "RESULTS" in res.output
    assert cli("bench").exit_code == 2


def test_unit_helpers():
    st = bench.latency_stats([0.001, 0.002, 0.003, 0.004])
    assert st["p50_ms"] == pytest.approx(2.5) and st["min_ms"] == pytest.approx(1.0)
    assert st["mean_ms"] == pytest.approx(2.5) and st["std_ms"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))


# ------------------------------------------------------------------------------------------------------
# Keras reference (subprocess timing per thread count, time to first prediction)
# ------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not HAVE_TF or bool(PREMADE), reason="needs TensorFlow (Keras reference)")
def test_keras_reference_timed_in_subprocess_with_ttfp(cli, models, sample_root, tmp_path):
    out = tmp_path / "k.json"
    res = cli("bench", models["float32"], models["int8"], "--reference", models["keras"],
              "--data", sample_root, "--limit", "10", *FAST, "--json", out)
    assert res.exit_code == 0, res.output
    r = _load(out)
    assert r["reference"]["kind"] == "keras" and r["software"]["tensorflow"]
    k = r["variants"][0]
    assert k["name"] == "keras" and k["is_reference"] and k["input_size"] == models_size(models)
    lat = k["latency"][0]
    assert lat["threads"] == 1 and lat["backend"].startswith("tensorflow") and lat["runs"] == 3
    assert lat["p50_ms"] > 0 and lat["throughput_img_s"] > 0 and lat["load_ms"] > 0
    assert "inter-op threads = 1" in lat["note"]
    assert lat["intra_op_threads"] == 1 and lat["inter_op_threads"] == 1  # read back inside the worker
    f32 = next(v for v in r["variants"] if v["name"] == "float32")["parity"]
    assert f32["agreement_pct"] == 100.0 and f32["max_abs_dprob"] < 1e-3
    ttfp = {t["path"]: t for t in r["ttfp"]}  # default on with a .keras reference
    assert set(ttfp) == {"runtime", "keras"}
    assert Path(ttfp["runtime"]["model"]).name == "wbc_int8.tflite"
    assert all("error" not in t and t["wall_s"] >= t["in_process_s"] > 0 for t in ttfp.values())


def models_size(models) -> int:
    return read_contract(models["int8"]).input_size


# ------------------------------------------------------------------------------------------------------
# runtime-only mode: no TensorFlow, no matplotlib
# ------------------------------------------------------------------------------------------------------

_RUNTIME_ONLY = import_blocker() + textwrap.dedent("""
    import json
    from wbc_edge.cli import main
    try:
        main(sys.argv[1:], standalone_mode=False)
        rc = 0
    except SystemExit as exc:
        rc = exc.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
    print("RESULT " + json.dumps({"rc": rc, "heavy": heavy}))
""")


def test_runtime_only_mode_without_tensorflow_or_matplotlib(models, sample_root, tmp_path):
    script = tmp_path / "runtime_only.py"
    script.write_text(_RUNTIME_ONLY)
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["bench", str(models["float32"]), str(models["int8"]), "--data", str(sample_root), *FAST,
            "--json", str(out), "--plot", str(png)]
    proc = subprocess.run([SUBPROCESS_PYTHON, str(script), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert rec == {"rc": 0, "heavy": []}
    assert "Plot skipped: plots need matplotlib" in proc.stderr
    assert not png.exists()
    r = _load(out)
    assert [v["name"] for v in r["variants"]] == ["float32", "int8"] and "tensorflow" not in r["software"]
    assert "| float32 (ref) |" in proc.stdout


# ------------------------------------------------------------------------------------------------------
# benchmark_model parser, Android script, merge
# ------------------------------------------------------------------------------------------------------

def test_parse_newer_output_with_percentiles():
    p = parse_benchmark_model((DATA / "newer_info_prefix.txt").read_text())
    lat = p["latency_ms"]
    assert p["threads"] == 4 and p["graph"] == "/data/local/tmp/wbc_int8.tflite" and p["xnnpack_flag"] is True
    assert p["delegation"] == {"ops_delegated": 66, "ops_total": 69, "delegate": "TfLiteXNNPackDelegate",
                               "partitions": 1}
    assert lat["count"] == 126  # the timed runs, not the warm-up line (count=61)
    assert lat["mean_ms"] == pytest.approx(7.94123) and lat["p50_ms"] == pytest.approx(7.861)
    assert lat["p5_ms"] == pytest.approx(7.702) and lat["p95_ms"] == pytest.approx(8.613)
    assert lat["std_ms"] == pytest.approx(0.322) and lat["min_ms"] == pytest.approx(7.688)
    assert lat["init_ms"] == pytest.approx(41.327) and lat["first_inference_ms"] == pytest.approx(14.21)
    assert lat["warmup_avg_ms"] == pytest.approx(8.19754)
    assert p["memory_mb"] == {"init": 6.98438, "overall": 11.2734} and p["peak_memory_mb"] == 17.0273
    assert p["model_size_mb"] == 2.67512 and p["session_init_ms"] == 41.327


def test_parse_older_output_with_op_profiling():
    p = parse_benchmark_model((DATA / "older_op_profiling.txt").read_text())
    lat = p["latency_ms"]
    assert p["threads"] == 1 and p["xnnpack_flag"] is None and p["xnnpack_delegate_created"] is True
    assert lat["count"] == 50 and lat["mean_ms"] == pytest.approx(26.3548)  # not the profiler's 26254.1
    assert lat["p50_ms"] is None and lat["std_ms"] == pytest.approx(0.402)
    assert p["memory_mb"] == {"init": 7.12109, "overall": 12.0391}  # "Peak memory footprint (MB)" wording
    assert p["op_profile_by_type"] == {
        "TfLiteXNNPackDelegate": {"count": 1, "avg_ms": 26.147, "avg_pct": 99.594},
        "QUANTIZE": {"count": 2, "avg_ms": 0.097, "avg_pct": 0.369},
        "SOFTMAX": {"count": 1, "avg_ms": 0.01, "avg_pct": 0.038}}


def test_parse_logcat_output_with_scientific_notation():
    p = parse_benchmark_model((DATA / "logcat.txt").read_text())
    lat = p["latency_ms"]
    assert p["threads"] == 2 and p["graph"].endswith("wbc_float32.tflite")
    assert lat["count"] == 103 and lat["mean_ms"] == pytest.approx(18.7291)
    assert lat["p50_ms"] == pytest.approx(18.596)
    assert lat["warmup_avg_ms"] == pytest.approx(18.9533)
    assert p["delegation"]["ops_delegated"] == p["delegation"]["ops_total"] == 67


def test_parse_rejects_other_text():
    with pytest.raises(WbcEdgeError, match="no 'Inference timings in us' line.*Error: could not open"):
        parse_benchmark_model("STARTING!\nError: could not open model file\n")


def test_android_script_with_fake_adb(models, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "adb").write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        echo "$*" >> {tmp_path}/adb.log
        case "$1" in
          get-state) echo device ;;
          push) ;;
          shell)
            case "$2" in
              getprop)
                case "$3" in
                  ro.product.model) printf 'Pixel 7\\r\\n' ;;
                  ro.product.cpu.abi) printf 'arm64-v8a\\r\\n' ;;
                  ro.build.version.release) printf '14\\r\\n' ;;
                  ro.soc.model) printf 'GS201\\r\\n' ;;
                esac ;;
              mkdir|chmod) ;;
              *) sed 's/$/\\r/' {DATA / 'newer_info_prefix.txt'} ;;
            esac ;;
        esac
        """))
    (fake / "adb").chmod(0o755)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "PYTHON": SUBPROCESS_PYTHON}
    script = REPO / "benchmarks" / "android" / "run_benchmark_model.sh"
    proc = subprocess.run(["bash", str(script), str(models["int8"]), "--threads", "4",
                           "--benchmark-binary", str(binary), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = _load(out / "Pixel_7_wbc_int8_t4.json")
    assert r["kind"] == "wbc-edge-bench" and r["source"].startswith("benchmark_model")
    assert r["system"]["device"] == "Pixel 7" and r["system"]["arch"] == "arm64-v8a"
    assert r["system"]["cpu"] == "GS201" and r["system"]["os"] == "Android 14"
    v = r["variants"][0]
    assert v["name"] == "int8" and v["size_mb"] == pytest.approx(models["int8"].stat().st_size / 1e6)
    assert v["latency"][0]["threads"] == 4 and v["latency"][0]["p50_ms"] == pytest.approx(7.861)
    log = (tmp_path / "adb.log").read_text()
    assert "--num_threads=4 --num_runs=50 --warmup_runs=5 --use_xnnpack=true" in log
    assert (out / "Pixel_7_wbc_int8_t4.txt").read_text().count("\r") == 0


def test_markdown_of_an_android_result():
    """A result converted from benchmark_model has no data (None): to_markdown renders it anyway."""
    r = to_result(parse_benchmark_model((DATA / "newer_info_prefix.txt").read_text()), device="Pixel 7",
                  abi="arm64-v8a", threads=4)
    assert r["data"] is None
    text = to_markdown(r)
    assert "**Pixel 7**" in text and "- Data: none" in text and "| 7.86 |" in text, text


def test_merge_ours_and_android(cli, models, sample_root, tmp_path):
    ours = tmp_path / "x86.json"
    assert cli("bench", models["float32"], models["int8"], "--data", sample_root, *FAST, "--json", ours,
               "--device-name", "dev-host").exit_code == 0
    android = tmp_path / "android.json"
    from wbc_edge.core.atomic import write_json

    write_json(android, to_result(parse_benchmark_model((DATA / "newer_info_prefix.txt").read_text()),
                                  model=models["int8"], device="Pixel 7", abi="arm64-v8a", threads=4))
    md = tmp_path / "all.md"
    res = cli("bench", "merge", ours, android, "--markdown", md, "--json", tmp_path / "all.json")
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "| Device | Arch | CPU | Backend | Variant |" in text
    rows = [x for x in text.splitlines() if x.startswith("| dev-host |") or x.startswith("| Pixel 7 |")]
    assert len(rows) == 3
    assert any(x.startswith("| Pixel 7 | arm64-v8a |") and "| 7.86 |" in x and "| n/a |" in x for x in rows)
    merged = _load(tmp_path / "all.json")
    assert merged["kind"] == "wbc-edge-bench-merge" and len(merged["rows"]) == 3
    assert merge([ours, android])["rows"] == merged["rows"]
    assert "latency only" in to_markdown(merge([android])) or "no accuracy" in to_markdown(merge([android]))
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    res = cli("bench", "merge", bad)
    assert res.exit_code == 1 and "not a wbc-edge bench result" in res.output


# ------------------------------------------------------------------------------------------------------
# recorded results, export folders, the worker modules
# ------------------------------------------------------------------------------------------------------

RECORDED = [p for p in sorted((REPO / "benchmarks" / "results").rglob("*.json"))
            if json.loads(p.read_text(encoding="utf-8")).get("kind") == "wbc-edge-bench"]


def test_recorded_results_still_load_merge_and_render():
    """Results recorded by earlier versions (benchmarks/results/) keep loading, merging and rendering."""
    assert len(RECORDED) >= 5, RECORDED
    total_rows = 0
    for p in RECORDED:
        r = bench.load_result(p)
        assert set(RESULT_KEYS) - set(r) <= {"clients", "domains"}  # the two keys added after schema 1 began
        md = to_markdown(r)
        assert "| Variant | Size MB | Acc | ΔAcc pp |" in md
        assert all(f"| {row['variant']}" in md for row in r["rows"])
        total_rows += len(r["rows"])
    merged = merge(RECORDED)
    assert merged["kind"] == "wbc-edge-bench-merge" and len(merged["rows"]) == total_rows
    assert to_markdown(merged).count("\n| ") == total_rows + 1  # header + one line per row


def test_an_export_folder_is_every_variant_its_manifest_lists(models, sample_root, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    for k in ("int8", "float32"):
        shutil.copyfile(models[k], export / models[k].name)
    (export / "manifest.json").write_text(json.dumps({"variants": [
        {"variant": "float32", "file": "wbc_float32.tflite", "status": "ok"},
        {"variant": "dynamic", "file": "wbc_dynamic.tflite", "status": "failed", "reason": "x"},
        {"variant": "int8", "file": "wbc_int8.tflite", "status": "ok"}]}))
    r = run_bench(BenchConfig([export], data=sample_root, limit=5, runs=1, warmup=0, batch_throughput_images=0,
                              ttfp=False))
    assert [v["name"] for v in r["variants"]] == ["float32", "int8"]  # manifest order, failed one left out
    assert r["reference"]["name"] == "float32" and r["reference"]["export_parity"]["status"] == "ok"
    (export / "manifest.json").unlink()
    with pytest.raises(WbcEdgeError, match="export manifest not found"):
        run_bench(BenchConfig([export], data=sample_root, limit=5, runs=1, warmup=0, ttfp=False))


def test_package_import_loads_nothing_until_used():
    """`python -m wbc_edge.bench.<worker>` imports the package first: it must not load numpy or the harness
    (time to first prediction starts its clock after that)."""
    code = ("import sys, wbc_edge.bench; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'PIL') or m.startswith('wbc_edge.bench.')))")
    out = subprocess.run([SUBPROCESS_PYTHON, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ttfp_worker_runtime_path(models, sample_files):
    from wbc_edge.bench.workers import run_ttfp

    image = str(sample_files[0][0])
    rec = run_ttfp(BenchConfig([models["int8"]], python=SUBPROCESS_PYTHON), "runtime", models["int8"], image)
    assert "error" not in rec and rec["wall_s"] >= rec["in_process_s"] > 0, rec
    assert "import wbc_edge.runtime" in rec["what"]
    bad = run_ttfp(BenchConfig([models["int8"]], python=SUBPROCESS_PYTHON), "runtime", models["int8"],
                   str(REPO / "README.md"))
    assert "error" in bad and "README.md" in bad["error"]


def test_unreadable_files_are_named_not_silently_dropped(cli, models, sample_root, tmp_path):
    """Issue 30: a folder with a corrupt image used to be benchmarked on one image fewer, without a word."""
    data = tmp_path / "lab"
    shutil.copytree(sample_root, data, ignore=shutil.ignore_patterns("README*"))
    (data / "monocyte" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    res = cli("bench", models["float32"], models["int8"], "--data", data, *FAST, "--json", out, "--markdown", md)
    assert res.exit_code == 0, res.output
    r = _load(out)
    assert r["data"]["skipped_at_scan"][0]["path"] == "monocyte/broken.jpg"
    line = next(n for n in r["notes"] if "could not be read" in n)
    assert "1 file(s)" in line and "monocyte/broken.jpg (" in line
    assert "monocyte/broken.jpg" in res.output and "monocyte/broken.jpg" in md.read_text()


def test_the_table_says_how_many_images_the_model_trained_on(cli, models, sample_root, sample_split_csv, tmp_path):
    """Issue 30: on samples/pbc_sample most images are in the shipped model's training split; the bench result
    itself says so (counted by file sha256 against the split its export manifest records), not only the README."""
    from wbc_edge.core.atomic import sha256_file

    folder = tmp_path / "export"
    folder.mkdir()
    for v in ("float32", "int8"):
        shutil.copyfile(models[v], folder / f"wbc_{v}.tflite")
    ref = tmp_path / "reference"
    ref.mkdir()
    shutil.copyfile(sample_split_csv, ref / "split.csv")  # per class 5 train, 1 val, 2 test
    (folder / "manifest.json").write_text(json.dumps({"split_manifest": {
        "path": "reference/split.csv", "file_sha256": sha256_file(ref / "split.csv")}}), encoding="utf-8")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    res = cli("bench", folder / "wbc_float32.tflite", folder / "wbc_int8.tflite", "--data", sample_root, *FAST,
              "--json", out, "--markdown", md)
    assert res.exit_code == 0, res.output
    ov = _load(out)["data"]["model_split_overlap"]
    assert (ov["train"], ov["val"], ov["test"], ov["not_in_split"]) == (25, 5, 10, 0)
    assert "25 of these 40 images are in the model's training split" in md.read_text()
    # A manifest whose split file does not match its recorded sha256 is not trusted: no claim at all.
    (ref / "split.csv").write_text("path,label,sha256,group,split\n", encoding="utf-8")
    res = cli("bench", folder / "wbc_float32.tflite", "--data", sample_root, *FAST, "--json", out)
    assert res.exit_code == 0 and "model_split_overlap" not in _load(out)["data"]
