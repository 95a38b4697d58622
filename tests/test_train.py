"""The real entry point end to end (smoke size), resume, data parallelism, and what the loop does
with a non-finite loss."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lnl_jax import checkpoints, host, train
from lnl_jax.config_base import dataset_config
from lnl_jax.data import datasets, pipeline
from lnl_jax.errors import Preempted
from lnl_jax.models import create_model
from lnl_jax.steps import Parallel, create_optimizer
from fixtures import ROOT, run_module
from processes import (assert_trees_identical, finalized_steps, load_state, read_metrics,
                       run_main)



def test_main_writes_everything_and_resumes(tmp_path):
  workdir, faces = str(tmp_path / 'run'), tmp_path / 'faces'
  log = run_main(workdir, f'--data_cache={faces}')
  assert 'starting from scratch' in log
  # The first step runs the programs compiled in the background.
  assert 'gradient_step: compiled ahead' in log and 'update_step: compiled ahead' in log
  assert 'compiling ahead' not in log
  (cached,) = faces.glob('synthetic_faces_*.npz')  # drawn once; the resumed run below reads it
  (cached_images,) = faces.glob('synthetic_faces_*.images.npy')
  drawn = cached.stat().st_mtime_ns
  assert np.load(cached_images).shape == (96 + 48, 64, 64, 3)  # the smoke variant's faces
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['epoch'] for r in records] == [1, 2]
  assert all(0 <= r['test_accuracy'] <= 100 and np.isfinite(r['train_loss']) for r in records)
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['epochs'] == 2 and summary['mean_over_epochs'] == 2
  assert summary['test_accuracy_mean_last_epochs'] == pytest.approx(
      np.mean([r['test_accuracy'] for r in records]))
  cm = np.array(summary['confusion_matrix'])
  assert cm.shape == (7, 7) and cm.sum() == 48  # every test face counted once
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['12', '6']
  for name in ('confusion_matrix', 'training_curves', 'global_weights', 'global_weights_over_training'):
    assert os.path.getsize(os.path.join(workdir, 'plots', name + '.png')) > 1000
  events = tensorboard_scalars(workdir)  # TensorBoard's files hold each epoch's record
  for r in records:
    assert events[('test_accuracy', r['step'])] == pytest.approx(r['test_accuracy'])
    assert events[('train_loss', r['step'])] == pytest.approx(r['train_loss'])
  # Its lowered steps are kept beside the compiled ones, for the rerun below (program_store).
  lowered = os.listdir(os.path.join(os.environ['JAX_COMPILATION_CACHE_DIR'], 'lowered'))
  assert {name.split('-')[0] for name in lowered} >= {'gradient_step', 'update_step', 'eval_step'}

  # Same command, one more epoch: resumes from step 12 and keeps the first two epochs as they were.
  log = run_main(workdir, '--config.train.num_epochs=3', f'--data_cache={faces}')
  assert cached.stat().st_mtime_ns == drawn
  assert sorted(faces.iterdir()) == sorted([cached, cached_images])
  assert 'resuming at step 12' in log
  assert 'gradient_step: compiled ahead' in log and 'update_step: compiled ahead' in log
  assert 'compiling ahead' not in log
  assert 'gradient_step: lowered program read from' in log and 'not stored' not in log
  assert 'update_step: lowered program read from' in log
  assert 'abstract_state: shapes read from' in log
  resumed = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['epoch'] for r in resumed] == [1, 2, 3]
  assert resumed[:2] == records
  assert resumed[2]['learning_rate'] == pytest.approx(3e-4 * 0.95 ** 2)  # schedule continues
  # The reported figure is the mean of the last `mean_of_last` epochs (2 here), not of all three.
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['epochs'] == 3 and summary['mean_over_epochs'] == 2
  assert summary['test_accuracy_mean_last_epochs'] == pytest.approx(
      np.mean([r['test_accuracy'] for r in resumed[1:]]))

  # Run again once finished: nothing is trained, so the train step is not compiled.
  log = run_main(workdir, '--config.train.num_epochs=3', f'--data_cache={faces}')
  assert 'resuming at step 18' in log and 'compiled ahead' not in log
  assert [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))] == resumed

  # A config that changes the model's shape is refused, naming the field.
  proc = run_module('lnl_jax.main', '--config=configs/synthetic.py:smoke', f'--workdir={workdir}',
                    '--config.model.width=0.125', ok=False)
  assert proc.returncode != 0 and 'model.width' in proc.stderr

  # evaluate re-scores the newest checkpoint exactly as the last epoch did.
  log = run_module('lnl_jax.evaluate', f'--workdir={workdir}').stderr
  assert 'eval_step: lowered program read from' in log  # the one training kept
  evaluation = json.load(open(os.path.join(workdir, 'eval_18.json')))
  assert evaluation['accuracy'] == pytest.approx(resumed[-1]['test_accuracy'])
  # A row per true class (Fig. 8–9): each row counts the test faces of its class.
  config = checkpoints.load_config(workdir)
  _, test = datasets.load_splits(config.data, config.seed, config.model.num_patches,
                                 config.model.overlap, str(faces))
  cm = np.array(evaluation['confusion_matrix'])
  assert (cm.sum(axis=0) != cm.sum(axis=1)).any()  # else a transposed matrix would pass too
  np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(test.labels, minlength=7))
  assert evaluation['confusion_matrix'] == summary['confusion_matrix']
  # Its progress is shown, counted in batches of the test split.
  shown = re.search(r'evaluating: +\d+%\|.*?\| \d+/(\d+) ', log)
  assert shown and int(shown.group(1)) == -(-len(test) // config.train.batch_size), log[-2000:]


def tensorboard_scalars(workdir) -> dict:
  """{(tag, step): value} of the scalars in the workdir's TensorBoard event files."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  scalars = {}
  for name in os.listdir(workdir):
    if name.startswith('events.out.tfevents'):
      for record in tf.data.TFRecordDataset(os.path.join(workdir, name)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          scalars[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
  return scalars


def test_training_imports_tensorflow_without_keras(tmp_path):
  """TensorFlow's import loads Keras and matplotlib's pyplot (a large part of a command's start)
  unless `host.import_tensorflow` hides them: training, its TensorBoard writer and its input
  pipeline run without either (matplotlib only comes to draw the figures at the end), and Keras
  still loads when asked for, as an attribute or an import."""
  code = textwrap.dedent(f"""
      import sys
      from lnl_jax import metrics, train
      from lnl_jax.data import pipeline, synthetic
      writer = metrics.ScalarWriter({str(tmp_path)!r})
      writer.write_scalars(1, dict(loss=0.5))
      writer.close()
      faces = synthetic.generate(4, image_size=64)
      for batch in pipeline.train_batches(faces, batch_size=2, image_size=64, epoch=0, seed=0):
        pass
      loaded = [m for m in ('keras', 'tf_keras', 'matplotlib') if m in sys.modules]
      assert not loaded, loaded
      import tensorflow as tf
      assert tf.keras.layers.Dense(2) and 'keras' in sys.modules
      from tensorflow.keras import layers
      assert layers.Dense is tf.keras.layers.Dense
      """)
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))


def test_the_commands_import_tensorflow_only_to_build_a_pipeline():
  """Importing the entry points and the training loop leaves TensorFlow out: it is imported with
  the first pipeline, while the train step compiles in the background."""
  code = ('import sys, lnl_jax.main, lnl_jax.train, lnl_jax.evaluate, lnl_jax.predict; '
          'assert "tensorflow" not in sys.modules')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_tensorflow_is_given_no_gpu_however_it_was_imported(monkeypatch):
  """`host.import_tensorflow` hides the GPUs from TensorFlow once, also when other code (TFDS)
  imported it first."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # as other code would
  calls = []
  monkeypatch.setattr(tf.config, 'set_visible_devices', lambda *args: calls.append(args))
  monkeypatch.setattr(host, '_gpus_hidden', False)
  assert host.import_tensorflow() is tf and host.import_tensorflow() is tf
  assert calls == [([], 'GPU')]


def one_step(devices, config, batch):
  """One train step of the smoke model on `devices`: (initial params, new params, metrics, the
  gradient the step used). Adam's first moment after one step from zero is (1 − β1)·g with
  β1 = 0.9, so the gradient is read back with its scale, which the update (≈ lr·sign g) hides."""
  parallel = Parallel(devices)
  model = create_model(config.model, config.data.image_size, 7)
  tx = create_optimizer(config.train, 10)
  state = parallel.init_state(model, config.data.image_size, tx, seed=0)
  initial = jax.device_get(state.params)  # before the step donates the state's buffers
  state, metrics = parallel.jit_train_step(model, config.train, 10)(state, parallel.put_batch(batch))
  grads = jax.tree.map(lambda mu: mu / (1 - 0.9), optax.tree_utils.tree_get(state.opt_state, 'mu'))
  return initial, jax.device_get(state.params), jax.device_get(metrics), jax.device_get(grads)


def mean_loss_gradient(config, params, batch):
  """∇ of Eq. (3) for the whole batch on one device, written out here: the mean over all 16
  examples of −Σ y·log softmax(z), plus λ·Σ‖kernel‖²."""
  model = create_model(config.model, config.data.image_size, 7)

  def loss(params):
    logits, _ = model.apply({'params': params}, batch['image'].astype(jnp.float32) / 127.5 - 1.0)
    ce = -jnp.mean(jnp.sum(batch['soft_label'] * jax.nn.log_softmax(logits), -1))
    kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(params)
               if jax.tree_util.keystr(path).endswith("['kernel']")]
    return ce + config.train.weight_decay * sum(jnp.sum(jnp.square(k)) for k in kernels)
  return jax.device_get(jax.jit(jax.grad(loss))(jax.device_put(params, jax.devices()[0])))


def relative_errors(tree, reference) -> dict:
  """‖a − b‖/‖b‖ per leaf, by path."""
  return {jax.tree_util.keystr(p): float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
          for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(reference))}


def test_one_step_on_one_and_four_devices_agree():
  assert jax.device_count() == 4  # tests/conftest.py simulates four CPU devices
  config = dataset_config('synthetic', 'smoke')
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 7, 16)
  batch = dict(image=rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8), label=labels.astype(np.int32),
               soft_label=np.eye(7, dtype=np.float32)[labels], mask=np.ones(16, bool))
  init1, p1, m1, g1 = one_step(jax.devices()[:1], config, batch)
  init4, p4, m4, g4 = one_step(jax.devices(), config, batch)
  assert m1['loss'] == pytest.approx(m4['loss'], rel=1e-5)
  # Adam's first update is ≈ lr · g/|g|: a gradient near Adam's eps (1e-8) that the 4-device
  # reduction sums in another order can move by ~1e-6 (seen in CI). 1e-5 is 3 % of one step (lr 3e-4).
  chex.assert_trees_all_close(p1, p4, rtol=1e-4, atol=1e-5)
  # The gradients themselves, scale included: the 4-device step averages the shards' gradients
  # (a sum would be 4× larger), and both equal the gradient of the mean loss over the whole batch.
  # A sum over shards would be off by three times the gradient itself, a shard left out by a
  # quarter of it. The train step and the reference are different programs: compiled as the
  # product compiles them they agree within ~3e-6, but under the tests' QUICK_COMPILE (XLA's level
  # 0) the U-Net's lowest layers, whose gradients are sums over every pixel that nearly cancel,
  # differ by up to ~5e-4 on some hosts (AVX-512), in the 1- and the 4-device step alike: 2e-3
  # allows that and stays a hundred times below a quarter.
  chex.assert_trees_all_equal(init1, init4)
  reference = mean_loss_gradient(config, init1, batch)
  for name, grads in (('1 device', g1), ('4 devices', g4)):
    errors = relative_errors(grads, reference)
    assert max(errors.values()) < 2e-3, (name, sorted(errors.items(), key=lambda e: -e[1])[:3])
  with pytest.raises(Exception, match='train.batch_size=18 is not divisible by the 4'):
    Parallel().check_batch_size(18)


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

  closed = []
  real_close = checkpoints.Checkpoints.close
  monkeypatch.setattr(checkpoints.Checkpoints, 'close',
                      lambda self: closed.append(self) or real_close(self))

  # on_nonfinite=stop: a clear error naming the step; checkpoints 1 and 2 only, both finite; the
  # checkpoint manager is closed all the same.
  with pytest.raises(FloatingPointError, match=r'non-finite loss or gradient at step 3 .*'
                                               r'train\.on_nonfinite=stop'):
    train.train_and_evaluate(config, workdir)
  assert len(closed) == 1
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


def test_a_nonfinite_last_step_of_an_epoch_stops_the_run(tmp_path, monkeypatch):
  """An epoch's end fetches its last steps' metrics, not only every log_every_steps: with no log
  or checkpoint step in it, a non-finite step 2 of a 2-step epoch (max_steps) still stops the run
  before that epoch is evaluated or saved. The settings of the test above: its programs are
  reused."""
  config = dataset_config('synthetic', 'smoke')
  config.train.max_steps, config.train.log_every_steps = 2, 100
  poison_batches(monkeypatch, poisoned_step=2)
  monkeypatch.setattr(train, 'Parallel', lambda: Parallel(jax.devices()[:1]))
  with pytest.raises(FloatingPointError, match='non-finite loss or gradient at step 2 '):
    train.train_and_evaluate(config, str(tmp_path))
  assert finalized_steps(str(tmp_path)) == [] and read_metrics(str(tmp_path)) == []


def test_epoch_stats_mean_the_loss_over_steps_and_the_accuracy_over_images():
  """The epoch's train_loss is the mean of its steps' losses (each a mean over its batch), and
  train_accuracy is the share of counted images predicted right: two finite steps of 16 images,
  losses 2 and 1, 12 and 4 right, give 1.5 and 50 %. The skipped non-finite step between them
  counts in neither."""
  class Writer:
    def write_scalars(self, step, scalars):
      pass
  stats = train.EpochStats('skip')
  for step, (loss, correct) in enumerate([(2.0, 12), (np.nan, 0), (1.0, 4)], 1):
    stats.add(step, dict(loss=np.float32(loss), cross_entropy=np.float32(loss),
                         nonfinite=np.bool_(np.isnan(loss)), correct=np.int32(correct),
                         count=np.int32(16)), 16)
  stats.flush(Writer())
  summary = stats.summary()
  assert summary['train_loss'] == pytest.approx(1.5)
  assert summary['train_accuracy'] == pytest.approx(50.0)


def test_the_loop_keeps_at_most_two_steps_in_flight(monkeypatch):
  """After dispatching step n the loop waits for step n − 2: a stop signal's checkpoint then waits
  for three steps at most, not for every step queued since the last log."""
  waited = []
  monkeypatch.setattr(jax, 'block_until_ready', lambda tree: waited.append(tree['step']) or tree)
  stats = train.EpochStats('stop')
  for step in range(1, 7):
    stats.add(step, {'step': step}, 16)
    assert waited == list(range(1, step - 1))
  assert stats.images == 6 * 16


def test_a_signal_during_the_evaluation_stops_it_and_the_resumed_run_evaluates_first(
    tmp_path, monkeypatch):
  """SIGTERM during the evaluation of epoch 1 (step 6) and of the last, shortened epoch 2 (step 8 of
  max_steps=8): each evaluation stops before its second batch, the epoch's end is checkpointed
  unevaluated and unrecorded, and the resumed run evaluates and records that epoch first. After two
  resumes the records, the summary and the parameters are those of an uninterrupted run. Then the
  loop's handling of a shortened last epoch: run again, and run on with a longer schedule."""
  config = dataset_config('synthetic', 'smoke')  # 6 steps an epoch; 48 test faces, 3 batches
  config.train.max_steps = 8
  monkeypatch.setattr(train, 'Parallel', lambda: Parallel(jax.devices()[:1]))
  real_eval_batches, read = pipeline.eval_batches, []
  interrupt = set()  # the evaluations (1-based) to interrupt

  def eval_batches(records, **kw):
    if len(records) == config.data.num_test:  # the test split, not the attention tracker's faces
      read.append(0)
    for i, batch in enumerate(real_eval_batches(records, **kw)):
      if i == 1 and len(read) in interrupt:
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the loop asks for this batch
      yield batch
      if len(records) == config.data.num_test:
        read[-1] += 1

  monkeypatch.setattr(pipeline, 'eval_batches', eval_batches)
  reference = train.train_and_evaluate(config, str(tmp_path / 'reference'))
  assert read == [3, 3]

  workdir, read[:] = tmp_path / 'interrupted', []
  interrupt.update({1, 3})  # epoch 1's evaluation, then epoch 2's in the run that resumes
  for step in (6, 8):
    with pytest.raises(Preempted, match=f'SIGTERM received: checkpoint of step {step} written'):
      train.train_and_evaluate(config, str(workdir))
    assert max(finalized_steps(workdir)) == step
    assert [r['epoch'] for r in read_metrics(workdir)] == ([] if step == 6 else [1])
  assert read == [1, 3, 1]  # epoch 1 stopped, evaluated whole on resume; epoch 2 stopped
  summary = train.train_and_evaluate(config, str(workdir))
  assert read == [1, 3, 1, 3]

  strip = lambda records: [{k: v for k, v in r.items() if k != 'images_per_s'} for r in records]
  assert strip(read_metrics(workdir)) == strip(read_metrics(tmp_path / 'reference'))
  assert [r['step'] for r in read_metrics(workdir)] == [6, 8]
  for key in ('steps', 'confusion_matrix', 'test_accuracy_mean_last_epochs',
              'best_checkpoint_step'):
    assert summary[key] == reference[key], key
  assert_trees_identical(load_state(workdir, 8), load_state(tmp_path / 'reference', 8))
  # The reference run again, finished at step 8 (the shortened epoch 2's end): nothing is trained
  # and no record is lost.
  records = read_metrics(tmp_path / 'reference')
  again = train.train_and_evaluate(config, str(tmp_path / 'reference'))
  assert read_metrics(tmp_path / 'reference') == records
  assert again['confusion_matrix'] == reference['confusion_matrix']
  # Lengthened to the full 12 steps, it continues the shortened epoch 2 (whose record is dropped and
  # written again at step 12) as a run made straight to 12 steps.
  config.train.max_steps = 0
  train.train_and_evaluate(config, str(tmp_path / 'straight'))
  train.train_and_evaluate(config, str(tmp_path / 'reference'))
  assert strip(read_metrics(tmp_path / 'reference')) == strip(read_metrics(tmp_path / 'straight'))
  assert_trees_identical(load_state(tmp_path / 'reference', 12),
                         load_state(tmp_path / 'straight', 12))
