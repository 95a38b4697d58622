"""Front door: python -m lnl_jax.main --config=configs/raf.py[:variant] --workdir=DIR

How errors end the process (exit statuses) and the compilation cache: `lnl_jax.cli`.
"""
import jax
from absl import app, flags, logging

from lnl_jax import cli, train

FLAGS = flags.FLAGS
cli.uses_cache_flags()
cli.define_config_flag()
cli.define_workdir_flags(checkpoint=False,
                         workdir_help='Directory for checkpoints, metrics, summary and plots.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs). '
                  'Without the three flags below it reads the cluster environment (Slurm, ...).')
flags.DEFINE_string('coordinator_address', None, 'With --distributed: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'With --distributed: the number of processes.')
flags.DEFINE_integer('process_id', None, 'With --distributed: this process, in [0, num_processes).')


def initialize_distributed():
  """`jax.distributed.initialize` with the explicit flags, or auto-detected from the cluster."""
  explicit = dict(coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  cli.setup_process()
  if FLAGS.distributed:
    initialize_distributed()
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  cli.run_or_exit(train.train_and_evaluate, FLAGS.config, FLAGS.workdir,
                  cli.data_cache_dir(FLAGS.data_cache))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)
