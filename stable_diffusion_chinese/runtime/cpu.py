"""What this CPU offers: usable cores, instruction sets, nominal clock (for the benchmark's peak FLOP/s)."""
from __future__ import annotations

import os
import re
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_flags() -> set[str]:
    """Instruction-set flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return set(match.group(1).split()) if match else set()


def has_avx512f() -> bool:
    """Paddle's fused CPU attention kernel (self_dp_attention) is written with AVX-512F intrinsics."""
    return "avx512f" in cpu_flags()


def cpu_mhz() -> float | None:
    """Clock of the first CPU as /proc/cpuinfo reports it (what lscpu prints as "CPU MHz")."""
    try:
        match = re.search(r"^cpu MHz\s*:\s*([\d.]+)$", CPUINFO.read_text(), re.M)
    except OSError:
        return None
    return float(match.group(1)) if match else None


def model_name() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.*)$", CPUINFO.read_text(), re.M)
    except OSError:
        return "unknown CPU"
    return match.group(1).strip() if match else "unknown CPU"
