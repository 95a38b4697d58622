"""Orbax checkpoints of a run's workdir: saving and resuming a training run, and loading a trained
model from it.

`workdir/checkpoints/<step>/` holds two items: `state` (the whole train state: step, parameters,
optimiser state) and `meta` (JSON: `epoch`, the epochs recorded in metrics.jsonl when it was
saved; class names; the epoch's running train statistics `train_totals`, which a resumed run
continues when the checkpoint is not at an epoch's end; and `unevaluated`, the train statistics of
an epoch whose evaluation a stop signal interrupted, which the resumed run evaluates and records
first). Training keeps the newest `train.keep_checkpoints` plus the best by test accuracy. Loading
restores only the parameters, their shapes read from the checkpoint's own metadata, so it needs
neither the optimiser nor the dataset. What `--checkpoint` accepts: `resolve_step`. Class
names come from the checkpoint's metadata (written at train time), else from `summary.json`, else
from the synthetic dataset's names; otherwise `class_0`, `class_1`, ...
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from lnl_jax import io, metrics
from lnl_jax.config_base import base_config
from lnl_jax.data import datasets
from lnl_jax.data.records import Records
from lnl_jax.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from lnl_jax.errors import ConfigError
from lnl_jax.models import LNLAttenNet, create_model

# Fields that change the parameters' shapes, the network they feed (Eq. 1's α), the data a
# checkpoint was trained on, or the steps per epoch its step is counted in (the batch size: the
# rest of the run's data order and learning-rate schedule follow from the step): a resumed run must
# agree with the checkpoint on every one of them. Some change the data of some datasets only (the
# folds of k-fold datasets, the synthetic faces' counts and occluders); they are held for all.
FROZEN_FIELDS = ('data.name', 'data.image_size', 'data.num_classes', 'data.num_folds', 'data.fold',
                 'data.subject_pattern', 'data.num_train', 'data.num_test', 'data.occlusion_prob',
                 'data.limit',
                 'model.attention', 'model.alpha', 'model.num_patches', 'model.overlap',
                 'model.width', 'model.head_widths', 'train.batch_size', 'seed')


class Checkpoints:
  """`workdir/checkpoints/<step>/{state,meta}`; keeps the newest `keep` and the best test accuracy."""

  def __init__(self, workdir: str, keep: int):
    best = lambda m: m['test_accuracy']
    options = ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=False, best_fn=best,  # best_fn: metrics get saved
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=best, n=1,
                           keep_checkpoints_without_metrics=False),
        ]))
    self.manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                         options=options, item_names=('state', 'meta'))
    self._unreadable = set()  # steps `restore` skipped: a retrained step replaces its bad copy

  def save(self, state, meta: dict, metrics: dict | None = None) -> None:
    """Saves `state` at its step; a step saved already is kept as it is (unless it was unreadable)."""
    step = int(jax.device_get(state.step))
    if step in self._unreadable:
      self._unreadable.discard(step)
      self.manager.delete(step)
    elif step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), metrics=metrics)

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of `step`, or of the newest readable checkpoint; (None, None) if there is none.

    A newest checkpoint that cannot be read (a crash mid-write on a filesystem without atomic
    renames, a disk error) is skipped with a warning and the one before it is used.
    """
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    for s in steps:
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out.state, out.meta
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        logging.warning('Checkpoint %d in %s is unreadable (%s: %s); falling back to an older one.',
                        s, self.manager.directory, type(e).__name__, str(e)[:200])
        self._unreadable.add(s)
    return None, None

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def close(self):
    self.manager.close()


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a saved step (a folder `checkpoints/<step>`; Orbax's temporary folders
  of an unfinished save are named otherwise), without opening an Orbax manager."""
  folder = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def _get(config, dotted: str):
  for key in dotted.split('.'):
    config = config[key]
  return list(config) if isinstance(config, (tuple, list)) else config


def check_or_write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json on a fresh run; on a resumed run refuses a config that differs
  from the saved one in a field the checkpoint depends on, naming the field."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    saved = load_config(workdir).to_dict()  # a field added since it was written: its default
    for field in FROZEN_FIELDS:
      old, new = _get(saved, field), _get(config.to_dict(), field)
      if old != new:
        raise ConfigError(
            f'{workdir} holds a run with {field}={old!r}, but this config has {field}={new!r}; a '
            'checkpoint cannot be resumed with a different model, data or batch size. Use a new '
            f'--workdir, or set --config.{field}={old!r}.')
  if jax.process_index() == 0:
    io.write_text(path, config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config.json laid over the defaults, so that a field the file lacks (one added to
  the config after the run began) takes its default value."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'{path} does not exist: --workdir must be a directory written by lnl_jax.main.')
  with open(path) as f:
    saved = json.load(f)
  config = base_config()
  config.update(saved)
  return config


# --- loading a trained workdir --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Trained:
  """A workdir's model and the parameters of one of its checkpoints."""
  model: LNLAttenNet
  params: Any
  class_names: tuple[str, ...]
  step: int
  config: ml_collections.ConfigDict

  @property
  def image_size(self) -> int:
    return self.model.image_size

  def test_split(self, data_root: str | None = None, data_cache: str | None = None) -> Records:
    """The test split of the run's dataset, read from `data_root` when given (the dataset has moved
    since training), else from the folder config.json names. Its classes must be the checkpoint's,
    in the same order (their number only, for a checkpoint without class names): scores against
    other classes would be silently wrong."""
    data = self.config.data.copy_and_resolve_references()
    if data_root:
      data.root = data_root
    _, test = datasets.load_splits(data, self.config.seed, self.config.model.num_patches,
                                   self.config.model.overlap, data_cache)
    unnamed = self.class_names == _unnamed_classes(len(self.class_names))
    if len(test.class_names) != len(self.class_names) or (
        not unnamed and tuple(test.class_names) != self.class_names):
      raise ConfigError(f'the test split read from {data.root or data.name!r} has the classes '
                        f'{", ".join(test.class_names)}, but checkpoint {self.step} was trained on '
                        f'{", ".join(self.class_names)}; the scores would be wrong. Point '
                        '--data_root at the dataset the run was trained on.')
    return test


def best_step(records: Sequence[dict], available: Sequence[int]) -> int | None:
  """The step of the highest test accuracy among the epoch records (`metrics.jsonl`) whose
  checkpoint is in `available`; ties go to the later step. The one rule behind summary.json's
  `best_checkpoint_step` and `--checkpoint=best`."""
  scored = [(r['test_accuracy'], r['step']) for r in records
            if r.get('step') in available and r.get('test_accuracy') is not None]
  return max(scored)[1] if scored else None


def resolve_step(workdir: str, available: Sequence[int], checkpoint: str) -> int:
  """The step `checkpoint` ('latest', 'best' or a step number) names among `available`."""
  if not available:
    raise ConfigError(f'{workdir}/checkpoints holds no complete checkpoint.')
  if checkpoint == 'latest':
    return max(available)
  if checkpoint == 'best':
    history = metrics.History(workdir, write=False)
    step = best_step(history.records, available)
    if step is None:
      raise ConfigError(f'{history.path} records no test accuracy for the checkpoints on disk '
                        f'{sorted(available)}; use --checkpoint=latest or a step number.')
    return step
  if checkpoint.isdigit() and int(checkpoint) in available:
    return int(checkpoint)
  raise ConfigError(f'--checkpoint={checkpoint!r}: expected latest, best or one of the steps on '
                    f'disk {sorted(available)}.')


def _num_classes(params_metadata) -> int:
  """Classes the checkpoint's head predicts: the width of the joint head's last dense layer."""
  head = params_metadata['JointHead_0']
  last = max(head, key=lambda name: int(name.rsplit('_', 1)[-1]))
  return int(head[last]['bias'].shape[-1])


def load_class_names(workdir: str, config: ml_collections.ConfigDict, num_classes: int,
                     meta: dict | None = None) -> tuple[str, ...]:
  """The class names of a run, from the first of the sources the module docstring lists."""
  names = (meta or {}).get('class_names')
  if names is None:
    try:
      with open(os.path.join(workdir, 'summary.json')) as f:
        names = json.load(f)['class_names']
    except (OSError, ValueError, KeyError, TypeError):  # absent (an unfinished run) or unreadable
      pass
  if isinstance(names, list) and len(names) == num_classes:
    return tuple(str(n) for n in names)
  if config.data.name == 'synthetic':
    if len(SYNTHETIC_CLASS_NAMES) == num_classes:
      return SYNTHETIC_CLASS_NAMES
  return _unnamed_classes(num_classes)


def _unnamed_classes(num_classes: int) -> tuple[str, ...]:
  return tuple(f'class_{i}' for i in range(num_classes))


def load_trained(workdir: str, checkpoint: str = 'latest') -> Trained:
  """Rebuilds the model from `workdir/config.json` and restores one checkpoint's parameters (only
  those: the shapes come from the checkpoint's metadata). Raises ConfigError naming the workdir or
  checkpoint."""
  config = load_config(workdir)
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  if not os.path.isdir(directory):
    raise ConfigError(f'{directory} does not exist: {workdir} holds no checkpoints yet.')
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers=dict(state=ocp.PyTreeCheckpointHandler(), meta=ocp.JsonCheckpointHandler()))
  try:
    step = resolve_step(workdir, manager.all_steps(), checkpoint)
    try:
      params_metadata = manager.item_metadata(step)['state']['params']
      num_classes = _num_classes(params_metadata)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'checkpoint {step} of {workdir} has no readable parameter metadata '
                        f'({type(e).__name__}: {first_line(e)}).') from None
    model = create_model(config.model, config.data.image_size, num_classes)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {'params': jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), params_metadata)}
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=True),
          meta=ocp.args.JsonRestore()))
      params = restored.state['params']
      _check_params(model, config.data.image_size, params)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'cannot restore checkpoint {step} of {workdir} with the model its '
                        f'config.json describes ({type(e).__name__}: {first_line(e)}).') from None
  finally:
    manager.close()
  class_names = load_class_names(workdir, config, num_classes, restored.meta)
  return Trained(model, params, class_names, step, config)


def _check_params(model, image_size: int, params) -> None:
  """Raises ValueError unless `params` has the structure and shapes `model` initialises."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jax.numpy.float32)
  expected = jax.eval_shape(model.init, jax.random.key(0), images)['params']
  got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
  want = jax.tree.map(lambda x: (x.shape, x.dtype), expected)
  if got != want:
    raise ValueError('the checkpoint\'s parameters differ in structure or shape from the model\'s')


def first_line(e: Exception) -> str:
  return (str(e).strip().splitlines() or [''])[0][:300]
