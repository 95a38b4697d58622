"""Front door: python -m lnl_jax.main --config=configs/raf.py[:variant] --workdir=DIR"""
import jax
import tensorflow as tf
from absl import app, flags, logging
from ml_collections import config_flags

from lnl_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, summary and plots.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:variant]).',
                                lock_config=True)
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs; '
                  'reads the coordinator from the cluster environment, e.g. Slurm).')
flags.mark_flags_as_required(['config', 'workdir'])


def quiet_orbax():
  """Orbax logs every file it writes at INFO; keep its warnings and errors only."""
  logging.get_absl_handler().python_handler.addFilter(
      lambda r: r.levelno >= logging.WARNING or '/orbax/' not in r.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  quiet_orbax()
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep the accelerator for JAX
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
