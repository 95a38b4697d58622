"""checkpoints: saving and restoring a train state, the best checkpoint kept, which step
--checkpoint names, damaged or half-written checkpoints, and the fields a resumed run may not
change."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnl_jax import checkpoints
from lnl_jax.config_base import dataset_config
from lnl_jax.errors import ConfigError
from lnl_jax.steps import TrainState
from processes import finalized_steps


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


def test_best_step_and_resolve_step(tmp_path):
  lines = [dict(epoch=1, step=6, test_accuracy=50.0), dict(epoch=2, step=12, test_accuracy=40.0),
           dict(epoch=3, step=18, test_accuracy=60.0)]  # step 18's checkpoint was deleted
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
  assert checkpoints.resolve_step(str(tmp_path), [6, 12], 'best') == 6
  assert checkpoints.resolve_step(str(tmp_path), [6, 12], 'latest') == 12
  assert checkpoints.resolve_step(str(tmp_path), [6, 12], '6') == 6
  with pytest.raises(ConfigError, match=r'\[6, 12\]'):
    checkpoints.resolve_step(str(tmp_path), [6, 12], '7')
  with pytest.raises(ConfigError, match='no test accuracy'):
    checkpoints.resolve_step(str(tmp_path), [24], 'best')
  tie = lines + [dict(epoch=4, step=24, test_accuracy=50.0)]
  assert checkpoints.best_step(tie, [6, 12, 24]) == 24  # a tie goes to the later step
  assert checkpoints.best_step(tie, [6, 12]) == 6  # only checkpoints still on disk count
  assert checkpoints.best_step(lines, [24]) is None


@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_unreadable_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog, damage):
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  for step in (2, 4):
    ckpt.save(state(step, float(step)), meta=dict(epoch=0))
  ckpt.close()
  state_dir = tmp_path / 'checkpoints' / '4' / 'state'
  files = [p for p in state_dir.rglob('*') if p.is_file()]
  assert files
  for p in files:  # what a crash mid-copy or a disk error leaves: empty or missing files
    if damage == 'truncate':
      p.write_bytes(b'')
    else:
      p.unlink()

  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  abstract = jax.eval_shape(lambda: state(0, 0.0))
  restored, meta = ckpt.restore(abstract)
  assert int(restored.step) == 2 and meta == dict(epoch=0)
  np.testing.assert_array_equal(restored.params['w'], [2.0, 2.0, 2.0])
  assert any('Checkpoint 4' in r.getMessage() and 'unreadable' in r.getMessage() and
             'falling back' in r.getMessage() for r in caplog.records)
  # Retraining step 4 replaces the unreadable copy instead of keeping it as the newest forever.
  ckpt.save(state(4, 40.0), meta=dict(epoch=0))
  restored, _ = ckpt.restore(abstract)
  np.testing.assert_array_equal(restored.params['w'], [40.0, 40.0, 40.0])
  ckpt.close()


def test_leftover_temporary_checkpoint_folders_are_ignored(tmp_path):
  """What a SIGKILL during an orbax write leaves: `<step>.orbax-checkpoint-tmp[-<time>]` folders."""
  leftovers = ('4.orbax-checkpoint-tmp', '6.orbax-checkpoint-tmp-1795886308650247')
  for name in leftovers:  # a run killed during its first save holds no checkpoint
    (tmp_path / 'first' / 'checkpoints' / name).mkdir(parents=True)
  assert not checkpoints.has_checkpoint(str(tmp_path / 'first'))
  assert not checkpoints.has_checkpoint(str(tmp_path / 'none'))
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  ckpt.save(state(2, 2.0), meta=dict(epoch=0))
  ckpt.close()
  assert checkpoints.has_checkpoint(str(tmp_path))
  for name in leftovers:
    (tmp_path / 'checkpoints' / name / 'state').mkdir(parents=True)
    (tmp_path / 'checkpoints' / name / 'state' / 'manifest.ocdbt').write_bytes(b'partial')
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  restored, _ = ckpt.restore(jax.eval_shape(lambda: state(0, 0.0)))
  assert int(restored.step) == 2
  ckpt.save(state(4, 4.0), meta=dict(epoch=0))  # over the leftover of the same step
  assert finalized_steps(tmp_path) == [2, 4]
  restored, _ = ckpt.restore(jax.eval_shape(lambda: state(0, 0.0)))
  np.testing.assert_array_equal(restored.params['w'], [4.0, 4.0, 4.0])
  ckpt.close()


@pytest.mark.parametrize('field,value', [
    ('model.num_patches', 9), ('data.image_size', 96), ('model.head_widths', (64, 32)),
    ('model.attention', 'none'), ('seed', 1), ('data.fold', 1), ('model.overlap', 12),
    ('model.width', 0.125), ('data.name', 'raf'), ('data.num_classes', 8), ('data.num_folds', 10),
    ('data.num_train', 200), ('data.num_test', 50), ('data.occlusion_prob', 0.5),
    ('data.limit', 0), ('model.alpha', 0.5), ('train.batch_size', 8),
    ('data.subject_pattern', '^(S\\d+)')])
def test_resuming_with_a_shape_changing_config_is_refused(tmp_path, field, value):
  config = dataset_config('synthetic', 'smoke')
  checkpoints.check_or_write_config(config, str(tmp_path))
  changed = dataset_config('synthetic', 'smoke')
  section, _, key = field.rpartition('.')
  (changed[section] if section else changed)[key] = value
  with pytest.raises(ConfigError, match=re.escape(f'{field}=')) as e:
    checkpoints.check_or_write_config(changed, str(tmp_path))
  assert str(tmp_path) in str(e.value)
  # Fields that leave the checkpoint valid may change.
  harmless = dataset_config('synthetic', 'smoke')
  harmless.train.learning_rate, harmless.train.num_epochs = 1e-3, 5
  checkpoints.check_or_write_config(harmless, str(tmp_path))


def test_mid_epoch_checkpoints_count_only_among_the_newest(tmp_path):
  """README: the workdir keeps the newest `train.keep_checkpoints` plus the best by test accuracy.
  A mid-epoch checkpoint has no test accuracy: once newer ones exist it is not kept."""
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=1)
  for step, accuracy in ((1, None), (2, 80.0), (3, None), (4, 50.0), (5, None)):
    scored = None if accuracy is None else dict(test_accuracy=accuracy)
    ckpt.save(state(step, step), meta=dict(epoch=step // 2), metrics=scored)
  assert sorted(ckpt.all_steps()) == [2, 5]  # the best (80 %) and the newest
  ckpt.close()
