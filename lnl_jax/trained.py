"""A trained workdir, loaded: its config, model, one checkpoint's parameters and its class names.

Used by every command that starts from a workdir (`evaluate`, `predict`, `export`, `analysis`).
The number of classes is read from the checkpoint's own metadata (the head's output width), so
nothing needs the dataset. Class names come from the checkpoint's metadata (written at train time),
else from `summary.json`, else from the synthetic dataset's names; otherwise `class_0`, `class_1`, …
`checkpoint` is 'latest', 'best' (highest test accuracy in `metrics.jsonl` among the checkpoints
still on disk) or a step number.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from lnl_jax import checkpoints, metrics, steps
from lnl_jax.geometry import ConfigError
from lnl_jax.models import LNLAttenNet, create_model


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

  def on_every_device(self) -> tuple[Any, steps.Parallel]:
    """(the parameters replicated over every device, the `Parallel` that placed them)."""
    parallel = steps.Parallel()
    return jax.device_put(self.params, parallel.replicated), parallel


def _manager(workdir: str) -> ocp.CheckpointManager:
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  if not os.path.isdir(directory):
    raise ConfigError(f'{directory} does not exist: {workdir} holds no checkpoints yet.')
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers=dict(state=ocp.StandardCheckpointHandler(), meta=ocp.JsonCheckpointHandler()))


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
    from lnl_jax.data.synthetic import CLASS_NAMES
    if len(CLASS_NAMES) == num_classes:
      return CLASS_NAMES
  return tuple(f'class_{i}' for i in range(num_classes))


def load_trained(workdir: str, checkpoint: str = 'latest') -> Trained:
  """Rebuilds the model from `workdir/config.json` and restores one checkpoint's parameters.

  The number of classes is read from the checkpoint's own metadata (the head's output width), so
  the restore does not need the dataset. Raises ConfigError naming the workdir or checkpoint.
  """
  config = checkpoints.load_config(workdir)
  manager = _manager(workdir)
  step = resolve_step(workdir, manager.all_steps(), checkpoint)
  try:
    metadata = manager.item_metadata(step)['state']
    num_classes = _num_classes(metadata['params'])
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'checkpoint {step} of {workdir} has no readable parameter metadata '
                      f'({type(e).__name__}: {first_line(e)}).') from None
  model = create_model(config.model, config.data.image_size, num_classes)
  tx = steps.create_optimizer(config.train, steps_per_epoch=1)  # only the state's structure matters
  abstract = jax.eval_shape(functools.partial(
      steps.initialized, model=model, image_size=config.data.image_size, tx=tx), jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'cannot restore checkpoint {step} of {workdir} with the model its config.json '
                      f'describes ({type(e).__name__}: {first_line(e)}).') from None
  finally:
    manager.close()
  class_names = load_class_names(workdir, config, num_classes, restored.meta)
  return Trained(model, restored.state.params, class_names, step, config)


def first_line(e: Exception) -> str:
  return (str(e).strip().splitlines() or [''])[0][:300]
