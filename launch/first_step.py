"""Time from the command to the first completed train step, on a cold and then a warm cache.

  python -m launch.first_step [--config=configs/synthetic.py:cpu] [--runs=2] [--faces_kept]
      [--checkout=DIR[,DIR...]] [--out=FILE.jsonl]

Runs `python -m lnl_jax.main --config=CONFIG` `--runs` times, each in a fresh workdir but all with
one fresh persistent compilation cache, one fresh data cache and one fresh folder for the compiled
oneDNN handlers (models/onednn.py), so the first run builds and compiles everything and draws its
synthetic faces (cold) and the later ones find them (warm). With
`--faces_kept` the faces are drawn into the data cache before the first run (by the same
checkout's code, stopped once it has read them), so that it is cold for the compilation only (a
config that ran before with other training settings). The time is taken from starting the process
to the log line of step 1's metrics (`train.log_every_steps=1`); the process is then killed, so no
evaluation runs. `--checkout` names the git checkouts whose `lnl_jax.main` runs (default: this one;
`.` is this one too): each has its own caches, their cold runs come first and their warm runs
then alternate, so that a host whose speed drifts weighs on each alike. Prints one JSON line per
run, with its checkout's revision (and appends it to --out).
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

from launch.runs import checkout_revisions, flag_value, report
from lnl_jax import cli, host

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/synthetic.py:cpu'
cli.define_config_flag()
flags.DEFINE_integer('runs', 2, 'Runs sharing one compilation cache: the first is cold.')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON lines to this file too.')
flags.DEFINE_float('timeout', 1200.0, 'Seconds one run may take to reach its first step.')
flags.DEFINE_list('checkout', ['.'], 'The git checkouts whose lnl_jax.main runs, in turn (the '
                  'config path is relative to each); `.` is this one.')
flags.DEFINE_bool('faces_kept', False, 'Draw the synthetic faces into the data cache before the '
                  'first run: it is then cold for the compilation only.')

FIRST_STEP = re.compile(r'\[1\] .*train_loss')  # the metric writer's log line of step 1
FACES_READ = re.compile(r'\] data: ')  # the log line of the splits, once the faces are kept


def run_until(pattern: re.Pattern, flags_: list[str], checkout: str, timeout: float,
              onednn_dir: str) -> dict:
  """Seconds from launching lnl_jax.main of the directory `checkout` with `flags_` (and its oneDNN
  handlers built in `onednn_dir`) to its first log line matching `pattern` (None if it never
  came), and the log's last lines. The process is then killed."""
  command = [sys.executable, '-m', 'lnl_jax.main', *flags_]
  env = dict(os.environ, LNL_JAX_ONEDNN_DIR=onednn_dir)
  start = time.perf_counter()
  with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, cwd=checkout, env=env) as proc:
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seconds, tail = None, []
    for line in proc.stdout:
      tail = (tail + [line.rstrip()])[-20:]
      if pattern.search(line):
        seconds = time.perf_counter() - start
        break
    timer.cancel()
    proc.kill()
  return dict(seconds=seconds, log_tail=None if seconds else tail)


def main_flags(config: str, overrides: dict, workdir: str, cache: str, data_cache: str) -> list:
  return [f'--config={config}', f'--workdir={workdir}', f'--compilation_cache={cache}',
          f'--data_cache={data_cache}',
          *(f'--config.{k}={flag_value(v)}' for k, v in overrides.items()),
          '--config.train.log_every_steps=1']


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, overrides = FLAGS['config'].config_filename, FLAGS['config'].override_values
  checkouts, revisions = checkout_revisions(FLAGS.checkout)
  with tempfile.TemporaryDirectory() as tmp:
    folder = lambda j, name: os.path.join(tmp, f'checkout{j}', name)
    if FLAGS.faces_kept:  # each checkout's own code draws them, in its own format
      for j, checkout in enumerate(checkouts):
        drawn = run_until(FACES_READ, main_flags(config, overrides, folder(j, 'draw'), '',
                                                 folder(j, 'faces')), checkout, FLAGS.timeout,
                          folder(j, 'onednn_draw'))
        if drawn['seconds'] is None:
          raise RuntimeError(f'{checkout} did not read its faces:\n' + '\n'.join(drawn['log_tail']))
    cpu, isa = host.cpu_model()
    for i in range(FLAGS.runs):
      for j, (checkout, commit) in enumerate(zip(checkouts, revisions)):
        result = run_until(FIRST_STEP, main_flags(config, overrides, folder(j, f'run{i}'),
                                                  folder(j, 'jax_cache'), folder(j, 'faces')),
                           checkout, FLAGS.timeout, folder(j, 'onednn'))
        line = dict(what='first_step', config=config, cache='cold' if i == 0 else 'warm',
                    faces='kept' if FLAGS.faces_kept or i else 'drawn',
                    seconds=result['seconds'], cpu=cpu, cpu_isa=isa, cpu_count=os.cpu_count(),
                    revision=commit)
        if overrides:
          line['overrides'] = dict(overrides)
        if result['log_tail']:
          line['log_tail'] = result['log_tail']
        report(line, FLAGS.out)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', DEFAULT_CONFIG)
  cli.run(main)
