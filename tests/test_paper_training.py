"""The training side against references written from the paper, not from the code.

Eq. (3)–(4) (the loss) is recomputed in NumPy from the model's logits: cross-entropy over the
real examples of a padded batch plus λ·Σ‖W‖² over the kernels, found by walking the parameter
dict here. Sec. IV-A's recipe (24 epochs, 3e-4 multiplied by 0.95 each epoch, λ = 1e-4, 144-px
faces, flips and random crops, M = 16, 16-px overlap, α = 0.7, the mean of the last 10 epochs) is
written out as constants and compared with the default config, the schedule, and the steps the
real optimiser takes.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lnl_jax import metrics, steps, train
from lnl_jax.config_base import dataset_config
from lnl_jax.models import create_model
from fixtures import drawn_params, load_config_file


# Sec. IV-A and III-C of the paper, as printed.
PAPER_EPOCHS = 24
PAPER_LEARNING_RATE = 3e-4  # "the initial learning rate is 0.0003"
PAPER_DECAY_PER_EPOCH = 0.95  # "decay is set as 0.95 each epoch"
PAPER_LAMBDA = 1e-4  # Eq. (3): "λ is set as 0.0001"
PAPER_IMAGE_SIZE = 144  # "the original images are resized to 144×144"
PAPER_NUM_PATCHES = 16  # "The number M of local regions is set as 16"
PAPER_OVERLAP = 16  # "each patch overlaps about 16 pixels with its adjacent patches"
PAPER_ALPHA = 0.7  # Eq. (1)
PAPER_MEAN_OF_LAST = 10  # "All results are the average of the last 10 epochs"


def paper_learning_rate(step: int, steps_per_epoch: int) -> float:
  """3e-4 during the first epoch, multiplied by 0.95 at the start of each later one."""
  return PAPER_LEARNING_RATE * PAPER_DECAY_PER_EPOCH ** (step // steps_per_epoch)


# ----------------------------------------------------------------------------- Eq. (3)–(4)

def kernels(tree, path=()):
  """(path, array) of every leaf named 'kernel' in a nested parameter dict: the W of Eq. (3)."""
  for name, value in tree.items():
    if isinstance(value, Mapping):
      yield from kernels(value, path + (name,))
    elif name == 'kernel':
      yield path + (name,), np.asarray(value, np.float64)


def cross_entropy(logits, soft_labels, mask) -> float:
  """Eq. (4) in float64: −Σ_c y_c · log softmax(z)_c per example, averaged over the N real
  examples (mask True); padding and skipped images are not among the N."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  per_example = -(np.asarray(soft_labels, np.float64) * log_p).sum(-1)
  return float(per_example[mask].sum() / mask.sum())


@pytest.fixture(scope='module')
def smoke_model():
  """The smoke model, its parameters with non-zero biases (Xavier leaves them at 0, which would
  hide a penalty on biases), and an 8-row batch of which only the first 5 rows are real."""
  config = dataset_config('synthetic', 'smoke')
  size = config.data.image_size
  model = create_model(config.model, size, 7)
  params = drawn_params(model, jnp.zeros((1, size, size, 3)))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_unflatten(treedef, [
      x + 0.05 * rng.standard_normal(x.shape).astype(np.float32) if path[-1].key == 'bias' else x
      for path, x in leaves])

  labels = np.array([0, 3, 6, 2, 5, 1, 4, 3], np.int32)
  soft = np.eye(7, dtype=np.float32)[labels]
  soft[3:5] = rng.dirichlet(np.ones(7), 2)  # vote distributions (FERPlus-style soft labels)
  mask = np.arange(8) < 5  # rows 5..7: padding or skipped images, labels deliberately non-zero
  images = rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8)
  batch = dict(image=images, label=labels, soft_label=soft, mask=mask)
  # The logits from the model alone, with the paper's input scaling written out: [0, 255] → [−1, 1].
  logits, _ = jax.jit(model.apply)({'params': params}, images.astype(np.float32) / 127.5 - 1.0)
  return config, model, params, batch, np.asarray(logits)


def test_loss_is_masked_mean_cross_entropy_plus_lambda_times_kernel_norms(smoke_model):
  config, model, params, batch, logits = smoke_model
  assert config.train.weight_decay == PAPER_LAMBDA
  found = dict(kernels(params))
  # The reference walks every part: the stacked kernels of the M patch networks and the head's.
  assert any('members' in path and 'SimpleNet_0' in path for path in found)
  assert any('members' in path and 'LocalAttention_0' in path for path in found)
  assert sum('JointHead_0' in path for path in found) == 3
  assert found[('ensemble', 'members', 'SimpleNet_0', 'Conv_0', 'kernel')].shape[0] == 16
  penalty = sum(float(np.sum(w ** 2)) for w in found.values())
  ce = cross_entropy(logits, batch['soft_label'], batch['mask'])

  l2_penalty = jax.jit(steps.l2_penalty)  # one compilation for every call below (same tree)
  np.testing.assert_allclose(float(l2_penalty(params)), penalty, rtol=1e-5)
  # Part by part: only the leaves of one part kept, the rest zeroed.
  only = lambda keep: jax.tree_util.tree_map_with_path(
      lambda path, x: x if keep(tuple(k.key for k in path)) else jnp.zeros_like(x), params)
  for part in ('members', 'JointHead_0', 'UNet_0'):
    expected = sum(float(np.sum(w ** 2)) for path, w in found.items() if part in path)
    assert expected > 0
    np.testing.assert_allclose(float(l2_penalty(only(lambda path: part in path))), expected,
                               rtol=1e-5, err_msg=part)
  assert float(l2_penalty(only(lambda path: path[-1] == 'bias'))) == 0.0  # non-zero biases
  loss_fn = jax.jit(functools.partial(steps.loss_fn, model=model, weight_decay=PAPER_LAMBDA,
                                      label_smoothing=0.0))
  loss, (model_ce, _) = loss_fn(params, batch)
  np.testing.assert_allclose(float(model_ce), ce, rtol=1e-5)
  np.testing.assert_allclose(float(loss), ce + PAPER_LAMBDA * penalty, rtol=1e-6)


def test_evaluation_feeds_the_model_faces_scaled_as_in_training(smoke_model):
  """The eval step, behind every test accuracy, `predict` and `export`, gives the model the same
  [−1, 1] faces as the loss: its probabilities are the softmax of the logits written out above."""
  _, model, params, batch, logits = smoke_model
  out = jax.jit(functools.partial(steps.eval_step, model=model))(params, dict(image=batch['image']))
  z = logits.astype(np.float64)
  probs = np.exp(z - z.max(-1, keepdims=True))
  np.testing.assert_allclose(out['probs'], probs / probs.sum(-1, keepdims=True), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_array_equal(out['prediction'], logits.argmax(-1))


# ----------------------------------------------------------------------------- Sec. IV-A recipe

def test_default_config_is_the_papers_recipe():
  c = load_config_file('raf')
  assert c.train.num_epochs == PAPER_EPOCHS
  assert c.train.learning_rate == PAPER_LEARNING_RATE
  assert c.train.lr_decay == PAPER_DECAY_PER_EPOCH
  assert c.train.weight_decay == PAPER_LAMBDA
  assert c.train.mean_of_last == PAPER_MEAN_OF_LAST
  assert c.data.image_size == PAPER_IMAGE_SIZE
  assert c.data.flip and c.data.crop_padding > 0  # "image flips and random cropping"
  assert c.model.num_patches == PAPER_NUM_PATCHES
  assert c.model.overlap == PAPER_OVERLAP
  assert c.model.alpha == PAPER_ALPHA
  assert c.model.attention == 'both'  # LNLAttenNet itself, both attentions
  assert c.model.init == 'xavier'  # "initialized ... by Xavier initializer rather than pre-training"
  assert c.train.label_smoothing == 0.0 and c.data.erase_prob == 0.0  # nothing the paper does not do
  assert c.train.batch_size == 32  # not in the paper: the project's documented choice (README)


def test_learning_rate_changes_only_at_epoch_boundaries():
  train_config = load_config_file('raf').train
  steps_per_epoch = 12271 // 32  # RAF-DB basic's training set in batches of 32
  schedule = steps.create_learning_rate_fn(train_config, steps_per_epoch)
  for epoch in range(PAPER_EPOCHS):
    first, last = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1
    for step in (first, first + 1, last):
      assert float(schedule(step)) == pytest.approx(paper_learning_rate(step, steps_per_epoch),
                                                    rel=1e-6), (epoch, step)
  assert float(schedule(PAPER_EPOCHS * steps_per_epoch - 1)) == pytest.approx(
      3e-4 * 0.95 ** 23, rel=1e-6)


def test_adam_steps_follow_the_schedule():
  """With a constant gradient, each of Adam's bias-corrected steps is lr · g/(|g| + ε), which is
  lr · sign(g) to float32 precision: the size of the real optimiser's steps is the learning rate
  it used."""
  steps_per_epoch = 3
  tx = steps.create_optimizer(load_config_file('raf').train, steps_per_epoch)
  params = {'w': jnp.zeros(4)}
  grad = {'w': jnp.array([1.0, -2.0, 0.5, 3.0])}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(4 * steps_per_epoch):
    updates, state = update(grad, state, params)
    np.testing.assert_allclose(np.asarray(updates['w']),
                               -paper_learning_rate(step, steps_per_epoch) * np.sign(grad['w']),
                               rtol=1e-4, err_msg=f'step {step}')  # float32 √v̂; a decay is 5 %


class _OptimiserBuilt(Exception):
  pass


def test_training_decays_the_learning_rate_once_per_epoch_of_its_data(tmp_path, monkeypatch):
  """train_and_evaluate hands Adam the schedule of its own epoch length: 96 smoke faces in
  batches of 16 are 6 steps per epoch. It stops as soon as the optimiser is built (nothing runs)."""
  config = dataset_config('synthetic', 'smoke')
  steps_per_epoch = config.data.num_train // config.train.batch_size
  assert steps_per_epoch == 6
  schedules = []

  def adam(learning_rate, *args, **kw):
    schedules.append(learning_rate)
    raise _OptimiserBuilt
  monkeypatch.setattr(optax, 'adam', adam)
  steps._adam.cache_clear()  # optimisers are kept per settings: this run must build its own
  with pytest.raises(_OptimiserBuilt):
    train.train_and_evaluate(config, str(tmp_path))
  [schedule] = schedules
  for step in range(3 * steps_per_epoch):
    assert float(schedule(step)) == pytest.approx(paper_learning_rate(step, steps_per_epoch),
                                                  rel=1e-6), step


def test_reported_figure_is_the_mean_test_accuracy_of_the_last_10_epochs():
  """Sec. IV: "All results are the average of the last 10 epochs" of the 24."""
  accuracies = [50.0 + 1.5 * epoch + (epoch % 3) for epoch in range(1, PAPER_EPOCHS + 1)]
  history = [dict(epoch=e, step=100 * e, test_accuracy=a) for e, a in enumerate(accuracies, 1)]
  summary = metrics.summarize(history, np.eye(7, dtype=np.int64), tuple('abcdefg'),
                              load_config_file('raf').train.mean_of_last)
  epochs_15_to_24 = accuracies[14:]
  assert len(epochs_15_to_24) == PAPER_MEAN_OF_LAST and summary['mean_over_epochs'] == 10
  assert summary['test_accuracy_mean_last_epochs'] == pytest.approx(sum(epochs_15_to_24) / 10)
