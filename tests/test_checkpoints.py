"""checkpoints: saving and restoring a train state, the best checkpoint kept, a broken newest one
skipped, and which step --checkpoint names."""
import jax
import jax.numpy as jnp
import numpy as np

from lnl_jax import checkpoints
from lnl_jax.steps import TrainState


def state(step: int, value: float) -> TrainState:
  return TrainState(step=jnp.asarray(step, jnp.int32), params={'w': jnp.full((3,), value)},
                    opt_state={'mu': jnp.full((2,), -value)})


ABSTRACT = jax.eval_shape(lambda: state(0, 0.0))


def test_save_and_restore(tmp_path):
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=2)
  assert ckpt.restore(ABSTRACT) == (None, None)  # a fresh workdir
  ckpt.save(state(3, 1.5), meta=dict(epoch=1, class_names=['a', 'b']))
  ckpt.save(state(3, 9.0), meta=dict(epoch=1))  # a step already on disk is not written again
  restored, meta = ckpt.restore(ABSTRACT)
  assert int(restored.step) == 3 and meta == dict(epoch=1, class_names=['a', 'b'])
  np.testing.assert_array_equal(restored.params['w'], [1.5] * 3)
  np.testing.assert_array_equal(restored.opt_state['mu'], [-1.5] * 2)
  ckpt.close()


def test_keeps_the_newest_and_the_best(tmp_path):
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=1)
  for step, accuracy in ((2, 50.0), (4, 80.0), (6, 60.0), (8, 70.0)):
    ckpt.save(state(step, step), meta=dict(epoch=step // 2), metrics=dict(test_accuracy=accuracy))
  assert sorted(ckpt.all_steps()) == [4, 8]  # the best (80 %) and the newest
  restored, _ = ckpt.restore(ABSTRACT, step=4)
  np.testing.assert_array_equal(restored.params['w'], [4.0] * 3)
  ckpt.close()


def test_a_broken_newest_checkpoint_falls_back_to_the_previous(tmp_path):
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=3)
  ckpt.save(state(2, 2.0), meta=dict(epoch=1))
  ckpt.save(state(4, 4.0), meta=dict(epoch=2))
  ckpt.close()
  for f in (tmp_path / 'checkpoints' / '4' / 'state').rglob('*'):
    if f.is_file():
      f.write_bytes(b'')
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=3)
  restored, meta = ckpt.restore(ABSTRACT)
  assert int(restored.step) == 2 and meta == dict(epoch=1)
  ckpt.close()


def test_best_step_and_resolve_step(tmp_path):
  records = [dict(epoch=1, step=6, test_accuracy=50.0), dict(epoch=2, step=12, test_accuracy=40.0),
             dict(epoch=3, step=18, test_accuracy=50.0)]
  assert checkpoints.best_step(records, [6, 12, 18]) == 18  # a tie goes to the later step
  assert checkpoints.best_step(records, [6, 12]) == 6  # only checkpoints still on disk count
  assert checkpoints.best_step(records, [24]) is None
  assert checkpoints.resolve_step(str(tmp_path), [6, 12], 'latest') == 12
  assert checkpoints.resolve_step(str(tmp_path), [6, 12], '6') == 6
