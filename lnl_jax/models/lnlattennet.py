"""LNLAttenNet (Fig. 4): U-Net → non-local attention + global vector ‖ patches → local ensemble → head."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lnl_jax.errors import ConfigError
from lnl_jax.geometry import PatchGeometry, patch_geometry
from lnl_jax.models.conv import Lowering, lowering_for
from lnl_jax.models.ensemble import EXECUTIONS, PatchEnsemble
from lnl_jax.models.layers import KERNEL_INITS, dense
from lnl_jax.models.nonlocal_attention import GlobalVector, NonLocalAttention
from lnl_jax.models.unet import UNet

# Table IV's variants: which attention each uses.
VARIANTS = {
    'both': dict(nonlocal_=True, local=True),  # LNLAttenNet
    'nonlocal': dict(nonlocal_=True, local=False),  # Model-NonLocal
    'local': dict(nonlocal_=False, local=True),  # Model-Local
    'none': dict(nonlocal_=False, local=False),  # Model-S
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
INIT_SCHEMES = tuple(KERNEL_INITS)


def extract_patches(f9: jax.Array, geometry: PatchGeometry) -> jax.Array:
  """Eq. (5): the M overlapping P×P patches of F9, row-major. (B, S, S, C) -> (M, B, P, P, C)."""
  p = geometry.patch_size
  return jnp.stack([f9[:, y:y + p, x:x + p] for y in geometry.origins for x in geometry.origins])


class JointHead(nn.Module):
  """Sec. III-C: three fully connected layers on [g*, f_en] (17408 at full size), ReLU between."""
  hidden: tuple[int, ...]
  num_classes: int
  dtype: jnp.dtype = jnp.float32
  init_scheme: str = 'xavier'  # its kernels' initialiser, a key of layers.KERNEL_INITS

  @nn.compact
  def __call__(self, x):
    for h in self.hidden:
      x = nn.relu(dense(h, self.dtype, init_scheme=self.init_scheme)(x))
    return dense(self.num_classes, self.dtype, init_scheme=self.init_scheme)(x).astype(jnp.float32)


class LNLAttenNet(nn.Module):
  """The local non-local joint network. `__call__` returns (logits (B, C), aux).

  aux holds what the paper's figures and the tests need: 'w_global' wᵍ (B, M), 'w_local' wˡ (B, M),
  'r' R (B, M, M), and the vectors 'g', 's' (flattened), 'g_star' (Eq. 1), 'f' (B, M, D), 'f_en' (Eq. 2).
  Disabled attentions (Table IV variants) are not built: wᵍ is then uniform 1/M, wˡ = 1, g* = g.
  """
  num_classes: int
  image_size: int = 144
  num_patches: int = 16
  overlap: int = 16
  alpha: float = 0.7
  attention: str = 'both'
  width: float = 1.0
  head_widths: tuple[int, ...] = (1024, 512)
  ensemble: str = 'vmap'
  init_scheme: str = 'xavier'  # every kernel's initialiser, a key of layers.KERNEL_INITS
  dtype: jnp.dtype = jnp.float32
  lowering: Lowering = Lowering()  # how its convolutions are lowered: `create_model` picks it

  @property
  def geometry(self) -> PatchGeometry:
    return patch_geometry(self.image_size, self.num_patches, self.overlap)

  @nn.compact
  def __call__(self, images):  # (B, S, S, 3) float, normalised
    geo, m = self.geometry, self.num_patches
    use = VARIANTS[self.attention]
    x = images.astype(self.dtype)
    b = x.shape[0]
    layers = dict(lowering=self.lowering, init_scheme=self.init_scheme)
    f5, f9 = UNet(self.width, self.dtype, **layers)(x)  # (B, S/16, S/16, 1024w), (B, S, S, 64w)
    g = GlobalVector(geo.grid, self.width, self.dtype, **layers)(f5)  # (B, M·512w)
    g = g.astype(jnp.float32)
    if use['nonlocal_']:
      w_global, s, r = NonLocalAttention(geo.grid, self.width, self.dtype, **layers)(f5)
      s = s.reshape(b, -1)
      g_star = (1.0 - self.alpha) * g + self.alpha * s  # Eq. (1)
    else:
      w_global = jnp.full((b, m), 1.0 / m, jnp.float32)
      r = jnp.full((b, m, m), 1.0 / m, jnp.float32)
      s, g_star = None, g
    f, w_local = PatchEnsemble(
        m, self.width, use['local'], geo.local_attention_valid, self.ensemble, self.dtype,
        **layers, name='ensemble')(extract_patches(f9, geo))  # (B, M, D), (B, M)
    f = f.astype(jnp.float32)
    f_en = jnp.einsum('bm,bmd->bd', w_global * w_local, f)  # Eq. (2)
    logits = JointHead(self.head_widths, self.num_classes, self.dtype, self.init_scheme)(
        jnp.concatenate([g_star, f_en], axis=-1))  # (B, 17408) at full size
    aux = dict(w_global=w_global, w_local=w_local, r=r, g=g, s=s, g_star=g_star, f=f, f_en=f_en)
    return logits, aux


def validate(model_config: ml_collections.ConfigDict, image_size: int) -> None:
  """Raises ConfigError, naming the field, for any model setting that cannot build."""
  c = model_config
  if c.attention not in VARIANTS:
    raise ConfigError(f'model.attention={c.attention!r} is not one of {tuple(VARIANTS)} '
                      '(both = LNLAttenNet, local = Model-Local, nonlocal = Model-NonLocal, none = Model-S).')
  if c.ensemble not in EXECUTIONS:
    raise ConfigError(f'model.ensemble={c.ensemble!r} is not one of {EXECUTIONS}.')
  if c.init not in INIT_SCHEMES:
    raise ConfigError(f'model.init={c.init!r} is not one of {INIT_SCHEMES}.')
  if c.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={c.dtype!r} is not one of {tuple(DTYPES)}.')
  if not 0.0 <= c.alpha <= 1.0:
    raise ConfigError(f'model.alpha={c.alpha} is outside [0, 1]; Eq. (1) mixes g and s as (1−α)·g + α·s.')
  if c.width <= 0:
    raise ConfigError(f'model.width={c.width} must be positive.')
  if any(h < 1 for h in c.head_widths):
    raise ConfigError(f'model.head_widths={tuple(c.head_widths)} must all be ≥ 1.')
  patch_geometry(image_size, c.num_patches, c.overlap)


def create_model(model_config: ml_collections.ConfigDict, image_size: int, num_classes: int,
                 platform: str | None = None) -> LNLAttenNet:
  """The network a config's `model` block describes, validated, with its convolutions lowered for
  `platform` (a jax platform name; by default that of jax's default device) and jax's devices
  (those of every process: the steps are data-parallel over them all)."""
  validate(model_config, image_size)
  c = model_config
  return LNLAttenNet(
      num_classes=num_classes, image_size=image_size, num_patches=c.num_patches, overlap=c.overlap,
      alpha=c.alpha, attention=c.attention, width=c.width, head_widths=tuple(c.head_widths),
      ensemble=c.ensemble, init_scheme=c.init, dtype=DTYPES[c.dtype],
      lowering=lowering_for(platform or jax.devices()[0].platform, jax.device_count()))


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
