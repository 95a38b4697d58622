"""Every part of the network recomputed from the paper in NumPy and compared with the model.

The references below are written from the paper (Sec. III, Tables I–III, Eq. 1, 2, 5) and never call
lnl_jax to compute anything: they read the parameters LNLAttenNet's `init` drew (kernels as drawn,
biases replaced by random values so that they count) and apply the paper's layers in float64. Layer widths
are asserted against the paper's tables (scaled by the width multiplier) before the parameters are
used, so a wrong width cannot hide behind a reference that follows the parameters' shapes. Where the
model's own intermediate values matter (what F5 and F9 are, what enters the head), they are captured
with `flax.linen.intercept_methods`, not read from `aux`.
"""
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lnl_jax.errors import ConfigError
from lnl_jax.geometry import patch_geometry
from lnl_jax.models import onednn
from lnl_jax.models.conv import Lowering
from lnl_jax.models.ensemble import LocalAttention, PatchEnsemble, SimpleNet
from lnl_jax.models.layers import KERNEL_INITS
from lnl_jax.models.lnlattennet import JointHead, LNLAttenNet, extract_patches
from lnl_jax.models.nonlocal_attention import ROW_EPS, GlobalVector, NonLocalAttention
from lnl_jax.models.unet import UNet
from lnl_jax.steps import Parallel

WIDTH = 1 / 32  # 64 → 2 channels, 1024 → 32


def ch(c: int, width: float = WIDTH) -> int:
  """The paper's width c under the config's width multiplier (README: round, at least 1)."""
  return max(1, round(c * width))


# ---------------------------------------------------------------------------------------------
# NumPy references, float64, from the paper's layer definitions.

def relu(x):
  return np.maximum(x, 0.0)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def conv2d(x, layer, padding):
  """Stride-1 cross-correlation (B, H, W, C) ⋆ (k, k, C, O) + bias; 'same' pads k//2 zeros a side."""
  kernel = np.asarray(layer['kernel'], np.float64)
  k = kernel.shape[0]
  if padding == 'same':
    x = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  out = sum(x[:, i:i + h, j:j + w] @ kernel[i, j] for i in range(k) for j in range(k))
  return out + np.asarray(layer['bias'], np.float64)


def max_pool(x):
  """2×2 max-pooling, stride 2, no padding (an odd last row/column is dropped: 9×9 → 4×4)."""
  h, w = x.shape[1] // 2, x.shape[2] // 2
  windows = [x[:, a:a + 2 * h:2, b:b + 2 * w:2] for a in range(2) for b in range(2)]
  return np.max(windows, axis=0)


def up_conv(x, layer):
  """2×2 transposed convolution, stride 2: insert a zero between input pixels, pad 1, correlate
  with the spatially flipped kernel (so output (2i+a, 2j+b) receives x[i, j]·kernel[a, b])."""
  b, h, w, c = x.shape
  dilated = np.zeros((b, 2 * h - 1, 2 * w - 1, c))
  dilated[:, ::2, ::2] = x
  dilated = np.pad(dilated, ((0, 0), (1, 1), (1, 1), (0, 0)))
  flipped = dict(kernel=np.asarray(layer['kernel'])[::-1, ::-1], bias=layer['bias'])
  return conv2d(dilated, flipped, 'valid')


def dense(x, layer):
  return x @ np.asarray(layer['kernel'], np.float64) + np.asarray(layer['bias'], np.float64)


def grid_rows(y):
  """(B, n, n, C) → (B, M, C) with patch m = r·n + c (row-major, the order of the patches)."""
  n = y.shape[1]
  return np.stack([y[:, r, c] for r in range(n) for c in range(n)], axis=1)


def flatten_patches(y):
  """(B, M, C) → (B, M·C): patch 0's C values, then patch 1's, ... (Eq. 1's flat(s))."""
  return np.concatenate([y[:, m] for m in range(y.shape[1])], axis=-1)


def double_conv(x, p):
  return relu(conv2d(relu(conv2d(x, p['Conv_0'], 'same')), p['Conv_1'], 'same'))


def unet_ref(x, p):
  """Fig. 4 / Ronneberger et al.: encoder stages, 2×2 pools, bottleneck (F5), decoder of 2×2
  up-convolutions each concatenated after the encoder's skip ([skip, up]), two 3×3 convs (F9)."""
  skips = []
  for i in range(4):
    x = double_conv(x, p[f'DoubleConv_{i}'])
    skips.append(x)
    x = max_pool(x)
  f5 = x = double_conv(x, p['conv5'])
  for i in range(4):
    up = up_conv(x, p[f'UpConv2x2_{i}'])
    x = double_conv(np.concatenate([skips[3 - i], up], axis=-1), p[f'DoubleConv_{4 + i}'])
  return f5, x


def qkv_ref(f5, p, name):
  """Table I, one branch: 1×1 conv + ReLU, 2×2/2 max-pool, reshape to M×C (row-major)."""
  return grid_rows(max_pool(relu(conv2d(f5, p[name], 'same'))))


def nonlocal_ref(f5, p):
  """Sec. III-A: R = Q·Kᵀ, each row L1-normalised (ROW_EPS added first), wᵍ = column means, s = R·V."""
  q, k, v = (qkv_ref(f5, p, name) for name in ('query', 'key', 'value'))
  r = np.einsum('bic,bjc->bij', q, k) + ROW_EPS
  r = r / np.abs(r).sum(axis=2, keepdims=True)
  w_global = np.stack([[r[b, :, j].mean() for j in range(r.shape[2])] for b in range(r.shape[0])])
  return w_global, np.einsum('bij,bjc->bic', r, v), r


def global_ref(f5, p):
  """Sec. III-C: two 3×3 'same' convs + ReLU, one 2×2/2 pooling, flattened patch by patch."""
  x = relu(conv2d(relu(conv2d(f5, p['Conv_0'], 'same')), p['Conv_1'], 'same'))
  return flatten_patches(grid_rows(max_pool(x)))


def simplenet_ref(x, p):
  """Table II: three stages of [3×3 conv, 3×3 conv, 2×2 pool], 'same' padding, ReLU."""
  for stage in range(3):
    x = relu(conv2d(x, p[f'Conv_{2 * stage}'], 'same'))
    x = relu(conv2d(x, p[f'Conv_{2 * stage + 1}'], 'same'))
    x = max_pool(x)
  return x


def local_attention_ref(x, p):
  """Table III: 3×3 no-padding conv, 1×1 conv, 3×3 no-padding conv, 1×1 conv (ReLU each), reshape,
  FC 64, FC 1 (no activation between them), sigmoid."""
  x = relu(conv2d(x, p['Conv_0'], 'valid'))
  x = relu(conv2d(x, p['Conv_1'], 'valid'))
  x = relu(conv2d(x, p['Conv_2'], 'valid'))
  x = relu(conv2d(x, p['Conv_3'], 'valid'))
  x = dense(dense(x.reshape(x.shape[0], -1), p['Dense_0']), p['Dense_1'])
  return sigmoid(x)[:, 0]


def head_ref(x, p):
  """Sec. III-C: three fully connected layers, ReLU between them, logits out."""
  x = relu(dense(x, p['Dense_0']))
  x = relu(dense(x, p['Dense_1']))
  return dense(x, p['Dense_2'])


def member(params, i):
  return jax.tree.map(lambda a: a[i], params)


# ---------------------------------------------------------------------------------------------
# The model under test: LNLAttenNet at the paper's geometry (144 px, M = 16, 16-px overlap: F5 9×9,
# 48-px patches, 6×6 pooled patch maps), 1/32 of the paper's widths. Every part is checked with this
# model's initialised parameters; parts run on their own are applied eagerly (op by op), which
# compiles far less than one jit per part.

FULL = dict(num_classes=7, image_size=144, num_patches=16, overlap=16, alpha=0.7, width=WIDTH,
            head_widths=(16, 8), ensemble='loop')
ORIGINS, PATCH = (0, 32, 64, 96), 48  # Eq. (5): 4·48 − 3·16 = 144


def key(seed):
  return jax.random.key(seed, impl='rbg')  # threefry's init compiles several times slower on CPU


def with_random_biases(params, seed=7):
  """The parameters with every bias (zero at init) replaced by N(0, 0.1²), so that biases count."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(seed)
  out = [rng.normal(0, 0.1, x.shape).astype(np.float32) if path[-1].key == 'bias' else np.asarray(x)
         for path, x in leaves]
  return jax.tree_util.tree_unflatten(tree, out)


def init_params(init_scheme: str):
  """The parameters training starts from (`Parallel.init_state`, as train.py calls it)."""
  model = LNLAttenNet(**FULL, init_scheme=init_scheme)
  tx = optax.adam(1e-3)
  return jax.device_get(Parallel(jax.devices()[:1]).init_state(model, 144, tx, seed=0).params)


@pytest.fixture(scope='module')
def initial():
  """LNLAttenNet's initial parameters with the paper's Xavier initialiser."""
  return init_params('xavier')


@pytest.fixture(scope='module')
def initial_he():
  """The same, drawn with `model.init='he'`."""
  return init_params('he')


@pytest.fixture(scope='module')
def params(initial_he):
  """He-initialised kernels (the signal keeps its size through ~30 layers, so the comparisons are
  not of vanishing numbers), biases random."""
  return with_random_biases(initial_he)


def apply(module, params, *args):
  return jax.tree.map(np.asarray, module.apply({'params': params}, *args))


def f64(x):
  return np.asarray(x, np.float64)


def assert_close(actual, reference, rtol=1e-4, atol=1e-5, floor=1e-2):
  """float32 model against the float64 reference; the reference must not be negligibly small
  (its largest magnitude above `floor`)."""
  reference = np.asarray(reference)
  assert np.abs(reference).max() > floor, 'reference too small for the comparison to mean anything'
  np.testing.assert_allclose(np.asarray(actual), reference, rtol=rtol, atol=atol)


def assert_shapes(params, expected):
  """expected: {'a/b/kernel': shape}, paths into params."""
  for path, shape in expected.items():
    leaf = params
    for k in path.split('/'):
      leaf = leaf[k]
    assert tuple(leaf.shape) == tuple(shape), (path, leaf.shape, shape)


def unet_shapes(width=WIDTH, in_channels=3):
  widths = [ch(c, width) for c in (64, 128, 256, 512)]
  shapes, cin = {}, in_channels
  for i, c in enumerate(widths):  # encoder
    shapes[f'DoubleConv_{i}/Conv_0/kernel'] = (3, 3, cin, c)
    shapes[f'DoubleConv_{i}/Conv_1/kernel'] = (3, 3, c, c)
    cin = c
  bottleneck = ch(1024, width)
  shapes['conv5/Conv_0/kernel'] = (3, 3, cin, bottleneck)
  shapes['conv5/Conv_1/kernel'] = (3, 3, bottleneck, bottleneck)
  cin = bottleneck
  for i, c in enumerate(reversed(widths)):  # decoder: up-conv to c, concat a c-wide skip
    shapes[f'UpConv2x2_{i}/kernel'] = (2, 2, cin, c)
    shapes[f'DoubleConv_{4 + i}/Conv_0/kernel'] = (3, 3, 2 * c, c)
    shapes[f'DoubleConv_{4 + i}/Conv_1/kernel'] = (3, 3, c, c)
    cin = c
  return shapes


def simplenet_shapes(in_channels=ch(64), width=WIDTH):
  shapes, cin = {}, in_channels
  for stage, c in enumerate((64, 128, 256)):
    shapes[f'Conv_{2 * stage}/kernel'] = (3, 3, cin, ch(c, width))
    shapes[f'Conv_{2 * stage + 1}/kernel'] = (3, 3, ch(c, width), ch(c, width))
    cin = ch(c, width)
  return shapes


def local_attention_shapes(pooled=6, width=WIDTH):
  after = pooled - 4  # two 3×3 no-padding convolutions
  return {'Conv_0/kernel': (3, 3, ch(256, width), ch(256, width)),
          'Conv_1/kernel': (1, 1, ch(256, width), ch(128, width)),
          'Conv_2/kernel': (3, 3, ch(128, width), ch(128, width)),
          'Conv_3/kernel': (1, 1, ch(128, width), ch(64, width)),
          'Dense_0/kernel': (after * after * ch(64, width), 64),
          'Dense_1/kernel': (64, 1)}


# ---------------------------------------------------------------------------------------------
# Parts on their own, at the paper's shapes.

def test_unet_is_fig4_unet(params):
  """Sec. III, Fig. 4: widths 64–512, 2×2 pools, bottleneck 1024 (F5), 2×2 stride-2 up-convs,
  [skip, up] concatenation, two 3×3 'same' convs + ReLU per stage (F9)."""
  p = params['UNet_0']
  assert_shapes(p, unet_shapes())
  x = np.random.default_rng(0).normal(size=(2, 48, 48, 3)).astype(np.float32)
  f5, f9 = apply(UNet(width=WIDTH), p, x)
  chex.assert_shape([f5, f9], [(2, 3, 3, ch(1024)), (2, 48, 48, ch(64))])
  ref_f5, ref_f9 = unet_ref(f64(x), p)
  assert_close(f5, ref_f5)
  assert_close(f9, ref_f9)


@pytest.fixture(scope='module')
def f5_map():
  """A Table I input: F5 of a 144-px image, 9×9 × 1024·width, non-negative like a ReLU output."""
  return np.abs(np.random.default_rng(1).normal(size=(2, 9, 9, ch(1024)))).astype(np.float32)


def test_nonlocal_attention_is_table1(params, f5_map):
  """Table I and Sec. III-A-1: Q, K, V 1×1 conv 512 + ReLU, 2×2/2 max-pool 9×9 → 4×4, M×512,
  R = Q·Kᵀ with L1-normalised rows, wᵍ the column means of R, s = R·V."""
  p = params['NonLocalAttention_0']
  assert_shapes(p, {f'{b}/kernel': (1, 1, ch(1024), ch(512)) for b in ('query', 'key', 'value')})
  w_global, s, r = apply(NonLocalAttention(grid=4, width=WIDTH), p, f5_map)
  chex.assert_shape([w_global, s, r], [(2, 16), (2, 16, ch(512)), (2, 16, 16)])
  ref_w, ref_s, ref_r = nonlocal_ref(f64(f5_map), p)
  assert_close(r, ref_r)
  assert_close(w_global, ref_w)
  assert_close(s, ref_s)
  np.testing.assert_allclose(w_global.sum(-1), 1.0, rtol=1e-5)  # M weights summing to 1
  assert np.ptp(ref_w) > 1e-3  # column means differ here; row means would all be 1/M


def test_nonlocal_attention_row_of_a_dead_query_is_uniform(params, f5_map):
  """A patch whose queries are all zero after the ReLU (F5 zero over its 2×2 pooling window, no
  positive query bias) gives an all-zero row of Q·Kᵀ. ROW_EPS, added to R before the L1 row
  normalisation, makes that row uniform 1/M: R's rows and wᵍ still sum to one, nothing is NaN,
  and the other rows are the Table I rows."""
  p = params['NonLocalAttention_0']
  p = {**p, 'query': {**p['query'], 'bias': -np.abs(np.asarray(p['query']['bias']))}}
  f5 = f5_map.copy()
  f5[:, :2, :2] = 0  # patch 0's pooling window
  w_global, s, r = apply(NonLocalAttention(grid=4, width=WIDTH), p, f5)
  ref_w, ref_s, ref_r = nonlocal_ref(f64(f5), p)
  np.testing.assert_allclose(ref_r[:, 0], 1 / 16, rtol=1e-12)  # the dead row, in the reference
  assert np.ptp(ref_r[:, 1:], axis=-1).min() > 1e-3  # the others are not uniform
  assert_close(r, ref_r)
  assert_close(w_global, ref_w)
  assert_close(s, ref_s)
  np.testing.assert_allclose(r.sum(-1), 1.0, rtol=1e-5)


def test_global_vector_is_sec3c_and_aligned_with_flat_s(params, f5_map):
  """Sec. III-C: two 3×3 convs (1024, 512) + ReLU and one pooling to 4×4×512, flattened patch by
  patch: element j of g belongs to patch j // 512 and channel j % 512, as in flat(s), so Eq. (1)
  adds matching elements."""
  p = params['GlobalVector_0']
  assert_shapes(p, {'Conv_0/kernel': (3, 3, ch(1024), ch(1024)),
                    'Conv_1/kernel': (3, 3, ch(1024), ch(512))})
  g = apply(GlobalVector(grid=4, width=WIDTH), p, f5_map)
  chex.assert_shape(g, (2, 16 * ch(512)))
  assert_close(g, global_ref(f64(f5_map), p))


@pytest.fixture(scope='module')
def patch_batch():
  """M = 16 patches of F9, 48×48×64·width each, non-negative like a ReLU output."""
  return np.abs(np.random.default_rng(2).normal(size=(16, 2, 48, 48, ch(64)))).astype(np.float32)


def test_simplenet_is_table2(params, patch_batch):
  """Table II: [3×3 conv 64, 3×3 conv 64, pool] [128, 128, pool] [256, 256, pool], ReLU, 'same'."""
  p = member(params['ensemble']['members'], 0)['SimpleNet_0']
  assert_shapes(p, simplenet_shapes())
  out = apply(SimpleNet(width=WIDTH), p, patch_batch[0])
  chex.assert_shape(out, (2, 6, 6, ch(256)))
  assert_close(out, simplenet_ref(f64(patch_batch[0]), p))


def test_local_attention_is_table3(params):
  """Table III on a 6×6 pooled map: 3×3 valid conv 256 (4×4), 1×1 conv 128, 3×3 valid conv 128
  (2×2), 1×1 conv 64, ReLU after each conv; reshape; FC 64; FC 1 with no activation between; sigmoid."""
  p = member(params['ensemble']['members'], 0)['LocalAttention_0']
  assert_shapes(p, local_attention_shapes())
  x = np.abs(np.random.default_rng(3).normal(size=(4, 6, 6, ch(256)))).astype(np.float32)
  w_local = apply(LocalAttention(width=WIDTH, valid=True), p, x)
  chex.assert_shape(w_local, (4,))
  # A sigmoid: near 0 for some parameters, so compared relative to its size.
  assert_close(w_local, local_attention_ref(f64(x), p), atol=1e-8, floor=1e-5)
  assert ((w_local > 0) & (w_local < 1)).all()


def test_joint_head_is_three_fc_layers(params):
  """Sec. III-C: three fully connected layers, ReLU between them and none after the last."""
  p = params['JointHead_0']
  d = 16 * ch(512) + 6 * 6 * ch(256)  # [g*, f_en]: 8192 + 9216 = 17408 at full width
  assert_shapes(p, {'Dense_0/kernel': (d, 16), 'Dense_1/kernel': (16, 8), 'Dense_2/kernel': (8, 7)})
  x = np.random.default_rng(4).normal(size=(3, d)).astype(np.float32)
  logits = apply(JointHead(hidden=(16, 8), num_classes=7), p, x)
  ref = head_ref(f64(x), p)
  assert (ref < 0).any()  # an activation after the last layer would show
  assert_close(logits, ref)


@pytest.mark.parametrize('execution', ['loop', 'vmap', 'scan'])
def test_ensemble_member_i_reads_patch_i_with_its_own_parameters(execution, params, patch_batch):
  """Sec. III-B: M individual networks, one per patch, separate parameters: member i's SimpleNet
  (Table II) and local attention (Table III) with member i's parameters on patch i give fᵢ, wˡᵢ."""
  members = params['ensemble']['members']
  for leaf in jax.tree.leaves(members):  # separate parameters, drawn independently
    assert leaf.shape[0] == 16 and len({bytes(np.asarray(row)) for row in leaf}) == 16
  f, w_local = apply(PatchEnsemble(num_members=16, width=WIDTH, execution=execution),
                     params['ensemble'], patch_batch)
  chex.assert_shape([f, w_local], [(2, 16, 6 * 6 * ch(256)), (2, 16)])
  for i in range(16):
    p = member(members, i)
    features = simplenet_ref(f64(patch_batch[i]), p['SimpleNet_0'])
    assert_close(f[:, i], features.reshape(2, -1))
    assert_close(w_local[:, i], local_attention_ref(features, p['LocalAttention_0']), atol=1e-8,
                 floor=1e-5)  # a sigmoid: compared relative to its size


# ---------------------------------------------------------------------------------------------
# Eq. (5): the patch geometry.

# Eq. (5) with γ·P the overlap o in pixels: n·P − (n−1)·o = S, P rounded up to a whole pixel, the
# n origins spread evenly from 0 to S − P. At 144 px with Table VI's overlap round(S / (2n + 1))
# (γ = 1/3), worked by hand: M → (overlap, P, origins).
EQ5_AT_144 = {
    4: (29, 87, (0, 57)),  # 2·86.5 − 29 = 144, P rounded up to 87
    9: (21, 62, (0, 41, 82)),  # 3·62 − 2·21 = 144
    16: (16, 48, (0, 32, 64, 96)),  # 4·48 − 3·16 = 144, the paper's 48×48 patches
    25: (13, 40, (0, 26, 52, 78, 104)),  # 5·39.2 − 4·13 = 144, P rounded up to 40
    36: (11, 34, (0, 22, 44, 66, 88, 110)),  # 6·33.17 − 5·11 = 144, P rounded up to 34
}
# README: at 144 px and 16 px overlap, M = 4, 9, 16, 25, 36 give P = 80, 59, 48, 42, 38.
README_AT_144_OVERLAP_16 = {4: 80, 9: 59, 16: 48, 25: 42, 36: 38}


@pytest.mark.parametrize('m', sorted(EQ5_AT_144))
def test_patch_geometry_is_eq5_at_144(m):
  overlap, size, origins = EQ5_AT_144[m]
  geo = patch_geometry(144, m, overlap)
  assert (geo.grid, geo.patch_size, geo.origins) == (math.isqrt(m), size, origins)
  assert abs(size - 3 * 144 / (2 * geo.grid + 1)) < 1  # Eq. (5) with γ = 1/3 exactly
  assert patch_geometry(144, m, 16).patch_size == README_AT_144_OVERLAP_16[m]


# Geometries worked by hand where Eq. (5) leaves a choice: (S, M, overlap) → (P, origins).
EQ5_BY_HAND = {
    # Table VII's 22 px: 4P − 3·22 = 144 gives P = 52.5, rounded up to 53; the origins spread
    # evenly over [0, 91] are 0, 30⅓, 60⅔, 91, rounded to the nearest pixel.
    (144, 16, 22): (53, (0, 30, 61, 91)),
    # No overlap: four 36-px patches side by side.
    (144, 16, 0): (36, (0, 36, 72, 108)),
    # One patch: the whole image, whatever the overlap.
    (144, 1, 16): (144, (0,)),
}


@pytest.mark.parametrize('args', sorted(EQ5_BY_HAND))
def test_patch_geometry_by_hand(args):
  geo = patch_geometry(*args)
  assert (geo.patch_size, geo.origins) == EQ5_BY_HAND[args]


@pytest.mark.parametrize('m', [0, -4, 15])
def test_patch_counts_that_are_no_square_grid_are_config_errors(m):
  """M = n² patches with n ≥ 1: anything else is a ConfigError naming the field, not a crash."""
  with pytest.raises(ConfigError, match=f'model.num_patches={m} is not n² for a whole n ≥ 1'):
    patch_geometry(144, m, 16)


@pytest.mark.parametrize('overlap', [-1, -16])
def test_negative_overlaps_are_config_errors(overlap):
  """A negative overlap spaces the patches apart (at 64 px, M = 9, −1 px: 21-px patches at 0, 22,
  43 leave column 21 uncovered): a ConfigError naming the field, whatever its size."""
  with pytest.raises(ConfigError, match=f'model.overlap={overlap} px leaves gaps between patches'):
    patch_geometry(64, 9, overlap)


@pytest.mark.parametrize('m', sorted(README_AT_144_OVERLAP_16))
def test_local_attention_convs_are_valid_wherever_the_pooled_map_allows(m):
  """Table III's two 3×3 valid convolutions take SimpleNet's ⌊P/8⌋ map p to p − 2, then p − 4: at
  144 px, 16 px overlap, P = 80, 59, 48, 42, 38 give p = 10, 7, 6, 5, 4. They stay valid down to
  p = 5 (5 → 3 → 1); only p = 4 (M = 36) leaves nothing and takes the documented 'SAME' padding,
  so FC 64 reads (p − 4)²·64w values, or p²·64w at M = 36."""
  p = README_AT_144_OVERLAP_16[m] // 8
  side = p - 4 if p >= 5 else p
  model = LNLAttenNet(num_classes=7, num_patches=m, overlap=16, width=WIDTH, head_widths=(8, 4),
                      ensemble='scan')
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module.parent, LocalAttention):
      seen.setdefault(context.module.name, out.shape[1:3])
    return out

  with nn.intercept_methods(record):
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 144, 144, 3), jnp.float32))['params']
  members = shapes['ensemble']['members']['LocalAttention_0']
  assert members['Dense_0']['kernel'].shape == (m, side * side * ch(64), 64)
  if p >= 5:
    assert (seen['Conv_0'], seen['Conv_2']) == ((p - 2, p - 2), (p - 4, p - 4))


def test_patch_geometry_keeps_its_promise_over_overlaps():
  """For every buildable (S, M, overlap): P is the smallest whole P with n·P − (n−1)·o ≥ S, the
  patches cover the S×S image exactly (first at 0, last ending at S), strides differ by at most
  1 px, and every overlap between neighbours is within 1 px of the one asked."""
  tried = 0
  for size in (64, 96, 144):
    for n in range(1, 7):
      for overlap in range(0, size):
        try:
          geo = patch_geometry(size, n * n, overlap)
        except ConfigError:
          continue
        tried += 1
        p, origins = geo.patch_size, geo.origins
        assert n * p - (n - 1) * overlap >= size > n * (p - 1) - (n - 1) * overlap, (size, n, overlap)
        assert len(origins) == n and origins[0] == 0 and origins[-1] + p == size
        covered = np.zeros(size, bool)
        for o in origins:
          covered[o:o + p] = True
        assert covered.all()
        strides = np.diff(origins)
        if n > 1:
          assert (strides >= 0).all() and np.ptp(strides) <= 1
          assert (np.abs((p - strides) - overlap) <= 1).all(), (size, n, overlap, p, origins)
  assert tried > 300


def test_patches_are_row_major_eq5_windows():
  """Patch i = r·n + c is F9[origin_r : origin_r + P, origin_c : origin_c + P] (Eq. 5 origins)."""
  overlap, size, origins = EQ5_AT_144[9]
  f9 = np.random.default_rng(6).normal(size=(2, 144, 144, 3)).astype(np.float32)
  patches = np.asarray(extract_patches(jnp.asarray(f9), patch_geometry(144, 9, overlap)))
  chex.assert_shape(patches, (9, 2, size, size, 3))
  for r, top in enumerate(origins):
    for c, left in enumerate(origins):
      np.testing.assert_array_equal(patches[3 * r + c], f9[:, top:top + size, left:left + size])


def test_patch_boxes_are_the_eq5_windows_in_row_major_order():
  """`boxes()` (what the overlays draw and the occlusion analysis masks) gives patch i = r·n + c as
  (top, left, bottom, right) = (origin_r, origin_c, origin_r + P, origin_c + P), bottom and right
  exclusive like a slice: at 144 px, M = 9, 21-px overlap, P = 62 and the origins are 0, 41, 82
  (EQ5_AT_144), so the last row and column end at 144."""
  assert patch_geometry(144, 9, 21).boxes() == [
      (0, 0, 62, 62), (0, 41, 62, 103), (0, 82, 62, 144),
      (41, 0, 103, 62), (41, 41, 103, 103), (41, 82, 103, 144),
      (82, 0, 144, 62), (82, 41, 144, 103), (82, 82, 144, 144)]


# ---------------------------------------------------------------------------------------------
# The whole network: what F5, F9, g*, f_en and the head's input actually are.

CAPTURED = (UNet, GlobalVector, NonLocalAttention, PatchEnsemble, JointHead)


def apply_capturing(model, params, images):
  """The model's output and, per module type in CAPTURED, the (args, output) of its __call__."""
  seen = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and isinstance(context.module, CAPTURED):
      seen[type(context.module).__name__] = (args, out)
    return out

  with nn.intercept_methods(interceptor):
    out = model.apply({'params': params}, images)
  return jax.tree.map(np.asarray, (out, seen))


@pytest.fixture(scope='module')
def full(params):
  images = np.random.default_rng(8).normal(size=(2, 144, 144, 3)).astype(np.float32)
  (logits, aux), seen = apply_capturing(LNLAttenNet(**FULL), params, images)
  return dict(logits=logits, aux=aux, seen=seen, ref=full_ref(f64(images), params))


def full_ref(images, params):
  """LNLAttenNet from the paper, in NumPy, with the model's parameters."""
  f5, f9 = unet_ref(images, params['UNet_0'])
  g = global_ref(f5, params['GlobalVector_0'])
  w_global, s, _ = nonlocal_ref(f5, params['NonLocalAttention_0'])
  g_star = (1 - FULL['alpha']) * g + FULL['alpha'] * flatten_patches(s)  # Eq. (1)
  members = params['ensemble']['members']
  f, w_local = [], []
  for i, (top, left) in enumerate((t, l) for t in ORIGINS for l in ORIGINS):
    patch = f9[:, top:top + PATCH, left:left + PATCH]
    p = member(members, i)
    features = simplenet_ref(patch, p['SimpleNet_0'])
    w_local.append(local_attention_ref(features, p['LocalAttention_0']))
    f.append(features.reshape(features.shape[0], -1))
  f, w_local = np.stack(f, axis=1), np.stack(w_local, axis=1)
  f_en = np.einsum('bm,bm,bmd->bd', w_global, w_local, f)  # Eq. (2)
  head_input = np.concatenate([g_star, f_en], axis=-1)
  return dict(f5=f5, f9=f9, g=g, s=s, w_global=w_global, g_star=g_star, f=f, w_local=w_local,
              f_en=f_en, head_input=head_input, logits=head_ref(head_input, params['JointHead_0']))


def test_full_model_f5_and_f9_are_the_unet_outputs(full, params):
  """F5 (Conv5-2) feeds the non-local attention and the global vector; F9 (Conv9-2) is what the
  patches are cut from."""
  ref, seen = full['ref'], full['seen']
  assert_shapes(params['UNet_0'], unet_shapes())
  assert_close(seen['UNet'][1][0], ref['f5'])
  assert_close(seen['UNet'][1][1], ref['f9'])
  np.testing.assert_array_equal(seen['NonLocalAttention'][0][0], seen['UNet'][1][0])
  np.testing.assert_array_equal(seen['GlobalVector'][0][0], seen['UNet'][1][0])
  patches = seen['PatchEnsemble'][0][0]  # (M, B, P, P, C)
  for i, (top, left) in enumerate((t, l) for t in ORIGINS for l in ORIGINS):
    np.testing.assert_array_equal(
        patches[i], seen['UNet'][1][1][:, top:top + PATCH, left:left + PATCH])


def test_full_model_attention_weights(full):
  """wᵍ from Table I on the model's F5, wˡ from Table III on each member's SimpleNet output."""
  assert_close(full['aux']['w_global'], full['ref']['w_global'])
  assert_close(full['aux']['w_local'], full['ref']['w_local'], atol=1e-6)


def test_eq1_g_star_is_the_first_part_of_the_head_input(full):
  """Eq. (1): g* = (1−α)·g + α·flat(s) with α = 0.7, and g* (not g, not s) is what the first
  fully connected layer reads, before f_en."""
  ref = full['ref']
  (head_input,), _ = full['seen']['JointHead']
  d = ref['g_star'].shape[1]
  chex.assert_shape(head_input, (2, d + ref['f_en'].shape[1]))
  assert d == 16 * ch(512)  # 4×4×512 at full width: 8192
  assert np.abs(ref['g'] - flatten_patches(ref['s'])).max() > 1e-2  # g and s differ: α's side shows
  assert_close(head_input[:, :d], ref['g_star'])


def test_eq2_f_en_is_the_second_part_of_the_head_input(full):
  """Eq. (2): f_en = Σᵢ wᵍᵢ·wˡᵢ·fᵢ with fᵢ member i's flattened SimpleNet output (unweighted), and
  f_en follows g* in the head's input."""
  ref, aux = full['ref'], full['aux']
  (head_input,), _ = full['seen']['JointHead']
  assert_close(aux['f'], ref['f'])  # fᵢ carries no weight of its own
  d = ref['g_star'].shape[1]
  assert head_input.shape[1] - d == 6 * 6 * ch(256)  # Table II: 6×6×256 = 9216 at full width
  assert_close(head_input[:, d:], ref['f_en'])


def test_full_model_logits(full, params):
  """The joint head (three FC layers on [g*, f_en]) gives the logits."""
  assert_shapes(params['JointHead_0'], {
      'Dense_0/kernel': (full['ref']['head_input'].shape[1], 16), 'Dense_1/kernel': (16, 8),
      'Dense_2/kernel': (8, 7)})
  assert_close(full['logits'], full['ref']['logits'])


@pytest.mark.parametrize('rule', ['cpu', 'onednn'])
def test_the_cpu_lowerings_compute_the_papers_network(full, params, rule):
  """The model as the CPU runs it (XLA's kernels in `cpu_lowering`'s choices, or oneDNN's where
  this platform has them) against the paper's network in NumPy, at the 'vmap' execution."""
  if rule == 'onednn' and not onednn.available():
    pytest.skip('oneDNN is for Linux x86-64 (tests/test_conv.py requires it there)')
  model = LNLAttenNet(**dict(FULL, ensemble='vmap'), lowering=Lowering(rule))
  images = np.random.default_rng(8).normal(size=(2, 144, 144, 3)).astype(np.float32)
  logits, aux = jax.jit(model.apply)({'params': params}, images)
  assert_close(logits, full['ref']['logits'])
  assert_close(aux['w_local'], full['ref']['w_local'])


# ---------------------------------------------------------------------------------------------
# Initialisation: Xavier (Sec. IV-A) and its He rescaling (`model.init='he'`).

def kernels(params):
  """(path, kernel, stacked) per kernel: `stacked` when a leading ensemble axis (`members`) holds
  a stack of independent kernels."""
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [getattr(k, 'key', '') for k in path]
    if names[-1] == 'kernel':
      yield '/'.join(names), x, 'members' in names


def large_kernels(params):
  """(path, kernel, fan_in, fan_out) per kernel with ≥ 1000 entries; a stacked kernel's fans are
  those of one member's."""
  out = []
  for name, x, stacked in kernels(params):
    if x.size < 1000:
      continue
    shape = x.shape[1:] if stacked else x.shape
    receptive = math.prod(shape[:-2])
    out.append((name, x, shape[-2] * receptive, shape[-1] * receptive))
  return out


def kernel_variances(params):
  """(path, sample variance, fan_in, fan_out, count) per kernel of `large_kernels`."""
  return [(name, float(np.var(np.asarray(x, np.float64))), fan_in, fan_out, x.size)
          for name, x, fan_in, fan_out in large_kernels(params)]


def test_xavier_init_and_he_rescaling(initial, initial_he):
  """Every kernel starts at Xavier's variance 2/(fan_in + fan_out), or He's 2/fan_in with
  `model.init='he'`; biases start at zero either way. Conv, dense and ensemble-stacked kernels
  are all checked."""
  xavier, he = kernel_variances(initial), kernel_variances(initial_he)
  names = [v[0] for v in xavier]
  assert any('UNet' in n for n in names) and any('JointHead' in n for n in names)
  assert any('members' in n and '/Conv_' in n for n in names)
  assert any('members' in n and '/Dense_' in n for n in names)
  for (name, var, fan_in, fan_out, count), (_, var_he, *_) in zip(xavier, he):
    tol = 6 * math.sqrt(0.8 / count)  # a uniform sample's variance: relative s.e. √(0.8/N)
    assert abs(var / (2 / (fan_in + fan_out)) - 1) < tol, (name, var, fan_in, fan_out)
    assert abs(var_he / (2 / fan_in) - 1) < tol, (name, var_he, fan_in)
  for tree in (initial, initial_he):
    assert all(not np.any(np.asarray(x)) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
               if p[-1].key == 'bias')


@pytest.mark.parametrize('shape', [(3, 3, 32, 64), (256, 128), (2, 2, 64, 32)])
def test_module_initialisers_draw_the_same_variances(shape):
  """What `Module.init` draws (the modules' own initialisers) has the variances above too."""
  receptive = math.prod(shape[:-2])
  fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
  for scheme, want in (('xavier', 2 / (fan_in + fan_out)), ('he', 2 / fan_in)):
    x = np.asarray(KERNEL_INITS[scheme](key(1), shape), np.float64)
    assert abs(np.var(x) / want - 1) < 6 * math.sqrt(0.8 / x.size), (scheme, np.var(x), want)


def uniform_bound(scheme, fan_in, fan_out):
  """Glorot & Bengio's uniform Xavier initialiser draws from U(−b, b), b = √(6 / (fan_in +
  fan_out)): variance b²/3 = 2 / (fan_in + fan_out); He's uniform form has b = √(6 / fan_in)."""
  return math.sqrt(6 / (fan_in + fan_out)) if scheme == 'xavier' else math.sqrt(6 / fan_in)


def assert_centred_uniform(x, bound, name):
  """x looks like a sample of U(−bound, bound): within the bound, reaching near both ends, mean 0
  within six standard errors (bound / √(3N))."""
  x = np.asarray(x, np.float64)
  assert np.abs(x).max() <= bound * (1 + 1e-6), (name, np.abs(x).max(), bound)
  assert x.min() < -0.9 * bound and x.max() > 0.9 * bound, (name, x.min(), x.max(), bound)
  assert abs(x.mean()) < 6 * bound / math.sqrt(3 * x.size), (name, x.mean(), bound)


def test_kernels_are_drawn_from_a_centred_uniform(initial, initial_he):
  """Every kernel is a draw from U(−b, b) (the uniform Xavier of Sec. IV-A, or He with
  `model.init='he'`), both where training draws it (`init_state`) and in the modules' own
  initialisers. The variance alone does not pin this: U(0, 2b) has the same variance b²/3."""
  for tree, scheme in ((initial, 'xavier'), (initial_he, 'he')):
    for name, x, fan_in, fan_out in large_kernels(tree):
      assert_centred_uniform(x, uniform_bound(scheme, fan_in, fan_out), name)
  for shape in ((3, 3, 32, 64), (256, 128), (2, 2, 64, 32)):
    receptive = math.prod(shape[:-2])
    for scheme in ('xavier', 'he'):
      x = KERNEL_INITS[scheme](key(1), shape)
      assert_centred_uniform(x, uniform_bound(scheme, shape[-2] * receptive,
                                              shape[-1] * receptive), (scheme, shape))


def test_no_two_kernels_are_drawn_alike(initial):
  """Each kernel, and each member's slice of a stacked one, is its own draw: the query, key and
  value convolutions of Table I share a shape, and so do the layers of the 16 SimpleNets, but no
  two of them may start from the same numbers (they would then stay alike under symmetric
  gradients)."""
  seen = {}
  for name, x, stacked in kernels(initial):
    x = np.asarray(x)
    for i, kernel in enumerate(x if stacked else [x]):
      if kernel.size >= 16:
        seen.setdefault((kernel.shape, kernel.tobytes()), []).append(f'{name}[{i}]')
  alike = [names for names in seen.values() if len(names) > 1]
  assert not alike, alike
  assert len(seen) > 40  # the whole network: U-Net, attention, 16 SimpleNets, head
