"""Small building blocks shared by the parts of the network."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lnl_jax.models.conv import Conv, Lowering

def kernel_bound(shape, scheme: str) -> float:
  """The bound b of the uniform U(−b, b) a kernel of `shape` (..., fan_in axis, fan_out axis) is
  drawn from under `model.init`'s `scheme`; its variance b²/3 is the scheme's. Biases start at 0.

  'xavier' (Sec. IV: "Xavier initializer", no pre-training): 2 / (fan_in + fan_out).
  'he': 2 / fan_in. Xavier's variance halves the signal's second moment at every ReLU layer; over
  LNLAttenNet's ~30 layers the logits start far smaller than the input and, at small widths,
  training sits at chance for hundreds of steps (docs/initialisation.md).
  """
  receptive = math.prod(shape[:-2])
  fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
  variance = {'xavier': 2 / (fan_in + fan_out), 'he': 2 / fan_in}[scheme]
  return math.sqrt(3 * variance)


def _kernel_init(scheme: str):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * kernel_bound(shape, scheme)
  return init


# The modules' kernel initialisers, by `model.init` (every module's `init_scheme`): what
# `Module.init` draws. Training draws the same distributions on the host (`draw_params`).
KERNEL_INITS = {scheme: _kernel_init(scheme) for scheme in ('xavier', 'he')}
STACKED = 'members'  # the parameter holding the ensemble's members, stacked on axis 0


def draw_params(abstract, scheme: str, seed: int):
  """Parameters of the shapes of `abstract` (a tree of ShapeDtypeStructs, as `Module.init` would
  give them), drawn on the host with NumPy from `seed`: every kernel from U(−b, b) with
  b = kernel_bound (a stacked member's kernel with its own member's fans), every bias 0.

  One generator for the whole tree, in the tree's (sorted) order: no compilation at any width, and
  the same numbers on every process of a multi-process run.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'bias':
      return np.zeros(leaf.shape, leaf.dtype)
    if name != 'kernel':
      raise ValueError(f'draw_params: no initialiser for parameter {jax.tree_util.keystr(path)}')
    stacked = any(getattr(k, 'key', None) == STACKED for k in path)
    bound = kernel_bound(leaf.shape[1:] if stacked else leaf.shape, scheme)
    u = rng.random(leaf.shape, dtype=np.float32)
    return ((2 * u - 1) * bound).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, abstract)


def scaled(channels: int, width: float) -> int:
  """A layer width of the paper scaled by the config's `model.width` multiplier."""
  return max(1, round(channels * width))


def conv(features: int, kernel: int, dtype, padding='SAME', name=None, *,
         lowering: Lowering = Lowering(), init_scheme: str = 'xavier') -> Conv:
  return Conv(features, kernel, padding, KERNEL_INITS[init_scheme], dtype, lowering, name=name)


def dense(features: int, dtype, name=None, *, init_scheme: str = 'xavier') -> nn.Dense:
  return nn.Dense(features, kernel_init=KERNEL_INITS[init_scheme], dtype=dtype,
                  param_dtype=jnp.float32, name=name)


def max_pool2(x: jax.Array) -> jax.Array:
  """2×2 max-pooling with stride 2 (floor: a 9×9 map gives 4×4, as in Table I).

  Written as a reshape and a max rather than `nn.max_pool`: the gradient of a reduce-window is a
  select-and-scatter, which XLA's CPU backend runs slowly; that of a plain reduction is not. Ties
  split the gradient instead of giving it to the first maximum; after a ReLU the only common tie is
  0, where the gradient is 0 either way.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def pool_to_grid(x: jax.Array, n: int) -> jax.Array:
  """Max-pools a (B, h, h, C) map to (B, n, n, C).

  Table I's 2×2/2 pooling when it gives n×n (9×9 → 4×4 for M = 16); otherwise adaptive max-pooling
  with bins [⌊i·h/n⌋, ⌈(i+1)·h/n⌉) (the implementer's choice for M ≠ 16, as in PyTorch).
  """
  h = x.shape[1]
  if h // 2 == n:
    return max_pool2(x)
  if h == n:
    return x
  bins = [(math.floor(i * h / n), math.ceil((i + 1) * h / n)) for i in range(n)]
  rows = jnp.stack([x[:, a:b].max(axis=1) for a, b in bins], axis=1)  # (B, n, h, C)
  return jnp.stack([rows[:, :, a:b].max(axis=2) for a, b in bins], axis=2)  # (B, n, n, C)


class UpConv2x2(nn.Module):
  """U-Net's 2×2 stride-2 up-convolution written as one matmul and a depth-to-space.

  Each output pixel (2i+a, 2j+b) is x[i, j] · kernel[a, b]: exactly a transposed convolution with
  a 2×2 kernel and stride 2, without the strided scatter that XLA's CPU backend runs (for
  `nn.ConvTranspose`) tens of times slower than a plain convolution of the same size.
  """
  features: int
  dtype: jnp.dtype = jnp.float32
  init_scheme: str = 'xavier'  # a key of KERNEL_INITS

  @nn.compact
  def __call__(self, x):  # (B, h, w, C) -> (B, 2h, 2w, F)
    kernel = self.param('kernel', KERNEL_INITS[self.init_scheme],
                        (2, 2, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    b, h, w, c = x.shape
    f = self.features
    # One (B·h·w, C) × (C, 2·2·F) matmul, then depth-to-space: every copy moves whole F-vectors.
    y = x.reshape(b * h * w, c) @ kernel.transpose(2, 0, 1, 3).reshape(c, 4 * f)
    y = y.reshape(b, h, w, 2, 2, f).transpose(0, 1, 3, 2, 4, 5)  # (B, h, 2, w, 2, F)
    return y.reshape(b, 2 * h, 2 * w, f) + bias
