"""The U-Net backbone of Fig. 4 (Ronneberger et al.), returning F5 (Conv5-2) and F9 (Conv9-2)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnl_jax.models.conv import Lowering
from lnl_jax.models.layers import UpConv2x2, conv, max_pool2, scaled

ENCODER_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_WIDTH = 1024


class DoubleConv(nn.Module):
  """Two 3×3 'same' convolutions with ReLU: one U-Net stage."""
  features: int
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, x):
    conv3 = lambda: conv(self.features, 3, self.dtype, lowering=self.lowering,
                         init_scheme=self.init_scheme)
    x = nn.relu(conv3()(x))
    return nn.relu(conv3()(x))


class UNet(nn.Module):
  """Sec. III, Fig. 4: encoder 64–512 with 2×2 max-pools, bottleneck 1024, mirrored decoder.

  Input (B, S, S, 3) with S a multiple of 16. Returns F5 (B, S/16, S/16, 1024·width) and
  F9 (B, S, S, 64·width); there is no 1×1 classifier at the end, F9 feeds the local ensemble.
  """
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, x) -> tuple[jax.Array, jax.Array]:
    stage = lambda c, **kw: DoubleConv(scaled(c, self.width), self.dtype, self.lowering,
                                       self.init_scheme, **kw)
    skips = []
    for c in ENCODER_WIDTHS:  # (B, S, S, 3) -> (B, S/16, S/16, 512w)
      x = stage(c)(x)
      skips.append(x)
      x = max_pool2(x)
    f5 = stage(BOTTLENECK_WIDTH, name='conv5')(x)
    x = f5
    for c, skip in zip(reversed(ENCODER_WIDTHS), reversed(skips)):  # back up to (B, S, S, 64w)
      x = UpConv2x2(scaled(c, self.width), self.dtype, self.init_scheme)(x)
      x = stage(c)(jnp.concatenate([skip, x], axis=-1))
    return f5, x
