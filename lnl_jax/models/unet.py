"""The U-Net backbone of Fig. 4 (Ronneberger et al.), returning F5 (Conv5-2) and F9 (Conv9-2)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnl_jax.models.layers import UpConv2x2, conv, max_pool2, scaled

ENCODER_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_WIDTH = 1024


class DoubleConv(nn.Module):
  """Two 3×3 'same' convolutions with ReLU: one U-Net stage."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(conv(self.features, 3, self.dtype)(x))
    return nn.relu(conv(self.features, 3, self.dtype)(x))


class UNet(nn.Module):
  """Sec. III, Fig. 4: encoder 64–512 with 2×2 max-pools, bottleneck 1024, mirrored decoder.

  Input (B, S, S, 3) with S a multiple of 16. Returns F5 (B, S/16, S/16, 1024·width) and
  F9 (B, S, S, 64·width); there is no 1×1 classifier at the end, F9 feeds the local ensemble.
  """
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x) -> tuple[jax.Array, jax.Array]:
    skips = []
    for c in ENCODER_WIDTHS:  # (B, S, S, 3) -> (B, S/16, S/16, 512w)
      x = DoubleConv(scaled(c, self.width), self.dtype)(x)
      skips.append(x)
      x = max_pool2(x)
    f5 = DoubleConv(scaled(BOTTLENECK_WIDTH, self.width), self.dtype, name='conv5')(x)
    x = f5
    for c, skip in zip(reversed(ENCODER_WIDTHS), reversed(skips)):  # back up to (B, S, S, 64w)
      x = UpConv2x2(scaled(c, self.width), self.dtype)(x)
      x = DoubleConv(scaled(c, self.width), self.dtype)(jnp.concatenate([skip, x], axis=-1))
    return f5, x
