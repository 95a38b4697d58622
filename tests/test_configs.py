"""The configs the README reports results for keep the geometry the paper fixes.

Expected values are written from the paper, not read from lnl_jax.geometry: 144×144 faces
(Sec. IV-A), M = 16 patches whose side solves Eq. (5) n·P − (n−1)·P/3 = 144 (P = 48, overlap 16,
stride 32), F5 at 144/16 = 9 pooled by Table I's 2×2/2 max-pool to 4×4, SimpleNet's pooled patch
map 48/8 = 6, and Table III's two valid 3×3 convolutions taking it to 4×4 and then 2×2.
"""
import ast
import glob
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lnl_jax.config_base import base_config, dataset_config
from lnl_jax.models import create_model
from lnl_jax.models.ensemble import LocalAttention
from lnl_jax.models.nonlocal_attention import NonLocalAttention
from fixtures import ROOT, load_config_file

CONFIG_NAMES = sorted(os.path.basename(p)[:-3]
                      for p in glob.glob(os.path.join(ROOT, 'configs', '*.py')))
RESULT_VARIANTS = ('', 'cpu', 'cpu,none', 'cpu,local', 'cpu,nonlocal', 'bf16')


@pytest.mark.parametrize('arg', RESULT_VARIANTS)
@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_result_configs_keep_the_papers_geometry(name, arg):
  c = load_config_file(name, arg or None)
  assert (c.data.image_size, c.model.num_patches, c.model.overlap) == (144, 16, 16)
  geo = create_model(c.model, c.data.image_size, 7).geometry
  assert geo.patch_size == 48
  assert geo.origins == (0, 32, 64, 96)
  assert geo.local_attention_valid


def test_cpu_variant_changes_only_widths():
  paper, cpu = load_config_file('synthetic'), load_config_file('synthetic', 'cpu')
  changed = {f'{block}.{k}' for block in ('data', 'model', 'train')
             for k, v in paper[block].items() if cpu[block][k] != v}
  assert changed == {'model.width', 'model.head_widths', 'model.init'}
  assert cpu.model.width < paper.model.width


def test_evidence_config_narrows_only_widths_and_the_training_faces():
  """The evidence runs' model is the cpu variant narrowed again, on fewer training faces; the
  test faces the analyses read stay."""
  cpu, evidence = load_config_file('synthetic', 'cpu'), load_config_file('evidence')
  changed = {f'{block}.{k}' for block in ('data', 'model', 'train')
             for k, v in cpu[block].items() if evidence[block][k] != v}
  assert changed == {'model.width', 'data.num_train'}
  assert evidence.model.width < cpu.model.width and evidence.data.num_train < cpu.data.num_train


def test_variants_are_comma_separated_words_that_name_the_run():
  """config_base's grammar: `raf.py:cpu,none` is the run 'raf:cpu,none'; spaces around the words
  are allowed; fold=K takes a whole K ≥ 0; any other word is refused. A dataset file's data fields
  are kept (FERPlus's 8 classes)."""
  c = dataset_config('raf', 'cpu,none')
  assert (c.name, c.model.attention, c.model.width) == ('raf:cpu,none', 'none', 1 / 16)
  assert dataset_config('raf', None).name == 'raf'
  c = dataset_config('ckplus', ' cpu , local,fold=3 ')
  assert (c.model.attention, c.model.width, c.data.fold) == ('local', 1 / 16, 3)
  for word in ('fold=-1', 'fold=x', 'fold=', 'smok'):
    with pytest.raises(ValueError, match='unknown config variant'):
      dataset_config('ckplus', word)
  assert load_config_file('ferplus').data.num_classes == 8


def test_every_default_the_readme_gives_is_the_configs():
  """The README's table of config fields (`| `data.flip` | True | …`, several fields to a row
  where it says `5, 0`) gives each field's default: base_config holds exactly those values."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    table = f.read().split('| field | default | meaning |\n')[1].split('\n\n')[0]
  rows = re.findall(r'^\| (`[^|]+`) \| ([^|]+) \|', table, re.M)
  config, checked = base_config(), []
  for names, default in rows:
    fields = re.findall(r'`([\w.]+)`', names)
    if default.strip() == 'per config':
      continue
    values = ast.literal_eval(default.strip())
    values = values if len(fields) > 1 else (values,)
    for field, value in zip(fields, values, strict=True):
      section, _, name = field.rpartition('.')
      got = (config[section] if section else config)[name]
      assert got == value and type(got) is type(value), (field, got, value)
      checked.append(field)
  assert {'seed', 'data.on_bad_image', 'model.head_widths', 'train.lr_decay'} <= set(checked)
  assert len(checked) >= 35


@pytest.mark.parametrize('name,arg', [('synthetic', ''), ('synthetic', 'cpu'), ('evidence', '')])
def test_traced_network_pools_and_pads_as_tables_i_and_iii(name, arg):
  """Shapes where the paper fixes them, recorded while the network is traced (no compilation)."""
  c = load_config_file(name, arg or None)
  c.model.ensemble = 'scan'  # one traced member instead of 16; same function
  model = create_model(c.model, c.data.image_size, 7)
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, (LocalAttention, NonLocalAttention)):
      seen.setdefault(type(context.module).__name__, args[0].shape)
    if context.module.name and context.module.name.startswith('Conv_') and isinstance(
        context.module.parent, LocalAttention):
      seen.setdefault(('local', context.module.name), out.shape[1:3])
    if context.module.name in ('query', 'key', 'value'):
      seen.setdefault('qkv_in', args[0].shape[1:3])
    return out

  x = jax.ShapeDtypeStruct((1, 144, 144, 3), jnp.float32)
  with nn.intercept_methods(record):
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    (logits, aux) = jax.eval_shape(model.apply, variables, x)
  assert seen['qkv_in'] == (9, 9)  # F5 = 144 / 16
  assert aux['r'].shape == (1, 16, 16)  # Q, K pooled 9×9 → 4×4 by the 2×2/2 max-pool: M = 16 rows
  assert seen['LocalAttention'][1:3] == (6, 6)  # SimpleNet's map of a 48-px patch
  assert seen[('local', 'Conv_0')] == (4, 4)  # 3×3 valid
  assert seen[('local', 'Conv_2')] == (2, 2)  # 3×3 valid
  assert logits.shape == (1, 7)
