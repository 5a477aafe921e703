"""Logit scaling and soft-capping inside the chunked log-probs, against the plain formula."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.engine.forward import onednn
from prefalign.engine.forward.chunked import ChunkedTokenLogps, LogitTransform, chunked_token_logps

TRANSFORMS = {
    "scale": LogitTransform(scale=0.25),
    "softcap": LogitTransform(softcap=0.7),
    "scale+softcap": LogitTransform(scale=3.0, softcap=2.0),
}


def plain_token_logps(rows, weight, targets, transform: LogitTransform):
    """log_softmax(f(rows · Wᵀ))[targets] with f written out as the models write it."""
    logits = rows @ weight.t() * transform.scale  # (N, V)
    if transform.softcap is not None:
        logits = torch.tanh(logits / transform.softcap) * transform.softcap
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (N,)


def test_softcap_by_hand():
    """One row h = [1], W = [[0], [2]]: logits z = [0, 2], cap 1: f(z) = [0, tanh 2] = [0, 0.9640276].
    log p_1 = tanh 2 − ln(1 + e^{tanh 2}) = −0.3230641, p_1 = 0.7239275.
    d log p_1 / d z_1 = (1 − p_1)·(1 − tanh² 2) = 0.2760725 · 0.0706508 = 0.0195048;
    d log p_1 / d z_0 = −p_0 · f'(0) = −0.2760725 (tanh's slope at 0 is 1).
    dW = dz ⊗ h = dz; dh = dz · W = 2 · 0.0195048."""
    rows = torch.tensor([[1.0]], requires_grad=True)
    weight = torch.tensor([[0.0], [2.0]], requires_grad=True)
    logps = chunked_token_logps(rows, weight, torch.tensor([1]), 4,
                                transform=LogitTransform(softcap=1.0))
    t = math.tanh(2.0)
    p1 = math.exp(t) / (1 + math.exp(t))
    torch.testing.assert_close(logps, torch.tensor([-0.3230641]))
    logps.sum().backward()
    grad_z = torch.tensor([-(1 - p1), (1 - p1) * (1 - t * t)])  # [−0.2760725, 0.0195048]
    torch.testing.assert_close(grad_z[1], torch.tensor(0.0195048))
    torch.testing.assert_close(weight.grad[:, 0], grad_z)
    torch.testing.assert_close(rows.grad, torch.tensor([[2 * 0.0195048]]))


@pytest.mark.parametrize("backend", ["torch", "onednn"] if onednn.available() else ["torch"])
@pytest.mark.parametrize("keep_mib", [0, 1])
@pytest.mark.parametrize("chunk_size", [1, 4, 100])
@pytest.mark.parametrize("name", TRANSFORMS)
def test_chunked_equals_the_plain_formula(name, chunk_size, keep_mib, backend):
    """Log-probs and both gradients, every chunking, with and without kept softmax (which
    soft-capping declines), on torch's and oneDNN's products."""
    transform = TRANSFORMS[name]
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(13, 8, generator=generator, requires_grad=True)
    weight = (torch.randn(50, 8, generator=generator) * 2).requires_grad_(True)
    targets = torch.randint(0, 50, (13,), generator=generator)
    upstream = torch.randn(13, generator=generator)
    expected = plain_token_logps(rows, weight, targets, transform)
    expected_rows, expected_weight = torch.autograd.grad((expected * upstream).sum(),
                                                         (rows, weight))
    with onednn.cpu_matmul(backend):
        logps = chunked_token_logps(rows, weight, targets, chunk_size, keep_mib,
                                    transform=transform)
        got_rows, got_weight = torch.autograd.grad((logps * upstream).sum(), (rows, weight))
    torch.testing.assert_close(logps, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_rows, expected_rows, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_weight, expected_weight, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_gradcheck_float64(name):
    generator = torch.Generator().manual_seed(4)
    rows = torch.randn(7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (7,), generator=generator)
    assert torch.autograd.gradcheck(
        lambda r, w: ChunkedTokenLogps.apply(r, w, targets, 2, 0, None, TRANSFORMS[name]),
        (rows, weight),
    )
