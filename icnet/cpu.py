"""What the CPU can do, from /proc/cpuinfo: the matrix and reduced-precision instructions that
decide whether a bf16 or fp16 runtime runs natively here. Standard library only."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, frozenset[str]]:
    """(the first "model name", the first "flags"/"Features" set) of /proc/cpuinfo."""
    model, flags = None, None
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = frozenset(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model, flags or frozenset()


def has_bf16() -> bool:
    """Native bf16 arithmetic: AMX-BF16 tiles or AVX512-BF16 (x86), BF16 (aarch64)."""
    flags = cpuinfo()[1]
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})


def has_fp16() -> bool:
    """Native fp16 arithmetic: AVX512-FP16 (x86) or half-precision SIMD (aarch64 asimdhp)."""
    return bool(cpuinfo()[1] & {"avx512_fp16", "asimdhp"})


VNNI_FEATURES = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_saturates() -> bool:
    """An x86 CPU without VNNI (none of avx512_vnni, avx_vnni, amx_int8): its uint8 x int8 dot
    product (vpmaddubsw) sums pairs into int16 and saturates, so int8 convolutions of ONNX
    Runtime and OpenVINO lose accuracy unless the weights use 7 bits."""
    flags = cpuinfo()[1]
    return "sse2" in flags and not flags & VNNI_FEATURES


def bf16_reason() -> str:
    return ("this CPU has no native bf16 arithmetic (none of amx_bf16, avx512_bf16, bf16 in "
            "/proc/cpuinfo)")


def fp16_reason() -> str:
    return ("this CPU has no native fp16 arithmetic (neither avx512_fp16 nor asimdhp in "
            "/proc/cpuinfo): fp16 would be emulated, slower than fp32")
