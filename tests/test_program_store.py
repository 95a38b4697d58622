"""program_store: a train step whose lowered program is read back from the store computes what the
step traced afresh computes, and the program's key changes with everything that shapes it."""
import copy
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import flax
import jax
import jaxlib
import ml_dtypes
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lnl_jax import program_store, steps
from lnl_jax.config_base import dataset_config
from lnl_jax.models import create_model
from fixtures import ROOT, command_env

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
  assert sorted(name.split('-')[0] for name in os.listdir(tmp_path)) == ['gradient_step',
                                                                          'update_step']

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
  (path,) = tmp_path.glob('gradient_step-*')
  path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk
  steps._jit_train_step.cache_clear()  # pylint: disable=protected-access
  _assert_same(_step_once(parallel, model, str(tmp_path)), want)
  assert path.stat().st_size > 1000  # written anew


def test_every_step_runs_the_programs_the_train_step_compiled_ahead():
  """`TrainStep.compile_ahead` for the state's and the batch's shapes (as the loop calls it, before
  any array exists) compiles the very programs the first and every later step run: after three
  steps each of its two functions holds those programs and no other."""
  steps._jit_train_step.cache_clear()  # pylint: disable=protected-access  # as a new process
  parallel = steps.Parallel(jax.devices()[:1])
  model = create_model(CONFIG.model, CONFIG.data.image_size, 7)
  tx = steps.create_optimizer(CONFIG.train, STEPS_PER_EPOCH)
  abstract = steps.abstract_state(model, CONFIG.data.image_size, tx)
  step = parallel.jit_train_step(model, CONFIG.train, STEPS_PER_EPOCH)
  step.compile_ahead(abstract, steps.batch_shapes(CONFIG.train.batch_size, CONFIG.data.image_size,
                                                  7))
  programs = (step.gradient, step.update)
  ahead = [set(fn._ahead) for fn in programs]  # pylint: disable=protected-access
  assert all(len(signatures) == 1 for signatures in ahead)
  state = parallel.init_state(model, CONFIG.data.image_size, tx, seed=0, abstract=abstract)
  for seed in range(3):
    batch = steps.random_batch(np.random.default_rng(seed), CONFIG.train.batch_size,
                               CONFIG.data.image_size, 7)
    state, _ = step(state, parallel.put_batch(batch))
  assert int(state.step) == 3
  for fn, signatures in zip(programs, ahead):
    assert set(fn._programs) == signatures and not fn._ahead  # pylint: disable=protected-access


class _Keyed(BaseException):
  """Raised by a stand-in for the store's read, to end a call once its program's key is known."""


def _keys_of_train_steps(monkeypatch, tmp_path, variants):
  """The stored files each (devices, config changes, steps per epoch) variant's train step would
  read, (its gradient step's, its update step's): the real `jit_train_step` and keys, stopped
  before anything is traced."""
  paths = []
  def keyed(path, avals):
    paths.append(path)
    raise _Keyed()
  monkeypatch.setattr(program_store, '_read', keyed)
  for devices, changes, steps_per_epoch in variants:
    config = copy.deepcopy(CONFIG)
    for field, value in changes.items():
      section, name = field.split('.')
      config[section][name] = value
    parallel = steps.Parallel(jax.devices()[:devices])
    model = create_model(config.model, config.data.image_size, 7)
    batch = steps.random_batch(np.random.default_rng(1), config.train.batch_size,
                               config.data.image_size, 7)
    state = steps.abstract_state(model, config.data.image_size,
                                 steps.create_optimizer(config.train, steps_per_epoch))
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                        sharding=parallel.replicated), state)
    step = parallel.jit_train_step(model, config.train, steps_per_epoch, str(tmp_path))
    with pytest.raises(_Keyed):
      step(state, parallel.put_batch(batch))
    with pytest.raises(_Keyed):
      step.update(*step.update_arguments(state))
  return list(zip(paths[::2], paths[1::2]))


def test_the_train_step_key_changes_with_every_setting_shape_and_device_count(tmp_path,
                                                                               monkeypatch):
  variants = [(1, {}, 6), (1, {}, 6), (2, {}, 6), (1, {}, 7), (1, {'train.learning_rate': 1e-3}, 6),
              (1, {'train.lr_decay': 0.9}, 6), (1, {'train.weight_decay': 0.0}, 6),
              (1, {'train.label_smoothing': 0.1}, 6), (1, {'model.dtype': 'bfloat16'}, 6),
              (1, {'model.width': 1 / 8}, 6), (1, {'model.attention': 'none'}, 6),
              (1, {'model.ensemble': 'vmap'}, 6), (1, {'train.batch_size': 8}, 6)]
  paths = _keys_of_train_steps(monkeypatch, tmp_path, variants)
  assert paths[0] == paths[1]  # equal settings, built afresh: the same programs
  assert len(set(paths)) == len(paths) - 1, list(zip(variants, paths))
  # The optimiser's settings shape the update step only; the loss's, the batch's and the network's
  # computation the gradient step only (the parameters' shapes and the devices shape both); λ both:
  # the gradient step reports the loss of Eq. 3, the update step adds the penalty's gradient.
  optimizer = {'7 steps per epoch': 3, 'learning_rate': 4, 'lr_decay': 5}
  loss_or_network = {'label_smoothing': 7, 'dtype': 8, 'ensemble': 11, 'batch_size': 12}
  for name, i in optimizer.items():
    assert paths[i][0] == paths[0][0] and paths[i][1] != paths[0][1], name
  for name, i in loss_or_network.items():
    assert paths[i][0] != paths[0][0] and paths[i][1] == paths[0][1], name
  assert paths[6][0] != paths[0][0] and paths[6][1] != paths[0][1], 'weight_decay'


def test_the_key_changes_with_jax_configuration_and_output_sharding():
  mesh = steps.Parallel(jax.devices()[:2]).mesh
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  tree = jax.tree.structure(({'w': 0}, {'image': 0}))
  avals = (jax.ShapeDtypeStruct((3, 3), np.float32, sharding=replicated),
           jax.ShapeDtypeStruct((4, 8), np.uint8, sharding=split))
  key = lambda out=replicated: program_store.program_key('f', (1,), tree, avals, out)
  base = key()
  with jax.default_matmul_precision('highest'):
    assert key() != base
  assert key(out=split) != base and key() == base


def test_settings_without_a_canonical_text_or_an_unexportable_function_run_unstored(tmp_path):
  """A setting whose text would not tell values apart (a callable) is not keyed; a function that
  jax.export refuses (a host callback) is not stored: both run as plain jax.jit."""
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  x = jax.device_put(np.arange(4.0, dtype=np.float32), sharding)
  def with_callback(x):
    jax.debug.callback(lambda v: None, x)
    return x * 3
  for fn, settings in ((lambda x: x * 3, (lambda: 0,)), (with_callback, ())):
    stored = program_store.StoredFunction(fn, 'f', settings, str(tmp_path),
                                          in_shardings=(sharding,), out_shardings=sharding)
    np.testing.assert_array_equal(stored(x), np.arange(4.0) * 3)
  assert not list(tmp_path.iterdir())


def test_the_code_digest_changes_with_any_source_of_the_package(tmp_path):
  """An edit to a module at the package's top level or in any of its subpackages changes the
  digest."""
  root = tmp_path / 'lnl_jax'
  shutil.copytree(program_store.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns('__pycache__'))
  before = program_store.code_digest(str(root))
  assert program_store.code_digest(str(root)) == before
  for source in ('steps.py', os.path.join('models', 'conv.py'), os.path.join('data', 'decode.py')):
    with open(root / source, 'a') as f:
      f.write('\n# an edit\n')
    after = program_store.code_digest(str(root))
    assert after != before, source
    before = after


def test_the_code_digest_changes_with_the_version_of_python_and_of_each_library(monkeypatch):
  """A program lowered by another Python, JAX, jaxlib, Flax, Optax, NumPy or ml_dtypes is not read
  back: the digest the keys start from changes with each of their versions."""
  digests = {program_store.code_digest()}
  with monkeypatch.context() as m:
    m.setattr(sys, 'version', sys.version + ' (another build)')
    digests.add(program_store.code_digest())
  for library in (jax, jaxlib, flax, optax, np, ml_dtypes):
    with monkeypatch.context() as m:
      m.setattr(library, '__version__', library.__version__ + '.post1')
      digests.add(program_store.code_digest())
  assert len(digests) == 8


def test_the_store_directory_expands_the_home_folder_and_is_off_with_several_processes(
    tmp_path, monkeypatch):
  """`enable('~/…')` keeps programs under the user's home folder (not in a folder named '~'), and
  with several processes nothing is kept: each would write the same files."""
  monkeypatch.setattr(program_store, '_directory', None)  # restored when the test ends
  monkeypatch.setattr(program_store, '_digest', None)
  monkeypatch.setenv('HOME', str(tmp_path))
  program_store.enable('~/lowered')
  assert program_store.directory() == str(tmp_path / 'lowered')
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert program_store.directory() is None


def test_a_stored_program_is_read_back_only_for_the_arguments_it_takes(tmp_path):
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  stored = program_store.StoredFunction(lambda x: x * 3, 'f', (), str(tmp_path),
                                        in_shardings=(sharding,), out_shardings=sharding)
  stored(jax.device_put(np.arange(4.0, dtype=np.float32), sharding))
  (path,) = tmp_path.iterdir()
  aval = lambda shape, dtype=np.float32: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  read = program_store._read  # pylint: disable=protected-access
  assert read(str(path), [aval((4,))])[0] is not None
  for other in ([aval((5,))], [aval((4,), np.int32)], [aval((4,)), aval((4,))]):
    assert read(str(path), other) == (None, None)
  two = steps.Parallel(jax.devices()[:2]).replicated
  stored = program_store.StoredFunction(lambda x: x * 3, 'f', (), str(tmp_path / 'two'),
                                        in_shardings=(two,), out_shardings=two)
  stored(jax.device_put(np.arange(4.0, dtype=np.float32), two))
  (path,) = (tmp_path / 'two').iterdir()
  assert read(str(path), [aval((4,))]) == (None, None)  # lowered for two devices, not one


def test_a_configuration_change_within_the_process_gets_its_own_program(tmp_path):
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  stored = program_store.StoredFunction(lambda x: x @ x, 'f', (), str(tmp_path),
                                        in_shardings=(sharding,), out_shardings=sharding)
  x = jax.device_put(np.eye(2, dtype=np.float32), sharding)
  stored(x)
  with jax.default_matmul_precision('highest'):
    stored(x)
  assert len(list(tmp_path.iterdir())) == 2


def test_the_train_state_shapes_read_back_are_those_traced(tmp_path, monkeypatch):
  """The stored state's shapes equal `abstract_state`'s for the same optimiser; another model or
  image size misses them and traces its own."""
  tx = steps.create_optimizer(CONFIG.train, STEPS_PER_EPOCH)
  stored = lambda model, size: steps.stored_abstract_state(model, size, CONFIG.train,
                                                           STEPS_PER_EPOCH, str(tmp_path))
  def check(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(got)] == [
        (x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(want)]

  model = create_model(CONFIG.model, CONFIG.data.image_size, 7)
  want = steps.abstract_state(model, CONFIG.data.image_size, tx)
  check(stored(model, CONFIG.data.image_size), want)  # traced and written
  wider_config = copy.deepcopy(CONFIG.model)
  wider_config.width *= 2
  wider = create_model(wider_config, CONFIG.data.image_size, 7)
  check(stored(wider, CONFIG.data.image_size),
        steps.abstract_state(wider, CONFIG.data.image_size, tx))
  larger = create_model(CONFIG.model, 96, 7)
  check(stored(larger, 96), steps.abstract_state(larger, 96, tx))
  assert len(list(tmp_path.iterdir())) == 3

  def no_trace(*args, **kwargs):
    raise AssertionError('the stored shapes were traced again')
  monkeypatch.setattr(steps, 'abstract_state', no_trace)
  check(stored(model, CONFIG.data.image_size), want)  # read back


class _Compiles:
  """The threads of the XLA compilations run in this process while it is entered, those of the
  compilations started ahead in the background included (their threads are waited for)."""

  def __enter__(self):
    self.threads = []
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def _listen(self, event, duration, **kwargs):
    if event == '/jax/core/compile/backend_compile_duration':
      self.threads.append(threading.current_thread().name)

  def __exit__(self, *exc):
    for thread in threading.enumerate():
      if thread.name.startswith('compile '):
        thread.join()
    jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.mark.parametrize('stored', [False, True])
def test_the_first_call_runs_the_program_compiled_ahead(tmp_path, stored):
  """`compile_ahead` compiles in the background what the first call with arguments of those
  shapes runs, once however often it is asked: the call computes the function and compiles
  nothing more."""
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  fn = program_store.StoredFunction(lambda x, y: {'sum': x['a'] @ x['a'] + y}, 'f', (),
                                    str(tmp_path) if stored else None,
                                    in_shardings=(sharding, sharding), out_shardings=sharding)
  a = jax.device_put(np.arange(9, dtype=np.float32).reshape(3, 3), sharding)
  y = jax.device_put(np.float32(2), sharding)
  with _Compiles() as compiles:
    for _ in range(2):  # the second call finds the compilation started
      fn.compile_ahead({'a': jax.ShapeDtypeStruct((3, 3), np.float32)},
                       jax.ShapeDtypeStruct((), np.float32))
    got = fn({'a': a}, y)
  want = np.arange(9.0).reshape(3, 3)
  np.testing.assert_allclose(got['sum'], want @ want + 2)
  assert compiles.threads == ['compile f']
  assert len(list(tmp_path.iterdir())) == (1 if stored else 0)
  with _Compiles() as compiles:
    fn({'a': a}, y)
  assert not compiles.threads


def test_a_call_with_other_shapes_than_those_compiled_ahead_warns_and_runs(caplog):
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  fn = program_store.StoredFunction(lambda x: x * 2, 'f', (), None, in_shardings=(sharding,),
                                    out_shardings=sharding)
  fn.compile_ahead(jax.ShapeDtypeStruct((4,), np.float32))
  with caplog.at_level('WARNING'):
    got = fn(jax.device_put(np.ones(4, np.int32), sharding))  # int32: not the program compiled
  np.testing.assert_array_equal(got, np.full(4, 2))
  assert 'other than those it is compiling ahead for' in caplog.text


def test_an_error_of_the_compilation_ahead_is_raised_by_the_call(monkeypatch):
  """A failing trace raises at once; a failing compilation (XLA out of memory, say) in the
  background thread is raised by the first call."""
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  fn = program_store.StoredFunction(lambda x: x.reshape(7), 'f', (), None,
                                    in_shardings=(sharding,), out_shardings=sharding)
  with pytest.raises(TypeError, match='reshape'):
    fn.compile_ahead(jax.ShapeDtypeStruct((4,), np.float32))
  with pytest.raises(TypeError, match='takes 1 arguments, got 2'):
    fn.compile_ahead(jax.ShapeDtypeStruct((4,), np.float32), jax.ShapeDtypeStruct((4,), np.float32))

  def compile_fails(self, *args, **kwargs):
    raise RuntimeError(f'compiled in {threading.current_thread().name}')
  monkeypatch.setattr(jax.stages.Lowered, 'compile', compile_fails)
  fn = program_store.StoredFunction(lambda x: x * 2, 'f', (), None, in_shardings=(sharding,),
                                    out_shardings=sharding)
  fn.compile_ahead(jax.ShapeDtypeStruct((4,), np.float32))  # returns; the thread fails
  with pytest.raises(RuntimeError, match='compiled in compile f'):
    fn(jax.device_put(np.zeros(4, np.float32), sharding))


EXIT_WHILE_COMPILING = textwrap.dedent('''
    import sys, threading
    import jax, jax.numpy as jnp, numpy as np
    from lnl_jax import program_store, steps
    jax.config.update('jax_enable_compilation_cache', False)
    compiling = threading.Event()
    def started(event, value, **kwargs):  # reported as XLA's compilation begins
      if event == '/jax/core/compile/backend_compile_duration':
        compiling.set()
    jax.monitoring.register_scalar_listener(started)
    def slow_to_compile(x):
      for _ in range(600):
        x = jnp.sin(x @ x)
      return x
    sharding = steps.Parallel(jax.devices()[:1]).replicated
    fn = program_store.StoredFunction(slow_to_compile, 'f', (), None, in_shardings=(sharding,),
                                      out_shardings=sharding)
    fn.compile_ahead(jax.ShapeDtypeStruct((64, 64), np.float32))
    if not compiling.wait(timeout=120):
      sys.exit(4)  # no compilation was reported: the test cannot tell
    sys.exit(3)  # as an error of the command ends it, while the compilation runs
''')


def test_a_process_that_ends_while_compiling_ahead_exits_with_its_own_status():
  """Python finalizing while XLA compiles in a daemon thread aborts the process (status 134,
  'terminate called'), which would hide the command's own error status."""
  proc = subprocess.run([sys.executable, '-c', EXIT_WHILE_COMPILING], cwd=ROOT, env=command_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert 'terminate' not in proc.stderr


def test_a_stored_function_donates_the_arguments_it_is_told_to(tmp_path):
  """`donate_argnums` holds for a program lowered and written and for one read back: the donated
  argument's buffer is given to the output (the train state is not held twice in memory), the
  other argument is kept."""
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  for _ in range(2):  # lowered and written, then read back by a new StoredFunction
    fn = program_store.StoredFunction(lambda x, y: x * y, 'f', (), str(tmp_path),
                                      in_shardings=(sharding, sharding), out_shardings=sharding,
                                      donate_argnums=(0,))
    x, y = (jax.device_put(np.arange(4.0, dtype=np.float32), sharding) for _ in range(2))
    np.testing.assert_array_equal(fn(x, y), np.arange(4.0) ** 2)
    assert x.is_deleted() and not y.is_deleted()
  assert len(list(tmp_path.iterdir())) == 1


def test_stored_shapes_are_each_functions_own_weak_types_included(tmp_path):
  """Two functions of equal settings keep their own shapes (the name is part of the key), and the
  shapes read back are those traced, weak types included (a Python scalar in the state)."""
  functions = {
      'state': lambda: jax.eval_shape(lambda: {'w': jax.numpy.zeros((3,)), 'scale': 1.0}),
      'other': lambda: jax.eval_shape(lambda: {'w': jax.numpy.zeros((5, 2), np.int32)}),
  }
  for _ in range(2):  # traced and written, then read back
    for name, fn in functions.items():
      got, want = program_store.shapes(fn, name, (), str(tmp_path)), fn()
      assert jax.tree.structure(got) == jax.tree.structure(want), name
      assert [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(got)] == [
          (x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(want)], name
  assert len(list(tmp_path.iterdir())) == 2


def test_nothing_is_kept_when_the_sources_differ_from_those_the_process_imported(tmp_path,
                                                                                  monkeypatch):
  """A process whose package sources changed on disk after it imported them keeps nothing (what it
  writes would be keyed as code it does not run), and still computes as usual."""
  monkeypatch.setattr(program_store, '_digest', hashlib.sha256(b'the sources imported').digest())
  sharding = steps.Parallel(jax.devices()[:1]).replicated
  fn = program_store.StoredFunction(lambda x: x * 3, 'f', (), str(tmp_path),
                                    in_shardings=(sharding,), out_shardings=sharding)
  np.testing.assert_array_equal(fn(jax.device_put(np.ones(4, np.float32), sharding)), np.full(4, 3))
  shapes = program_store.shapes(lambda: jax.ShapeDtypeStruct((2,), np.float32), 'g', (),
                                str(tmp_path))
  assert shapes.shape == (2,)
  assert not list(tmp_path.iterdir())


def test_a_record_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
  """Storing is an optimisation: a record that cannot be put in place (here a folder stands where
  the file goes) is reported, and its temporary file removed."""
  (tmp_path / 'f.shapes').mkdir()
  write = program_store._write  # pylint: disable=protected-access
  write(str(tmp_path / 'f.shapes'), {'leaves': []})
  assert [p.name for p in tmp_path.iterdir()] == ['f.shapes']
