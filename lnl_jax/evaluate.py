"""Re-evaluates a trained workdir's checkpoint on its test split.

  python -m lnl_jax.evaluate --workdir=DIR [--checkpoint=latest|best|STEP]

Prints the accuracy and writes DIR/eval_<step>.json (accuracy, balanced and per-class accuracy,
confusion matrix).
"""
from __future__ import annotations

import os

import jax
from absl import app, flags, logging

from lnl_jax import metrics
from lnl_jax.data import datasets
from lnl_jax.main import run_or_exit, setup_process
from lnl_jax.train import evaluate
from lnl_jax.trained import load_trained

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A directory written by lnl_jax.main.')
flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' (highest test accuracy) or a step number.")
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  setup_process()
  run_or_exit(evaluate_workdir, FLAGS.workdir, FLAGS.checkpoint)


def evaluate_workdir(workdir: str, checkpoint: str) -> None:
  run = load_trained(workdir, checkpoint)
  config, step = run.config, run.step
  _, test = datasets.load_splits(config.data, config.seed, config.model.num_patches, config.model.overlap)
  params, parallel = run.on_every_device()
  result = evaluate(params, test, eval_step=parallel.jit_eval_step(run.model), parallel=parallel,
                    config=config)
  out = dict(step=step, accuracy=result['accuracy'], balanced_accuracy=result['balanced_accuracy'],
             per_class_accuracy=dict(zip(test.class_names, result['per_class'])),
             confusion_matrix=result['cm'].tolist(), bad_images=result['bad_images'])
  path = os.path.join(workdir, f'eval_{step}.json')
  if jax.process_index() == 0:
    metrics.write_json(path, out)
  logging.info('step %d: test accuracy %.2f%% (balanced %.2f%%) on %d images; written to %s', step,
               result['accuracy'], result['balanced_accuracy'], len(test), path)
  print(f'step {step}: test accuracy {result["accuracy"]:.2f}%  balanced {result["balanced_accuracy"]:.2f}%')


if __name__ == '__main__':
  app.run(main)
