"""keep_freed_memory: a later step's blocks come back from the heap without page faults
(the switch that decides whether training sets it: tests/trainers/test_loop.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from prefalign.engine import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A "step" allocates, fills and frees blocks of 64, 48, 8 and 3 MiB, as a training step does with
# its projection blocks and activations; printed: the page faults of the sixth step.
STEPS = """
import resource, sys, torch
from prefalign.engine import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
def step():
    blocks = [torch.empty(mib * 2**18) for mib in (64, 48, 8, 8, 8, 8, 3, 3)]
    for block in blocks:
        block.fill_(1.0)
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
BIG_BLOCK_PAGES = (64 + 48) * 2**20 // 4096


def _faults_of_a_later_step(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_later_step_reuses_freed_blocks_without_page_faults():
    # glibc's default maps each block over 32 MiB on its own and unmaps it when freed
    assert _faults_of_a_later_step("default") >= BIG_BLOCK_PAGES * 9 // 10
    assert _faults_of_a_later_step("keep") < BIG_BLOCK_PAGES // 100  # reused where they were


@pytest.mark.skipif(GLIBC, reason="elsewhere than glibc")
def test_does_nothing_without_glibc():
    assert heap.keep_freed_memory() is False
