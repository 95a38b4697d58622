"""The non-local attention network (Sec. III-A, Table I, Eq. 1) and the global vector g (Sec. III-C)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnl_jax.models.conv import Lowering
from lnl_jax.models.layers import conv, pool_to_grid, scaled

# Added to every entry of R before the L1 row normalisation, so a row of all-zero ReLU outputs
# still sums to one (it becomes uniform) instead of dividing by zero.
ROW_EPS = 1e-6


class NonLocalAttention(nn.Module):
  """Table I: Q, K, V = 1×1 conv 512 + ReLU on F5, pooled to n×n; R = Q·Kᵀ, L1-normalised rows.

  Returns wᵍ (B, M), the column means of R (sums to 1, Sec. III-A-1), s = R·V (B, M, 512·width)
  and R (B, M, M). R is formed in float32 whatever the compute dtype.
  """
  grid: int
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, f5):  # (B, h, h, 1024w)
    b = f5.shape[0]
    m = self.grid * self.grid

    def branch(name):  # (B, h, h, 1024w) -> (B, n, n, 512w) -> (B, M, 512w)
      y = nn.relu(conv(scaled(512, self.width), 1, self.dtype, name=name, lowering=self.lowering,
                       init_scheme=self.init_scheme)(f5))
      return pool_to_grid(y, self.grid).reshape(b, m, -1).astype(jnp.float32)

    q, k, v = branch('query'), branch('key'), branch('value')
    r = jnp.einsum('bid,bjd->bij', q, k) + ROW_EPS  # (B, M, M), ≥ 0 since Q, K ≥ 0
    r = r / jnp.sum(jnp.abs(r), axis=-1, keepdims=True)  # L1 row normalisation, not softmax
    w_global = jnp.mean(r, axis=1)  # column means: (B, M)
    s = jnp.einsum('bij,bjd->bid', r, v)  # (B, M, 512w)
    return w_global, s, r


class GlobalVector(nn.Module):
  """Sec. III-C: F5 → two 3×3 convs (1024, 512) + one pooling → n×n×512, flattened to g.

  The paper gives only "two convolution layers and one pooling layer" and g's size (8192 = 4·4·512);
  the widths 1024 → 512 are the implementer's choice (with them the full model has the 96,732,567
  parameters the README gives).
  """
  grid: int
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, f5) -> jax.Array:  # (B, h, h, 1024w) -> (B, M·512w)
    conv3 = lambda c: conv(scaled(c, self.width), 3, self.dtype, lowering=self.lowering,
                           init_scheme=self.init_scheme)
    x = nn.relu(conv3(1024)(f5))
    x = nn.relu(conv3(512)(x))
    return pool_to_grid(x, self.grid).reshape(x.shape[0], -1)
