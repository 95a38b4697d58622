"""The evidence runs' model and faces (`python -m launch.evidence`): the `cpu` variant of the
synthetic faces, the paper's geometry (144 px, M = 16, 48-px patches, overlap 16), narrowed so that
the 15 runs of the evidence regenerate in a few sittings on 2 CPU cores (README.md, Evidence).

Two levers keep the paper's network: every convolution width is halved again (1/32 of the paper's;
the U-Net at 144 px keeps much of its cost, so this alone is not enough), and each run trains on
1,500 synthetic faces instead of 3,000 (the test split keeps its size, 700, which the analyses use).

  python -m lnl_jax.main --config=configs/evidence.py --workdir=runs/evidence_one
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  c = dataset_config('synthetic', ','.join(filter(None, ('cpu', arg))))
  c.name = f'evidence:{arg}' if arg else 'evidence'
  c.model.width = 1 / 32
  c.data.num_train = 1500
  return c
