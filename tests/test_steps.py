"""steps: input normalisation and the guard against non-finite updates (the loss, the penalty and
the schedule are pinned to the paper in test_paper_training.py)."""
import jax.numpy as jnp
import numpy as np

from lnl_jax import steps


def test_normalize_maps_uint8_to_minus_one_one():
  out = steps.normalize(np.array([0, 255, 128], np.uint8))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)


def test_all_finite():
  assert bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.zeros(3)}))
  assert not bool(steps.all_finite({'a': jnp.ones(2), 'b': jnp.array([0.0, jnp.nan])}))
  assert not bool(steps.all_finite({'a': jnp.array([jnp.inf])}))
