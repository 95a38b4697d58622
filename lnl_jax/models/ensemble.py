"""The local multi-network ensemble (Sec. III-B): M SimpleNets with local attention, one per patch.

The M members share one definition and have separate parameters, stored as ONE pytree with a
leading member axis of size M (the layout `nn.vmap(..., variable_axes={'params': 0},
split_rngs={'params': True})` creates). How the members run over that axis is `execution`:

- 'vmap':  `jax.vmap` over members: one batched program, the default. On CPU its convolutions
           run one per member rather than as XLA's grouped convolution, which is slow there
           (models/conv.py).
- 'loop':  an unrolled loop over parameter slices: M ordinary convolutions per layer.
- 'scan':  `lax.scan` over members, two per iteration: a small program, the fastest compile. Its
           members' convolutions are lowered for a while loop (`Lowering.inside_loop`).

docs/benchmarks.md compares their speed with one shared member network on the M× batch.

All three compute the same function of the same parameters (tests/test_model.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnl_jax.errors import ConfigError
from lnl_jax.models.conv import Lowering
from lnl_jax.models.layers import STACKED, conv, dense, max_pool2, scaled

EXECUTIONS = ('loop', 'vmap', 'scan')


class SimpleNet(nn.Module):
  """Table II: [3×3 conv 64, 3×3 conv 64, pool] [128, 128, pool] [256, 256, pool], ReLU."""
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, x):  # (B, P, P, 64w) -> (B, P/8, P/8, 256w)
    conv3 = lambda c: conv(scaled(c, self.width), 3, self.dtype, lowering=self.lowering,
                           init_scheme=self.init_scheme)
    for c in (64, 128, 256):
      x = nn.relu(conv3(c)(x))
      x = nn.relu(conv3(c)(x))
      x = max_pool2(x)
    return x


class LocalAttention(nn.Module):
  """Table III: 3×3 valid conv 256, 1×1 conv 128, 3×3 valid conv 128, 1×1 conv 64 (ReLU), FC 64, FC 1, sigmoid.

  Table III lists no activation between its two fully connected layers; that is kept. When the
  pooled patch map is smaller than 5×5 (small patches: M = 36 at 144 px, or small images), the two
  valid convolutions would leave nothing, so they run with 'SAME' padding instead (`valid=False`).
  """
  width: float = 1.0
  valid: bool = True
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, x):  # (B, p, p, 256w) -> (B,) in (0, 1)
    pad = 'VALID' if self.valid else 'SAME'
    layer = lambda c, k, padding='SAME': conv(scaled(c, self.width), k, self.dtype, padding,
                                              lowering=self.lowering, init_scheme=self.init_scheme)
    x = nn.relu(layer(256, 3, pad)(x))  # (B, p-2, p-2, 256w)
    x = nn.relu(layer(128, 1)(x))
    x = nn.relu(layer(128, 3, pad)(x))  # (B, p-4, p-4, 128w)
    x = nn.relu(layer(64, 1)(x))
    x = dense(64, self.dtype, init_scheme=self.init_scheme)(x.reshape(x.shape[0], -1))
    x = dense(1, self.dtype, init_scheme=self.init_scheme)(x)
    return nn.sigmoid(x.astype(jnp.float32))[:, 0]


class PatchNetwork(nn.Module):
  """One member of the ensemble: SimpleNet's feature fᵢ and, if enabled, its local weight wˡᵢ."""
  width: float = 1.0
  local_attention: bool = True
  valid: bool = True
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, patch):  # (B, P, P, 64w) -> ((B, D), (B,))
    x = SimpleNet(self.width, self.dtype, self.lowering, self.init_scheme)(patch)
    if self.local_attention:
      w_local = LocalAttention(self.width, self.valid, self.dtype, self.lowering,
                               self.init_scheme)(x)
    else:
      w_local = jnp.ones(x.shape[:1], jnp.float32)
    return x.reshape(x.shape[0], -1), w_local


class PatchEnsemble(nn.Module):
  """M PatchNetworks with stacked parameters (leading axis M), run by `execution`."""
  num_members: int
  width: float = 1.0
  local_attention: bool = True
  valid: bool = True
  execution: str = 'vmap'
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered (models/conv.py)
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, patches):  # (M, B, P, P, 64w) -> f (B, M, D), wˡ (B, M)
    if self.execution not in EXECUTIONS:
      raise ConfigError(f'model.ensemble={self.execution!r} is not one of {EXECUTIONS}.')
    lowering = self.lowering.inside_loop() if self.execution == 'scan' else self.lowering
    member = PatchNetwork(self.width, self.local_attention, self.valid, self.dtype, lowering,
                          self.init_scheme, parent=None)
    example = jnp.zeros((1,) + patches.shape[2:], jnp.float32)

    def init(rng):  # one independent draw per member, stacked on axis 0
      keys = jax.random.split(rng, self.num_members)
      return jax.vmap(lambda k: member.init(k, example)['params'])(keys)

    params = self.param(STACKED, init)
    apply = lambda p, x: member.apply({'params': p}, x)
    if self.execution == 'vmap':
      f, w_local = jax.vmap(apply)(params, patches)
    elif self.execution == 'scan':
      # Two members per loop iteration: faster on CPU than one (lax.map), the program still small.
      _, (f, w_local) = jax.lax.scan(lambda carry, px: (carry, apply(*px)), None,
                                     (params, patches), unroll=2)
    else:
      outs = [apply(jax.tree.map(lambda a, i=i: a[i], params), patches[i])
              for i in range(self.num_members)]
      f, w_local = (jnp.stack(o) for o in zip(*outs))
    return jnp.swapaxes(f, 0, 1), jnp.swapaxes(w_local, 0, 1)
