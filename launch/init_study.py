"""Xavier vs He initialisation: activation scale at init and how fast training leaves chance.

  python -m launch.init_study --init=xavier --steps=400
  python -m launch.init_study --init=he --steps=400

Smoke-sized model (64 px, width 1/16, M = 16, head 64-32), 1,400 synthetic faces, batch 32, Adam 1e-3,
the real pipeline and train step on one device. Prints the std of g, f_en and the logits at init,
then the cross-entropy and running train accuracy every 50 steps.
"""
import time

import jax
import numpy as np
from absl import app, flags

from lnl_jax.config_base import dataset_config
from lnl_jax.data import pipeline, synthetic
from lnl_jax.models import create_model
from lnl_jax.steps import Parallel, create_optimizer, normalize

flags.DEFINE_enum('init', 'he', ['xavier', 'he'], 'model.init')
flags.DEFINE_integer('steps', 400, 'train steps')
FLAGS = flags.FLAGS


def main(_):
  config = dataset_config('synthetic', 'smoke')
  config.model.init, config.model.head_widths, config.train.learning_rate = FLAGS.init, (64, 32), 1e-3
  faces = synthetic.generate(1400, 64, seed=0, num_patches=16, overlap=8)
  parallel = Parallel(jax.devices()[:1])
  model = create_model(config.model, 64, 7)
  tx = create_optimizer(config.train, 1000)
  state = parallel.init_state(model, 64, tx, seed=0)
  logits, aux = model.apply({'params': state.params}, normalize(faces.images[:8]))
  print(f'init={FLAGS.init}: std at init: input {float(normalize(faces.images[:8]).std()):.3g}, '
        f'g {float(aux["g"].std()):.3g}, f_en {float(aux["f_en"].std()):.3g}, logits {float(logits.std()):.3g}')
  step_fn = parallel.jit_train_step(model, tx, config.train)
  step, correct, start = 0, [], time.time()
  for epoch in range(10**6):
    for batch in pipeline.train_batches(faces, batch_size=32, image_size=64, epoch=epoch, seed=0,
                                        crop_padding=4):
      state, m = step_fn(state, parallel.put_batch(batch))
      step += 1
      correct.append(int(m['correct']))
      if step % 50 == 0:
        print(f'step {step}: cross-entropy {float(m["cross_entropy"]):.3f}, train accuracy (last 50 '
              f'steps) {100 * np.mean(correct[-50:]) / 32:.1f}%, {time.time() - start:.0f}s', flush=True)
      if step >= FLAGS.steps:
        return


if __name__ == '__main__':
  app.run(main)
