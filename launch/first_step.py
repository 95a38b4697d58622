"""Time from the command to the first completed train step, on a cold and then a warm cache.

  python -m launch.first_step [--config=configs/synthetic.py:cpu] [--runs=2] [--faces_kept]
      [--checkout=DIR] [--out=FILE.jsonl]

Runs `python -m lnl_jax.main --config=CONFIG` `--runs` times, each in a fresh workdir but all with
one fresh persistent compilation cache and one fresh data cache, so the first run compiles
everything and draws its synthetic faces (cold) and the later ones find both (warm). With
`--faces_kept` the faces are drawn into the data cache before the first run, so that it is cold for
the compilation only (a config that ran before with other training settings). The time is
taken from starting the process to the log line of step 1's metrics (`train.log_every_steps=1`);
the process is then killed, so no evaluation runs. With `--checkout` the runs are those of another
git checkout's `lnl_jax.main` (a before/after comparison: run it and this one in turn). Prints one
JSON line per run, with the checkout's revision (and appends it to --out).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

from launch.runs import flag_value, report
from lnl_jax import cli
from lnl_jax.data import datasets

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/synthetic.py:cpu'
cli.define_config_flag()
flags.DEFINE_integer('runs', 2, 'Runs sharing one compilation cache: the first is cold.')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON lines to this file too.')
flags.DEFINE_float('timeout', 1200.0, 'Seconds one run may take to reach its first step.')
flags.DEFINE_string('checkout', '', 'Run the lnl_jax.main of this git checkout (its config '
                    'path is relative to it); default: this one.')
flags.DEFINE_bool('faces_kept', False, 'Draw the synthetic faces into the data cache before the '
                  'first run: it is then cold for the compilation only.')

FIRST_STEP = re.compile(r'\[1\] .*train_loss')  # the metric writer's log line of step 1


def time_first_step(config: str, overrides: dict, workdir: str, cache: str, data_cache: str,
                    timeout: float, checkout: str | None = None) -> dict:
  """Seconds from launching lnl_jax.main (with the config `overrides`; that of the directory
  `checkout` if given) to its step-1 metrics line, and the log's last lines."""
  command = [sys.executable, '-m', 'lnl_jax.main', f'--config={config}', f'--workdir={workdir}',
             f'--compilation_cache={cache}', f'--data_cache={data_cache}',
             *(f'--config.{k}={flag_value(v)}' for k, v in overrides.items()),
             '--config.train.log_every_steps=1']
  start = time.perf_counter()
  with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, cwd=checkout) as proc:
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seconds, tail = None, []
    for line in proc.stdout:
      tail = (tail + [line.rstrip()])[-20:]
      if FIRST_STEP.search(line):
        seconds = time.perf_counter() - start
        break
    timer.cancel()
    proc.kill()
  return dict(seconds=seconds, log_tail=None if seconds else tail)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS['config'].config_filename
  checkout = os.path.abspath(FLAGS.checkout or os.getcwd())
  revision = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=checkout, check=True,
                            capture_output=True, text=True).stdout.strip()
  with tempfile.TemporaryDirectory() as tmp:
    cache, faces = os.path.join(tmp, 'jax_cache'), os.path.join(tmp, 'faces')
    if FLAGS.faces_kept:
      c = FLAGS.config
      datasets.load_splits(c.data, c.seed, c.model.num_patches, c.model.overlap, faces)
    for i in range(FLAGS.runs):
      result = time_first_step(config, FLAGS['config'].override_values,
                               os.path.join(tmp, f'run{i}'), cache, faces, FLAGS.timeout,
                               checkout)
      line = dict(what='first_step', config=config, cache='cold' if i == 0 else 'warm',
                  faces='kept' if FLAGS.faces_kept or i else 'drawn',
                  seconds=result['seconds'], cpu_count=os.cpu_count(), revision=revision)
      if FLAGS['config'].override_values:
        line['overrides'] = dict(FLAGS['config'].override_values)
      if result['log_tail']:
        line['log_tail'] = result['log_tail']
      report(line, FLAGS.out)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', DEFAULT_CONFIG)
  app.run(main)
