"""Re-evaluates a trained workdir's checkpoint on its test split.

  python -m lnl_jax.evaluate --workdir=DIR [--checkpoint=latest|best|STEP]

Prints the accuracy and writes DIR/eval_<step>.json (accuracy, balanced and per-class accuracy,
confusion matrix).
"""
from __future__ import annotations

import os

import jax
import tensorflow as tf
from absl import app, flags, logging

from lnl_jax import checkpoints, metrics
from lnl_jax.data import datasets
from lnl_jax.geometry import ConfigError
from lnl_jax.main import quiet_orbax
from lnl_jax.models import create_model
from lnl_jax.steps import Parallel, create_optimizer
from lnl_jax.train import evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A directory written by lnl_jax.main.')
flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' (highest test accuracy) or a step number.")
flags.mark_flag_as_required('workdir')


def restore_params(config, workdir: str, num_classes: int, checkpoint: str = 'latest'):
  """(model, params, step) of a workdir's checkpoint, on the devices of a fresh `Parallel()`."""
  parallel = Parallel()
  model = create_model(config.model, config.data.image_size, num_classes)
  tx = create_optimizer(config.train, 1)
  abstract = jax.eval_shape(parallel.jit_init(model, config.data.image_size, tx),
                            jax.random.key(config.seed, impl='rbg'))
  ckpt = checkpoints.Checkpoints(workdir, config.train.keep_checkpoints)
  steps = ckpt.manager.all_steps()
  if not steps:
    raise ConfigError(f'{workdir} has no checkpoint yet.')
  if checkpoint == 'best':
    step = ckpt.best_step()
  elif checkpoint == 'latest':
    step = None
  elif checkpoint.isdigit() and int(checkpoint) in steps:
    step = int(checkpoint)
  else:
    raise ConfigError(f'--checkpoint={checkpoint!r}: use latest, best or one of the steps {sorted(steps)}.')
  state, _ = ckpt.restore(abstract, step)
  if state is None:
    raise ConfigError(f'no readable checkpoint in {workdir}.')
  ckpt.close()
  return model, jax.device_put(state.params, parallel.replicated), int(state.step), parallel


def main(argv):
  del argv
  quiet_orbax()
  tf.config.set_visible_devices([], 'GPU')
  config = checkpoints.load_config(FLAGS.workdir)
  _, test = datasets.load_splits(config.data, config.seed, config.model.num_patches, config.model.overlap)
  model, params, step, parallel = restore_params(config, FLAGS.workdir, test.num_classes, FLAGS.checkpoint)
  result = evaluate(params, test, eval_step=parallel.jit_eval_step(model), parallel=parallel,
                    config=config)
  out = dict(step=step, accuracy=result['accuracy'], balanced_accuracy=result['balanced_accuracy'],
             per_class_accuracy=dict(zip(test.class_names, result['per_class'])),
             confusion_matrix=result['cm'].tolist(), bad_images=result['bad_images'])
  path = os.path.join(FLAGS.workdir, f'eval_{step}.json')
  if jax.process_index() == 0:
    metrics.write_json(path, out)
  logging.info('step %d: test accuracy %.2f%% (balanced %.2f%%) on %d images; written to %s', step,
               result['accuracy'], result['balanced_accuracy'], len(test), path)
  print(f'step {step}: test accuracy {result["accuracy"]:.2f}%  balanced {result["balanced_accuracy"]:.2f}%')


if __name__ == '__main__':
  app.run(main)
