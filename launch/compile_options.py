"""XLA's CPU compile options for the gradient step: compile and train-step times, in one process.

  python -m launch.compile_options [--config=configs/synthetic.py:cpu] [--batch=32] [--rounds=10]
      [--out=FILE.jsonl]

Traces and lowers the config's gradient step (the train step's first program), then compiles it
under each set of options of `choices()` ('default' is XLA's own defaults; 'product' is what
`steps.compiler_options` gives the gradient step on CPU, less any option this jaxlib does not know;
'only_<option>' is one of the product's options alone), once each, then times the train steps they
make with the update step (compiled once, with XLA's defaults, as the train step has it) on the same
batch of random faces, interleaved (one step of each choice per round): a machine that gets busier
or quieter during the run slows every choice in the same rounds. Prints one JSON line per choice
(the program it compiled, this checkout's revision, its compile seconds, the median step seconds,
the median over rounds of its step ÷ the 'default' step of the same round), and appends them to
--out.
XLA_FLAGS must not name the options compared (they would apply to every choice); the persistent
compilation cache is off.
"""
from __future__ import annotations

import functools
import time

import jax
import numpy as np
from absl import app, flags

from launch.runs import report, revision
from lnl_jax import cli, host, steps
from lnl_jax.models import create_model

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/synthetic.py:cpu'
cli.define_config_flag()
flags.DEFINE_integer('batch', 32, 'Global batch size of the timed step.')
flags.DEFINE_integer('rounds', 10, 'Timed steps of each choice, interleaved.')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON lines to this file too.')


def choices() -> dict[str, dict]:
  """The sets of options compared: XLA's defaults, the product's (those this jaxlib knows), and
  each of them alone."""
  product = steps.known_options(steps.cpu_compiler_options(jax.device_count()))
  return {'default': {}, 'product': product,
          **{f'only_{name}': {name: value} for name, value in product.items()}}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  host.keep_freed_memory()  # as every command that runs the model, before JAX starts its backend
  parallel = steps.Parallel(jax.devices()[:1])
  compared = choices()
  named = compared['product'].keys() - (steps.compiler_options(parallel.mesh) or {}).keys()
  if named:
    raise app.UsageError(f'XLA_FLAGS names {sorted(named)}, which would apply to every choice; '
                         'run with XLA_FLAGS unset.')
  commit, (cpu, isa) = revision(), host.cpu_model()
  cli.enable_compilation_cache('')  # every compilation timed is a real one
  config, size = FLAGS.config, FLAGS.config.data.image_size
  model = create_model(config.model, size, config.data.num_classes)
  tx = steps.create_optimizer(config.train, 100)
  batch = parallel.put_batch(steps.random_batch(np.random.default_rng(0), FLAGS.batch, size,
                                                config.data.num_classes))
  abstract = steps.abstract_state(model, size, tx)
  # Plain jits: each choice below is the whole set of options its gradient program gets; the update
  # program is compiled once, as the train step compiles it (XLA's defaults), and shared.
  gradient, update = steps.bind_steps(model, tx, config.train.weight_decay,
                                      config.train.label_smoothing)
  gradient = jax.jit(gradient)
  update = jax.jit(update, donate_argnums=0)
  update = update.trace(*steps.TrainStep.update_arguments(abstract)).lower().compile()
  # Each choice lowered afresh, so that nothing of the other's compilation is reused.
  compiled, compile_s = {}, {}
  for name, options in compared.items():
    lowered = gradient.trace(abstract.params, batch).lower()
    start = time.perf_counter()
    compiled[name] = functools.partial(steps.TrainStep.run,
                                       lowered.compile(compiler_options=options), update)
    compile_s[name] = time.perf_counter() - start
  states, times = {}, {name: [] for name in compared}
  for name in compared:
    states[name] = parallel.init_state(model, size, tx, config.seed, abstract)
    states[name], _ = compiled[name](states[name], batch)  # one untimed step each
  jax.block_until_ready(states)
  for _ in range(FLAGS.rounds):
    for name in compared:
      start = time.perf_counter()
      states[name], _ = compiled[name](states[name], batch)
      jax.block_until_ready(states[name])
      times[name].append(time.perf_counter() - start)
  for name, options in compared.items():
    ratio = np.array(times[name]) / np.array(times['default'])
    report(dict(what='compile_options', program='gradient_step', revision=commit,
                config=FLAGS['config'].config_filename, cpu=cpu, cpu_isa=isa,
                overrides=dict(FLAGS['config'].override_values), batch=FLAGS.batch, choice=name,
                options=options, compile_s=round(compile_s[name], 2),
                step_s=round(float(np.median(times[name])), 4),
                step_vs_default=round(float(np.median(ratio)), 3),
                steps_s=[round(t, 3) for t in times[name]]), FLAGS.out)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', DEFAULT_CONFIG)
  cli.run(main)
