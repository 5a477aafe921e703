"""prefalign.engine.forward.onednn: float32 CPU products through oneDNN, against torch's own linear.

Tolerance: both are float32 products summed in different orders; on these sizes they agree
within 1e-5 relative (float32 epsilon 1.2e-7 times a few hundred terms).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from prefalign.config import ConfigError, config_from_dict
from prefalign.engine.forward import onednn
from prefalign.engine.forward.chunked import ChunkedTokenLogps
from prefalign.engine.process import PRIMITIVE_CACHE_CAPACITY
from prefalign.trainers.loop.run import check_run_config

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch has no oneDNN")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def _linear_and_grads(x, weight, bias, backend):
    inputs = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    with onednn.cpu_matmul(backend):
        y = F.linear(x, weight, bias)
        grads = torch.autograd.grad(y, inputs, torch.linspace(-1, 1, y.numel()).view_as(y))
    return y, grads


@pytest.mark.parametrize("x_shape", [(3, 7, 24), (24,), (5, 24)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("frozen", ["none", "weight", "input"])
def test_routed_linear_equals_torch(x_shape, with_bias, frozen):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=generator, requires_grad=frozen != "input")
    weight = torch.randn(40, 24, generator=generator, requires_grad=frozen != "weight")
    bias = torch.randn(40, generator=generator, requires_grad=True) if with_bias else None
    y, grads = _linear_and_grads(x, weight, bias, "onednn")
    assert type(y.grad_fn).__name__ == "OneDnnLinearBackward"
    y_ref, grads_ref = _linear_and_grads(x, weight, bias, "torch")
    assert "OneDnn" not in type(y_ref.grad_fn).__name__
    torch.testing.assert_close(y, y_ref, **TOLERANCE)
    for ours, theirs in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_non_contiguous_and_transposed_operands():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, 6, 9, generator=generator).permute(1, 2, 0).requires_grad_()  # (6, 9, 24)
    weight = torch.randn(24, 40, generator=generator).t().requires_grad_()  # (40, 24) transposed
    y, grads = _linear_and_grads(x, weight, None, "onednn")
    y_ref, grads_ref = _linear_and_grads(x, weight, None, "torch")
    torch.testing.assert_close(y, y_ref, **TOLERANCE)
    for ours, theirs in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(ours, theirs, **TOLERANCE)


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_gradcheck_against_finite_differences():
    """The backward formulas, checked numerically in float32 (oneDNN takes float32 only):
    finite differences with eps 1e-2 on values of order 1 are good to ~1e-3."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, generator=generator, requires_grad=True)
    weight = torch.randn(5, 6, generator=generator, requires_grad=True)
    bias = torch.randn(5, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(onednn.OneDnnLinear.apply, (x, weight, bias), eps=1e-2,
                                    atol=5e-3, rtol=5e-3)


def _saved_bytes(x, weight, backend):
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), onednn.cpu_matmul(backend):
        F.linear(x, weight)
    return sum(saved)


def test_a_frozen_weight_keeps_no_copy_of_the_input():
    """A LoRA base layer: torch saves only the weight; so must the oneDNN path."""
    x = torch.randn(64, 24, requires_grad=True)
    weight = torch.randn(40, 24)
    assert _saved_bytes(x, weight, "onednn") == _saved_bytes(x, weight, "torch") == 40 * 24 * 4


def test_other_dtypes_autocast_and_outside_the_block_take_torch_path():
    x = torch.randn(3, 24, requires_grad=True)
    weight = torch.randn(40, 24, requires_grad=True)
    with onednn.cpu_matmul("onednn"):
        assert onednn.active()
        assert "OneDnn" not in type(F.linear(x.double(), weight.double()).grad_fn).__name__
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = F.linear(x, weight)
        assert y.dtype == torch.bfloat16 and "OneDnn" not in type(y.grad_fn).__name__
    assert not onednn.active()
    assert "OneDnn" not in type(F.linear(x, weight).grad_fn).__name__


def test_resolve(monkeypatch):
    assert onednn.resolve("onednn") is True
    assert onednn.resolve("torch") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert onednn.resolve("auto") is False  # a GPU run: no routing, no per-op Python call
    assert onednn.resolve("onednn") is True
    with onednn.cpu_matmul("torch"):
        assert not onednn.active()


def test_onednn_without_the_kernel_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(onednn, "available", lambda: False)
    with pytest.raises(ValueError, match="cpu_matmul: onednn"):
        onednn.resolve("onednn")
    assert onednn.resolve("auto") is False
    config = config_from_dict({"train": {"cpu_matmul": "onednn"}})
    with pytest.raises(ConfigError, match="train.cpu_matmul: onednn: this torch build"):
        check_run_config(config)


@pytest.mark.parametrize("chunk_size", [3, 64])
def test_chunked_vocabulary_projection_equals_torch(chunk_size, monkeypatch):
    """The chunked head's logits and row gradients routed to oneDNN (weight gradients stay
    torch's), over one chunk and over several."""
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(10, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (10,), generator=generator)
    calls = []
    routed = onednn.linear
    monkeypatch.setattr(onednn, "linear", lambda *args: calls.append(1) or routed(*args))
    results = []
    for backend in ("onednn", "torch"):
        with onednn.cpu_matmul(backend):
            logps = ChunkedTokenLogps.apply(rows, weight, targets, chunk_size)
            grads = torch.autograd.grad(logps, (rows, weight), torch.linspace(-1, 1, 10))
        results.append((logps, *grads))
        if backend == "onednn":  # per chunk: logits twice, row gradients once
            assert len(calls) == 3 * -(-10 // chunk_size)
    assert len(calls) == 3 * -(-10 // chunk_size)  # none on torch's path
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_the_chunked_projection_stays_float32_under_autocast():
    """Under bfloat16 autocast the vocabulary projection is meant to stay float32: oneDNN's
    kernel is not on autocast's lists, so it gives the float32 result inside autocast too."""
    generator = torch.Generator().manual_seed(4)
    rows = torch.randn(12, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (12,), generator=generator)
    with onednn.cpu_matmul("onednn"), torch.autocast("cpu", dtype=torch.bfloat16):
        inside = ChunkedTokenLogps.apply(rows, weight, targets, 5)
    with onednn.cpu_matmul("torch"):
        plain = ChunkedTokenLogps.apply(rows, weight, targets, 5)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain, **TOLERANCE)


def test_kernel_caches_are_capped_when_asked_unless_the_user_set_them():
    """Importing the engine sets nothing; `cap_kernel_caches` (the CLI calls it) caps both
    caches of per-shape kernels, except the one the user exported."""
    code = ("import os, sys, prefalign.engine.forward.onednn, prefalign.trainers.dpo.train\n"
            "names = ('ONEDNN_PRIMITIVE_CACHE_CAPACITY', 'LRU_CACHE_CAPACITY')\n"
            "print(*[os.environ.get(n, '-') for n in names])\n"
            "from prefalign.engine.process import cap_kernel_caches\n"
            "cap_kernel_caches()\n"
            "print(*[os.environ.get(n, '-') for n in names])")
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
    assert default.stdout.split() == ["-", "-", *[PRIMITIVE_CACHE_CAPACITY] * 2]
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**env, "LRU_CACHE_CAPACITY": "500"})
    assert chosen.stdout.split() == ["-", "500", PRIMITIVE_CACHE_CAPACITY, "500"]
