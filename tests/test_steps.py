"""steps: normalisation, the weight-decay term, the learning-rate schedule, and the train step's
guard against non-finite updates."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lnl_jax import steps


def test_normalize_maps_uint8_to_minus_one_one():
  out = steps.normalize(np.array([0, 255, 128], np.uint8))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)


def test_l2_penalty_counts_kernels_only():
  params = {'Dense_0': {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.full((2,), 100.0)},
            'Conv_0': {'kernel': jnp.ones((3,))}}
  assert float(steps.l2_penalty(params)) == pytest.approx(4 * 4.0 + 3 * 1.0)


def test_learning_rate_decays_once_per_epoch():
  train = ml_collections.ConfigDict(dict(learning_rate=3e-4, lr_decay=0.95))
  lr = steps.create_learning_rate_fn(train, steps_per_epoch=10)
  assert float(lr(0)) == pytest.approx(3e-4) and float(lr(9)) == pytest.approx(3e-4)
  assert float(lr(10)) == pytest.approx(3e-4 * 0.95)
  assert float(lr(25)) == pytest.approx(3e-4 * 0.95 ** 2)


def test_all_finite():
  assert bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.zeros(3)}))
  assert not bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.array([0.0, jnp.nan])}))
  assert not bool(steps.all_finite({'a': jnp.array([jnp.inf])}))
