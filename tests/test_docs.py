"""The README and docs/ name tests as their evidence; every test they name exists."""
import glob
import os
import re

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
