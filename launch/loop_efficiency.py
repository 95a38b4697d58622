"""The training loop's images/s against the isolated train step, measured in one run.

  python -m launch.loop_efficiency [--config=configs/synthetic.py:cpu] [--steps_per_epoch=20]
      [--epochs=3] [--bench_steps=10] [--out=FILE.jsonl]

Runs, one after the other on the same machine: `lnl_jax.bench` (the train step alone, on random
batches of the config's shape and batch size), then `lnl_jax.main` on the same config for
`--epochs` short epochs (`--steps_per_epoch` steps each: only the data size changes, and
`data.limit` is lifted so that it does not cut the epochs short), then the bench again. The loop's
figure is the `images_per_s` that metrics.jsonl reports for every epoch after the first (the first
compiles); the bench's is the mean of its two runs, so that a machine that got busier or quieter
during the run shows as a difference between them. Prints one JSON line, with the steps per epoch
the run's summary.json records (and appends it to --out).
"""
from __future__ import annotations

import json
import os
import tempfile

from absl import app, flags

from launch.runs import bench_train_step, report, run_tool
from lnl_jax import cli

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/synthetic.py:cpu'
cli.define_config_flag()
flags.DEFINE_integer('steps_per_epoch', 20, 'Train steps per epoch of the loop run.')
flags.DEFINE_integer('epochs', 3, 'Epochs of the loop run; every one after the first is measured.')
flags.DEFINE_integer('bench_steps', 10, 'Timed steps of each bench run.')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON line to this file too.')


def bench_img_per_s(config: str, batch_size: int, num_steps: int) -> float:
  """The train step's images/s from `lnl_jax.bench` (eval not measured)."""
  return bench_train_step(config, batch_size, num_steps,
                          FLAGS['config'].override_values)['img_per_s']


def loop_img_per_s(config: str, workdir: str, batch_size: int, steps_per_epoch: int,
                   epochs: int) -> tuple[list[float], int]:
  """metrics.jsonl's images_per_s of every epoch of a short `lnl_jax.main` run, and the steps per
  epoch it trained (summary.json's)."""
  run_tool(['lnl_jax.main', f'--config={config}', f'--workdir={workdir}',
            f'--config.data.num_train={batch_size * steps_per_epoch}', '--config.data.limit=0',
            f'--config.train.num_epochs={epochs}',
            f'--config.train.log_every_steps={steps_per_epoch}'], FLAGS['config'].override_values)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    images_per_s = [json.loads(line)['images_per_s'] for line in f]
  with open(os.path.join(workdir, 'summary.json')) as f:
    return images_per_s, json.load(f)['steps_per_epoch']


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.epochs < 2:
    raise app.UsageError('--epochs must be ≥ 2: the first epoch compiles and is not measured.')
  config = FLAGS['config'].config_filename
  batch_size = FLAGS.config.train.batch_size
  before = bench_img_per_s(config, batch_size, FLAGS.bench_steps)
  with tempfile.TemporaryDirectory() as tmp:
    epochs, steps_per_epoch = loop_img_per_s(config, os.path.join(tmp, 'run'), batch_size,
                                             FLAGS.steps_per_epoch, FLAGS.epochs)
  after = bench_img_per_s(config, batch_size, FLAGS.bench_steps)
  bench = (before + after) / 2
  loop = sum(epochs[1:]) / len(epochs[1:])
  line = dict(what='loop_efficiency', config=config, batch=batch_size,
              steps_per_epoch=steps_per_epoch,
              bench_img_per_s=[round(before, 2), round(after, 2)],
              loop_img_per_s=[round(e, 2) for e in epochs], ratio=round(loop / bench, 3),
              cpu_count=os.cpu_count())
  if FLAGS['config'].override_values:
    line['overrides'] = dict(FLAGS['config'].override_values)
  report(line, FLAGS.out)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', DEFAULT_CONFIG)
  cli.run(main)
