"""Xavier vs He initialisation: activation scale at init and how fast training leaves chance.

  python -m launch.init_study [--inits=xavier,he] [--steps=400] [--out=FILE.jsonl]

Smoke-sized model (64 px, width 1/16, M = 16, head 64-32), 1,400 synthetic faces, batch 32, Adam 1e-3,
the real pipeline and train step on one device. For each init, prints the std of the input, g, f_en
and the logits at init, then the cross-entropy and the train accuracy of the last 50 steps every 50
steps, and writes one JSON line with all of them (appended to --out too).
"""
from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from launch.runs import report
from lnl_jax import cli, host
from lnl_jax.config_base import dataset_config
from lnl_jax.data import pipeline, synthetic
from lnl_jax.models import create_model
from lnl_jax.models.layers import KERNEL_INITS
from lnl_jax.steps import Parallel, create_optimizer, normalize

FLAGS = flags.FLAGS
flags.DEFINE_list('inits', ['xavier', 'he'], f'model.init values, one after another: '
                  f'{", ".join(KERNEL_INITS)}.')
flags.DEFINE_integer('steps', 400, 'Train steps per init (a multiple of 50).')
cli.define_once(flags.DEFINE_string, 'out', '', 'Append the JSON lines to this file too.')
BATCH, EVERY = 32, 50


def study(init: str, steps: int, faces) -> dict:
  """One init's record on `faces`: std at init, then cross-entropy and train accuracy every EVERY
  steps."""
  config = dataset_config('synthetic', 'smoke')
  config.model.init, config.model.head_widths, config.train.learning_rate = init, (64, 32), 1e-3
  parallel = Parallel(jax.devices()[:1])
  model = create_model(config.model, 64, 7)
  tx = create_optimizer(config.train, 1000)
  state = parallel.init_state(model, 64, tx, seed=0)
  inputs = normalize(faces.images[:8])
  logits, aux = model.apply({'params': state.params}, inputs)
  std = {k: float(np.std(v)) for k, v in
         (('input', inputs), ('g', aux['g']), ('f_en', aux['f_en']), ('logits', logits))}
  print(f'init={init}: std at init ' + ', '.join(f'{k} {v:.3g}' for k, v in std.items()), flush=True)
  step_fn = parallel.jit_train_step(model, config.train, 1000)
  step, correct, curve, start = 0, [], [], time.time()
  for epoch in range(10**6):
    for batch in pipeline.train_batches(faces, batch_size=BATCH, image_size=64, epoch=epoch, seed=0,
                                        crop_padding=4):
      state, m = step_fn(state, parallel.put_batch(batch))
      step += 1
      correct.append(int(m['correct']))
      if step % EVERY == 0:
        curve.append(dict(step=step, cross_entropy=round(float(m['cross_entropy']), 4),
                          train_accuracy=round(100 * np.mean(correct[-EVERY:]) / BATCH, 2)))
        print(f'init={init} step {step}: cross-entropy {curve[-1]["cross_entropy"]:.3f}, train '
              f'accuracy (last {EVERY} steps) {curve[-1]["train_accuracy"]:.1f}%, '
              f'{time.time() - start:.0f}s', flush=True)
      if step >= steps:
        return dict(what='init_study', init=init, steps=steps, batch=BATCH,
                    std_at_init={k: float(f'{v:.3g}') for k, v in std.items()}, curve=curve,
                    chance=round(100 / len(faces.class_names), 2))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = [i for i in FLAGS.inits if i not in KERNEL_INITS]
  if not FLAGS.inits or unknown or FLAGS.steps < EVERY or FLAGS.steps % EVERY:
    cli.fail(f'--inits must be among {", ".join(KERNEL_INITS)} and --steps a positive multiple of '
             f'{EVERY}.')
  host.keep_freed_memory()  # as every command that runs the model, before JAX starts its backend
  faces = synthetic.generate(1400, 64, seed=0, num_patches=16, overlap=8)  # the same for every init
  for init in FLAGS.inits:
    report(study(init, FLAGS.steps, faces), FLAGS.out)


if __name__ == '__main__':
  cli.run(main)
