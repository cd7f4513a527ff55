"""What the benchmarks ran on: CPU model, cores, ISA flags, memory, GPUs and library versions.

Reads /proc and `nvidia-smi` only; imports none of the runtimes (their versions come from the
installed packages' metadata), so it is cheap to call from any process.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess

from icnet.cpu import cpuinfo

# CPU features that decide which kernels TensorFlow (oneDNN), XNNPACK and ONNX Runtime use.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16")
PACKAGES = ("tensorflow", "ai-edge-litert", "onnxruntime", "openvino", "nncf", "numpy")


def _memory_total(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_names() -> list[str]:
    """NVIDIA GPU names from `nvidia-smi` (empty when it is absent or fails)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        done = subprocess.run([binary, "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """The machine as a JSON-able dict (missing facts are None or empty)."""
    model, cpu_flags = cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "cpu_model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "isa_flags": [name for name in ISA_FLAGS if name in cpu_flags],
        "memory_total_bytes": _memory_total(),
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: package_version(name) for name in PACKAGES},
    }
