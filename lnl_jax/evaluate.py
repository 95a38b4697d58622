"""Re-evaluates a trained workdir's checkpoint on its test split.

  python -m lnl_jax.evaluate --workdir=DIR [--checkpoint=latest|best|STEP] [--data_root=DIR]

Prints the accuracy and writes DIR/eval_<step>.json (accuracy, balanced and per-class accuracy,
confusion matrix). `--data_root` reads the dataset from there when it has moved since training.
"""
from __future__ import annotations

import os

import jax
from absl import app, flags, logging

from lnl_jax import cli, io
from lnl_jax.checkpoints import load_trained
from lnl_jax.inference import Predictor
from lnl_jax.steps import Parallel
from lnl_jax.train import evaluate

FLAGS = flags.FLAGS
cli.uses_cache_flags()
cli.define_workdir_flags()
cli.define_data_root_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup_process()
  cli.run_or_exit(evaluate_workdir, FLAGS.workdir, FLAGS.checkpoint,
                  cli.data_cache_dir(FLAGS.data_cache), FLAGS.data_root)


def evaluate_workdir(workdir: str, checkpoint: str, data_cache: str | None = None,
                     data_root: str | None = None) -> None:
  """Scores `checkpoint` of `workdir` on its test split, read from `data_root` when given (else
  from the folder its config.json names)."""
  run = load_trained(workdir, checkpoint)
  config, step = run.config, run.step
  test = run.test_split(data_root, data_cache)
  model = Predictor(run.model, run.params, config.train.batch_size, Parallel())
  result = evaluate(model.params, test, eval_step=model.eval_step, parallel=model.parallel,
                    config=config)
  out = dict(step=step, accuracy=result['accuracy'], balanced_accuracy=result['balanced_accuracy'],
             per_class_accuracy=dict(zip(test.class_names, result['per_class'])),
             confusion_matrix=result['cm'].tolist(), bad_images=result['bad_images'])
  path = os.path.join(workdir, f'eval_{step}.json')
  if jax.process_index() == 0:
    io.write_json(path, out)
  logging.info('step %d: test accuracy %.2f%% (balanced %.2f%%) on %d images; written to %s', step,
               result['accuracy'], result['balanced_accuracy'], len(test), path)
  print(f'step {step}: test accuracy {result["accuracy"]:.2f}%  balanced {result["balanced_accuracy"]:.2f}%')


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  cli.run(main)
