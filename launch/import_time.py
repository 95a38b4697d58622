"""Seconds each heavy package takes to import, in a fresh process per sample.

  python -m launch.import_time [--rounds=3] [--out=FILE.jsonl]

Every command starts by importing these; their time is part of the time to the first step. Each
round starts one process per module, in the order of `MODULES`, and times `import module` after
the modules before it in the list were imported (so each figure is that module's own share). Prints
one JSON line per round with the versions of numpy and ml_dtypes (ml_dtypes registers its NumPy
types at import, which is slow in some releases), and appends it to --out.
"""
from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

from launch.runs import report

FLAGS = flags.FLAGS
flags.DEFINE_integer('rounds', 3, 'Processes per module.')
flags.DEFINE_string('out', '', 'Append the JSON lines to this file too.')

MODULES = ('numpy', 'ml_dtypes', 'jax', 'tensorflow', 'lnl_jax.main')

_TIMER = """
import importlib, json, sys, time
for name in sys.argv[2:]:
  importlib.import_module(name)
start = time.perf_counter()
module = importlib.import_module(sys.argv[1])
print(json.dumps(time.perf_counter() - start))
"""


def import_seconds(module: str, before: tuple[str, ...]) -> float:
  """Seconds `import module` takes in a fresh process that imported `before` first."""
  out = subprocess.run([sys.executable, '-c', _TIMER, module, *before], check=True,
                       capture_output=True, text=True).stdout
  return float(out.strip().splitlines()[-1])


def versions() -> dict:
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  import numpy  # pylint: disable=import-outside-toplevel
  return dict(numpy=numpy.__version__, ml_dtypes=ml_dtypes.__version__)


def main(argv):
  del argv
  for _ in range(FLAGS.rounds):
    seconds = {m: round(import_seconds(m, MODULES[:i]), 3) for i, m in enumerate(MODULES)}
    report(dict(what='import_time', seconds=seconds, **versions(), cpu_count=os.cpu_count()),
           FLAGS.out)


if __name__ == '__main__':
  app.run(main)
