"""Front door: python -m lnl_jax.main --config=configs/raf.py[:variant] --workdir=DIR

Errors the user can fix (a bad config or dataset, a non-finite loss, a pre-emption) end the process
with a one-line `error: ...` on stderr and a non-zero exit status, never a traceback:
  1    ConfigError, DataError (the message names the field or file), FloatingPointError (the step)
  143  SIGTERM (130: SIGINT) arrived; a checkpoint of the current step was written, rerun to resume
"""
import logging as std_logging
import sys

import jax
import tensorflow as tf
from absl import app, flags, logging
from ml_collections import config_flags

from lnl_jax import train
from lnl_jax.data.records import DataError
from lnl_jax.geometry import ConfigError

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags; defined only when run as a program, so that other entry points
  (lnl_jax.evaluate) can import this module and define their own --workdir."""
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, summary and plots.')
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:variant]).',
                                  lock_config=True)
  flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs). '
                    'Without the three flags below it reads the cluster environment (Slurm, ...).')
  flags.DEFINE_string('coordinator_address', None, 'With --distributed: host:port of process 0.')
  flags.DEFINE_integer('num_processes', None, 'With --distributed: the number of processes.')
  flags.DEFINE_integer('process_id', None, 'With --distributed: this process, in [0, num_processes).')
  flags.mark_flags_as_required(['config', 'workdir'])


def setup_process() -> None:
  """What every command that runs the model sets first (main, evaluate, analysis, launch.sweep,
  launch.cross_validate)."""
  logging.get_absl_handler().python_handler.addFilter(  # Orbax logs every file it writes at INFO
      lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname)
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep the accelerator for JAX


def run_or_exit(run_fn, *args):
  """`run_fn(*args)`, ending the process on errors the user can fix: one line on stderr and exit
  status 1, or 128 + signal after a pre-emption (rerun the same command to resume)."""
  try:
    return run_fn(*args)
  except train.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)
  except (ConfigError, DataError, FloatingPointError) as e:
    sys.exit(f'error: {e}')


def initialize_distributed():
  """`jax.distributed.initialize` with the explicit flags, or auto-detected from the cluster."""
  explicit = dict(coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  setup_process()
  if FLAGS.distributed:
    initialize_distributed()
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  run_or_exit(train.train_and_evaluate, FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
