"""demo/cpu_pins.py: which pins apply on which CPU, that they win over a stray environment, and that torch
obeys them in a process started with them (what every demo step is)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from demo import cpu_pins
from tests.conftest import REPO


def test_an_x86_cpu_with_avx2_gets_every_pin():
    assert cpu_pins.pinned_env({"sse2", "avx2", "fma"}, "x86_64") == {
        k: p.value for k, p in cpu_pins.PINS.items()
    }
    assert (
        cpu_pins.PINS["ATEN_CPU_CAPABILITY"].value == "avx2"
        and cpu_pins.PINS["MKL_CBWR"].value == "COMPATIBLE"
    )


@pytest.mark.parametrize("flags,machine", [({"sse4_2"}, "x86_64"), (set(), "aarch64"), (set(), "x86_64")])
def test_other_cpus_get_only_the_thread_counts_and_are_told(flags, machine, caplog):
    with caplog.at_level(logging.WARNING, logger="demo.cpu_pins"):
        pins = cpu_pins.pinned_env(flags, machine)
    assert pins == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}
    assert "has no AVX2" in caplog.text


def test_apply_wins_over_a_stray_environment_and_says_so(caplog):
    env = {"OMP_NUM_THREADS": "8", "HOME": "/root"}
    with caplog.at_level(logging.INFO, logger="demo.cpu_pins"):
        pins = cpu_pins.apply(env, {"OMP_NUM_THREADS": "2", "MKL_CBWR": "COMPATIBLE"})
    assert env == {"OMP_NUM_THREADS": "2", "MKL_CBWR": "COMPATIBLE", "HOME": "/root"}
    assert pins == {"OMP_NUM_THREADS": "2", "MKL_CBWR": "COMPATIBLE"}
    assert "OMP_NUM_THREADS=2 (was 8)" in caplog.text


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_pins.cpu_flags(info) == {"fpu", "sse2", "avx2"}
    assert cpu_pins.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.train
def test_torch_obeys_the_pins_in_a_started_process():
    pins = cpu_pins.pinned_env()
    if "ATEN_CPU_CAPABILITY" not in pins:
        pytest.skip("this CPU has no AVX2: the x86 pins do not apply")  # not this project's CI machine
    env = {**os.environ, "PYTHONPATH": str(REPO), **pins}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["AVX2", "2"]
