"""The README and docs/ name tests and quote bench records as their evidence: every test they name
exists, and the figures they quote are those of the records."""
import glob
import json
import os
import re

from launch import evidence_report as report
from fixtures import ROOT


def defined_tests() -> dict[str, set[str]]:
  """{file name: names of its test functions} for tests/test_*.py."""
  out = {}
  for path in glob.glob(os.path.join(ROOT, 'tests', 'test_*.py')):
    with open(path, encoding='utf-8') as f:
      out[os.path.basename(path)] = set(re.findall(r'^def (test_\w+)\(', f.read(), re.M))
  return out


def named_tests(text: str) -> list[tuple[str, str]]:
  """(file, test) for every `test_file.py::test_name` in `text`, and for every `::test_name` that
  follows one in the same table cell or sentence (it names a test of the same file)."""
  out = []
  for cell in re.split(r'\||\n\n', text):
    file = None
    for m in re.finditer(r'(?:(test_\w+\.py))?::(test_\w+)', cell):
      file = m[1] or file
      if file:
        out.append((file, m[2]))
  return out


def test_every_test_the_readme_and_docs_name_exists():
  named = []
  for path in [os.path.join(ROOT, 'README.md')] + glob.glob(os.path.join(ROOT, 'docs', '*.md')):
    with open(path, encoding='utf-8') as f:
      named += named_tests(f.read())
  assert len(named) >= 30  # the README's part-by-part table alone names more
  defined = defined_tests()
  missing = [f'{file}::{name}' for file, name in named if name not in defined.get(file, ())]
  assert not missing, missing


def bench_lines(name: str) -> list[dict]:
  with open(os.path.join(ROOT, 'docs', name), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def last(lines: list[dict], **match) -> dict:
  """The newest line whose fields equal `match`."""
  found = [r for r in lines if all(r.get(k) == v for k, v in match.items())]
  assert found, f'no record with {match}'
  return found[-1]


def test_the_readme_time_figures_are_those_of_their_records():
  """The figures of the README's evidence-time paragraphs, read from the bench records they cite:
  a record measured again, or a figure edited by hand, fails here until the two agree again."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    readme = ' '.join(f.read().split())  # line breaks are the editor's
  cpu = bench_lines('cpu_bench.jsonl')
  widths = bench_lines('evidence_bench.jsonl')
  expected = [
      f"trained {last(cpu, what='train_step', config='synthetic:cpu')['img_per_s']:.1f} and "
      f"evaluated {last(cpu, what='eval_step', config='synthetic:cpu')['img_per_s']:.1f} images/s",
      f"train step at {last(widths, what='train_step', width=1 / 16)['img_per_s']:.1f} img/s at "
      f"width 1/16 and {last(widths, what='train_step', width=1 / 32)['img_per_s']:.1f} at 1/32",
      f"({last(widths, what='part', part='unet', width=1 / 16)['step_s']:.2f} s of "
      f"{last(widths, what='train_step', width=1 / 16)['step_s']:.2f} s at 1/16, "
      f"{last(widths, what='part', part='unet', width=1 / 32)['step_s']:.2f} s of "
      f"{last(widths, what='train_step', width=1 / 32)['step_s']:.2f} s at 1/32)",
  ]
  # An evidence run at 1/32 (configs/evidence.py): 24 epochs of 46 batches of 32 training faces, 24
  # passes over the 700 test faces and the analyses' 700 + 700 + 200 × 16 faces, at that run's train
  # and eval rates, plus a minute; and scaled by the run's starting matmul rate to ~200 GFLOP/s.
  train = last(widths, what='train_step', width=1 / 32)['img_per_s']
  evaluate = last(widths, what='eval_step', width=1 / 32)['img_per_s']
  machine = max(i for i, r in enumerate(widths)
                if r['what'] == 'machine' and 'width=0.03125' in r['argv'])
  matmul = next(r for r in widths[machine:] if r['what'] == 'ceiling' and r['op'] == 'matmul')
  train_min, eval_min = 24 * 46 * 32 / train / 60, (24 * 700 + 700 + 700 + 200 * 16) / evaluate / 60
  minutes = train_min + eval_min + 1
  scaled = minutes * matmul['flop_per_s'] / 200e9
  expected += [
      f'At 1/32 the same run evaluated {evaluate:.1f} img/s',
      f'(35,328 images: {train_min:.1f} minutes at {train:.1f} img/s)',
      f'(21,400 images: {eval_min:.1f} minutes at {evaluate:.1f} img/s)',
      f"about {minutes:.0f} minutes a run**; that bench began at a matmul rate of "
      f"{matmul['flop_per_s'] / 1e9:.0f} GFLOP/s against ~200 on the free machine, and scaled to it "
      f"a run takes ~{scaled:.0f}. So the 15 runs take {15 * round(scaled) / 60:.1f}–"
      f"{15 * round(minutes) / 60:.1f} hours",
      f'gives these {scaled:.0f}–{minutes:.0f} minutes a run',
  ]
  assert report.MINUTES_PER_RUN == (round(scaled), round(minutes))
  missing = [e for e in expected if e not in readme]
  assert not missing, missing


def test_the_initialisation_study_quotes_its_records():
  """docs/initialisation.md's table rows, rendered from docs/init_study.jsonl (launch/init_study.py)."""
  with open(os.path.join(ROOT, 'docs', 'initialisation.md'), encoding='utf-8') as f:
    text = f.read()
  records = bench_lines('init_study.jsonl')
  for init in ('xavier', 'he'):
    r = last(records, what='init_study', init=init)
    std, end = r['std_at_init'], r['curve'][-1]
    assert end['step'] == r['steps']
    row = (f"| {init} | {std['input']:g} / {std['g']:g} / {std['f_en']:g} / {std['logits']:g} | "
           f"{end['cross_entropy']:.3f} | {end['train_accuracy']:.1f} % (chance {r['chance']:.1f} %) |")
    assert row in text, row
    assert f"python -m launch.init_study --inits=xavier,he --steps={r['steps']}" in text
