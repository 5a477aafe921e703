"""Sequence log-probs: the plain path by hand, and the chunked path against it."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.engine.forward import chunked as chunked_module
from prefalign.engine.forward import onednn
from prefalign.engine.forward.chunked import ChunkedTokenLogps, chunked_token_logps
from prefalign.engine.forward.logps import IGNORE_INDEX, sequence_logps, sequence_logps_from_hidden
from prefalign.losses import PairLogps

LN3 = math.log(3)


def test_plain_path_hand_computed():
    """V = 2. Logits per position: t0 = [0, ln 3], t1 = [ln 3, 0], t2 = [5, 5] (never used).
    softmax(t0) = [1/4, 3/4], softmax(t1) = [3/4, 1/4].
    Causal shift: position t scores labels[t + 1].
    Row 0, labels [-100, 1, 0]: t0 → token 1: ln(3/4); t1 → token 0: ln(3/4)
      sum = 2·ln 0.75 = −0.5753641, count 2, mean = ln 0.75 = −0.2876821
    Row 1, labels [-100, -100, 1] (prompt masked): t1 → token 1: ln(1/4) = −1.3862944, count 1
    Row 2, labels all -100: sum 0, count 0, mean 0 (no NaN)
    """
    position_logits = torch.tensor([[0.0, LN3], [LN3, 0.0], [5.0, 5.0]])  # (T, V)
    logits = position_logits.expand(3, 3, 2)  # (B, T, V)
    labels = torch.tensor(
        [[IGNORE_INDEX, 1, 0], [IGNORE_INDEX, IGNORE_INDEX, 1], [IGNORE_INDEX] * 3]
    )
    out = sequence_logps(logits, labels)
    torch.testing.assert_close(out.sum, torch.tensor([2 * math.log(0.75), math.log(0.25), 0.0]))
    torch.testing.assert_close(out.mean, torch.tensor([math.log(0.75), math.log(0.25), 0.0]))
    assert out.count.tolist() == [2, 1, 0]
    pair = PairLogps.from_sequences(out, out)
    assert pair.chosen is out.sum and pair.chosen_count is out.count


def test_plain_path_upcasts_half_precision_logits():
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    out = sequence_logps(logits.bfloat16(), labels)
    assert out.sum.dtype == torch.float32
    torch.testing.assert_close(out.sum, sequence_logps(logits.bfloat16().float(), labels).sum)


def _random_case(batch, length, hidden_size, vocab, seed, *, dtype=torch.float32, all_scored=False):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, hidden_size, generator=generator, dtype=dtype)
    weight = torch.randn(vocab, hidden_size, generator=generator, dtype=dtype) / hidden_size**0.5
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    if not all_scored:
        prompt = torch.randint(0, length, (batch,), generator=generator)  # prompt lengths
        padding = torch.randint(0, max(1, length // 4), (batch,), generator=generator)
        positions = torch.arange(length)
        masked = (positions < prompt[:, None]) | (positions >= length - padding[:, None])
        labels = labels.masked_fill(masked, IGNORE_INDEX)
    return hidden.requires_grad_(True), weight.requires_grad_(True), labels


def _values_and_grads(hidden, weight, labels, path, chunk_size, keep_mib=0):
    hidden.grad = weight.grad = None
    if path == "plain":
        out = sequence_logps(hidden @ weight.t(), labels)
    else:
        out = sequence_logps_from_hidden(hidden, weight, labels, chunk_size=chunk_size,
                                         keep_mib=keep_mib)
    # distinct upstream weights per sequence, through both sum and mean
    upstream = torch.linspace(-1.0, 2.0, labels.shape[0], dtype=out.sum.dtype)
    ((out.sum * upstream).sum() + (out.mean * upstream.flip(0)).sum()).backward()
    return out, hidden.grad, weight.grad


@pytest.mark.parametrize(
    ("shape", "chunk_size", "all_scored"),
    [
        ((3, 47, 16, 123), 32, False),
        ((3, 47, 16, 123), 1, False),
        ((3, 47, 16, 123), 10_000, True),
        ((1, 2, 4, 5), 3, True),
        ((5, 33, 24, 257), 17, False),
        ((2, 64, 8, 1000), 50, True),
    ],
)
@pytest.mark.parametrize("keep_mib", [0, 1])  # 1 MiB keeps every chunk's softmax here
def test_chunked_matches_plain(shape, chunk_size, all_scored, keep_mib):
    hidden, weight, labels = _random_case(*shape, seed=sum(shape), all_scored=all_scored)
    plain, plain_dh, plain_dw = _values_and_grads(hidden, weight, labels, "plain", chunk_size)
    chunked, chunked_dh, chunked_dw = _values_and_grads(
        hidden, weight, labels, "chunked", chunk_size, keep_mib
    )
    assert chunked.count.tolist() == plain.count.tolist()
    for got, want in [
        (chunked.sum, plain.sum),
        (chunked.mean, plain.mean),
        (chunked_dh, plain_dh),
        (chunked_dw, plain_dw),
    ]:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_chunked_matches_plain_at_realistic_size():
    """B = 8, T = 512, V = 49,152 (SmolLM2's vocabulary); hidden 32 keeps the test quick."""
    hidden, weight, labels = _random_case(8, 512, 32, 49_152, seed=7)
    plain, plain_dh, plain_dw = _values_and_grads(hidden, weight, labels, "plain", 1024)
    chunked, chunked_dh, chunked_dw = _values_and_grads(hidden, weight, labels, "chunked", 1024)
    torch.testing.assert_close(chunked.sum, plain.sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked.mean, plain.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked_dh, plain_dh, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked_dw, plain_dw, rtol=1e-5, atol=1e-5)


def test_chunked_gradcheck_float64():
    hidden, weight, labels = _random_case(2, 9, 5, 13, seed=3, dtype=torch.float64)

    def sums_and_means(h, w):
        out = sequence_logps_from_hidden(h, w, labels, chunk_size=4)
        return out.sum, out.mean

    assert torch.autograd.gradcheck(sums_and_means, (hidden, weight))
    rows = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (7,))
    for keep_mib in (0, 1e-4):  # 1e-4 MiB (104 bytes): the first 2-row chunk's softmax only
        assert torch.autograd.gradcheck(
            lambda r, w, keep=keep_mib: ChunkedTokenLogps.apply(r, w, targets, 2, keep),
            (rows, weight[:6, :3].detach().clone().requires_grad_()),
        )


def _spy_kept(monkeypatch):
    """Record how many chunks each forward's `_KeptSoftmax` held at its end."""
    kept = []
    original = chunked_module._KeptSoftmax.offer

    def offer(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not kept or kept[-1][0] is not self:
            kept.append([self, 0])
        kept[-1][1] = len(self.chunks)

    monkeypatch.setattr(chunked_module._KeptSoftmax, "offer", offer)
    return kept


@pytest.mark.parametrize("backend", ["torch", "onednn"] if onednn.available() else ["torch"])
def test_kept_softmax_spares_the_recomputation_at_the_same_gradients(backend, monkeypatch):
    """A budget of 2.5 chunks keeps the first two (the third does not fit, so none after it);
    backward uses them and recomputes the rest: the same log-probs and gradients, to the bit
    (recomputation rebuilds the softmax exactly as forward did); a second backward
    (retain_graph) finds them used and recomputes, to the same gradients."""
    kept = _spy_kept(monkeypatch)
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(40, 16, generator=generator, requires_grad=True)
    weight = torch.randn(300, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 300, (40,), generator=generator)
    upstream = torch.randn(40, generator=generator)
    chunk_mib = 7 * 300 * 4 / 2**20

    def run(keep_mib, backwards=1):
        results = []
        with onednn.cpu_matmul(backend):
            logps = chunked_token_logps(rows, weight, targets, 7, keep_mib)
            for i in range(backwards):
                rows.grad = weight.grad = None
                (logps * upstream).sum().backward(retain_graph=i + 1 < backwards)
                results.append((rows.grad.clone(), weight.grad.clone()))
        return logps.detach(), results

    plain, [(plain_rows, plain_weight)] = run(0)
    assert kept[-1][1] == 0
    logps, grads = run(2.5 * chunk_mib, backwards=2)
    assert kept[-1][1] == 2
    assert torch.equal(logps, plain)
    for got_rows, got_weight in grads:
        assert torch.equal(got_rows, plain_rows) and torch.equal(got_weight, plain_weight)


def test_nothing_is_kept_without_grad(monkeypatch):
    """Evaluation and reference passes (no_grad) keep no softmax whatever the budget."""
    kept = _spy_kept(monkeypatch)
    rows, weight = torch.randn(20, 8), torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    with torch.no_grad():
        chunked_token_logps(rows, weight, targets, 4, keep_mib=1)
    assert kept[-1][1] == 0
    chunked_token_logps(rows, weight, targets, 4, keep_mib=1)
    assert kept[-1][1] == 5


def test_chunked_with_frozen_weight_and_no_response_tokens():
    hidden, weight, labels = _random_case(2, 10, 4, 9, seed=4)
    weight.requires_grad_(False)
    labels[1] = IGNORE_INDEX
    out = sequence_logps_from_hidden(hidden, weight, labels, chunk_size=3)
    assert out.count[1] == 0 and out.sum[1] == 0 and out.mean[1] == 0
    out.sum.sum().backward()
    assert hidden.grad is not None and weight.grad is None
    assert hidden.grad[1].abs().sum() == 0  # nothing scored, nothing learned


def test_chunked_half_precision_runs_softmax_in_float32():
    hidden, weight, labels = _random_case(2, 12, 8, 31, seed=5)
    out = sequence_logps_from_hidden(
        hidden.detach().bfloat16(), weight.detach().bfloat16(), labels, chunk_size=5
    )
    plain = sequence_logps(hidden.detach().bfloat16() @ weight.detach().bfloat16().t(), labels)
    assert out.sum.dtype == torch.float32
    # both paths round the bf16 matmul the same way up to accumulation order
    torch.testing.assert_close(out.sum, plain.sum, rtol=1e-3, atol=1e-3)


def test_shape_errors_name_the_argument():
    hidden, weight, labels = _random_case(2, 6, 4, 7, seed=6)
    with pytest.raises(
        ValueError, match=r"labels must have shape \(B, T\) = \(2, 6\) to match hidden"
    ):
        sequence_logps_from_hidden(hidden, weight, labels[:, :5])
    with pytest.raises(ValueError, match=r"weight must have shape \(V, 4\)"):
        sequence_logps_from_hidden(hidden, weight.t(), labels)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        sequence_logps_from_hidden(hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="to match logits"):
        sequence_logps(torch.zeros(2, 5, 7), labels)


@pytest.mark.parametrize("backend", ["torch", "onednn"] if onednn.available() else ["torch"])
@pytest.mark.parametrize("chunk_size", [1024, 7])
@pytest.mark.parametrize("keep_mib", [0, 1])  # kept softmax is float32: the same rounding
def test_chunked_under_autocast_keeps_logps_float32_and_rounds_gradient_products(
        chunk_size, backend, keep_mib):
    """Under bfloat16 autocast the log-probs are the float32 ones exactly; the gradients are the
    products of g·(onehot − softmax) and W rounded once to bfloat16, accumulated in float32,
    with the weight's gradient summed over chunks in float32. Expected values: those rounded
    operands multiplied in float64; tolerance, in norm: one bfloat16 rounding of the result
    (2^-9 relative) plus the odd gradient entry that float32 and float64 round to neighbouring
    bfloat16 values."""
    generator = torch.Generator().manual_seed(11)
    rows = torch.randn(40, 24, generator=generator, requires_grad=True)
    weight = (torch.randn(300, 24, generator=generator) * 0.3).requires_grad_()
    targets = torch.randint(0, 300, (40,), generator=generator)
    upstream = torch.randn(40, generator=generator)

    def run(autocast: bool):
        rows.grad = weight.grad = None
        with onednn.cpu_matmul(backend):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logps = ChunkedTokenLogps.apply(rows, weight, targets, chunk_size, keep_mib)
            (logps * upstream).sum().backward()
        return logps.detach(), rows.grad.clone(), weight.grad.clone()

    plain, plain_rows, plain_weight = run(autocast=False)
    mixed, mixed_rows, mixed_weight = run(autocast=True)
    assert torch.equal(mixed, plain) and mixed.dtype == torch.float32
    assert mixed_rows.dtype == mixed_weight.dtype == torch.float32

    softmax = torch.softmax(rows.detach().double() @ weight.detach().double().t(), dim=1)
    onehot = torch.nn.functional.one_hot(targets, 300).double()
    grad_logits = (upstream.double()[:, None] * (onehot - softmax)).bfloat16().double()
    low_rows, low_weight = rows.detach().bfloat16().double(), weight.detach().bfloat16().double()
    expected_rows = (grad_logits @ low_weight).float()
    expected_weight = (grad_logits.t() @ low_rows).float()
    for got, want in ((mixed_rows, expected_rows), (mixed_weight, expected_weight)):
        assert (got - want).norm() < 2 ** -8 * want.norm()

    def bfloat16_values(t):
        return torch.equal(t, t.bfloat16().float())

    assert bfloat16_values(mixed_rows)  # each row's gradient: one bfloat16 product
    # the weight's: one bfloat16 product with one chunk, a float32 sum of several with several
    assert bfloat16_values(mixed_weight) == (chunk_size >= rows.shape[0])
    assert not bfloat16_values(plain_rows) and not bfloat16_values(plain_weight)
    for got, plain_grad in ((mixed_rows, plain_rows), (mixed_weight, plain_weight)):
        assert not torch.equal(got, plain_grad)  # the bfloat16 products really ran
        assert (got - plain_grad).norm() < 1e-2 * plain_grad.norm()
