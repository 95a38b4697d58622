"""Seconds each heavy package takes to import, in a fresh process per sample.

  python -m launch.import_time [--rounds=3] [--out=FILE.jsonl]

Every command starts by importing these; their time is part of the time to the first step. Each
round starts one process per entry of `STEPS`, which times one import after importing the modules
it names first, so that each figure is that module's own share: TensorFlow both as a plain
`import tensorflow` and as the package imports it (`host.import_tensorflow`, without Keras), then
the rest of `lnl_jax.main`. Prints one JSON line per round with the revision and the versions of
numpy and ml_dtypes (ml_dtypes registers its NumPy types at import, which is slow in some
releases), and appends it to --out.
"""
from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

from launch.runs import report, revision
from lnl_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer('rounds', 3, 'Processes per module.')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON lines to this file too.')

WITHOUT_KERAS = 'tensorflow without Keras'  # `host.import_tensorflow()`, as the commands import it
_BASE = ('numpy', 'ml_dtypes', 'jax')
STEPS = (('numpy', ()), ('ml_dtypes', ('numpy',)), ('jax', ('numpy', 'ml_dtypes')),
         ('tensorflow', _BASE), (WITHOUT_KERAS, _BASE), ('lnl_jax.main', _BASE + (WITHOUT_KERAS,)))

_TIMER = f"""
import importlib, json, sys, time
def load(name):
  if name == {WITHOUT_KERAS!r}:
    from lnl_jax import host
    return host.import_tensorflow()
  return importlib.import_module(name)
for name in sys.argv[2:]:
  load(name)
start = time.perf_counter()
load(sys.argv[1])
print(json.dumps(time.perf_counter() - start))
"""


def import_seconds(module: str, before: tuple[str, ...]) -> float:
  """Seconds importing `module` takes in a fresh process that imported `before` first."""
  out = subprocess.run([sys.executable, '-c', _TIMER, module, *before], check=True,
                       capture_output=True, text=True).stdout
  return float(out.strip().splitlines()[-1])


def versions() -> dict:
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  import numpy  # pylint: disable=import-outside-toplevel
  return dict(numpy=numpy.__version__, ml_dtypes=ml_dtypes.__version__)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for _ in range(FLAGS.rounds):
    seconds = {m: round(import_seconds(m, before), 3) for m, before in STEPS}
    report(dict(what='import_time', seconds=seconds, **versions(), cpu_count=os.cpu_count(),
                revision=revision()), FLAGS.out)


if __name__ == '__main__':
  cli.run(main)
