"""TensorFlow's native start-up log (oneDNN notice, "failed call to cuInit", absl pre-init lines) stays off
the console unless asked for (`wbc-edge --debug` / WBC_EDGE_DEBUG=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = ("cuInit", "oneDNN", "absl::InitializeLog", "cuda drivers", "cpu_feature_guard")
IMPORT = ("from wbc_edge.core.tfcompat import import_tf\n"
          "tf, keras = import_tf()\n"
          "tf.config.list_logical_devices()\n"  # initialises the devices: where "failed call to cuInit" comes from
          "keras.layers.Dense(2)(tf.zeros((1, 2)))\n"
          "print('imported')\n")


def _run(**env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "WBC_EDGE_DEBUG")}
    env.update(PYTHONPATH=str(REPO), **env_extra)
    proc = subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-2000:]
    return proc


def test_tensorflow_start_up_noise_is_quiet_unless_debug():
    loud = _run(WBC_EDGE_DEBUG="1")
    shown = [n for n in NOISE if n in loud.stderr]
    if not shown:
        pytest.skip("this TensorFlow build prints no start-up log here: nothing to quiet")
    quiet = _run()
    assert not [n for n in NOISE if n in quiet.stderr], quiet.stderr


def test_cli_debug_switch_reaches_the_tensorflow_import(monkeypatch):
    from click.testing import CliRunner

    from wbc_edge.cli import main
    from wbc_edge.core.tfcompat import DEBUG_ENV, debug_enabled

    monkeypatch.setenv(DEBUG_ENV, "0")  # restored after the test
    assert not debug_enabled()
    res = CliRunner().invoke(main, ["--debug", "train", "--help"])
    assert res.exit_code == 0, res.output
    assert debug_enabled()


def test_bench_worker_processes_stay_quiet_too(monkeypatch):
    """Issue 30: the bench's Keras workers inherited TF_CPP_MIN_LOG_LEVEL=2, which lets TensorFlow's ERROR
    lines through ("failed call to cuInit" on every CPU-only machine)."""
    from wbc_edge.bench.workers import worker_env

    loud = _run(WBC_EDGE_DEBUG="1")
    if not [n for n in NOISE if n in loud.stderr]:
        pytest.skip("this TensorFlow build prints no start-up log here: nothing to quiet")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # as in a fresh `wbc-edge bench` process
    monkeypatch.delenv("WBC_EDGE_DEBUG", raising=False)
    env = worker_env()
    proc = subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [n for n in NOISE if n in proc.stderr], proc.stderr


def test_the_runtime_keeps_litert_start_up_lines_off_the_console_unless_debug():
    """Issue 30: `wbc-edge predict` printed LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."."""
    model = REPO / "export" / "wbc_int8.tflite"
    image = sorted((REPO / "samples" / "pbc_sample" / "basophil").glob("*.jpg"))[0]
    code = ("import sys\nfrom wbc_edge.runtime import Classifier\n"
            "print(Classifier(sys.argv[1]).predict(sys.argv[2]).label)\n")
    env = {k: v for k, v in os.environ.items() if k != "WBC_EDGE_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    quiet = subprocess.run([sys.executable, "-c", code, str(model), str(image)], env=env, capture_output=True,
                           text=True, timeout=120)
    loud = subprocess.run([sys.executable, "-c", code, str(model), str(image)], env={**env, "WBC_EDGE_DEBUG": "1"},
                          capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "basophil", quiet.stderr
    if "XNNPACK" not in loud.stderr:
        pytest.skip("this LiteRT build prints no delegate line: nothing to quiet")
    assert "XNNPACK" not in quiet.stderr and "INFO:" not in quiet.stderr, quiet.stderr
