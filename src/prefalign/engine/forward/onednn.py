"""float32 matrix products on CPU through oneDNN instead of torch's default BLAS.

torch multiplies float32 matrices on CPU with MKL's sgemm. On AMD CPUs MKL runs its AVX2 kernels
even where the CPU has AVX-512; oneDNN, also inside torch, uses AVX-512. On the 2-core AMD EPYC
this project runs on, oneDNN is faster on the decoder's products and their gradients (figures in
docs/performance.md; `benchmarks/cpu_matmul.py` measures them). It is the
same float32 arithmetic (no implicit bfloat16); results differ from MKL's by summation order,
about 1e-6 relative.

While `cpu_matmul("onednn")` is active:
- every `torch.nn.functional.linear` (so every `nn.Linear`: transformers', peft's) on float32 CPU
  tensors outside autocast runs forward and backward through oneDNN (`OneDnnLinear`);
- `linear` (the chunked vocabulary projection's logits, and its row gradients outside autocast)
  does the same, in float32 also under autocast (the logits stay float32 there, see
  `train.precision`).
Anything else (other dtypes, other devices, tensor subclasses, autocast) takes torch's own path.
The kernel caches both keep are capped by `engine.process.cap_kernel_caches`.
"""

from __future__ import annotations

import contextlib
import contextvars
import platform
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

CpuMatmul = Literal["auto", "onednn", "torch"]

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("prefalign_onednn", default=False)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def available() -> bool:
    """Whether this torch has oneDNN's dense linear kernel."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def resolve(backend: CpuMatmul) -> bool:
    """Whether `backend` means oneDNN here: `auto` on x86-64 CPUs with oneDNN when no CUDA device
    is present (runs then train on the GPU, where routing would only add a Python call per op),
    `onednn` always (ValueError where this torch lacks it), `torch` never."""
    if backend == "torch":
        return False
    if backend == "onednn":
        if not available():
            raise ValueError("cpu_matmul: onednn: this torch build has no oneDNN linear kernel "
                             "(torch.backends.mkldnn); use auto or torch")
        return True
    return (available() and platform.machine().lower() in ("x86_64", "amd64")
            and not torch.cuda.is_available())


def active() -> bool:
    """Whether products are routed to oneDNN in this context."""
    return _ACTIVE.get()


@contextlib.contextmanager
def cpu_matmul(backend: CpuMatmul) -> Iterator[None]:
    """Route float32 CPU products to oneDNN inside the block when `backend` resolves to it."""
    if not resolve(backend):
        yield
        return
    token = _ACTIVE.set(True)
    try:
        with _LinearMode():
            yield
    finally:
        _ACTIVE.reset(token)


def eligible(*tensors: Tensor | None) -> bool:
    """float32 plain CPU tensors (None skipped). oneDNN's kernel is not on autocast's lists:
    called inside autocast it still multiplies in float32."""
    return all(type(t) in _PLAIN_TYPES and t.dtype == torch.float32 and t.device.type == "cpu"
               for t in tensors if t is not None)


def linear(rows: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """rows (N, I) · weightᵀ (I, O) [+ bias] -> (N, O) by oneDNN, no autograd. Either operand may
    be a transposed view; other layouts are made contiguous first."""
    return torch.ops.mkldnn._linear_pointwise(_matrix(rows), _matrix(weight), bias,
                                              "none", [], "")


def linear_tn(a: Tensor, b: Tensor) -> Tensor:
    """aᵀ · b for a (N, P), b (N, Q) -> (P, Q), a weight gradient's product. oneDNN makes a
    transposed first operand contiguous (a slow strided copy) but reads a transposed second one
    in place, so the narrower of a and b is the one copied; the result may then be a transposed
    view (autograd copies it into the parameter's layout: P × Q, the smaller copy)."""
    if a.shape[1] <= b.shape[1]:
        return linear(a.t(), b.t())
    return linear(b.t(), a.t()).t()


def _matrix(t: Tensor) -> Tensor:
    """`t` as a 2-D operand oneDNN reads in place: row- or column-major, else a contiguous copy."""
    rows, cols = t.stride()
    if (cols == 1 and rows >= t.shape[1]) or (rows == 1 and cols >= t.shape[0]):
        return t
    return t.contiguous()


class OneDnnLinear(torch.autograd.Function):
    """y = x · Wᵀ + b over the last dimension of x (…, I), W (O, I), b (O,) or None.

    Backward: ∂x = g · W, ∂W = gᵀ · x (over all rows), ∂b = Σ_rows g — each product by oneDNN.
    Saves x only when W needs a gradient and W only when x does, as torch's own linear does, so a
    frozen base layer under LoRA keeps no copy of its input.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(x if need_weight else None, weight if need_x else None)
        ctx.x_shape = x.shape
        rows = x.reshape(-1, x.shape[-1])
        return linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, O)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = linear(grad_rows, weight.t()).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            rows = x.reshape(-1, x.shape[-1])  # (N, I)
            grad_weight = linear_tn(grad_rows, rows)  # (O, I)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


class _LinearMode(TorchFunctionMode):
    """Sends eligible `F.linear` calls to `OneDnnLinear`; everything else runs unchanged."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_args(*args, **kwargs)
            if (weight.dim() == 2 and x.dim() >= 1 and x.numel() and eligible(x, weight, bias)
                    and not torch.is_autocast_enabled("cpu")):  # autocast's own bfloat16 linear
                return OneDnnLinear.apply(x, weight, bias)
        return func(*args, **kwargs)


def _linear_args(input: Tensor, weight: Tensor, bias: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor | None]:
    """F.linear's arguments, positional or by keyword."""
    return input, weight, bias
