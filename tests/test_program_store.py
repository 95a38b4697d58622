"""program_store: a train step whose lowered program is read back from the store computes what the
step traced afresh computes, and the program's key changes with everything that shapes it."""
import copy
import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lnl_jax import program_store, steps
from lnl_jax.config_base import dataset_config
from lnl_jax.models import create_model

CONFIG = dataset_config('synthetic', 'smoke')
STEPS_PER_EPOCH = 6


def _step_once(parallel, model, store):
  """One train step from the seed-0 state on a fixed random batch, with the jitted step that
  `parallel` gives for `store` (None: plain jax.jit)."""
  tx = steps.create_optimizer(CONFIG.train, STEPS_PER_EPOCH)
  state = parallel.init_state(model, CONFIG.data.image_size, tx, seed=0)
  batch = parallel.put_batch(steps.random_batch(np.random.default_rng(1), CONFIG.train.batch_size,
                                                CONFIG.data.image_size, 7))
  step = parallel.jit_train_step(model, CONFIG.train, STEPS_PER_EPOCH, store)
  return jax.device_get(step(state, batch))


def _assert_same(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('devices', [1, 2])
def test_a_train_step_read_back_from_the_store_steps_like_the_traced_one(tmp_path, monkeypatch,
                                                                          devices):
  parallel = steps.Parallel(jax.devices()[:devices])
  model = create_model(CONFIG.model, CONFIG.data.image_size, 7)
  want = _step_once(parallel, model, store=None)
  _assert_same(_step_once(parallel, model, str(tmp_path)), want)  # lowered and written
  assert len(os.listdir(tmp_path)) == 1

  steps._jit_train_step.cache_clear()  # pylint: disable=protected-access  # as a new process
  def no_export(*args):
    raise AssertionError('the stored program was lowered again')
  monkeypatch.setattr(program_store.StoredFunction, '_export', no_export)
  _assert_same(_step_once(parallel, model, str(tmp_path)), want)  # read back


def test_an_unreadable_stored_program_is_lowered_again(tmp_path):
  parallel = steps.Parallel(jax.devices()[:1])
  model = create_model(CONFIG.model, CONFIG.data.image_size, 7)
  want = _step_once(parallel, model, store=None)
  _step_once(parallel, model, str(tmp_path))
  (path,) = tmp_path.iterdir()
  path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk
  steps._jit_train_step.cache_clear()  # pylint: disable=protected-access
  _assert_same(_step_once(parallel, model, str(tmp_path)), want)
  assert path.stat().st_size > 1000  # written anew


def test_the_key_changes_with_whatever_shapes_the_program():
  mesh = steps.Parallel(jax.devices()[:2]).mesh
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  tree = jax.tree.structure(({'w': 0}, {'image': 0}))
  aval = lambda shape, dtype=np.float32, sharding=replicated: jax.ShapeDtypeStruct(
      shape, dtype, sharding=sharding)
  model = create_model(CONFIG.model, CONFIG.data.image_size, 7)
  wider_config = copy.deepcopy(CONFIG.model)
  wider_config.width *= 2
  wider = create_model(wider_config, CONFIG.data.image_size, 7)

  def key(name='train_step', settings=(model, 1e-3), tree=tree,
          avals=(aval((3, 3)), aval((4, 8), np.uint8, split)), out=replicated):
    return program_store.program_key(name, settings, tree, avals, out)

  base = key()
  assert key() == base
  changed = [key(name='eval_step'), key(settings=(model, 2e-3)), key(settings=(wider, 1e-3)),
             key(tree=jax.tree.structure(({'v': 0}, {'image': 0}))),
             key(avals=(aval((3, 4)), aval((4, 8), np.uint8, split))),
             key(avals=(aval((3, 3), np.float16), aval((4, 8), np.uint8, split))),
             key(avals=(aval((3, 3)), aval((4, 8), np.uint8, replicated))),
             key(out=split)]
  with jax.default_matmul_precision('highest'):
    changed.append(key())
  assert len(set(changed) | {base}) == len(changed) + 1


def test_the_code_digest_changes_with_any_source_of_the_package(tmp_path):
  root = tmp_path / 'lnl_jax'
  shutil.copytree(program_store.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns('__pycache__'))
  before = program_store.code_digest(str(root))
  assert before == program_store.code_digest.__wrapped__(str(root))
  with open(root / 'models' / 'conv.py', 'a') as f:
    f.write('\n# an edit\n')
  assert program_store.code_digest.__wrapped__(str(root)) != before
