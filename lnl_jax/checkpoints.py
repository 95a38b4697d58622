"""Orbax checkpoints of a run's workdir: the newest few plus the best, atomic, resumable."""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from lnl_jax.geometry import ConfigError

# Fields that change the parameters' shapes or the data a checkpoint was trained on: a resumed run
# must agree with the checkpoint on every one of them.
FROZEN_FIELDS = ('data.name', 'data.image_size', 'data.num_classes', 'data.fold', 'model.attention',
                 'model.num_patches', 'model.overlap', 'model.width', 'model.head_widths', 'seed')


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


def _get(config, dotted: str):
  for key in dotted.split('.'):
    config = config[key]
  return list(config) if isinstance(config, (tuple, list)) else config


def check_or_write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json on a fresh run; on a resumed run refuses a config that differs
  from the saved one in a field the checkpoint depends on, naming the field."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    for field in FROZEN_FIELDS:
      old, new = _get(saved, field), _get(config.to_dict(), field)
      if old != new:
        raise ConfigError(
            f'{workdir} holds a run with {field}={old!r}, but this config has {field}={new!r}; a '
            'checkpoint cannot be resumed with a different model or data. Use a new --workdir, or '
            f'set --config.{field}={old!r}.')
  if jax.process_index() == 0:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config.json laid over today's defaults, so that fields added since it was
  written take their default values (those the older code behaved as)."""
  from lnl_jax.config_base import base_config
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'{path} does not exist: --workdir must be a directory written by lnl_jax.main.')
  with open(path) as f:
    saved = json.load(f)
  config = base_config()
  config.update(saved)
  return config
