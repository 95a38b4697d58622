"""The network's stride-1 2-D convolution, lowered so that XLA's CPU backend keeps its fast path.

`conv2d` computes exactly `lax.conv_general_dilated(x, kernel, (1, 1), padding)` in NHWC/HWIO, and
`Conv` is `nn.Conv` on top of it (same parameters, same names). On the CPU backend two things
differ from `nn.Conv`, both about how XLA lowers the convolution, neither about what it computes:

- Its gradient is written out (`jax.custom_vjp`) as two more convolutions in the same canonical
  NHWC/HWIO form: the input gradient correlates the output gradient with the flipped kernel, and
  the kernel gradient treats channels as the batch. XLA rewrites the gradients of an ordinary
  convolution into that form itself, but not inside a while loop, where its CPU backend falls back
  to a naive loop ~15× slower (the 'scan' ensemble: `lax.scan` over members).
- Under `jax.vmap` with a batched kernel (the 'vmap' ensemble: one kernel per member) it runs one
  ordinary convolution per member (`custom_vmap`) instead of the grouped convolution that vmap's
  default rule gives, which XLA's CPU backend runs at ~3 GFLOP/s against ~120 (../shared/MEASUREMENTS.md).
  A batched input with a shared kernel is folded into the batch dimension, a shared input with
  batched kernels into the output features: one convolution each.

On accelerators `conv2d` is the plain `lax` convolution, the lowering the H200 figures in
docs/benchmarks.md were measured with: XLA's GPU backend maps the gradient convolutions of JAX's
own autodiff onto cuDNN's backward kernels, and cuDNN runs grouped convolutions natively. The
rewritten form has not been measured on a GPU.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


@functools.cache
def _correlate(pad: int):
  """`(x, kernel) -> lax.conv(x, kernel, stride 1, symmetric padding pad)` with the batching rule
  described in the module docstring (one per padding, since custom_vmap takes arrays only)."""

  @jax.custom_batching.custom_vmap
  def correlate(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2,
                                    dimension_numbers=DIMENSIONS)

  @correlate.def_vmap
  def batched(axis_size, in_batched, x, kernel):
    x_batched, kernel_batched = in_batched
    if x_batched and kernel_batched:  # one convolution per member, not a grouped convolution
      return jnp.stack([correlate(x[i], kernel[i]) for i in range(axis_size)]), True
    if x_batched:  # (M, B, ...) -> (M·B, ...)
      y = correlate(x.reshape((-1,) + x.shape[2:]), kernel)
      return y.reshape(x.shape[:2] + y.shape[1:]), True
    k = jnp.moveaxis(kernel, 0, -2)  # (M, kh, kw, C, O) -> (kh, kw, C, M·O)
    y = correlate(x, k.reshape(k.shape[:3] + (-1,)))
    y = y.reshape(y.shape[:3] + (axis_size, -1))
    return jnp.moveaxis(y, 3, 0), True

  return correlate


def conv2d(x: jax.Array, kernel: jax.Array, pad: int) -> jax.Array:
  """(B, H, W, C) ⋆ (k, k, C, O), stride 1, `pad` zeros on each side -> (B, H + 2·pad − k + 1, …, O)."""
  if jax.default_backend() == 'cpu':
    return _cpu_conv2d(x, kernel, pad)
  return lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2, dimension_numbers=DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cpu_conv2d(x, kernel, pad):
  return _correlate(pad)(x, kernel)


def _conv2d_fwd(x, kernel, pad):
  return _cpu_conv2d(x, kernel, pad), (x, kernel)


def _conv2d_bwd(pad, residuals, dy):
  x, kernel = residuals
  k = kernel.shape[0]
  # ∂x: the output gradient correlated with the flipped kernel, input and output channels swapped.
  dx = _correlate(k - 1 - pad)(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  # ∂kernel: x as (C, H, W, B) correlated with dy as (h, w, B, O) gives (C, k, k, O).
  dk = _correlate(pad)(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3))
  return dx, dk.transpose(1, 2, 0, 3)


_cpu_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
  """`nn.Conv(features, (k, k), padding)` for odd k and 'SAME' or 'VALID' padding, via `conv2d`."""
  features: int
  kernel_size: int
  padding: str = 'SAME'
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    if k % 2 == 0 or self.padding not in ('SAME', 'VALID'):
      raise ValueError(f'Conv supports odd kernels with SAME or VALID padding, not {k}, '
                       f'{self.padding!r}.')
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return conv2d(x, kernel, k // 2 if self.padding == 'SAME' else 0) + bias
