"""The machine and software a bench result was measured on, and this process's memory use.

Latency numbers mean little without the CPU (model, ISA extensions such as AVX-512 VNNI or ARM dot-product
that decide int8 speed), the core count and the library versions, so every result is stamped with them.
Read from /proc on Linux (empty fields elsewhere), never by running external tools.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np

__all__ = ["cpu_model", "cpu_flags", "system_info", "software_versions", "rss_mb", "peak_rss_mb",
           "RELEVANT_CPU_FLAGS"]

#: The ISA extensions that decide float / int8 speed (x86 'flags', ARM 'Features').
RELEVANT_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                      "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16",
                      # ARM (aarch64 /proc/cpuinfo "Features")
                      "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "neon", "vfpv4")

_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
              "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
              "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1"}


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _cpuinfo_fields() -> dict[str, str]:
    """First value of each key in /proc/cpuinfo (empty off Linux)."""
    out: dict[str, str] = {}
    for line in _read_text("/proc/cpuinfo").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip().lower(), v.strip())
    return out


def cpu_model() -> str:
    """The CPU's marketing name (x86 'model name'; ARM 'Hardware'/'Model' or the Cortex part number)."""
    info = _cpuinfo_fields()
    for key in ("model name", "hardware", "model", "cpu model", "processor"):
        v = info.get(key, "")
        if v and not v.isdigit():
            return v
    part = info.get("cpu part", "").lower()
    if part in _ARM_PARTS:
        return _ARM_PARTS[part]
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The int8/float-relevant ISA extensions this CPU reports (x86 'flags' or ARM 'Features')."""
    info = _cpuinfo_fields()
    have = set((info.get("flags", "") + " " + info.get("features", "")).split())
    return [f for f in RELEVANT_CPU_FLAGS if f in have]


def system_info(device_name: str | None = None) -> dict:
    """CPU model, arch, OS, core counts, relevant CPU flags (for stamping results)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    cpu = cpu_model()
    return {"device": device_name or cpu, "cpu": cpu, "arch": platform.machine(), "os": platform.platform(),
            "cpu_count": os.cpu_count(), "usable_cpus": usable, "cpu_flags": cpu_flags(),
            "hostname": platform.node()}


def software_versions(backend: str | None, backend_version: str | None) -> dict:
    """Python, numpy, Pillow, wbc-edge and the interpreter backend that ran the .tflite files."""
    import PIL

    from .. import __version__

    return {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
            "wbc_edge": __version__, "runtime_backend": backend, "runtime_backend_version": backend_version}


def rss_mb() -> float | None:
    """Current resident set size of this process (MB), from /proc/self/statm; None where unavailable."""
    text = _read_text("/proc/self/statm").split()
    if len(text) < 2:
        return None
    return int(text[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float | None:
    """The process's peak resident set size so far (MB; getrusage ru_maxrss); None on Windows."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux
