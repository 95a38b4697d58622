"""Numerical checks of LNLAttenNet's parts against the paper's definitions (tiny widths)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.errors import ScopeParamShapeError

from lnl_jax.config_base import base_config
from lnl_jax.errors import ConfigError
from lnl_jax.geometry import patch_geometry
from lnl_jax.models import LNLAttenNet, create_model, num_params, onednn
from lnl_jax.models.conv import Lowering, lowering_for
from lnl_jax.models.layers import KERNEL_INITS, UpConv2x2, pool_to_grid
from lnl_jax.models.lnlattennet import extract_patches
from fixtures import drawn_params

# 'scan' compiles fastest; the executions' equivalence is tested on its own below. The
# convolutions are lowered as `create_model` lowers them for one device of this backend.
TINY = dict(width=1 / 32, head_widths=(16, 8), num_classes=7, ensemble='scan',
            lowering=lowering_for(jax.default_backend()))


def key(seed):
  return jax.random.key(seed, impl='rbg')  # threefry's init compiles ~5× slower on CPU


def module_init(model, images, seed=0):
  """The parameters of the modules' own initialisers (`Module.init`, compiled)."""
  return jax.jit(model.init)(key(seed), images[:1])['params']


def init_apply(model, images, seed=0, init=drawn_params):
  params = init(model, images, seed)
  return params, jax.jit(model.apply)({'params': params}, images)


@pytest.fixture(scope='module')
def tiny_run():
  model = LNLAttenNet(**TINY)
  images = jax.random.normal(jax.random.key(1), (3, 144, 144, 3))
  return model, images, *init_apply(model, images, init=module_init)


def test_full_model_parameter_count_matches_readme():
  # README: 96,732,567 parameters at 144×144, M = 16, width 1.
  shapes = jax.eval_shape(LNLAttenNet(num_classes=7).init, jax.random.key(0), jnp.zeros((1, 144, 144, 3)))
  assert num_params(shapes['params']) == 96_732_567


@pytest.mark.parametrize('m,patch', [(4, 80), (9, 59), (16, 48), (25, 42), (36, 38)])
def test_output_shapes_for_every_num_patches(m, patch):
  model = LNLAttenNet(num_patches=m, **TINY)
  x = jnp.zeros((2, 144, 144, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, aux = jax.eval_shape(model.apply, shapes, x)
  pooled = patch // 8
  d = pooled * pooled * 8  # 256 · width 1/32 channels
  chex.assert_shape(logits, (2, 7))
  chex.assert_shape([aux['w_global'], aux['w_local']], (2, m))
  chex.assert_shape(aux['r'], (2, m, m))
  chex.assert_shape(aux['f'], (2, m, d))
  chex.assert_shape(aux['g'], (2, m * 16))  # n×n×512 · width
  assert model.geometry.patch_size == patch


def test_small_image_runs():
  model = LNLAttenNet(image_size=64, overlap=8, **TINY)
  logits, aux = init_apply(model, jnp.ones((2, 64, 64, 3)))[1]
  chex.assert_shape(logits, (2, 7))
  chex.assert_tree_all_finite((logits, aux['w_global'], aux['w_local']))
  assert not model.geometry.local_attention_valid  # 22-px patches: 2×2 pooled map, 'SAME' convs


def test_attention_invariants(tiny_run):
  _, _, _, (logits, aux) = tiny_run
  chex.assert_trees_all_close(aux['r'].sum(-1), jnp.ones((3, 16)), atol=1e-5)  # L1 rows
  assert (aux['r'] >= 0).all()
  chex.assert_trees_all_close(aux['w_global'].sum(-1), jnp.ones(3), atol=1e-5)
  assert (aux['w_global'] >= 0).all()
  chex.assert_trees_all_close(aux['w_global'], aux['r'].mean(axis=1))  # column means
  assert ((aux['w_local'] > 0) & (aux['w_local'] < 1)).all()
  chex.assert_tree_all_finite(logits)


def test_global_weights_are_column_means_not_softmax():
  from lnl_jax.models.nonlocal_attention import NonLocalAttention
  f5 = jax.random.uniform(jax.random.key(3), (2, 9, 9, 8))
  mod = NonLocalAttention(grid=4, width=1 / 64)
  params = mod.init(jax.random.key(0), f5)
  w, s, r = mod.apply(params, f5)
  # Recompute Table I by hand in numpy.
  p = params['params']
  def branch(name):
    y = np.maximum(np.asarray(f5) @ np.asarray(p[name]['kernel'][0, 0]) + np.asarray(p[name]['bias']), 0)
    y = y[:, :8, :8].reshape(2, 4, 2, 4, 2, -1).max(axis=(2, 4))  # 2×2/2 max-pool of 9×9
    return y.reshape(2, 16, -1)
  q, k, v = branch('query'), branch('key'), branch('value')
  rr = q @ k.transpose(0, 2, 1) + 1e-6
  rr = rr / rr.sum(-1, keepdims=True)
  np.testing.assert_allclose(r, rr, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(w, rr.mean(1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(s, rr @ v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('alpha', [0.0, 1.0, 0.7])
def test_alpha_mixes_g_and_s(alpha):
  model = LNLAttenNet(alpha=alpha, image_size=64, overlap=8, **TINY)
  _, (_, aux) = init_apply(model, jax.random.normal(jax.random.key(2), (2, 64, 64, 3)))
  assert not np.allclose(aux['g'], aux['s'])
  chex.assert_trees_all_close(aux['g_star'], (1 - alpha) * aux['g'] + alpha * aux['s'], atol=1e-6)


def test_patches_equal_hand_slicing():
  f9 = jax.random.normal(jax.random.key(0), (2, 144, 144, 5))
  geo = patch_geometry(144, 16, 16)
  patches = extract_patches(f9, geo)
  chex.assert_shape(patches, (16, 2, 48, 48, 5))
  np.testing.assert_array_equal(patches[0], f9[:, 0:48, 0:48])
  np.testing.assert_array_equal(patches[1], f9[:, 0:48, 32:80])  # 16 px overlap, stride 32
  np.testing.assert_array_equal(patches[4], f9[:, 32:80, 0:48])  # row-major
  np.testing.assert_array_equal(patches[15], f9[:, 96:144, 96:144])


def test_ensemble_sum_is_equation_2(tiny_run):
  _, _, _, (_, aux) = tiny_run
  manual = sum(aux['w_global'][:, i, None] * aux['w_local'][:, i, None] * aux['f'][:, i] for i in range(16))
  chex.assert_trees_all_close(aux['f_en'], manual, rtol=1e-5, atol=1e-6)


def test_none_variant_ignores_attention():
  images = jax.random.normal(jax.random.key(4), (2, 64, 64, 3))
  model = LNLAttenNet(attention='none', image_size=64, overlap=8, **TINY)
  params, (logits, aux) = init_apply(model, images)
  assert 'NonLocalAttention_0' not in params
  assert set(params['ensemble']['members']) == {'SimpleNet_0'}
  chex.assert_trees_all_close(aux['w_global'], jnp.full((2, 16), 1 / 16))
  chex.assert_trees_all_close(aux['w_local'], jnp.ones((2, 16)))
  chex.assert_trees_all_close(aux['g_star'], aux['g'])
  # Model-S's ensemble is the plain mean of the patch features.
  chex.assert_trees_all_close(aux['f_en'], aux['f'].mean(axis=1), rtol=1e-5, atol=1e-6)
  # A 'both' model with the same backbone/ensemble/head parameters gives different logits:
  both = LNLAttenNet(attention='both', image_size=64, overlap=8, **TINY)
  shared = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
  both_params = jax.tree_util.tree_map_with_path(
      lambda p, x: shared.get(jax.tree_util.keystr(p), x), drawn_params(both, images))
  chex.assert_trees_all_equal(both_params['UNet_0'], params['UNet_0'])
  assert not np.allclose(jax.jit(both.apply)({'params': both_params}, images)[0], logits)


@pytest.mark.parametrize('attention,has_nonlocal,has_local',
                         [('both', True, True), ('local', False, True), ('nonlocal', True, False)])
def test_variants_build_only_their_attention(attention, has_nonlocal, has_local):
  model = LNLAttenNet(attention=attention, image_size=64, overlap=8, **TINY)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))['params']
  assert ('NonLocalAttention_0' in shapes) == has_nonlocal
  assert ('LocalAttention_0' in shapes['ensemble']['members']) == has_local


def test_ensemble_members_initialised_differently(tiny_run):
  _, _, params, _ = tiny_run
  for leaf in jax.tree.leaves(params['ensemble']['members']):
    assert leaf.shape[0] == 16
    if leaf.ndim > 2:  # stacked kernels (biases start at zero)
      flat = leaf.reshape(16, -1)
      assert not np.allclose(flat[0], flat[1])
      assert len({bytes(np.asarray(row)) for row in flat}) == 16


# The executions compared on M = 4 patches of a 64-px image, as the unrolled 'loop' compiles a
# program per member; at M = 16 every execution is checked member by member by
# test_paper_model.py::test_ensemble_member_i_reads_patch_i_with_its_own_parameters.
AGREE = dict(image_size=64, overlap=8, num_patches=4)


def _loss_and_grads(execution, params, images):
  model = LNLAttenNet(**AGREE, **dict(TINY, ensemble=execution))

  def loss(p):
    logits, aux = model.apply({'params': p}, images)
    return jnp.sum(logits ** 2) + jnp.sum(aux['w_local']), (logits, aux['w_local'])

  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.fixture(scope='module')
def loop_reference():
  images = jax.random.normal(jax.random.key(5), (2, 64, 64, 3))
  model = LNLAttenNet(**AGREE, **dict(TINY, ensemble='loop'))
  params = drawn_params(model, images)
  return images, params, _loss_and_grads('loop', params, images)


@pytest.mark.parametrize('execution', ['vmap', 'scan'])
def test_ensemble_executions_agree_forward_and_gradients(execution, loop_reference):
  images, params, ((_, (o1, w1)), g1) = loop_reference
  other = LNLAttenNet(**AGREE, **dict(TINY, ensemble=execution))
  chex.assert_trees_all_equal_shapes(params, jax.eval_shape(other.init, key(0), images[:1])['params'])
  (_, (o2, w2)), g2 = _loss_and_grads(execution, params, images)
  chex.assert_trees_all_close(o1, o2, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(w1, w2, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(g1, g2, rtol=1e-3, atol=1e-5)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(g1['ensemble']))


def test_upconv_is_a_2x2_stride2_transposed_convolution():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
  mod = UpConv2x2(features=6)
  p = mod.init(jax.random.key(1), x)
  y = np.asarray(mod.apply(p, x))
  k, b = np.asarray(p['params']['kernel']), np.asarray(p['params']['bias'])
  xn = np.asarray(x)
  for a in range(2):
    for c in range(2):
      np.testing.assert_allclose(y[:, a::2, c::2], xn @ k[a, c] + b, rtol=1e-5, atol=1e-5)


def test_pool_to_grid():
  x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
  np.testing.assert_array_equal(pool_to_grid(x, 4), np.asarray(x)[:, :8, :8].reshape(1, 4, 2, 4, 2, 2).max((2, 4)))
  y = np.asarray(pool_to_grid(x, 3))  # 9 → 3: 3×3 bins
  np.testing.assert_array_equal(y, np.asarray(x).reshape(1, 3, 3, 3, 3, 2).max((2, 4)))
  z = np.asarray(pool_to_grid(x, 5))  # adaptive bins [0,2) [1,4) [3,6) [5,8) [7,9)
  assert z[0, 1, 2, 0] == np.asarray(x)[0, 1:4, 3:6, 0].max()


def model_config(**overrides):
  c = base_config().model
  c.update(overrides)
  return c


@pytest.mark.parametrize('overrides,image_size,field', [
    (dict(num_patches=15), 144, 'model.num_patches=15'),
    (dict(alpha=1.5), 144, 'model.alpha=1.5'),
    (dict(attention='global'), 144, "model.attention='global'"),
    (dict(ensemble='pmap'), 144, "model.ensemble='pmap'"),
    (dict(dtype='float16'), 144, "model.dtype='float16'"),
    (dict(overlap=-4), 144, 'would not cover'),
    (dict(overlap=200), 144, 'model.overlap=200'),
    (dict(), 72, 'data.image_size=72'),
    (dict(), 48, 'data.image_size=48'),
    (dict(num_patches=36), 16, 'data.image_size=16'),
])
def test_bad_configs_are_refused_with_the_field_named(overrides, image_size, field):
  with pytest.raises(ConfigError, match=field.replace('(', r'\(').replace('.', r'\.')):
    create_model(model_config(**overrides), image_size=image_size, num_classes=7)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  """bf16 compute on the same float32 parameters: logits within a few % of float32's, and a
  gradient pointing the same way (what decides whether training goes where float32's goes)."""
  config = model_config(width=1 / 16, head_widths=(32, 16), init='he', ensemble='scan')
  f32 = create_model(config, 64, 7).clone(overlap=8)
  bf16 = f32.clone(dtype=jnp.bfloat16)
  images = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
  params = drawn_params(f32, images)

  def loss_and_grads(model):
    def loss(p):
      logits, _ = model.apply({'params': p}, images)
      return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), logits
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (_, logits32), grads32 = loss_and_grads(f32)
  (_, logits16), grads16 = loss_and_grads(bf16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert logits16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
  scale = float(jnp.abs(logits32).max())
  assert scale > 0
  assert float(jnp.abs(logits16 - logits32).max()) < 0.05 * scale
  flat = lambda t: jnp.concatenate([g.ravel() for g in jax.tree.leaves(t)])
  g32, g16 = flat(grads32), flat(grads16)
  cosine = float(g32 @ g16 / (jnp.linalg.norm(g32) * jnp.linalg.norm(g16)))
  assert cosine > 0.95, cosine  # measured 0.984 (logits: 1.0 % of max |logit|)


def test_create_model_lowers_the_convolutions_for_the_platform():
  config = model_config()
  # oneDNN on one CPU device; on several (this process has 4) XLA's kernels, which XLA can split
  # over the batch.
  assert jax.device_count() == 4
  assert create_model(config, 144, 7, platform='cpu').lowering == Lowering('cpu')
  assert lowering_for('cpu', 1) == Lowering('onednn' if onednn.available() else 'cpu')
  assert create_model(config, 144, 7, platform='gpu').lowering == Lowering('xla')
  assert create_model(config, 144, 7).lowering == lowering_for(jax.devices()[0].platform, 4)


def test_he_draws_are_the_xavier_draws_rescaled():
  """From the same key the two uniform schemes draw the same numbers, scaled by
  sqrt((fan_in + fan_out) / fan_in)."""
  shape = (3, 3, 8, 24)
  fan_in, fan_out = 9 * 8, 9 * 24
  xavier, he = (KERNEL_INITS[s](jax.random.key(0), shape) for s in ('xavier', 'he'))
  np.testing.assert_allclose(he, xavier * np.sqrt((fan_in + fan_out) / fan_in), rtol=1e-6)


@pytest.mark.parametrize('execution', ['loop', 'vmap'])
def test_ensemble_refuses_parameters_of_another_member_count(execution, loop_reference):
  """Parameters stacked for another M are refused with the parameter named (flax's shape check of
  `self.param`): 'loop' would index past the stack, and JAX clamps the index, silently reusing the
  last member's parameters."""
  images, params, _ = loop_reference
  members = params['ensemble']['members']
  fewer = jax.tree.map(lambda a: a[:-1], members)
  model = LNLAttenNet(**AGREE, **dict(TINY, ensemble=execution))
  with pytest.raises(ScopeParamShapeError, match=r'"members".* shape \(4, .* shape \(3, '):
    model.apply({'params': {**params, 'ensemble': {'members': fewer}}}, images)


def test_bfloat16_compute_forms_the_attention_weights_in_float32():
  """`bf16` computes in bfloat16 on float32 parameters (README), but the attention weights are
  formed in float32 (`NonLocalAttention`, `LocalAttention`): under bfloat16 every row of R (Table
  I's L1-normalised rows) and wᵍ (their column means) still sum to one to float32 precision, and
  wᵍ, wˡ (a sigmoid in (0, 1)) and R come out as float32 (a bfloat16 sum is off by ~1e-3, a
  bfloat16 sigmoid keeps 8 bits)."""
  config = model_config(width=1 / 16, head_widths=(32, 16), init='he', ensemble='scan',
                        dtype='bfloat16', overlap=8)
  model = create_model(config, 64, 7)
  images = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  _, (_, aux) = init_apply(model, images)
  for name in ('r', 'w_global', 'w_local'):
    assert aux[name].dtype == jnp.float32, (name, aux[name].dtype)
  r = np.asarray(aux['r'], np.float64)
  np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)  # L1 rows
  np.testing.assert_allclose(np.asarray(aux['w_global'], np.float64), r.mean(axis=1), atol=1e-6)
  np.testing.assert_allclose(np.asarray(aux['w_global'], np.float64).sum(-1), 1.0, atol=1e-5)
  w_local = np.asarray(aux['w_local'])
  assert ((w_local > 0) & (w_local < 1)).all()


@pytest.mark.parametrize('alpha', [0.3, 1.0])
def test_create_model_builds_the_configs_alpha_and_overlap(alpha):
  """The `model` block's α (Eq. 1, swept by Table V) and overlap (Eq. 5, swept by Table VII) reach
  the network `create_model` builds. At 64 px with an 8-px overlap, Eq. (5) gives
  4·P − 3·8 = 64: P = 22, origins 0, 14, 28, 42; and g* = (1 − α)·g + α·flat(s)."""
  config = model_config(width=1 / 32, head_widths=(16, 8), init='he', ensemble='scan',
                        overlap=8, alpha=alpha)
  model = create_model(config, 64, 7)
  assert (model.geometry.patch_size, model.geometry.origins) == (22, (0, 14, 28, 42))
  _, (_, aux) = init_apply(model, jax.random.normal(jax.random.key(2), (2, 64, 64, 3)))
  assert not np.allclose(aux['g'], aux['s'])
  chex.assert_trees_all_close(aux['g_star'], (1 - alpha) * aux['g'] + alpha * aux['s'], atol=1e-6)
