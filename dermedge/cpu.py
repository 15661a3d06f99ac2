"""What this CPU can do natively: ISA flags read from ``/proc/cpuinfo`` (Linux), nothing imported.

Results that depend on the CPU (OpenVINO's default inference precision, INT8 kernels with or without
VNNI) are pinned or chosen from these flags, and benchmark records name them.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor(), frozenset()
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    return model or platform.processor(), frozenset(flags)


def cpu_model() -> str:
    """The CPU's marketing name (``platform.processor()`` where ``/proc/cpuinfo`` is absent)."""
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """Every ISA flag the kernel reports; empty where ``/proc/cpuinfo`` is absent (macOS, Windows)."""
    return _cpuinfo()[1]


def isa_summary() -> dict[str, bool]:
    """The flags that change speed or numerics of inference, each True/False."""
    flags = cpu_flags()
    return {k: k in flags for k in ISA_FLAGS}


def native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX-BF16).

    Unknown CPUs (no ``/proc/cpuinfo``) count as not native, so ``bf16`` is never chosen by default there.
    """
    return any(f in cpu_flags() for f in BF16_FLAGS)
