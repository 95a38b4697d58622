"""Nothing lost, nothing silently wrong: crash and resume, numerical faults, bad input.

The crash tests run the real entry point (`python -m lnl_jax.main`, smoke size) as subprocesses and
kill them; the numerical-fault tests poison one batch of an in-process run; the bad-input test is
one table (docs/bad_inputs.md is its human-readable copy).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image, JpegImagePlugin

from lnl_jax import checkpoints, train
from lnl_jax.config_base import dataset_config
from lnl_jax.data import datasets, pipeline
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError
from lnl_jax.steps import Parallel, TrainState
import fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = '--config=configs/synthetic.py:smoke'
TIMEOUT = 900  # seconds for one smoke run on a loaded 2-core machine; a hang fails, never waits


# ----------------------------------------------------------------------------- subprocess helpers

def main_command(workdir, *flags, config=SMOKE):
  return [sys.executable, '-m', 'lnl_jax.main', config, f'--workdir={workdir}', *flags]


def subprocess_env(devices: int = 1, compilation_cache=None) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             TF_CPP_MIN_LOG_LEVEL='2')
  if compilation_cache:  # runs of one config share compiled steps: ~3× less CPU after the first
    env.update(JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return env


class Main:
  """A `python -m lnl_jax.main` subprocess; its stdout and stderr go to a log file."""

  def __init__(self, log_path, *args, devices: int = 1, compilation_cache=None):
    self.log_path = str(log_path)
    self._log = open(self.log_path, 'w')
    self.proc = subprocess.Popen(list(args), cwd=ROOT, env=subprocess_env(devices, compilation_cache),
                                 stdout=self._log, stderr=subprocess.STDOUT)

  def wait(self, timeout: float = TIMEOUT) -> tuple[int, str]:
    try:
      rc = self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      pytest.fail(f'{self.proc.args} ran over {timeout} s; log:\n{self.log()[-3000:]}')
    self._log.close()
    return rc, self.log()

  def log(self) -> str:
    with open(self.log_path, errors='backslashreplace') as f:
      return f.read()

  def wait_for_checkpoint(self, workdir, step: int, timeout: float = TIMEOUT) -> None:
    """Polls until a finalized checkpoint ≥ `step` exists (the process must still be running)."""
    deadline = time.time() + timeout
    while max(finalized_steps(workdir), default=-1) < step:
      if self.proc.poll() is not None:
        pytest.fail(f'training ended (rc {self.proc.returncode}) before checkpoint {step}:\n'
                    f'{self.log()[-3000:]}')
      if time.time() > deadline:
        self.proc.kill()
        pytest.fail(f'no checkpoint {step} after {timeout} s')
      time.sleep(0.05)


@pytest.fixture
def launch():
  """`launch(log_path, *command, ...)` starts a `Main`; any still running when the test ends (a
  failed assertion mid-way) is killed."""
  started = []

  def start(*args, **kw) -> Main:
    started.append(Main(*args, **kw))
    return started[-1]
  yield start
  for main in started:
    if main.proc.poll() is None:
      main.proc.kill()
      main.proc.wait()


def finalized_steps(workdir) -> list[int]:
  """Steps of the complete checkpoints (orbax writes `<step>.orbax-checkpoint-tmp*`, then renames)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def load_state(workdir, step: int) -> dict:
  """The saved TrainState of `step` as a tree of numpy arrays, read with orbax independently of
  lnl_jax and of the devices that wrote it."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, restore_args=as_numpy)


def assert_trees_identical(a, b):
  """Bit-identical trees (same paths, shapes, dtypes and bytes); names the differing leaves."""
  flat_a = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(a)}
  flat_b = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(b)}
  assert flat_a.keys() == flat_b.keys()
  differ = {k: float(np.max(np.abs(flat_a[k].astype(np.float64) - flat_b[k])))
            for k in flat_a if not (flat_a[k].dtype == flat_b[k].dtype and
                                    np.array_equal(flat_a[k], flat_b[k]))}
  assert not differ, f'{len(differ)} of {len(flat_a)} leaves differ (max |Δ|): {list(differ.items())[:5]}'


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for r in records:
    del r['images_per_s']  # wall-clock speed, the one field that may differ
  return records


# ----------------------------------------------------------------------------- crash and resume

@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the smoke runs of this module: the same config compiles
  the same steps, so only the first run pays for compiling them."""
  return tmp_path_factory.mktemp('jax_cache')


def test_sigkill_and_sigterm_then_resume_equal_an_uninterrupted_run(tmp_path, launch,
                                                                    compilation_cache):
  """SIGKILL in epoch 1, SIGTERM in epoch 2, a leftover half-written checkpoint, resume: the final
  parameters, optimiser state, metrics, confusion matrix and attention track are bit-identical to
  those of an uninterrupted run of the same seed (CPU, one device)."""
  flags = ('--config.train.checkpoint_every_steps=2',)
  ref_dir, run_dir = tmp_path / 'reference', tmp_path / 'interrupted'
  run = lambda name, workdir: launch(tmp_path / f'{name}.log', *main_command(workdir, *flags),
                                    compilation_cache=compilation_cache)
  reference = run('reference', ref_dir)
  # Its first checkpoint comes after every step (init, train, eval) has been compiled and cached;
  # from then on it runs alongside the interrupted runs.
  reference.wait_for_checkpoint(ref_dir, 2)

  # 1. SIGKILL as soon as the step-4 checkpoint is complete (mid epoch 1: 6 steps per epoch).
  first = run('first', run_dir)
  first.wait_for_checkpoint(run_dir, 4)
  first.proc.send_signal(signal.SIGKILL)
  assert first.wait()[0] == -signal.SIGKILL
  newest = max(finalized_steps(run_dir))

  # 2. The same command resumes from the newest complete checkpoint; SIGTERM it in epoch 2.
  second = run('second', run_dir)
  second.wait_for_checkpoint(run_dir, 8)
  second.proc.send_signal(signal.SIGTERM)
  rc, log = second.wait()
  assert f'resuming at step {newest}' in log
  assert rc == 128 + signal.SIGTERM, log[-3000:]
  assert 'Traceback' not in log
  preempted = re.search(r'preempted: SIGTERM received: checkpoint of step (\d+) written; rerun the '
                        r'same command to resume\.', log)
  assert preempted, log[-3000:]
  stopped_at = int(preempted[1])
  assert 8 <= stopped_at < 12 and max(finalized_steps(run_dir)) == stopped_at

  # 3. A SIGKILL during a checkpoint write leaves orbax's temporary folder behind: here, of the
  #    final step, which the resumed run must then write over.
  leftover = run_dir / 'checkpoints' / '12.orbax-checkpoint-tmp' / 'state.orbax-checkpoint-tmp'
  leftover.mkdir(parents=True)
  (leftover / 'manifest.ocdbt').write_bytes(b'\x00' * 7)
  stale = run_dir / 'checkpoints' / '10.orbax-checkpoint-tmp-1795886308650247'
  stale.mkdir()

  third = run('third', run_dir)
  rc, log = third.wait()
  assert rc == 0, log[-3000:]
  assert f'resuming at step {stopped_at}' in log
  rc, ref_log = reference.wait()
  assert rc == 0, ref_log[-3000:]
  assert 'resuming' not in ref_log

  assert 12 in finalized_steps(run_dir) and 12 in finalized_steps(ref_dir)
  assert_trees_identical(load_state(run_dir, 12), load_state(ref_dir, 12))
  resumed, uninterrupted = read_metrics(run_dir), read_metrics(ref_dir)
  assert [r['epoch'] for r in resumed] == [1, 2]
  assert resumed == uninterrupted  # test accuracies, train loss/accuracy of resumed epochs too
  summaries = [json.load(open(d / 'summary.json')) for d in (run_dir, ref_dir)]
  for key in ('confusion_matrix', 'test_accuracy_mean_last_epochs', 'steps', 'best_checkpoint_step'):
    assert summaries[0][key] == summaries[1][key], key
  tracks = [np.load(d / 'attention_track.npz') for d in (run_dir, ref_dir)]
  np.testing.assert_array_equal(tracks[0]['steps'], np.arange(2, 13, 2))
  np.testing.assert_array_equal(tracks[0]['steps'], tracks[1]['steps'])
  np.testing.assert_array_equal(tracks[0]['w_global'], tracks[1]['w_global'])


def test_sigint_writes_a_checkpoint_and_exits_with_130(tmp_path, launch, compilation_cache):
  """Ctrl-C is a pre-emption like SIGTERM: a checkpoint of the current step, then exit status
  128 + SIGINT = 130 and the one-line message, no KeyboardInterrupt traceback."""
  workdir = tmp_path / 'run'
  run = launch(tmp_path / 'run.log', *main_command(workdir, '--config.train.checkpoint_every_steps=2'),
               compilation_cache=compilation_cache)
  run.wait_for_checkpoint(workdir, 2)
  run.proc.send_signal(signal.SIGINT)
  rc, log = run.wait()
  assert rc == 130, log[-3000:]
  assert 'Traceback' not in log and 'KeyboardInterrupt' not in log, log[-3000:]
  preempted = re.search(r'preempted: SIGINT received: checkpoint of step (\d+) written; rerun the '
                        r'same command to resume\.', log)
  assert preempted, log[-3000:]
  stopped_at = int(preempted[1])
  # Step 2 itself when the signal came before step 3 ended (nothing unsaved: the process ends at
  # once); a later step otherwise.
  assert 2 <= stopped_at < 12 and max(finalized_steps(workdir)) == stopped_at
  assert int(load_state(workdir, stopped_at)['step']) == stopped_at


def test_sigterm_while_the_first_step_compiles_ends_within_ten_seconds(tmp_path, launch):
  """SIGTERM while the first train step compiles (the `cpu` network, whose step takes tens of
  seconds to compile, and no compilation cache): no step has run, so there is nothing to save and
  the process ends within 10 s instead of after the compilation, writing no checkpoint."""
  workdir = tmp_path / 'run'
  run = launch(tmp_path / 'run.log', *main_command(
      workdir, '--compilation_cache=', '--config.data.num_train=64', '--config.data.num_test=32',
      config='--config=configs/synthetic.py:cpu'))
  deadline = time.time() + TIMEOUT
  while 'starting from scratch' not in run.log():  # logged after initialisation, before the step
    assert run.proc.poll() is None and time.time() < deadline, run.log()[-3000:]
    time.sleep(0.05)
  sent = time.time()
  run.proc.send_signal(signal.SIGTERM)
  rc, log = run.wait()
  assert time.time() - sent < 10, log[-3000:]
  assert rc == 128 + signal.SIGTERM, log[-3000:]
  assert ('preempted: SIGTERM received: no step had run, nothing to save; rerun the same command '
          'to resume.') in log
  assert 'Traceback' not in log and finalized_steps(workdir) == []


def tiny_state(step: int, value: float) -> TrainState:
  return TrainState(step=jnp.asarray(step, jnp.int32), params={'w': jnp.full((3,), value)},
                    opt_state={'mu': jnp.zeros((2,))})


@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_unreadable_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog, damage):
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  for step in (2, 4):
    ckpt.save(tiny_state(step, float(step)), meta=dict(epoch=0))
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
  abstract = jax.eval_shape(lambda: tiny_state(0, 0.0))
  state, meta = ckpt.restore(abstract)
  assert int(state.step) == 2 and meta == dict(epoch=0)
  np.testing.assert_array_equal(state.params['w'], [2.0, 2.0, 2.0])
  assert any('Checkpoint 4' in r.getMessage() and 'unreadable' in r.getMessage() and
             'falling back' in r.getMessage() for r in caplog.records)
  # Retraining step 4 replaces the unreadable copy instead of keeping it as the newest forever.
  ckpt.save(tiny_state(4, 40.0), meta=dict(epoch=0))
  state, _ = ckpt.restore(abstract)
  np.testing.assert_array_equal(state.params['w'], [40.0, 40.0, 40.0])
  ckpt.close()


def test_leftover_temporary_checkpoint_folders_are_ignored(tmp_path):
  """What a SIGKILL during an orbax write leaves: `<step>.orbax-checkpoint-tmp[-<time>]` folders."""
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  ckpt.save(tiny_state(2, 2.0), meta=dict(epoch=0))
  ckpt.close()
  for name in ('4.orbax-checkpoint-tmp', '6.orbax-checkpoint-tmp-1795886308650247'):
    (tmp_path / 'checkpoints' / name / 'state').mkdir(parents=True)
    (tmp_path / 'checkpoints' / name / 'state' / 'manifest.ocdbt').write_bytes(b'partial')
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=5)
  state, _ = ckpt.restore(jax.eval_shape(lambda: tiny_state(0, 0.0)))
  assert int(state.step) == 2
  ckpt.save(tiny_state(4, 4.0), meta=dict(epoch=0))  # over the leftover of the same step
  assert finalized_steps(tmp_path) == [2, 4]
  state, _ = ckpt.restore(jax.eval_shape(lambda: tiny_state(0, 0.0)))
  np.testing.assert_array_equal(state.params['w'], [4.0, 4.0, 4.0])
  ckpt.close()


@pytest.mark.parametrize('field,value', [
    ('model.num_patches', 9), ('data.image_size', 96), ('model.head_widths', (64, 32)),
    ('model.attention', 'none'), ('seed', 1)])
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


# ----------------------------------------------------------------------------- numerical faults

def poison_batches(monkeypatch, poisoned_step: int):
  """Makes the batch of global step `poisoned_step` (1-based) carry NaN soft labels, so that its
  loss and gradients are NaN inside the real train step."""
  real = pipeline.train_batches

  def train_batches(records, **kw):
    first = kw['epoch'] * pipeline.steps_per_epoch(len(records), kw['batch_size']) + kw['start_step']
    for step, batch in enumerate(real(records, **kw), first + 1):
      if step == poisoned_step:
        batch = dict(batch, soft_label=np.full_like(batch['soft_label'], np.nan))
      yield batch
  monkeypatch.setattr(pipeline, 'train_batches', train_batches)


def digest(directory) -> str:
  h = hashlib.sha256()
  for p in sorted(directory.rglob('*')):
    if p.is_file():
      h.update(str(p.relative_to(directory)).encode() + p.read_bytes())
  return h.hexdigest()


def all_finite(tree) -> bool:
  return all(np.isfinite(x).all() for x in jax.tree.leaves(tree))


def test_nonfinite_loss_stops_or_skips_and_never_reaches_a_checkpoint(tmp_path, monkeypatch, caplog):
  config = dataset_config('synthetic', 'smoke')
  config.train.max_steps, config.train.checkpoint_every_steps = 4, 1
  config.train.keep_checkpoints, config.train.log_every_steps = 10, 100  # flushes only for saves
  poison_batches(monkeypatch, poisoned_step=3)
  # One device: what is tested here is the loop's handling, and one device compiles faster.
  monkeypatch.setattr(train, 'Parallel', lambda: Parallel(jax.devices()[:1]))
  workdir = str(tmp_path)

  # on_nonfinite=stop: a clear error naming the step; checkpoints 1 and 2 only, both finite.
  with pytest.raises(FloatingPointError, match=r'non-finite loss or gradient at step 3 .*'
                                               r'train\.on_nonfinite=stop'):
    train.train_and_evaluate(config, workdir)
  assert finalized_steps(workdir) == [1, 2]
  assert all(all_finite(load_state(workdir, s)) for s in (1, 2))
  last_good = digest(tmp_path / 'checkpoints' / '2')

  # on_nonfinite=skip (a field a resumed run may change): resumes from the last good checkpoint,
  # skips the poisoned update, finishes with finite parameters.
  config.train.on_nonfinite = 'skip'
  summary = train.train_and_evaluate(config, workdir)
  assert summary['steps'] == 4
  assert digest(tmp_path / 'checkpoints' / '2') == last_good  # never rewritten
  assert any('non-finite loss or gradient at step 3' in r.getMessage() and r.levelname == 'WARNING'
             for r in caplog.records)
  states = {s: load_state(workdir, s) for s in (2, 3, 4)}
  assert all(all_finite(s) for s in states.values())
  assert int(states[3]['step']) == 3
  assert_trees_identical(states[3]['params'], states[2]['params'])  # step 3's update was skipped
  assert_trees_identical(states[3]['opt_state'], states[2]['opt_state'])
  assert not np.array_equal(states[4]['params']['JointHead_0']['Dense_0']['kernel'],
                            states[3]['params']['JointHead_0']['Dense_0']['kernel'])
  [record] = read_metrics(workdir)
  assert np.isfinite(record['train_loss'])


# ----------------------------------------------------------------------------- bad input table

@dataclasses.dataclass
class Ctx:
  tmp: object  # pathlib.Path of this case
  caplog: object
  monkeypatch: object
  main_errors: Callable[[str], str]  # name of a MAIN_CASES entry -> its one-line error


def raises(fn) -> tuple[str, str]:
  """('error', message) when `fn` raises ConfigError/DataError; any other exception propagates."""
  try:
    fn()
  except (ConfigError, DataError) as e:
    return 'error', str(e)
  return 'ok', ''


def warned(caplog) -> str:
  return '\n'.join(r.getMessage() for r in caplog.records if r.levelname == 'WARNING')


def data_config(name: str, root, **fields):
  config = dataset_config(name, 'smoke')
  config.data.root = str(root)
  config.data.update(fields)
  return config


def load(name: str, root, **fields):
  config = data_config(name, root, **fields)
  return datasets.load_splits(config.data, config.seed, config.model.num_patches,
                              config.model.overlap)


def start_training(tmp, **overrides):
  """train_and_evaluate on a smoke config with dotted overrides; config errors come before any
  compilation, so a case that wrongly passes is still bounded by max_steps=1."""
  config = dataset_config('synthetic', 'smoke')
  config.train.max_steps = 1
  for dotted, value in overrides.items():
    section, key = dotted.split('.')
    config[section][key] = value
  return raises(lambda: train.train_and_evaluate(config, str(tmp / 'run')))


IMAGE_SIZE = 32


def through_pipeline(path, box=None) -> tuple[str, object]:
  """One image file through the eval pipeline: ('ok', its S×S×3 pixels), or, if it is skipped
  and counted, ('skipped', the DataError the same file gives with on_bad_image='fail')."""
  records = Records(class_names=('a',), labels=[0], paths=np.array([str(path)]),
                    boxes=None if box is None else np.array([box], np.int32))
  bad = pipeline.BadImageCounter()
  [batch] = list(pipeline.eval_batches(records, batch_size=1, image_size=IMAGE_SIZE, bad_images=bad))
  if batch['mask'][0]:
    assert bad.count == 0
    return 'ok', batch['image'][0]
  assert bad.count == 1 and bad.paths == [str(path)] and not batch['image'].any()
  try:
    list(pipeline.eval_batches(records, batch_size=1, image_size=IMAGE_SIZE, on_bad_image='fail'))
  except DataError as e:
    return 'skipped', str(e)
  pytest.fail('on_bad_image=fail did not raise')


def decoded_as(path, rgb, tol: int = 0, **kw) -> tuple[str, str]:
  kind, image = through_pipeline(path, **kw)
  assert kind == 'ok', image
  np.testing.assert_allclose(image.reshape(-1, 3), np.broadcast_to(rgb, (IMAGE_SIZE ** 2, 3)),
                             atol=tol)
  return 'ok', ''


def jpeg(tmp, name='face.jpg', size=(16, 16), rgb=(200, 100, 50)):
  path = tmp / name
  Image.new('RGB', size, rgb).save(path, quality=95)
  return path


def folders(tmp, train: dict, test: dict, ext='.png'):
  fixtures.write_class_folders(str(tmp / 'd' / 'train'), train, ext)
  fixtures.write_class_folders(str(tmp / 'd' / 'test'), test, ext)
  return tmp / 'd'


# Each case: what a user does wrong -> ('error' | 'skipped' | 'warning' | 'ok', message). 'error' is
# a ConfigError/DataError (or, for the main_* cases, the one-line `error: ...` of
# `python -m lnl_jax.main` with exit status 1 and no traceback); 'skipped' is a counted skip.

def case_missing_root(c):
  return 'error', c.main_errors('missing_root')


def case_empty_root_setting(c):
  return raises(lambda: load('raf', ''))


def case_empty_class_folder(c):
  root = folders(c.tmp, dict(angry=2, happy=0, sad=2), dict(angry=1, happy=0, sad=1))
  train_records, _ = load('folder', root)
  assert train_records.class_names == ('angry', 'sad')
  return 'warning', warned(c.caplog)


def case_all_class_folders_empty(c):
  root = folders(c.tmp, dict(angry=0, sad=0), dict(angry=1, sad=1))
  return raises(lambda: load('folder', root))


def case_unknown_class_folder(c):
  fixtures.write_sfew(str(c.tmp / 'sfew'), dict(Angry=1, Happy=1, Bored=1), dict(Angry=1, Happy=1))
  return raises(lambda: load('sfew', c.tmp / 'sfew'))


def case_label_file_wrong_columns(c):
  fixtures.write_rafdb(str(c.tmp / 'raf'), [1, 2], [3], extra_lines='train_00003.jpg 4 extra\n')
  return raises(lambda: load('raf', c.tmp / 'raf'))


def case_label_out_of_range(c):
  return 'error', c.main_errors('label_out_of_range')


def case_label_not_an_integer(c):
  fixtures.write_rafdb(str(c.tmp / 'raf'), [1, 2], [3], extra_lines='train_00003.jpg happy\n')
  return raises(lambda: load('raf', c.tmp / 'raf'))


def case_label_names_missing_image(c):
  fixtures.write_rafdb(str(c.tmp / 'raf'), [1, 2, 3], [3], missing=('train_00002.jpg',))
  return raises(lambda: load('raf', c.tmp / 'raf'))


def case_fer2013_row_with_2303_pixels(c):
  fixtures.write_fer2013_csv(str(c.tmp / 'fer' / 'fer2013.csv'), [0, 1, 2, 3],
                             ['Training', 'Training', 'Training', 'PrivateTest'], bad_row=1)
  return raises(lambda: load('fer2013', c.tmp / 'fer'))


def case_truncated_jpeg(c):
  path = jpeg(c.tmp, size=(64, 64))
  path.write_bytes(path.read_bytes()[:300])
  return through_pipeline(path)


def case_zero_byte_file(c):
  path = c.tmp / 'empty.png'
  path.write_bytes(b'')
  return through_pipeline(path)


def case_text_file_named_jpg(c):
  path = c.tmp / 'notes.jpg'
  path.write_text('these are not pixels\n')
  return through_pipeline(path)


def case_face_box_outside_image(c):
  return through_pipeline(jpeg(c.tmp), box=(40, 40, 10, 10))  # top, left, h, w on a 16×16 image


def case_cmyk_jpeg(c):
  path = c.tmp / 'cmyk.jpg'
  Image.new('RGB', (16, 16), (200, 100, 50)).convert('CMYK').save(path, quality=95)
  assert Image.open(path).mode == 'CMYK'
  return decoded_as(path, (200, 100, 50), tol=3)


def case_16bit_png(c):
  path = c.tmp / 'deep.png'
  Image.fromarray(np.full((16, 16), 120 * 257, np.uint16)).save(path)
  assert Image.open(path).mode.startswith('I')
  return decoded_as(path, (120, 120, 120))


def case_rgba_png(c):
  path = c.tmp / 'rgba.png'
  rgba = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 4), np.uint8)
  rgba[:, :16] = (200, 100, 50, 255)  # opaque left half; the right half is transparent
  Image.fromarray(rgba, 'RGBA').save(path)
  kind, image = through_pipeline(path)
  assert kind == 'ok'
  np.testing.assert_array_equal(image[:, :16], np.broadcast_to((200, 100, 50), (IMAGE_SIZE, 16, 3)))
  np.testing.assert_array_equal(image[:, 16:], 0)  # composited on black
  return 'ok', ''


def case_1x1_image(c):
  path = c.tmp / 'dot.png'
  Image.new('RGB', (1, 1), (10, 200, 30)).save(path)
  return decoded_as(path, (10, 200, 30))


def case_huge_jpeg(c):
  path = jpeg(c.tmp, 'huge.jpg', size=(6000, 6000), rgb=(30, 60, 90))
  decoded_sizes = []
  draft = JpegImagePlugin.JpegImageFile.draft

  def spy(self, *args, **kw):
    out = draft(self, *args, **kw)
    decoded_sizes.append(self.size)
    return out
  c.monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', spy)
  result = decoded_as(path, (30, 60, 90), tol=2)
  assert decoded_sizes == [(750, 750)]  # the decoder's 1/8 DCT scaling: never 36 MPixel in memory
  return result


def case_non_utf8_file_name(c):
  root = folders(c.tmp, dict(angry=1, sad=1), dict(angry=1, sad=1))
  odd = os.path.join(os.fsencode(root / 'train' / 'angry'), b'caf\xe9.png')
  fixtures.write_image(odd, 10)
  train_records, _ = load('folder', root)
  assert os.fsdecode(odd) in list(train_records.paths)
  return through_pipeline(os.fsdecode(odd))[0], ''


def case_non_utf8_name_of_a_bad_file(c):
  path = os.path.join(os.fsencode(c.tmp), b'bad\xff.jpg')
  open(path, 'wb').close()
  kind, message = through_pipeline(os.fsdecode(path))
  message.encode('utf-8', 'backslashreplace')  # printable; the name is the OS's (PEP 383)
  return kind, message


def case_same_file_in_train_and_test(c):
  fixtures.write_class_folders(str(c.tmp / 'd' / 'train'), dict(angry=2, sad=2))
  os.symlink(c.tmp / 'd' / 'train', c.tmp / 'd' / 'test')  # "test" is the train folder
  return raises(lambda: load('folder', c.tmp / 'd'))


def case_duplicate_file_names_across_splits(c):
  # write_image seeds pixels by path, so the same name in train/ and test/ differs in content:
  # fine, as in exports that number each split's files from 0. A byte-identical copy warns.
  root = folders(c.tmp, dict(angry=2, sad=2), dict(angry=2, sad=2))
  load('folder', root)
  assert 'byte-identical' not in warned(c.caplog)
  copy = root / 'test' / 'sad' / 'img_001.png'
  copy.write_bytes((root / 'train' / 'sad' / 'img_001.png').read_bytes())
  load('folder', root)
  return 'warning', warned(c.caplog)


def case_num_patches_15(c):
  return 'error', c.main_errors('num_patches_15')


def case_alpha_1_5(c):
  return start_training(c.tmp, **{'model.alpha': 1.5})


def case_image_smaller_than_patch_grid(c):
  return start_training(c.tmp, **{'data.image_size': 32})


def case_image_size_not_multiple_of_16(c):
  return start_training(c.tmp, **{'data.image_size': 72})


def case_overlap_too_large(c):
  return start_training(c.tmp, **{'model.overlap': 64})


def case_batch_not_divisible_by_devices(c):
  assert jax.device_count() == 4  # tests/conftest.py
  return start_training(c.tmp, **{'train.batch_size': 18})


def case_batch_not_divisible_through_main(c):
  return 'error', c.main_errors('batch_not_divisible')


def case_batch_larger_than_dataset(c):
  return start_training(c.tmp, **{'train.batch_size': 128})


def case_on_nonfinite_typo(c):
  return start_training(c.tmp, **{'train.on_nonfinite': 'ignore'})


def case_unknown_dataset(c):
  return raises(lambda: load('rafdb2', c.tmp))


def case_read_only_workdir(c):
  return 'error', c.main_errors('read_only_workdir')


def case_workdir_is_a_file(c):
  (c.tmp / 'file').write_text('x')
  config = dataset_config('synthetic', 'smoke')
  return raises(lambda: train.train_and_evaluate(config, str(c.tmp / 'file' / 'run')))


CASES = {  # name: (case, expected kind, substrings the message must contain)
    'missing root': (case_missing_root, 'error', ['no_such_dataset', 'does not exist']),
    'data.root not set': (case_empty_root_setting, 'error', ['data.root is empty']),
    'empty class folder': (case_empty_class_folder, 'warning',
                           ['skipping the class folder', 'train/happy', 'holds no images']),
    'every class folder empty': (case_all_class_folders_empty, 'error',
                                 ['no images', 'in any class folder']),
    'unknown class folder': (case_unknown_class_folder, 'error',
                             ['unknown class folder(s) Bored', 'Train_Aligned_Faces']),
    'label line with 3 columns': (case_label_file_wrong_columns, 'error',
                                  ['list_patition_label.txt:4: 3 columns, expected 2']),
    'label out of range (main)': (case_label_out_of_range, 'error',
                                  ['list_patition_label.txt:2: label 9 is out of range',
                                   'expected 1..7']),
    'label not an integer': (case_label_not_an_integer, 'error',
                             ["list_patition_label.txt:4: label 'happy' is not an integer"]),
    'label names a missing image': (case_label_names_missing_image, 'error',
                                    ['names 1 image(s) that do not exist',
                                     'train_00002_aligned.jpg']),
    'FER2013 row of 2303 pixels': (case_fer2013_row_with_2303_pixels, 'error',
                                   ['fer2013.csv:3: 2303 pixel values, expected 2304']),
    'truncated JPEG': (case_truncated_jpeg, 'skipped', ['cannot decode image', 'face.jpg']),
    'zero-byte file': (case_zero_byte_file, 'skipped', ['cannot decode image', 'empty.png']),
    'text file named .jpg': (case_text_file_named_jpg, 'skipped',
                             ['cannot decode image', 'notes.jpg', 'cannot identify']),
    'face box outside the image': (case_face_box_outside_image, 'skipped',
                                   ['face box', 'face.jpg', 'lies outside its 16×16 image']),
    'CMYK JPEG': (case_cmyk_jpeg, 'ok', []),
    '16-bit PNG': (case_16bit_png, 'ok', []),
    'RGBA PNG': (case_rgba_png, 'ok', []),
    '1×1 image': (case_1x1_image, 'ok', []),
    '6000×6000 JPEG': (case_huge_jpeg, 'ok', []),
    'non-UTF-8 file name': (case_non_utf8_file_name, 'ok', []),
    'non-UTF-8 name of a bad file': (case_non_utf8_name_of_a_bad_file, 'skipped',
                                     ['cannot decode image', 'bad']),
    'same file in train and test': (case_same_file_in_train_and_test, 'error',
                                     ['4 test image(s) are also in the train split',
                                      'img_000.png']),
    'duplicate file names across splits': (case_duplicate_file_names_across_splits, 'warning',
                                           ['1 test image(s) are byte-identical',
                                            'test/sad/img_001.png']),
    'M = 15 (main)': (case_num_patches_15, 'error', ['model.num_patches=15 is not a perfect square']),
    'α = 1.5': (case_alpha_1_5, 'error', ['model.alpha=1.5 is outside [0, 1]']),
    'image smaller than the patch grid': (case_image_smaller_than_patch_grid, 'error',
                                          ['data.image_size=32', 'data.image_size ≥ 64']),
    'image size not a multiple of 16': (case_image_size_not_multiple_of_16, 'error',
                                        ['data.image_size=72 must be a positive multiple of 16']),
    'overlap larger than the patches': (case_overlap_too_large, 'error',
                                        ['model.overlap=64 px is too large']),
    'batch not divisible by 4 devices': (case_batch_not_divisible_by_devices, 'error',
                                         ['train.batch_size=18 is not divisible by the 4 devices']),
    'batch not divisible by 3 devices (main)': (case_batch_not_divisible_through_main, 'error',
                                                ['train.batch_size=16 is not divisible by the 3']),
    'batch larger than the dataset': (case_batch_larger_than_dataset, 'error',
                                      ['train.batch_size=128 is larger than the 96 training']),
    'train.on_nonfinite typo': (case_on_nonfinite_typo, 'error',
                                ["train.on_nonfinite='ignore' must be 'stop' or 'skip'"]),
    'unknown dataset name': (case_unknown_dataset, 'error', ["data.name='rafdb2' is unknown"]),
    'read-only workdir (main)': (case_read_only_workdir, 'error', ['is not writable', '/run']),
    'workdir under a file': (case_workdir_is_a_file, 'error',
                             ['is not writable', 'Not a directory', 'file/run']),
}


def writable(directory) -> bool:
  probe = os.path.join(directory, f'.probe{os.getpid()}')
  try:
    os.mkdir(probe)
  except OSError:
    return False
  os.rmdir(probe)
  return True


def read_only_directory(tmp) -> str:
  """A directory this process cannot write: a chmod 555 folder, or, for root (who ignores file
  modes), a read-only kernel filesystem such as /sys."""
  folder = tmp / 'read_only'
  folder.mkdir()
  folder.chmod(0o555)
  for candidate in (str(folder), '/sys', '/proc/sys'):
    if os.path.isdir(candidate) and not writable(candidate):
      return candidate
  pytest.fail('found no read-only directory to test with')


@pytest.fixture(scope='module')
def main_errors(tmp_path_factory):
  """The entry point's answers to a few bad inputs, run concurrently (each is mostly imports)."""
  tmp = tmp_path_factory.mktemp('main_errors')
  fixtures.write_rafdb(str(tmp / 'raf'), [1, 9, 3], [2])
  read_only = read_only_directory(tmp)
  runs = {
      'missing_root': dict(args=main_command(tmp / 'w1', '--config.data.root=' +
                                             str(tmp / 'no_such_dataset'),
                                             config='--config=configs/folder.py:smoke')),
      'label_out_of_range': dict(args=main_command(tmp / 'w2', f'--config.data.root={tmp / "raf"}',
                                                   config='--config=configs/raf.py:smoke')),
      'num_patches_15': dict(args=main_command(tmp / 'w3', '--config.model.num_patches=15')),
      'batch_not_divisible': dict(args=main_command(tmp / 'w4'), devices=3),
      'read_only_workdir': dict(args=main_command(os.path.join(read_only, 'run'))),
  }
  procs = {name: Main(tmp / f'{name}.log', *r['args'], devices=r.get('devices', 1))
           for name, r in runs.items()}
  results = {}
  for name, proc in procs.items():
    rc, log = proc.wait(timeout=300)
    results[name] = (rc, log)
  (tmp / 'read_only').chmod(0o755)

  def error_of(name: str) -> str:
    rc, log = results[name]
    assert rc == 1, log[-3000:]
    assert 'Traceback' not in log, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith('error: '), log[-3000:]
    return last
  return error_of


@pytest.mark.parametrize('name', CASES)
def test_bad_input_gets_a_clear_message_or_a_counted_skip(name, tmp_path, caplog, monkeypatch,
                                                          main_errors):
  case, expected_kind, substrings = CASES[name]
  kind, message = case(Ctx(tmp_path, caplog, monkeypatch, main_errors))
  assert kind == expected_kind, message
  for s in substrings:
    assert s in message, f'{s!r} not in {message!r}'
  assert 'Traceback' not in message


def documented_bad_inputs() -> list[str]:
  """The rows of docs/bad_inputs.md's tables of bad inputs (those headed `| Input | ...`)."""
  rows, in_table = [], False
  with open(os.path.join(ROOT, 'docs', 'bad_inputs.md'), encoding='utf-8') as f:
    for line in f:
      line = line.strip()
      if line.startswith('| Input |'):
        in_table = True
      elif not line.startswith('|'):
        in_table = False
      elif in_table and not line.startswith('| ---'):
        rows.append(line)
  return rows


def test_bad_inputs_doc_and_readme_match_the_tested_cases():
  """Every row of docs/bad_inputs.md names the CASES it is tested by ([name] in its first cell), or
  the test function of this file that tests it; every case is in the doc exactly once; the README's
  count is the number of rows."""
  rows = documented_bad_inputs()
  named = [re.findall(r'\[([^\]]+)\]', row.split('|')[1]) for row in rows]
  names = [name for row_names in named for name in row_names]
  assert len(names) == len(set(names)), [n for n in set(names) if names.count(n) > 1]
  assert set(names) - set(CASES) == set(), 'documented but not tested'
  assert set(CASES) - set(names) == set(), 'tested but not documented'
  for row, row_names in zip(rows, named):
    if not row_names:
      tests = re.findall(r'\btest_\w+', row)
      assert tests and all(callable(globals().get(t)) for t in tests), row
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    count = re.search(r'`docs/bad_inputs\.md` lists (\d+) kinds', f.read())
  assert count and int(count[1]) == len(rows)
  assert len(CASES) >= 20
