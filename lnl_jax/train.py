"""Training and evaluation loop: reads top-down from `train_and_evaluate`. The loop owns all I/O;
the steps it runs are the pure jit-compiled functions of `steps.py`."""
from __future__ import annotations

import os
import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from tqdm import tqdm

from lnl_jax import checkpoints, host, metrics, plots, trained as trained_lib
from lnl_jax.data import datasets, pipeline
from lnl_jax.data.records import Records
from lnl_jax.geometry import ConfigError
from lnl_jax.models import create_model, num_params
from lnl_jax.steps import Parallel, create_learning_rate_fn, create_optimizer


class Preempted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint of the current step was written before raising."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks after every step."""

  def __init__(self):
    self.received = None
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum)

  def agreed(self, step: int, every: int = 1) -> bool:
    """Whether to checkpoint and stop after `step`. Processes must all stop at the same step (the
    checkpoint is a collective), so with several they agree every `every` steps: one tiny
    all-gather, after which a process that got no signal stops too."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % every:
      return False
    from jax.experimental import multihost_utils
    signum = int(np.max(multihost_utils.process_allgather(np.int32(self.received or 0))))
    # Only the gathered value decides: a signal handled after this process's contribution was sent
    # is acted on at the next agreement, by every process alike.
    if signum and self.received is None:
      self.received = signal.Signals(signum)
    return bool(signum)

  def preempted(self, step: int) -> Preempted:
    return Preempted(f'{self.received.name} received: checkpoint of step {step} written; rerun the '
                     'same command to resume.', int(self.received))

  def restore(self):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


def evaluate(params, records: Records, *, eval_step, parallel: Parallel, config) -> dict:
  """Predictions over the whole split (each example once) → confusion matrix and wᵍ per example."""
  labels, preds, w_global, w_local = [], [], [], []
  bad = pipeline.BadImageCounter()
  for batch in pipeline.eval_batches(records, batch_size=config.train.batch_size,
                                     image_size=config.data.image_size,
                                     on_bad_image=config.data.on_bad_image, bad_images=bad):
    out = jax.device_get(eval_step(params, parallel.put_batch(batch, ('image',))))
    # eval_step's outputs are replicated: every process holds the global batch. Keep its rows.
    keep = _global_rows(batch['mask'])
    labels.append(_global_rows(batch['label'])[keep])
    preds.append(out['prediction'][keep])
    w_global.append(out['w_global'][keep])
    w_local.append(out['w_local'][keep])
  labels, preds = np.concatenate(labels), np.concatenate(preds)
  cm = metrics.confusion(labels, preds, records.num_classes)
  return dict(cm=cm, w_global=np.concatenate(w_global), w_local=np.concatenate(w_local),
              bad_images=bad.count, **metrics.accuracies(cm))


def _global_rows(local: np.ndarray) -> np.ndarray:
  """The global batch of a per-process field (all processes' rows, in process order)."""
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns summary.json's dict."""
  start_time = time.time()
  host.keep_freed_memory()  # every training entry point (main, sweep, cross_validate) comes here
  _check_writable(workdir)
  is_main = jax.process_index() == 0
  parallel = Parallel()
  parallel.check_batch_size(config.train.batch_size)
  if config.train.on_nonfinite not in ('stop', 'skip'):
    raise ConfigError(f"train.on_nonfinite={config.train.on_nonfinite!r} must be 'stop' or 'skip'.")
  train_records, test_records = datasets.load_splits(
      config.data, config.seed, config.model.num_patches, config.model.overlap)
  model = create_model(config.model, config.data.image_size, train_records.num_classes)
  checkpoints.check_or_write_config(config, workdir)

  steps_per_epoch = pipeline.steps_per_epoch(len(train_records), config.train.batch_size)
  if steps_per_epoch == 0:
    raise ConfigError(f'train.batch_size={config.train.batch_size} is larger than the '
                      f'{len(train_records)} training examples.')
  total_steps = config.train.num_epochs * steps_per_epoch
  if config.train.max_steps:
    total_steps = min(total_steps, config.train.max_steps)
  tx = create_optimizer(config.train, steps_per_epoch)
  lr_fn = create_learning_rate_fn(config.train, steps_per_epoch)
  init = parallel.jit_init(model, config.data.image_size, tx)
  ckpt = checkpoints.Checkpoints(workdir, config.train.keep_checkpoints)
  # 'rbg' keys: the same deterministic Xavier draws, compiled ~5× faster than threefry on CPU.
  init_key = jax.random.key(config.seed, impl='rbg')
  state, meta = ckpt.restore(jax.eval_shape(init, init_key))
  if state is None:
    state = init(init_key)
  else:
    state = jax.device_put(state, parallel.replicated)
  step = int(jax.device_get(state.step))
  n_params = num_params(state.params)
  logging.info('%s: %d parameters, %d steps per epoch, %s', model.__class__.__name__, n_params,
               steps_per_epoch, f'resuming at step {step}' if step else 'starting from scratch')

  history = metrics.History(workdir, write=is_main)
  history.truncate(step // steps_per_epoch)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=False)
  train_step = parallel.jit_train_step(model, tx, config.train)
  eval_step = parallel.jit_eval_step(model)
  tracker = _AttentionTracker(workdir, test_records, config, parallel, eval_step, step)

  result = None  # the newest evaluation of the test split
  stop = _StopSignal()
  try:
    while step < total_steps:
      epoch, offset = divmod(step, steps_per_epoch)
      state, step, train_stats = _train_epoch(
          state, step, epoch, offset, min(total_steps, (epoch + 1) * steps_per_epoch),
          train_records, train_step, tracker, writer, ckpt, stop, parallel, config,
          meta.get('train_totals') if meta and offset else None)
      result = evaluate(state.params, test_records, eval_step=eval_step, parallel=parallel,
                        config=config)
      record = dict(epoch=epoch + 1, step=step, learning_rate=float(lr_fn(step - 1)),
                    test_accuracy=result['accuracy'], test_balanced_accuracy=result['balanced_accuracy'],
                    test_per_class_accuracy=result['per_class'], **train_stats)
      history.append(record)
      writer.write_scalars(step, {k: v for k, v in record.items() if np.isscalar(v)})
      logging.info('epoch %d: test accuracy %.2f%% (balanced %.2f%%), train loss %.4f',
                   epoch + 1, result['accuracy'], result['balanced_accuracy'], train_stats['train_loss'])
      tracker.save()
      ckpt.save(state, meta=dict(epoch=epoch + 1, class_names=list(test_records.class_names)),
                metrics=dict(test_accuracy=result['accuracy']))
      if step < total_steps and stop.agreed(step):  # arrived in the epoch's last step or its eval
        raise stop.preempted(step)
  finally:
    stop.restore()
    writer.flush()

  if result is None:  # nothing left to train (a finished workdir run again): score what it holds
    result = evaluate(state.params, test_records, eval_step=eval_step, parallel=parallel, config=config)
  summary = metrics.summarize(
      history.records, result['cm'], test_records.class_names, config.train.mean_of_last,
      num_params=n_params, wall_time_s=time.time() - start_time, config=config.name,
      steps=step, best_checkpoint_step=trained_lib.best_step(history.records, ckpt.all_steps()),
      bad_test_images=result['bad_images'])
  if is_main:
    metrics.write_json(os.path.join(workdir, 'summary.json'), summary)
    _plot(workdir, history.records, result, test_records, tracker, model)
  ckpt.close()
  logging.info('done: mean test accuracy of the last %d epochs %.2f%% (workdir %s)',
               summary['mean_over_epochs'], summary['test_accuracy_mean_last_epochs'] or 0, workdir)
  return summary


def _check_writable(workdir: str) -> None:
  """ConfigError naming `workdir` unless it can be created and written (before any work is done)."""
  probe = os.path.join(workdir, f'.write_test.{jax.process_index()}.{os.getpid()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f'--workdir={workdir} is not writable ({e.strerror or e}: '
                      f'{e.filename or workdir}); checkpoints and metrics are written there. '
                      'Use a writable directory.') from None


def _train_epoch(state, step, epoch, offset, end_step, records, train_step, tracker, writer, ckpt,
                 stop, parallel, config, totals=None):
  """Runs steps [step, end_step) of `epoch`; returns (state, step, train statistics).

  `totals` are the epoch's running train statistics saved with a mid-epoch checkpoint, so that a
  resumed epoch reports the same train loss and accuracy as an uninterrupted one.
  """
  train = config.train
  totals = {**dict(loss=0.0, correct=0, count=0, steps=0, bad=0), **(totals or {})}
  bad = pipeline.BadImageCounter(count=totals.pop('bad'))
  batches = pipeline.train_batches(
      records, batch_size=train.batch_size, image_size=config.data.image_size, epoch=epoch,
      seed=config.seed, crop_padding=config.data.crop_padding, flip=config.data.flip,
      erase_prob=config.data.erase_prob, on_bad_image=config.data.on_bad_image, bad_images=bad,
      start_step=offset)
  pending = []
  bar = tqdm(total=end_step - step, desc=f'epoch {epoch + 1}/{train.num_epochs}', unit='step',
             disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0)
  t0, images = time.time(), 0
  for batch in batches:
    if step >= end_step:
      break
    state, m = train_step(state, parallel.put_batch(batch))
    step += 1
    images += train.batch_size
    pending.append((step, m))
    bar.update(1)
    stopping = stop.agreed(step, every=train.log_every_steps)
    if step % train.log_every_steps == 0 or step == end_step:
      _flush(pending, totals, writer, train)
      bar.set_postfix(loss=f'{totals["loss"] / max(totals["steps"], 1):.3f}')
    if step % train.track_every_steps == 0:
      tracker.record(state.params, step)
    periodic = train.checkpoint_every_steps and step % train.checkpoint_every_steps == 0
    if step < end_step and (periodic or stopping):
      _flush(pending, totals, writer, train)  # a non-finite step stops the run before it is saved
      tracker.save()  # before the checkpoint: a resumed run drops the tracked steps after its step
      ckpt.save(state, meta=dict(epoch=epoch, class_names=list(records.class_names),
                                 train_totals=dict(totals, bad=bad.count)))
      if stopping:
        raise stop.preempted(step)
  bar.close()
  seconds = time.time() - t0
  if bad.count:
    logging.warning('epoch %d: %d training images could not be decoded and were skipped.',
                    epoch + 1, bad.count)
  return state, step, dict(
      train_loss=totals['loss'] / max(totals['steps'], 1),
      train_accuracy=100.0 * totals['correct'] / max(totals['count'], 1),
      images_per_s=images / seconds, bad_train_images=bad.count)


def _flush(pending, totals, writer, train):
  """Fetches the pending steps' metrics, acts on non-finite steps, writes the scalars."""
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, fetched):
    if m['nonfinite']:
      message = (f'non-finite loss or gradient at step {step} (loss {float(m["loss"])}); the update '
                 'was skipped, so parameters and checkpoints stay finite.')
      if train.on_nonfinite == 'stop':
        raise FloatingPointError(message + ' Stopping (train.on_nonfinite=stop); lower '
                                 'train.learning_rate or set train.on_nonfinite=skip.')
      logging.warning(message)
      continue
    totals['loss'] += float(m['loss'])
    totals['correct'] += int(m['correct'])
    totals['count'] += int(m['count'])
    totals['steps'] += 1
  if fetched:
    step, m = pending[-1][0], fetched[-1]
    writer.write_scalars(step, dict(train_loss=float(m['loss']),
                                    train_cross_entropy=float(m['cross_entropy'])))
  pending.clear()


class _AttentionTracker:
  """wᵍ of a few fixed test faces over training (Fig. 11–12), kept in workdir/attention_track.npz."""

  def __init__(self, workdir, records, config, parallel, eval_step, step):
    self.path = os.path.join(workdir, 'attention_track.npz')
    self.eval_step, self.parallel = eval_step, parallel
    k = min(config.train.track_faces, len(records), config.train.batch_size)
    # Padded to the train batch size so that the eval step compiled for evaluation is reused.
    self.batch = next(iter(pipeline.eval_batches(records.subset(np.arange(k)),
                                                 batch_size=config.train.batch_size,
                                                 image_size=config.data.image_size)))
    self.k = k
    self.steps, self.weights = [], []
    if os.path.exists(self.path):
      saved = np.load(self.path)
      keep = saved['steps'] <= step
      self.steps, self.weights = list(saved['steps'][keep]), list(saved['w_global'][keep])

  def record(self, params, step):
    out = self.eval_step(params, self.parallel.put_batch(self.batch, ('image',)))
    self.steps.append(step)
    self.weights.append(np.asarray(jax.device_get(out['w_global']))[:self.k])

  def save(self):
    if jax.process_index() == 0 and self.steps:
      tmp = self.path + '.tmp.npz'
      np.savez(tmp, steps=np.array(self.steps), w_global=np.stack(self.weights),
               images=self.batch['image'][:self.k])
      os.replace(tmp, self.path)


def _plot(workdir, history, result, records, tracker, model):
  out = os.path.join(workdir, 'plots')
  plots.confusion_matrix(result['cm'], records.class_names, os.path.join(out, 'confusion_matrix.png'))
  plots.training_curves(history, os.path.join(out, 'training_curves.png'))
  titles = [f'{records.class_names[l]}' for l in tracker.batch['label'][:tracker.k]]
  plots.attention_grid(tracker.batch['image'][:tracker.k], result['w_global'][:tracker.k],
                       os.path.join(out, 'global_weights.png'), patch_boxes=model.geometry.boxes(),
                       titles=titles)
  if tracker.steps:
    plots.attention_over_time(np.array(tracker.steps), np.stack(tracker.weights),
                              os.path.join(out, 'global_weights_over_training.png'))
