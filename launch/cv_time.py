"""Wall time of a whole `launch.cross_validate` job against the train steps it runs.

  python -m launch.cv_time [--config=configs/folder.py:cpu] [--faces=400] [--folds=5]
      [--steps=10] [--out=FILE.jsonl]

Writes `--faces` synthetic faces as PNG class folders (the `folder` dataset, split by k-fold), then
runs `launch.cross_validate` on them with `--folds` folds of `--steps` train steps each, in one
process with a fresh compilation cache, and `lnl_jax.bench` on the same config. Prints one JSON
line: the job's wall time, each fold's (summary.json's `wall_time_s`: the first fold compiles,
the others should find the programs compiled), the steps each fold trained (summary.json's
`steps`: fewer than `--steps` where the config's epochs end first), and their sum × the bench's
step time, the part of the job that is training (and appends it to --out).
"""
from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags
from PIL import Image

from launch.runs import bench_train_step, report, run_tool
from lnl_jax import cli
from lnl_jax.data import synthetic

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/folder.py:cpu'
cli.define_config_flag()
flags.DEFINE_integer('faces', 400, 'Synthetic faces written as the dataset.')
flags.DEFINE_integer('folds', 5, 'Folds of the cross-validation.')
flags.DEFINE_integer('steps', 10, 'Train steps per fold (train.max_steps).')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON line to this file too.')


def write_faces(root: str, num_faces: int, image_size: int) -> None:
  faces = synthetic.generate(num_faces, image_size=image_size, seed=0)
  for i, (image, label) in enumerate(zip(faces.images, faces.labels)):
    folder = os.path.join(root, faces.class_names[label])
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(image).save(os.path.join(folder, f'{i}.png'))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  own = {'data.root': '', 'data.num_folds': '--folds', 'train.max_steps': '--steps'}
  if taken := sorted(own.keys() & FLAGS['config'].override_values.keys()):
    field = taken[0]
    raise app.UsageError(f'--config.{field} is set by launch.cv_time itself'
                         + (f'; use {own[field]}.' if own[field] else ' (its synthetic faces).'))
  config, batch_size = FLAGS['config'].config_filename, FLAGS.config.train.batch_size
  with tempfile.TemporaryDirectory() as tmp:
    root, runs_dir = os.path.join(tmp, 'faces'), os.path.join(tmp, 'cv')
    write_faces(root, FLAGS.faces, FLAGS.config.data.image_size)
    start = time.perf_counter()
    run_tool(['launch.cross_validate', f'--config={config}', f'--runs_dir={runs_dir}',
              f'--config.data.root={root}', f'--config.data.num_folds={FLAGS.folds}',
              f'--config.train.max_steps={FLAGS.steps}', f'--compilation_cache={tmp}/jax_cache'],
             FLAGS['config'].override_values)
    wall = time.perf_counter() - start
    folds, fold_steps = [], []
    for k in range(FLAGS.folds):
      with open(os.path.join(runs_dir, f'fold_{k}', 'summary.json')) as f:
        summary = json.load(f)
      folds.append(summary['wall_time_s'])
      fold_steps.append(summary['steps'])
  step = bench_train_step(config, batch_size, 5, FLAGS['config'].override_values,
                          '--compilation_cache=')  # its compile time is a real one
  line = dict(what='cv_time', config=config, faces=FLAGS.faces, folds=FLAGS.folds,
              steps_per_fold=FLAGS.steps, batch=batch_size, wall_s=round(wall, 1),
              fold_wall_s=[round(f, 1) for f in folds], fold_steps=fold_steps,
              step_s=step['step_s'], train_steps_s=round(sum(fold_steps) * step['step_s'], 1),
              step_compile_s=step['compile_s'], cpu_count=os.cpu_count())
  if FLAGS['config'].override_values:
    line['overrides'] = dict(FLAGS['config'].override_values)
  report(line, FLAGS.out)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', DEFAULT_CONFIG)
  cli.run(main)
