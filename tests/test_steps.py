"""steps: input normalisation and the guard against non-finite updates (the loss, the penalty and
the schedule are pinned to the paper in test_paper_training.py), and the jitted steps a process
keeps."""
import copy

import jax
import jax.numpy as jnp
import numpy as np

from lnl_jax import steps
from lnl_jax.config_base import dataset_config
from lnl_jax.models import create_model


def test_normalize_maps_uint8_to_minus_one_one():
  out = steps.normalize(np.array([0, 255, 128], np.uint8))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)


def test_all_finite():
  assert bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.zeros(3)}))
  assert not bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.array([0.0, jnp.nan])}))
  assert not bool(steps.all_finite({'a': jnp.array([jnp.inf])}))


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


def test_cpu_compiler_options_leave_an_option_named_in_xla_flags_to_it(monkeypatch):
  mesh = steps.Parallel(jax.devices()[:1]).mesh
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  assert steps.compiler_options(mesh) == dict(xla_backend_optimization_level=1,
                                              xla_cpu_use_fusion_emitters=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  assert steps.compiler_options(mesh) == dict(xla_cpu_use_fusion_emitters=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0 '
                                  '--xla_cpu_use_fusion_emitters=true')
  assert steps.compiler_options(mesh) is None
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level_x=0')  # another flag
  assert steps.compiler_options(mesh) == steps.CPU_COMPILER_OPTIONS


def test_the_batch_shapes_are_those_of_a_batch():
  """`batch_shapes` (what the loop compiles the train step for before any batch exists) names the
  fields, shapes and dtypes of `random_batch`'s batch (the pipeline's: tests/test_train.py)."""
  batch = steps.random_batch(np.random.default_rng(0), 6, 32, 5)
  assert {k: (s.shape, s.dtype) for k, s in steps.batch_shapes(6, 32, 5).items()} == {
      k: (v.shape, v.dtype) for k, v in batch.items()}
