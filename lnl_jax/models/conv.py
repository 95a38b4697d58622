"""The network's stride-1 2-D convolution, lowered so that XLA's CPU backend keeps its fast path.

`conv2d` computes exactly `lax.conv_general_dilated(x, kernel, (1, 1), padding)` in NHWC/HWIO, and
`Conv` is `nn.Conv` on top of it (same parameters, same names). Three lowerings compute it; they
differ in how XLA runs the convolution, not in what it computes:

- 'xla', the plain `lax` convolution: on accelerators, the lowering the H200 figures in
  docs/benchmarks.md were measured with. XLA's GPU backend maps the gradient convolutions of JAX's
  own autodiff onto cuDNN's backward kernels, and cuDNN runs grouped convolutions natively.
- 'conv' (CPU): a convolution whose gradient is written out (`jax.custom_vjp`) as two more
  convolutions in the same canonical NHWC/HWIO form: the input gradient correlates the output
  gradient with the flipped kernel, and the kernel gradient treats channels as the batch. XLA
  rewrites the gradients of an ordinary convolution into that form itself, but not inside a while
  loop, where its CPU backend falls back to a naive loop many times slower (the 'scan' ensemble:
  `lax.scan` over members). Under `jax.vmap` with a batched kernel (the 'vmap' ensemble: one kernel
  per member) it runs one ordinary convolution per member (`custom_vmap`) instead of the grouped
  convolution that vmap's default rule gives, which XLA's CPU backend runs tens of times slower
  than an ordinary one. A batched input with a shared kernel is folded into the batch dimension, a
  shared input with batched kernels into the output features: one convolution each.
- 'matmul' (CPU, small maps): one matmul over the k·k shifted copies of the input (im2col);
  autodiff gives matmuls and the pads and adds of a col2im for its gradient, and vmap a batched
  matmul. `cpu_lowering` says which of 'conv' and 'matmul' a shape gets.
- 'onednn' (CPU, float32): the convolution and its two gradients run by oneDNN's kernels through
  XLA's FFI (models/onednn.py), faster than XLA's CPU convolution kernels on all but the network's
  tiniest maps; one call per member under vmap.

Which lowering each convolution takes is a field of the model, a `Lowering` policy that
`lowering_for` picks once from the platform when the model is built; the CPU lowerings have not
been measured on a GPU.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lnl_jax.models import onednn

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


LOWERINGS = ('xla', 'conv', 'matmul', 'onednn')


def cpu_lowering(positions: int, features: int, in_loop: bool = False) -> str:
  """'matmul' or 'conv' for a convolution on CPU with this many output positions (batch × height ×
  width) and output features, traced inside a while loop or not.

  Per layer, `python -m lnl_jax.bench --config=configs/raf.py --batch=2 --layers` measures both
  (docs/benchmarks.md): the matmul wins on small maps with many features (the U-Net's and the
  global branch's 9×9 and 18×18 layers, 512–1024 features) and loses on large maps, where the
  k²-times-larger im2col copy costs more than the convolution. On the SimpleNets' maps (≤ 256
  features) most layers alone favour the matmul, but the ensemble in place did not gain from it,
  except on the local attention's tiny maps (≤ 128 positions), and there only outside a while
  loop: inside the 'scan' ensemble's loop they slowed it down.
  """
  if positions <= 1024 and features >= 512:
    return 'matmul'
  return 'matmul' if positions <= 128 and not in_loop else 'conv'


@dataclasses.dataclass(frozen=True)
class Lowering:
  """Which of `LOWERINGS` each convolution of a model takes, given its shapes: a field of every
  module that holds convolutions, so the choice is a value of the model and not of where it is
  traced.

  `rule` is one of `LOWERINGS` for every convolution, or 'cpu' for `cpu_lowering`'s choice per
  convolution. 'onednn' and 'cpu' give 'conv' where the shape is symbolic (as `jax.export` traces
  a batch of any size: a batch-polymorphic export holds no call into oneDNN). 'onednn' keeps
  `cpu_lowering`'s 'matmul' for small maps, where the im2col matmul ran about as fast, and its
  choice for other dtypes than float32; oneDNN runs the rest.
  `in_loop` marks convolutions that run inside a while loop (the 'scan' ensemble's members).
  """
  rule: str = 'xla'
  in_loop: bool = False

  def __post_init__(self):
    if self.rule not in LOWERINGS + ('cpu',):
      raise ValueError(f"Lowering.rule must be one of {LOWERINGS + ('cpu',)}, not {self.rule!r}.")
    if self.rule == 'onednn':
      onednn.require()

  def inside_loop(self) -> Lowering:
    return dataclasses.replace(self, in_loop=True)

  def __call__(self, x_shape, kernel_shape, pad: int, dtype=jnp.float32) -> str:
    """The lowering of a (B, H, W, C) ⋆ (k, k, C, O) convolution of `dtype` with `pad` zeros on
    each side."""
    if self.rule not in ('cpu', 'onednn'):
      return self.rule
    b, h, w, _ = x_shape
    k = kernel_shape[0]
    if not all(isinstance(d, int) for d in (b, h, w)):
      return 'conv'
    choice = cpu_lowering(b * (h + 2 * pad - k + 1) * (w + 2 * pad - k + 1), kernel_shape[-1],
                          self.in_loop)
    if self.rule == 'onednn' and choice == 'conv' and jnp.dtype(dtype) == jnp.float32:
      return 'onednn'
    return choice


def lowering_for(platform: str, devices: int = 1) -> Lowering:
  """The policy for models run on `platform` (a jax platform name) over `devices` devices (of
  every process): oneDNN's kernels on one CPU device where `onednn.available()`, else
  `cpu_lowering`'s choices; XLA's own convolution on accelerators. XLA cannot split a foreign call
  over the batch, so over several devices each would convolve the whole global batch: there the
  CPU keeps XLA's kernels."""
  if platform != 'cpu':
    return Lowering('xla')
  return Lowering('onednn' if devices == 1 and onednn.available() else 'cpu')


def conv2d(x: jax.Array, kernel: jax.Array, pad: int, lowering: str = 'xla') -> jax.Array:
  """(B, H, W, C) ⋆ (k, k, C, O), stride 1, `pad` zeros on each side -> (B, H + 2·pad − k + 1, …,
  O), computed in `lowering`, one of `LOWERINGS`."""
  if lowering == 'xla':
    return lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2,
                                    dimension_numbers=DIMENSIONS)
  if lowering == 'conv':
    return _cpu_conv2d(x, kernel, pad)
  if lowering == 'matmul':
    return _matmul_conv2d(x, kernel, pad)
  if lowering == 'onednn':
    if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
      raise ValueError(f"the 'onednn' lowering takes float32, not {x.dtype} ⋆ {kernel.dtype}.")
    onednn.require()
    return onednn.conv2d(x, kernel, pad)
  raise ValueError(f'lowering must be one of {LOWERINGS}, not {lowering!r}.')


def _matmul_conv2d(x, kernel, pad):
  k, _, c, o = kernel.shape
  b, h, w, _ = x.shape
  ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  cols = jnp.concatenate([x[:, i:i + ho, j:j + wo] for i in range(k) for j in range(k)], axis=-1)
  y = jnp.dot(cols.reshape(-1, k * k * c), kernel.reshape(k * k * c, o))
  return y.reshape(b, ho, wo, o)


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
  """`nn.Conv(features, (k, k), padding)` for odd k and 'SAME' or 'VALID' padding, via `conv2d` in
  the lowering `lowering` picks for its shapes."""
  features: int
  kernel_size: int
  padding: str = 'SAME'
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    if k % 2 == 0 or self.padding not in ('SAME', 'VALID'):
      raise ValueError(f'Conv supports odd kernels with SAME or VALID padding, not {k}, '
                       f'{self.padding!r}.')
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    pad = k // 2 if self.padding == 'SAME' else 0
    return conv2d(x, kernel, pad, self.lowering(x.shape, kernel.shape, pad, x.dtype)) + bias
