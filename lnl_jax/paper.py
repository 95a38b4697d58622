"""The paper's numbers: Tables IV–VII (test accuracy, %) and the settings they were measured at.

`lnl_jax.report` sets runs beside them; `launch.sweep` takes its swept values from them.
"""
from __future__ import annotations

# Table IV's names of the network with each `model.attention`.
MODEL_NAMES = {'none': 'Model-S', 'local': 'Model-Local', 'nonlocal': 'Model-NonLocal',
               'both': 'LNLAttenNet'}
# Table IV: the ablation rows (LNLAttenNet's row is also each dataset's headline number).
TABLE_IV = {
    'none': dict(affectnet=56.26, raf=83.80, sfew=54.82, ckplus=94.14, mmi=63.52),
    'local': dict(affectnet=57.63, raf=84.55, sfew=56.42, ckplus=96.44, mmi=65.42),
    'nonlocal': dict(affectnet=58.09, raf=85.04, sfew=55.73, ckplus=96.63, mmi=66.56),
    'both': dict(affectnet=59.28, raf=86.15, sfew=57.80, ckplus=98.18, mmi=68.75),
}
# Table V: accuracy against α = 0, 0.1, …, 1. Its α = 0.3 column equals the headline numbers on all
# five datasets, although the text says α = 0.7 was used (the text may weight g by α, i.e. Eq. 1's
# 1 − α); the table is reported as printed.
TABLE_V_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
TABLE_V = {
    'raf': (84.09, 85.60, 85.69, 86.15, 85.59, 85.33, 85.17, 85.23, 83.74, 83.54, 83.02),
    'sfew': (55.06, 55.73, 56.88, 57.80, 57.34, 57.11, 56.65, 56.88, 55.96, 54.59, 53.67),
    'ckplus': (96.02, 96.75, 97.56, 98.18, 98.30, 97.74, 97.36, 96.60, 96.22, 96.04, 95.28),
    'mmi': (67.00, 67.45, 68.50, 68.75, 68.88, 68.25, 67.50, 67.38, 66.93, 66.50, 66.25),
    'affectnet': (57.94, 58.71, 59.43, 59.28, 58.03, 57.80, 56.83, 56.86, 56.71, 56.66, 56.63),
}
# Table VI: accuracy against M = 4, 9, 16, 25, 36 (overlap ≈ P/3, Eq. 5).
TABLE_VI_PATCHES = (4, 9, 16, 25, 36)
TABLE_VI = {
    'raf': (84.97, 85.66, 86.15, 85.53, 85.63),
    'sfew': (55.28, 56.88, 57.80, 58.03, 57.80),
    'ckplus': (96.22, 97.17, 98.18, 97.92, 97.74),
    'mmi': (67.60, 67.90, 68.75, 68.83, 67.13),
    'affectnet': (58.06, 58.43, 59.28, 59.06, 57.97),
}
# Table VII (RAF-DB only): accuracy against the overlap in px at 144 px. Two more columns, 84.63 and
# 84.96, precede these; their overlaps are unreadable in the paper.
TABLE_VII = {'raf': {12: 85.29, 16: 86.15, 20: 86.16, 22: 86.24}}
TABLE_VII_UNREADABLE = (84.63, 84.96)
# The sweep's overlaps: the four readable columns and a guess of 8 px for an unreadable one.
TABLE_VII_OVERLAPS = (8, 12, 16, 20, 22)
PAPER_IMAGE_SIZE = 144
PAPER_ALPHA, PAPER_PATCHES = 0.7, 16


def eq5_overlap(image_size: int, num_patches: int) -> float:
  """The overlap (px) Eq. (5) gives with γ = 1/3: n·P − (n−1)·P/3 = S gives P = 3S / (2n + 1) and
  an overlap of P/3 = S / (2n + 1) px (16 px for the paper's 144 px and M = 16)."""
  return image_size / (2 * round(num_patches ** 0.5) + 1)
