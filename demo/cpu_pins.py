"""The environment that makes the demo's numbers independent of which x86 CPU runs them.

Why: torch, MKL and oneDNN each pick their CPU code path by the instruction set the CPU offers
(AVX2, AVX-512, AMX) and by the thread count. Different paths sum in different orders, so a tiny model
trained from scratch drifts apart after a few hundred steps, and 300 training steps of GRPO on a
2-layer model amplify that into a different bench score (issue 22: the same commit and seeds gave
GRPO +2.33 here and -0.66 on an AVX-512 machine). Each variable below fixes one of those choices to a
level every x86-64 CPU since 2013 offers. demo/run.py sets them for itself and every process it
starts (LLaMA-Factory training in .venv, GRPO and the vLLM evaluator in .venv-eval); what was measured
with them is in the README's demo section.

One table, `PINS`: an added pin is one entry. `--no-cpu-pins` leaves the caller's environment as it is
(that is how the pins were checked: the same run with and without them, at two instruction sets).
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    value: str
    why: str


PINS: dict[str, Pin] = {
    "ATEN_CPU_CAPABILITY": Pin(
        "avx2",
        "torch's vectorized kernels (softmax, norms, elementwise ops, reductions, random init): the AVX2 "
        "build on every CPU, not the AVX-512 one where the CPU has it. torch trusts this value without "
        "checking the CPU: avx512 on a CPU without AVX-512 dies with SIGILL (measured here).",
    ),
    "MKL_CBWR": Pin(
        "COMPATIBLE",
        "MKL's conditional numerical reproducibility (torch's fp32 matmuls are MKL sgemm): the one "
        "branch MKL documents as giving the same results on Intel and non-Intel CPUs (its AVX2 branch "
        "falls back to AUTO on non-Intel CPUs such as this machine's AMD EPYC).",
    ),
    "ONEDNN_MAX_CPU_ISA": Pin(
        "AVX2",
        "oneDNN (torch's mkldnn: the vision tower's Conv3d patch embedding, some linear layers): no "
        "AVX-512 or AMX kernels even where the CPU has them.",
    ),
    "DNNL_MAX_CPU_ISA": Pin("AVX2", "the same for oneDNN builds that read the older name."),
    "OMP_NUM_THREADS": Pin(
        "2",
        "torch splits reductions by thread count, and MKL's reproducibility holds only for a fixed "
        "count: 2 threads, this machine's cores (more cores go unused, the numbers stay).",
    ),
    "MKL_NUM_THREADS": Pin("2", "MKL's own thread count, the same 2."),
    "PYTHONHASHSEED": Pin("0", "set and dict orders of strings, the same in every process."),
}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty when unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def pinned_env(flags: set[str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The pins to apply on this machine: all of them on an x86-64 CPU with AVX2; on any other CPU only
    the thread counts and hash seed (the x86 levels mean nothing there, or would crash torch)."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    x86 = machine in ("x86_64", "amd64")
    if x86 and "avx2" in flags:
        return {name: pin.value for name, pin in PINS.items()}
    keep = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED")
    log.warning(
        "this CPU (%s%s) has no AVX2: only the thread counts are pinned; its numbers may differ from the "
        "README's",
        machine,
        ", flags unknown" if x86 and not flags else "",
    )
    return {name: PINS[name].value for name in keep}


def apply(env: dict | os._Environ = os.environ, pins: Mapping[str, str] | None = None) -> dict[str, str]:
    """Set the pins in `env` (over what the caller had: a stray OMP_NUM_THREADS would change the
    numbers); returns the pins set. Call it before this process imports torch."""
    pins = dict(pinned_env() if pins is None else pins)
    changed = {k: (env.get(k), v) for k, v in pins.items() if env.get(k) not in (None, v)}
    for name, (old, new) in changed.items():
        log.info("CPU pin %s=%s (was %s)", name, new, old)
    env.update(pins)
    return pins
