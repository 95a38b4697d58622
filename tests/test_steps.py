"""steps: input normalisation and the guard against non-finite updates (the loss, the penalty and
the schedule are pinned to the paper in test_paper_training.py), and the jitted steps a process
keeps."""
import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lnl_jax import steps
from lnl_jax.config_base import dataset_config
from lnl_jax.models import create_model, onednn


def test_normalize_maps_uint8_to_minus_one_one():
  out = steps.normalize(np.array([0, 255, 128], np.uint8))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)


def test_all_finite():
  assert bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.zeros(3)}))
  assert not bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.array([0.0, jnp.nan])}))
  assert not bool(steps.all_finite({'a': jnp.array([jnp.inf])}))


class ConstantLogits(nn.Module):
  """The same logits for every face: a parameter `b` (C,), or √b with `root`. Tiny and eager: the
  step functions below run on it without compiling the network."""
  num_classes: int
  root: bool = False

  @nn.compact
  def __call__(self, x):
    b = self.param('b', nn.initializers.zeros, (self.num_classes,))
    logits = jnp.sqrt(b) if self.root else b
    return jnp.broadcast_to(logits, (x.shape[0], self.num_classes)), {}


def constant_batch(labels, mask=None) -> dict:
  labels = np.asarray(labels, np.int32)
  return dict(image=np.zeros((len(labels), 4, 4, 3), np.uint8), label=labels,
              soft_label=np.eye(3, dtype=np.float32)[labels],
              mask=np.ones(len(labels), bool) if mask is None else np.asarray(mask))


def test_a_finite_loss_with_a_non_finite_gradient_is_not_applied():
  """The guard checks the gradient as well as the loss. With logits √b at b = 0 the loss is
  finite (log 3) but the gradient is infinite: the step is reported non-finite, and the update
  leaves the parameters and Adam's state as they were (only the step count moves)."""
  model, params = ConstantLogits(3, root=True), {'b': jnp.zeros(3)}
  grads, finite, metrics = steps.gradient_step(params, constant_batch([0, 1]), model=model,
                                               weight_decay=0.0, label_smoothing=0.0)
  assert float(metrics['loss']) == pytest.approx(np.log(3))
  assert not np.isfinite(np.asarray(grads['b'])).all()
  assert not bool(finite) and bool(metrics['nonfinite'])
  tx = optax.adam(1e-3)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  after = steps.update_step(state, grads, finite, tx=tx, weight_decay=0.0)
  assert int(after.step) == 1
  np.testing.assert_array_equal(after.params['b'], np.zeros(3))
  for new, old in zip(jax.tree.leaves(after.opt_state), jax.tree.leaves(state.opt_state)):
    np.testing.assert_array_equal(new, old)


def test_step_metrics_count_only_the_real_rows():
  """`correct` and `count` (the epoch's train accuracy) cover the rows whose mask is True; padded
  or skipped rows are not counted, whatever their labels. Every row's logits favour class 0 here:
  of the 3 real rows 2 are labelled 0, and so is the masked fourth row."""
  params = {'b': jnp.array([2.0, 0.0, 0.0])}
  batch = constant_batch([0, 0, 1, 0], mask=[True, True, True, False])
  _, finite, metrics = steps.gradient_step(params, batch, model=ConstantLogits(3),
                                           weight_decay=0.0, label_smoothing=0.0)
  assert bool(finite) and not bool(metrics['nonfinite'])
  assert int(metrics['correct']) == 2 and int(metrics['count']) == 3


def test_label_smoothing_mixes_the_labels_with_the_uniform_distribution():
  """train.label_smoothing = ε (an option the paper does not use; 0 by default) trains on the
  labels (1 − ε)·y + ε/C. The cross-entropy of those labels is worked out here in NumPy."""
  b = np.array([2.0, 0.0, -1.0])
  log_p = b - np.log(np.exp(b).sum())
  labels = np.array([0, 2])
  for eps in (0.0, 0.3):
    y = (1 - eps) * np.eye(3)[labels] + eps / 3
    expected = float(-(y * log_p).sum(1).mean())
    loss, (ce, _) = steps.loss_fn({'b': jnp.asarray(b, jnp.float32)}, constant_batch(labels),
                                  model=ConstantLogits(3), weight_decay=0.0, label_smoothing=eps)
    assert float(ce) == pytest.approx(expected, rel=1e-6), eps
    assert float(loss) == pytest.approx(expected, rel=1e-6), eps


def test_runs_with_equal_settings_share_their_jitted_steps_and_others_do_not():
  """A later run of the process with the same mesh, model, optimiser and loss settings gets the
  same jitted functions (its traced and compiled programs are reused); any difference gets others."""
  config = dataset_config('synthetic', 'smoke')

  def train_step(devices=1, steps_per_epoch=6, **changes):
    c = copy.deepcopy(config)  # built afresh each time: equal values, not the same objects
    for field, value in changes.items():
      section, name = field.split('.')
      c[section][name] = value
    model = create_model(c.model, c.data.image_size, 7)
    return steps.Parallel(jax.devices()[:devices]).jit_train_step(
        model, c.train, steps_per_epoch)

  same = train_step()
  assert train_step() is same
  for change in (dict(devices=2), dict(steps_per_epoch=7), {'train.learning_rate': 1e-3},
                 {'train.lr_decay': 0.9}, {'train.weight_decay': 0.0},
                 {'train.label_smoothing': 0.1}, {'model.dtype': 'bfloat16'},
                 {'model.width': 1 / 8}, {'model.attention': 'none'}):
    assert train_step(**change) is not train_step(), change  # (the newest few are kept)
  model = create_model(config.model, config.data.image_size, 7)
  parallel = steps.Parallel(jax.devices()[:1])
  assert parallel.jit_eval_step(model) is steps.Parallel(jax.devices()[:1]).jit_eval_step(
      create_model(copy.deepcopy(config.model), config.data.image_size, 7))
  assert parallel.jit_eval_step(model) is not steps.Parallel(jax.devices()[:2]).jit_eval_step(model)


# This process has 4 CPU devices (conftest.py): its models run XLA's convolutions
# (`conv.lowering_for`), and their programs take the YNNPACK option as well.
YNN = dict(xla_cpu_experimental_ynn_fusion_type='LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')
BASE = dict(xla_backend_optimization_level=1, xla_cpu_use_fusion_emitters=False)


def test_cpu_compiler_options_leave_an_option_named_in_xla_flags_to_it(monkeypatch):
  assert jax.device_count() == 4
  mesh = steps.Parallel(jax.devices('cpu')[:1]).mesh
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  assert steps.compiler_options(mesh) == dict(BASE, **YNN)
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  assert steps.compiler_options(mesh) == dict(xla_cpu_use_fusion_emitters=False, **YNN)
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0 '
                                  '--xla_cpu_use_fusion_emitters=true '
                                  '--xla_cpu_experimental_ynn_fusion_type=+individual_dot')
  assert steps.compiler_options(mesh) is None
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level_x=0')  # another flag
  assert steps.compiler_options(mesh) == steps.cpu_compiler_options(jax.device_count())


def test_the_ynnpack_option_is_only_for_xla_convolutions(monkeypatch):
  """Where oneDNN runs the convolutions (one device, with the wheels) the programs keep YNNPACK's
  default fusions; where XLA's kernels do (several devices, or no oneDNN), the convolutions leave
  YNNPACK."""
  assert steps.cpu_compiler_options(4) == dict(BASE, **YNN)
  assert steps.cpu_compiler_options(1) == (BASE if onednn.available() else dict(BASE, **YNN))
  monkeypatch.setattr(onednn, 'available', lambda: False)
  assert steps.cpu_compiler_options(1) == dict(BASE, **YNN)


def test_cpu_compiler_options_leave_out_an_option_this_jaxlib_does_not_know(monkeypatch):
  """Every option of the product is known to the jaxlib the tests run on; one that a later jaxlib
  drops (or a value it no longer takes) is left out instead of failing every compilation."""
  mesh = steps.Parallel(jax.devices('cpu')[:1]).mesh
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert all(steps.known_option(k, v) for k, v in dict(BASE, **YNN).items())
  monkeypatch.setattr(steps, 'CPU_COMPILER_OPTIONS',
                      dict(steps.CPU_COMPILER_OPTIONS, xla_cpu_no_such_option=True))
  monkeypatch.setattr(steps, 'XLA_CONVOLUTION_OPTIONS',
                      dict(xla_cpu_experimental_ynn_fusion_type='LIBRARY_FUSION_TYPE_NO_SUCH'))
  assert steps.compiler_options(mesh) == BASE


def test_the_xla_default_flags_name_every_option_of_the_product(monkeypatch):
  """`steps.xla_default_flags()` (`launch.peer_ratio`'s "XLA defaults" rounds) names every CPU
  option, so the steps take none of them: an option added to the product is not left on there,
  with oneDNN or without."""
  monkeypatch.setenv('XLA_FLAGS', steps.xla_default_flags())
  mesh = steps.Parallel(jax.devices('cpu')[:1]).mesh
  assert steps.compiler_options(mesh) is None
  monkeypatch.setattr(jax, 'device_count', lambda: 1)  # the models of one device: oneDNN's
  assert steps.compiler_options(mesh) is None


def test_on_cpu_the_convolutions_leave_ynnpack_and_the_matrix_products_stay():
  """With the programs' CPU options where XLA's kernels run the convolutions, a convolution and its
  two gradients are XLA's own kernels and a matrix product is YNNPACK's; with XLA's defaults both
  are YNNPACK's (so this test can fail)."""
  x, k = jax.device_put((jnp.ones((2, 16, 16, 64)), jnp.ones((3, 3, 64, 64))),
                        jax.devices('cpu')[0])
  conv = lambda x, k: jnp.sum(jax.lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2)
  matmul = lambda a: a @ a

  def library_calls(fn, args, options):  # YNNPACK's calls are fusions of this kind
    return '__ynn_fusion' in jax.jit(fn).lower(*args).compile(compiler_options=options).as_text()

  options = {**steps.CPU_COMPILER_OPTIONS, **steps.XLA_CONVOLUTION_OPTIONS}
  assert library_calls(jax.grad(conv, argnums=(0, 1)), (x, k), {})
  assert not library_calls(jax.grad(conv, argnums=(0, 1)), (x, k), options)
  assert library_calls(matmul, (jax.device_put(jnp.ones((64, 64)), jax.devices('cpu')[0]),),
                       options)


def test_the_batch_shapes_are_those_of_a_batch():
  """`batch_shapes` (what the loop compiles the train step for before any batch exists) names the
  fields, shapes and dtypes of `random_batch`'s batch (the pipeline's: tests/test_train.py)."""
  batch = steps.random_batch(np.random.default_rng(0), 6, 32, 5)
  assert {k: (s.shape, s.dtype) for k, s in steps.batch_shapes(6, 32, 5).items()} == {
      k: (v.shape, v.dtype) for k, v in batch.items()}
