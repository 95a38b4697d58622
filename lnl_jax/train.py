"""Training and evaluation loop: reads top-down from `train_and_evaluate`. The loop owns all I/O;
the steps it runs are the pure jit-compiled functions of `steps.py`."""
from __future__ import annotations

import contextlib
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from lnl_jax import checkpoints, inference, io, metrics, program_store
from lnl_jax.attention_track import AttentionTracker
from lnl_jax.data import datasets, pipeline
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError
from lnl_jax.models import create_model, num_params
from lnl_jax.paper import MODEL_NAMES
from lnl_jax.preemption import StopSignal
from lnl_jax.steps import (Parallel, batch_shapes, create_learning_rate_fn, create_optimizer,
                           stored_abstract_state)


def progress(iterable=None, **kwargs) -> tqdm:
  """A tqdm progress bar on stderr, shown by the first process only and redrawn at most every 2 s
  (a log file gets a line per redraw)."""
  return tqdm(iterable, disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0,
              **kwargs)


def evaluate(params, records: Records, *, eval_step, parallel: Parallel, config,
             stop: StopSignal | None = None) -> dict | None:
  """Predictions over the whole split (each example once) → confusion matrix and wᵍ per example;
  None when `stop` received a signal it may act on alone (`StopSignal.received_alone`) mid-way."""
  labels, preds, w_global, w_local = [], [], [], []
  bad = pipeline.BadImageCounter()
  batch_size = config.train.batch_size
  # A bar for the minutes a large test split takes on a CPU; it goes once the split is done.
  bar = progress(total=pipeline.eval_steps(len(records), batch_size), desc='evaluating',
                 unit='batch', leave=False)
  with bar:
    for batch in pipeline.eval_batches(records, batch_size=batch_size,
                                       image_size=config.data.image_size,
                                       on_bad_image=config.data.on_bad_image, bad_images=bad):
      if stop is not None and stop.received_alone():
        return None
      out = inference.run_padded(eval_step, params, parallel, batch['image'])
      # eval_step's outputs are replicated: every process holds the global batch. Keep its rows.
      keep = _global_rows(batch['mask'])
      labels.append(_global_rows(batch['label'])[keep])
      preds.append(out['prediction'][keep])
      w_global.append(out['w_global'][keep])
      w_local.append(out['w_local'][keep])
      bar.update(1)
  labels, preds = np.concatenate(labels), np.concatenate(preds)
  cm = metrics.confusion(labels, preds, records.num_classes)
  return dict(cm=cm, w_global=np.concatenate(w_global), w_local=np.concatenate(w_local),
              bad_images=bad.count, **metrics.accuracies(cm))


def _global_rows(local: np.ndarray) -> np.ndarray:
  """The global batch of a per-process field (all processes' rows, in process order)."""
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


# Train steps the host may dispatch ahead of the newest finished one. Two keep the device busy while
# the host prepares the next batch; more only queue: a stop signal's checkpoint (and the progress
# bar) would wait for every queued step, up to log_every_steps of them.
STEPS_IN_FLIGHT = 2


class EpochStats:
  """The running train statistics of one epoch. A mid-epoch checkpoint saves them (`saved`), so
  that a resumed epoch reports the same train loss and accuracy as an uninterrupted one."""

  def __init__(self, on_nonfinite: str, saved: dict | None = None):
    self.totals = {**dict(loss=0.0, correct=0, count=0, steps=0, bad=0), **(saved or {})}
    self.bad = pipeline.BadImageCounter(count=self.totals.pop('bad'))
    self.on_nonfinite = on_nonfinite
    self.pending = []  # (step, device metrics) not fetched yet: fetching every step would stall
    self.start, self.images = time.time(), 0

  def add(self, step: int, step_metrics, batch_size: int) -> None:
    """Keeps a dispatched step's metrics, and waits until at most STEPS_IN_FLIGHT steps are
    unfinished (a step's metrics come from its gradient step, which needs the update before it: at
    most one update more)."""
    self.pending.append((step, step_metrics))
    self.images += batch_size
    if len(self.pending) > STEPS_IN_FLIGHT:
      jax.block_until_ready(self.pending[-STEPS_IN_FLIGHT - 1][1])

  def flush(self, writer) -> None:
    """Fetches the pending steps' metrics, acts on non-finite steps, writes the scalars."""
    fetched = jax.device_get([m for _, m in self.pending])
    for (step, _), m in zip(self.pending, fetched):
      if m['nonfinite']:
        message = (f'non-finite loss or gradient at step {step} (loss {float(m["loss"])}); the '
                   'update was skipped, so parameters and checkpoints stay finite.')
        if self.on_nonfinite == 'stop':
          raise FloatingPointError(message + ' Stopping (train.on_nonfinite=stop); lower '
                                   'train.learning_rate or set train.on_nonfinite=skip.')
        logging.warning(message)
        continue
      self.totals['loss'] += float(m['loss'])
      self.totals['correct'] += int(m['correct'])
      self.totals['count'] += int(m['count'])
      self.totals['steps'] += 1
    if fetched:
      step, m = self.pending[-1][0], fetched[-1]
      writer.write_scalars(step, dict(train_loss=float(m['loss']),
                                      train_cross_entropy=float(m['cross_entropy'])))
    self.pending.clear()

  @property
  def mean_loss(self) -> float:
    return self.totals['loss'] / max(self.totals['steps'], 1)

  def saved(self) -> dict:
    return dict(self.totals, bad=self.bad.count)

  def summary(self) -> dict:
    return dict(train_loss=self.mean_loss,
                train_accuracy=100.0 * self.totals['correct'] / max(self.totals['count'], 1),
                images_per_s=self.images / (time.time() - self.start),
                bad_train_images=self.bad.count)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data_cache: str | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns summary.json's dict.
  Synthetic faces are kept in `data_cache` when one is given (`datasets.load_splits`).

  SIGTERM/SIGINT are handled from the first line on (`preemption.StopSignal`): before the first
  step and right after a checkpoint the process ends at once; otherwise after the current step
  (which waits for the steps in flight: STEPS_IN_FLIGHT), with a checkpoint of it. One arriving
  during an epoch's evaluation stops it between two batches (with one process; several finish it,
  as its gathers are collectives) and checkpoints the epoch's end as unevaluated: the resumed run
  evaluates it first. The checkpoint manager (its pending writes), the metric writer and the
  signal handlers are closed however the run ends.
  """
  stop = StopSignal()
  with contextlib.ExitStack() as closing:  # closed on return and on any exception
    closing.callback(stop.restore)
    return _train_and_evaluate(config, workdir, data_cache, stop, closing)


# Counts of the train block that must be at least 1 (0 would divide by zero, or average no epochs
# where a slice [-0:] takes them all).
POSITIVE_FIELDS = ('num_epochs', 'mean_of_last', 'log_every_steps', 'track_every_steps',
                   'keep_checkpoints')


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data_cache: str | None,
                        stop: StopSignal, closing: contextlib.ExitStack) -> dict:
  start_time = time.time()
  if not os.path.exists(workdir):  # a run that fails before writing anything leaves no folder
    closing.callback(_remove_if_empty, workdir)
  _check_writable(workdir)
  train = config.train
  is_main = jax.process_index() == 0
  parallel = Parallel()
  parallel.check_batch_size(train.batch_size)
  if train.on_nonfinite not in ('stop', 'skip'):
    raise ConfigError(f"train.on_nonfinite={train.on_nonfinite!r} must be 'stop' or 'skip'.")
  for field in POSITIVE_FIELDS:
    if (value := train[field]) < 1:
      raise ConfigError(f'train.{field}={value!r} must be a whole number ≥ 1.')
  pipeline.check_train_settings(image_size=config.data.image_size,
                                crop_padding=config.data.crop_padding,
                                erase_prob=config.data.erase_prob,
                                on_bad_image=config.data.on_bad_image)
  train_records, test_records = datasets.load_splits(
      config.data, config.seed, config.model.num_patches, config.model.overlap, data_cache)
  model = create_model(config.model, config.data.image_size, train_records.num_classes)
  steps_per_epoch = pipeline.steps_per_epoch(len(train_records), train.batch_size)
  if steps_per_epoch == 0:
    raise ConfigError(f'train.batch_size={train.batch_size} is larger than the '
                      f'{len(train_records)} training examples.')
  checkpoints.check_or_write_config(config, workdir)

  total_steps = train.num_epochs * steps_per_epoch
  if train.max_steps:
    total_steps = min(total_steps, train.max_steps)
  tx = create_optimizer(train, steps_per_epoch)
  lr_fn = create_learning_rate_fn(train, steps_per_epoch)
  abstract = stored_abstract_state(model, config.data.image_size, train, steps_per_epoch,
                                   program_store.directory())
  ckpt = checkpoints.Checkpoints(workdir, train.keep_checkpoints)
  closing.callback(ckpt.close)
  train_step = parallel.jit_train_step(model, train, steps_per_epoch, program_store.directory())
  if max(ckpt.all_steps(), default=0) < total_steps:  # steps are left to run
    # Compiled in a background thread while the state, TensorFlow and the first batch load below.
    # A run that ends before it is compiled (an error) waits for it as it closes, while the stop
    # signal's handler is still installed (`StoredFunction.wait_ahead`).
    train_step.compile_ahead(abstract, batch_shapes(train.batch_size, config.data.image_size,
                                                    train_records.num_classes))
    closing.callback(train_step.wait_ahead)
  state, meta = ckpt.restore(abstract)
  if state is None:
    state = parallel.init_state(model, config.data.image_size, tx, config.seed, abstract)
  else:
    state = jax.device_put(state, parallel.replicated)
  step = int(jax.device_get(state.step))
  if meta is not None:
    stop.saved(step)
  n_params = num_params(state.params)
  logging.info('%s: %d parameters, %d steps per epoch, %s', MODEL_NAMES[config.model.attention],
               n_params, steps_per_epoch,
               f'resuming at step {step}' if step else 'starting from scratch')

  history = metrics.History(workdir, write=is_main)
  # A shortened epoch's end (max_steps) that a longer schedule now continues: its record is dropped
  # and written again when the epoch ends. Otherwise the epochs recorded when it was saved are kept.
  continued = step < total_steps and step % steps_per_epoch != 0
  history.truncate(step // steps_per_epoch if continued else meta['epoch'] if meta else 0)
  writer = metrics.ScalarWriter(workdir if is_main else None)
  closing.callback(writer.close)
  eval_step = parallel.jit_eval_step(model, program_store.directory())
  tracker = AttentionTracker(workdir, test_records, config, parallel, eval_step, step)
  class_names = list(test_records.class_names)
  evaluate_fn = lambda params, signal=None: evaluate(params, test_records, eval_step=eval_step,
                                                     parallel=parallel, config=config, stop=signal)

  def end_epoch(epoch: int, step: int, state, train_stats: dict, totals: dict | None) -> dict:
    """Evaluates the state at the end of epoch `epoch` (1-based), records the epoch and checkpoints
    it with its test accuracy and its running train statistics `totals` (which a longer schedule
    continues when max_steps ended the epoch early); returns the evaluation. A signal during the
    evaluation checkpoints the state as unevaluated, with the epoch's train statistics, and raises
    Preempted."""
    result = evaluate_fn(state.params, stop)
    if result is None:
      tracker.save()
      ckpt.save(state, meta=dict(epoch=epoch - 1, class_names=class_names, train_totals=totals,
                                 unevaluated=train_stats))
      stop.saved(step)
      raise stop.preempted(step)
    _record_epoch(history, writer, epoch, step, lr_fn(step - 1), train_stats, result)
    tracker.save()
    ckpt.save(state, meta=dict(epoch=epoch, class_names=class_names, train_totals=totals),
              metrics=dict(test_accuracy=result['accuracy']))
    stop.saved(step)
    return result

  result = None  # the newest evaluation of the test split
  if meta and meta.get('unevaluated') and not continued:  # stopped evaluating the epoch ending here
    # Its checkpoint stays as saved, without the test accuracy the best-checkpoint policy reads:
    # replacing it would lose the epoch's steps if the process died in between.
    result = end_epoch(meta['epoch'] + 1, step, state, meta['unevaluated'], meta.get('train_totals'))
  batches = None  # the current epoch's batches; None when an epoch is to begin
  while step < total_steps:
    epoch, offset = divmod(step, steps_per_epoch)
    if batches is None:  # an epoch begins, or resumes where a mid-epoch checkpoint left it
      stats = EpochStats(train.on_nonfinite, meta.get('train_totals') if meta and offset else None)
      batches = iter(pipeline.train_batches(
          train_records, batch_size=train.batch_size, image_size=config.data.image_size,
          epoch=epoch, seed=config.seed, crop_padding=config.data.crop_padding,
          flip=config.data.flip, erase_prob=config.data.erase_prob,
          on_bad_image=config.data.on_bad_image, bad_images=stats.bad, start_step=offset))
      epoch_end = min(total_steps, (epoch + 1) * steps_per_epoch)
      bar = progress(total=epoch_end - step, desc=f'epoch {epoch + 1}/{train.num_epochs}',
                     unit='step')

    state, step_metrics = train_step(state, parallel.put_batch(next(batches)))
    step += 1
    stop.stepped()
    stats.add(step, step_metrics, train.batch_size)
    bar.update(1)
    epoch_done = step == epoch_end

    # Periodic work after a step: log, track, checkpoint mid-epoch (or on a signal), end the epoch.
    stopping = not epoch_done and stop.agreed(step, every=train.log_every_steps)
    if step % train.log_every_steps == 0 or epoch_done:
      stats.flush(writer)
      bar.set_postfix(loss=f'{stats.mean_loss:.3f}')
    if step % train.track_every_steps == 0:
      tracker.record(state.params, step)
    if stopping or (not epoch_done and train.checkpoint_every_steps
                    and step % train.checkpoint_every_steps == 0):
      stats.flush(writer)  # a non-finite step stops the run before it is saved
      tracker.save()  # before the checkpoint: a resumed run drops the tracked steps after its step
      ckpt.save(state, meta=dict(epoch=epoch, class_names=class_names,
                                 train_totals=stats.saved()))
      stop.saved(step)
    if epoch_done:
      bar.close()
      batches = None
      # The train statistics are taken before the evaluation: images/s of the train steps alone.
      result = end_epoch(epoch + 1, step, state, stats.summary(), stats.saved())
      stopping = step < total_steps and stop.agreed(step)  # came in the last step (or the eval)
    if stopping:
      raise stop.preempted(step)

  if result is None:  # nothing left to train (a finished workdir run again): score what it holds
    result = evaluate_fn(state.params)
  summary = metrics.summarize(
      history.records, result['cm'], test_records.class_names, train.mean_of_last,
      num_params=n_params, wall_time_s=time.time() - start_time, config=config.name,
      steps=step, steps_per_epoch=steps_per_epoch,
      best_checkpoint_step=checkpoints.best_step(history.records, ckpt.all_steps()),
      bad_test_images=result['bad_images'])
  if is_main:
    io.write_json(os.path.join(workdir, 'summary.json'), summary)
    # matplotlib is imported here, when the figures are drawn, not at every start.
    from lnl_jax import plots  # pylint: disable=import-outside-toplevel
    plots.run_figures(os.path.join(workdir, 'plots'), history.records, result,
                      test_records.class_names, tracker, model.geometry.boxes())
  logging.info('done: mean test accuracy of the last %d epochs %.2f%% (workdir %s)',
               summary['mean_over_epochs'], summary['test_accuracy_mean_last_epochs'] or 0, workdir)
  return summary


def _record_epoch(history, writer, epoch, step, learning_rate, train_stats, result) -> None:
  """Appends the epoch's record (train statistics, test accuracy) to metrics.jsonl and the writer."""
  if train_stats['bad_train_images']:
    logging.warning('epoch %d: %d training images could not be decoded and were skipped.',
                    epoch, train_stats['bad_train_images'])
  record = dict(epoch=epoch, step=step, learning_rate=float(learning_rate),
                test_accuracy=result['accuracy'], test_balanced_accuracy=result['balanced_accuracy'],
                test_per_class_accuracy=result['per_class'], **train_stats)
  history.append(record)
  writer.write_scalars(step, {k: v for k, v in record.items() if np.isscalar(v)})
  writer.flush()  # the epoch's scalars reach TensorBoard's files now, not minutes later
  logging.info('epoch %d: test accuracy %.2f%% (balanced %.2f%%), train loss %.4f', epoch,
               result['accuracy'], result['balanced_accuracy'], train_stats['train_loss'])


def _remove_if_empty(directory: str) -> None:
  with contextlib.suppress(OSError):  # not empty (the run wrote something), or gone
    os.rmdir(directory)


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
