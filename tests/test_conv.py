"""conv2d (each CPU lowering) and max_pool2 against XLA's own convolution and reduce-window, values
and gradients, plain and under the transformations the ensemble executions apply (vmap, lax.map);
the oneDNN lowering's policy, build and errors."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixtures import ONEDNN_PLATFORM
from lnl_jax.models import onednn
from lnl_jax.models.conv import Conv, Lowering, conv2d, cpu_lowering, lowering_for
from lnl_jax.models.layers import max_pool2


def reference(x, kernel, pad):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def value_and_grads(f, x, kernel):
  """f's output and the gradients of a non-trivial scalar of it w.r.t. both inputs."""
  loss = lambda x, kernel: jnp.sum(jnp.sin(f(x, kernel)))
  return jax.jit(f)(x, kernel), jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)


def assert_same(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)


def inputs(shape_x, shape_k):
  kx, kk = jax.random.split(jax.random.key(0))
  return jax.random.normal(kx, shape_x), jax.random.normal(kk, shape_k) * 0.2


needs_onednn = pytest.mark.skipif(not ONEDNN_PLATFORM, reason='oneDNN is for Linux x86-64')
CPU_LOWERINGS = ['conv', 'matmul'] + (['onednn'] if ONEDNN_PLATFORM else [])


@pytest.mark.parametrize('lowering', CPU_LOWERINGS)
@pytest.mark.parametrize('k,pad', [(3, 1), (3, 0), (1, 0), (5, 2)])
def test_conv2d_equals_xla_convolution_and_its_gradient(k, pad, lowering):
  x, kernel = inputs((2, 7, 6, 3), (k, k, 3, 4))
  assert_same(value_and_grads(lambda x, w: conv2d(x, w, pad, lowering), x, kernel),
              value_and_grads(lambda x, w: reference(x, w, pad), x, kernel))


@pytest.mark.parametrize('lowering', CPU_LOWERINGS)
@pytest.mark.parametrize('batched', ['both', 'input', 'kernel'])
def test_conv2d_under_vmap_equals_the_per_member_convolutions(batched, lowering):
  m = 3
  x, kernel = inputs((m, 2, 6, 6, 3), (m, 3, 3, 3, 4))
  in_axes = {'both': (0, 0), 'input': (0, None), 'kernel': (None, 0)}[batched]
  x = x if in_axes[0] == 0 else x[0]
  kernel = kernel if in_axes[1] == 0 else kernel[0]
  pick = lambda a, axis, i: a[i] if axis == 0 else a

  def per_member(conv):
    return lambda x, w: jnp.stack([conv(pick(x, in_axes[0], i), pick(w, in_axes[1], i))
                                   for i in range(m)])

  vmapped = jax.vmap(lambda x, w: conv2d(x, w, 1, lowering), in_axes=in_axes)
  assert_same(value_and_grads(vmapped, x, kernel),
              value_and_grads(per_member(lambda x, w: reference(x, w, 1)), x, kernel))


@pytest.mark.parametrize('lowering', CPU_LOWERINGS)
def test_conv2d_inside_lax_map_equals_the_per_member_convolutions(lowering):
  x, kernel = inputs((4, 2, 6, 6, 3), (4, 3, 3, 3, 5))
  mapped = lambda x, w: jax.lax.map(lambda xw: conv2d(*xw, 0, lowering), (x, w))
  unrolled = lambda x, w: jnp.stack([reference(x[i], w[i], 0) for i in range(4)])
  assert_same(value_and_grads(mapped, x, kernel), value_and_grads(unrolled, x, kernel))


def test_cpu_lowering_is_matmul_only_for_small_maps():
  assert cpu_lowering(2 * 9 * 9, 1024) == 'matmul'  # the U-Net's bottleneck at batch 2
  assert cpu_lowering(32 * 9 * 9, 1024) == 'conv'  # the same at batch 32
  assert cpu_lowering(2 * 2 * 2, 128) == 'matmul'  # the local attention's last 3×3
  assert cpu_lowering(2 * 2 * 2, 128, in_loop=True) == 'conv'  # the same in the 'scan' ensemble
  assert cpu_lowering(2 * 12 * 12, 256) == 'conv'  # a SimpleNet's last stage
  assert cpu_lowering(2 * 144 * 144, 64) == 'conv'  # the U-Net's first stage
  # A Conv on CPU follows it: a matmul for a tiny map, a convolution for it inside a loop.
  x = inputs((2, 4, 4, 3), (3, 3, 3, 5))[0]

  def primitives(lowering):
    conv = Conv(5, 3, 'VALID', lowering=lowering)
    params = conv.init(jax.random.key(0), x)
    return {e.primitive.name for e in jax.make_jaxpr(conv.apply)(params, x).jaxpr.eqns}

  cpu = Lowering('cpu')
  assert 'dot_general' in primitives(cpu)
  assert 'dot_general' not in primitives(cpu.inside_loop())
  assert cpu((2, 4, 4, 3), (3, 3, 3, 5), 0) == 'matmul'
  assert cpu.inside_loop()((2, 4, 4, 3), (3, 3, 3, 5), 0) == 'conv'
  # Positions are the output's: a 'same' 3×3 on 12×12 has 144 (> 128), a 'valid' one 100.
  assert cpu((1, 12, 12, 3), (3, 3, 3, 5), 1) == 'conv'
  assert cpu((1, 12, 12, 3), (3, 3, 3, 5), 0) == 'matmul'
  # A symbolic batch (jax.export) has no position count: the convolution.
  b, = jax.export.symbolic_shape('b')
  assert cpu((b, 4, 4, 3), (3, 3, 3, 5), 0) == 'conv'
  # Accelerators take XLA's own convolution everywhere.
  assert lowering_for('gpu') == Lowering('xla')
  assert lowering_for('gpu')((2, 4, 4, 3), (3, 3, 3, 5), 0) == 'xla'
  with pytest.raises(ValueError, match='lowering'):
    conv2d(*inputs((1, 4, 4, 1), (3, 3, 1, 1)), 1, 'im2col')
  with pytest.raises(ValueError, match='Lowering.rule'):
    Lowering('im2col')


@needs_onednn
def test_the_cpu_takes_onednn_where_it_would_take_the_convolution():
  assert onednn.available()  # a dependency here; the test environment has a compiler
  cpu = lowering_for('cpu')
  assert cpu == Lowering('onednn')
  # Over several devices XLA's kernels: XLA cannot split a foreign call over the batch.
  assert lowering_for('cpu', devices=2) == Lowering('cpu')
  assert cpu((2, 144, 144, 64), (3, 3, 64, 64), 1) == 'onednn'  # the U-Net's first stage
  assert cpu((2, 48, 48, 64), (3, 3, 64, 64), 1) == 'onednn'  # a SimpleNet's first stage
  assert cpu((2, 9, 9, 1024), (3, 3, 1024, 1024), 1) == 'matmul'  # the bottleneck at batch 2
  assert cpu((2, 2, 2, 128), (1, 1, 128, 64), 0) == 'matmul'  # the local attention's tiny maps
  assert cpu.inside_loop()((2, 2, 2, 128), (1, 1, 128, 64), 0) == 'onednn'
  # bfloat16 keeps cpu_lowering's choice; a symbolic batch (jax.export) the XLA convolution.
  assert cpu((2, 48, 48, 64), (3, 3, 64, 64), 1, jnp.bfloat16) == 'conv'
  b, = jax.export.symbolic_shape('b')
  assert cpu((b, 48, 48, 64), (3, 3, 64, 64), 1) == 'conv'
  # A Conv of the model runs it as FFI calls.
  x = inputs((2, 12, 12, 3), (3, 3, 3, 5))[0]
  conv = Conv(5, 3, 'SAME', lowering=cpu)
  params = conv.init(jax.random.key(0), x)
  program = str(jax.make_jaxpr(conv.apply)(params, x))
  assert 'conv_general_dilated' not in program and 'lnl_jax_conv_forward' in program
  with pytest.raises(ValueError, match='float32'):
    conv2d(*(a.astype(jnp.bfloat16) for a in inputs((1, 4, 4, 1), (3, 3, 1, 1))), 1, 'onednn')


@needs_onednn
def test_onednn_refuses_shapes_it_cannot_convolve(monkeypatch):
  x, kernel = inputs((1, 6, 6, 3), (3, 3, 4, 5))  # 3 input channels, a kernel for 4
  with pytest.raises(Exception, match='lnl_jax conv'):
    jax.block_until_ready(onednn.conv2d(x, kernel, 1))
  x, kernel = inputs((2, 6, 6, 3), (3, 3, 3, 5))
  for target, a, b, shape in [('lnl_jax_conv_forward', x, kernel, (2, 6, 6, 4)),  # 5 features
                              ('lnl_jax_conv_backward_data', jnp.ones((1, 6, 6, 5)), kernel,
                               x.shape),  # dy of another batch
                              ('lnl_jax_conv_backward_weights', x, jnp.ones((2, 5, 6, 5)),
                               kernel.shape)]:  # dy of another height
    with pytest.raises(Exception, match='lnl_jax conv'):
      jax.block_until_ready(onednn._call(target, shape, a, b, 1))
  monkeypatch.setattr(onednn, 'available', lambda: False)
  with pytest.raises(ValueError, match='unavailable'):
    Lowering('onednn')


@needs_onednn
def test_the_handlers_are_built_once_per_source_and_the_build_fails_in_words(tmp_path, monkeypatch):
  monkeypatch.setenv('LNL_JAX_ONEDNN_DIR', str(tmp_path))
  library = onednn.build()
  assert os.path.dirname(library) == str(tmp_path) and os.listdir(tmp_path) == [
      os.path.basename(library)]
  assert onednn.build() == library  # not compiled again
  monkeypatch.setenv('LNL_JAX_ONEDNN_DIR', str(tmp_path / 'other'))
  monkeypatch.setenv('CXX', '/bin/false')
  with pytest.raises(onednn.Unavailable, match='/bin/false failed'):
    onednn.build()
  monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
  with pytest.raises(onednn.Unavailable, match='did not start'):
    onednn.build()
  assert os.listdir(tmp_path / 'other') == []  # no half-written library left


def test_without_onednn_the_cpu_keeps_xla_kernels_and_says_why():
  code = ('from lnl_jax.models.conv import lowering_for; '
          'print(lowering_for("cpu").rule)')
  env = dict(os.environ, LNL_JAX_ONEDNN='0')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ['cpu']
  assert 'oneDNN convolutions unavailable (LNL_JAX_ONEDNN=0)' in proc.stderr


@pytest.mark.parametrize('side', [8, 9])
def test_max_pool2_equals_reduce_window_pooling_and_its_gradient(side):
  x = jax.random.normal(jax.random.key(0), (2, side, side, 3))  # no ties: the gradients agree
  pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
  loss = lambda f: lambda x: jnp.sum(jnp.sin(f(x)))
  np.testing.assert_array_equal(max_pool2(x), pool(x))
  np.testing.assert_array_equal(jax.grad(loss(max_pool2))(x), jax.grad(loss(pool))(x))
