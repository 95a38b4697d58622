"""The full model's train step against a PyTorch implementation of the same network, side by side.

  python -m launch.peer_ratio --peer_python=PYTHON --peer_script=BENCH.py [--rounds=2]
      [--batch=2] [--checkout=DIR[,DIR...]] [--out=FILE.jsonl]

The peer is not part of this repository: `--peer_script` is a PyTorch benchmark of LNLAttenNet
(144 px, M = 16, width 1, float32) that takes `--width --size --batch --steps --mode loop --compile
--no-flops` and prints one JSON line with `img_per_s` (a train step: forward, cross-entropy,
backward, Adam), run by `--peer_python`. Each round runs `lnl_jax.bench` on configs/raf.py (the
train step alone, the default ensemble execution) and then the peer, one right after the other, so
that all see the same machine; the figure is the JAX img/s ÷ the peer's img/s of the same round.
The JAX step is measured twice a round: with the options the steps are compiled with on CPU
(`product`) and with XLA's own defaults (`xla_defaults`, as `XLA_FLAGS` naming them gives), by
each git checkout of `--checkout` in turn (default: this one; `.` is this one too), so that two
versions of the code are compared in the same rounds. Prints one JSON line per round and checkout,
with its revision and each step's page faults (null from a checkout whose bench does not count
them), and appends it to --out.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from absl import app, flags

from launch.runs import bench_train_step, checkout_revisions, report
from lnl_jax import cli, host
from lnl_jax.steps import xla_default_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('peer_python', None, 'Python interpreter that has PyTorch.')
flags.DEFINE_string('peer_script', None, "The PyTorch benchmark script.")
flags.DEFINE_integer('rounds', 2, 'Rounds of (JAX, peer).')
flags.DEFINE_integer('batch', 2, 'Batch size of both train steps.')
flags.DEFINE_integer('steps', 5, 'Timed steps of each (median).')
flags.DEFINE_list('checkout', ['.'], 'The git checkouts whose lnl_jax.bench runs, in turn; `.` is '
                  'this one.')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON lines to this file too.')
CONFIG = 'configs/raf.py'


def jax_step(batch: int, steps: int, xla_defaults: bool, checkout: str) -> dict:
  """`lnl_jax.bench`'s train-step record of the code in `checkout`; with `xla_defaults`, compiled
  with XLA's own CPU options (XLA_FLAGS `steps.xla_default_flags()`) instead of
  `steps.compiler_options`."""
  env = dict(os.environ, XLA_FLAGS=xla_default_flags() if xla_defaults else '')
  return bench_train_step(CONFIG, batch, steps, {}, env=env, checkout=checkout)


def peer_step(batch: int, steps: int) -> dict:
  command = [FLAGS.peer_python, FLAGS.peer_script, '--width', '1', '--size', '144', '--batch',
             str(batch), '--steps', str(steps), '--mode', 'loop', '--compile', '--no-flops']
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode:
    sys.exit(f'the peer failed ({done.returncode}):\n{done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Before the first JAX bench, which takes minutes: a peer that cannot start would end the run.
  if not shutil.which(FLAGS.peer_python):
    raise app.UsageError(f'--peer_python={FLAGS.peer_python} is not a program that can be run.')
  if not os.path.isfile(FLAGS.peer_script):
    raise app.UsageError(f'--peer_script={FLAGS.peer_script} is not a file.')
  checkouts, revisions = checkout_revisions(FLAGS.checkout)
  cpu, isa = host.cpu_model()
  for r in range(FLAGS.rounds):
    ours = [{name: jax_step(FLAGS.batch, FLAGS.steps, name == 'xla_defaults', checkout)
             for name in ('product', 'xla_defaults')} for checkout in checkouts]
    peer = peer_step(FLAGS.batch, FLAGS.steps)
    for commit, mine in zip(revisions, ours):
      line = dict(what='peer_ratio', round=r, revision=commit, batch=FLAGS.batch, config=CONFIG,
                  ensemble=mine['product']['ensemble'], peer_step_s=peer['step_s_median'],
                  peer_img_per_s=peer['img_per_s'], peer_torch=peer.get('torch'),
                  cpu=cpu, cpu_isa=isa, cpu_count=os.cpu_count())
      for name, o in mine.items():
        line.update({f'jax_{name}_step_s': o['step_s'], f'jax_{name}_img_per_s': o['img_per_s'],
                     f'jax_{name}_page_faults_per_step': o.get('page_faults_per_step'),
                     f'ratio_{name}': round(o['img_per_s'] / peer['img_per_s'], 3)})
      report(line, FLAGS.out)


if __name__ == '__main__':
  flags.mark_flags_as_required(['peer_python', 'peer_script'])
  cli.run(main)
