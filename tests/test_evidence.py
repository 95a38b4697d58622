"""The evidence set (launch/evidence.py, launch/evidence_report.py): its metrics, its aggregate,
the README figures it renders, and the script end to end at smoke size.

The metric and aggregate checks use hand-made inputs whose answers are worked out in the comments;
the README check ties the block in README.md to the records committed under docs/results/.
"""
import json
import os
import subprocess

import numpy as np
import pytest

from launch import evidence
from launch import evidence_report as report
from lnl_jax import analysis, io
from lnl_jax.config_base import dataset_config
from lnl_jax.data import datasets
from lnl_jax.errors import ConfigError
import fixtures
from fixtures import GRID_BOXES as BOXES

ROOT = fixtures.ROOT
RESULTS = os.path.join(ROOT, 'docs', 'results')


def load(path):
  with open(path) as f:
    return json.load(f)


# --- metrics --------------------------------------------------------------------------------------

def test_normalised_crucial_measures_put_uniform_at_0_and_perfect_at_1():
  crucial = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], bool)
  uniform = analysis.crucial_mass(np.full((3, 4), 0.25), crucial)
  perfect = analysis.crucial_mass(np.array([[0.7, 0.3, 0, 0], [1, 0, 0, 0], [0.2, 0.3, 0.5, 0]]),
                                  crucial)
  for key in ('excess_normalised', 'top1_normalised', 'rank_normalised'):
    assert uniform[key] == pytest.approx(0, abs=1e-12), key
    assert perfect[key] == pytest.approx(1), key
  assert uniform['ci95_normalised'] == pytest.approx([0, 0], abs=1e-12)
  # The raw excess of the perfect wᵍ is 1 − k/M per face: (0.5 + 0.75 + 0.25) / 3.
  assert perfect['excess'] == pytest.approx(0.5)

  # Face 0: mass 0.8 against 0.5 -> 0.3 / 0.5 = 0.6; its crucial patches tie at ranks 1.5 (the best
  # possible, (k + 1) / 2) -> rank 1; they also tie for the top weight -> top-1 1.
  # Face 1: all mass off its one crucial patch -> (0 − 0.25) / 0.75 = −1/3; that patch ranks last
  # (4) against 2.5 random and 1 best -> (2.5 − 4) / (2.5 − 1) = −1; the top weight is shared by
  # three non-crucial patches -> top-1 0 -> (0 − 0.25) / 0.75 = −1/3.
  w = np.array([[0.4, 0.4, 0.1, 0.1], [0, 1 / 3, 1 / 3, 1 / 3]])
  r = analysis.crucial_mass(w, crucial[:2])
  assert r['excess_normalised'] == pytest.approx((0.6 - 1 / 3) / 2)
  assert r['rank_normalised'] == pytest.approx((1 - 1) / 2)
  assert r['top1_normalised'] == pytest.approx((1 - 1 / 3) / 2)
  half = 1.959964 * np.std([0.6, -1 / 3], ddof=1) / np.sqrt(2)
  assert r['ci95_normalised'] == pytest.approx([(0.6 - 1 / 3) / 2 - half, (0.6 - 1 / 3) / 2 + half],
                                               abs=1e-5)
  # Half the weight tied on one crucial and one non-crucial patch: top-1 is shared, 0.5 against
  # chance 0.5 -> 0 (the first-index argmax of top1_crucial would call it a hit).
  tied = analysis.crucial_mass(np.array([[0.5, 0, 0.5, 0]]), crucial[:1])
  assert tied['top1_normalised'] == pytest.approx(0) and tied['top1_crucial'] == 1
  assert set(analysis.crucial_mass(w, np.zeros((2, 4), bool))) >= {'excess_normalised',
                                                                    'rank_normalised'}


# On the toy 3×3 grid (GRID_BOXES): per face, how its wˡ answers grey pixels: 'follows' falls with the grey share of each patch,
# 'opposes' rises with it, 'global' falls by 0.3 on every patch when any pixel is grey, 'blind'
# stays put.
FACES = ('follows', 'follows', 'opposes', 'global', 'blind')


def kinds_model(images):
  grey = np.all(images == analysis.GREY, axis=-1)
  share = np.stack([grey[:, t:b, l:r].mean((1, 2)) for t, l, b, r in BOXES], axis=1)  # (N, 9)
  w = np.full(share.shape, 0.5)
  for n, kind in enumerate(FACES):
    if kind == 'global':
      w[n] -= 0.3 * grey[n].any()
    elif kind != 'blind':
      w[n] -= (0.4 if kind == 'follows' else -0.4) * share[n]
  return dict(prediction=np.zeros(len(images), int), w_local=w)


def test_occlusion_counts_face_by_face_how_often_the_occluded_patch_falls():
  images = np.random.default_rng(0).integers(0, 256, (5, 14, 14, 3), dtype=np.uint8)
  images[images == analysis.GREY] = 127
  r = analysis.occlusion_analysis(kinds_model, images, np.zeros(5, int), BOXES)
  # The occluded patch's own wˡ falls on 'follows' (0.4) and 'global' (0.3) faces, rises on
  # 'opposes' (−0.4), stays on 'blind': 3 of 5 faces. It falls by more than the others' mean only
  # on 'follows' faces (the others fall by less than 0.4 there; on 'global' faces all fall alike).
  assert r['own_drop_rate'] == pytest.approx([0.6] * 9)
  assert r['own_drop_beyond_others_rate'] == pytest.approx([0.4] * 9)
  face = r['per_face']
  assert face['num_faces'] == 5
  assert face['own_drop_rate'] == pytest.approx(0.6)
  assert face['own_drop_beyond_others_rate'] == pytest.approx(0.4)
  assert face['own_drop'] == pytest.approx((0.4 + 0.4 - 0.4 + 0.3 + 0) / 5)
  # Others' fall on a 'follows' face: 0.4 × the share of patch j covered by patch i's box, averaged
  # over the 8 others and the 9 patches. Ordered pairs overlap 2 × (6 horizontal + 6 vertical
  # neighbour pairs × 12 px + 8 diagonal pairs × 4 px) = 352 px of 36-px patches.
  k = 352 / 36 / 9 / 8
  assert face['others_drop'] == pytest.approx((0.4 * k + 0.4 * k - 0.4 * k + 0.3 + 0) / 5)
  diffs = [0.4 - 0.4 * k, 0.4 - 0.4 * k, -(0.4 - 0.4 * k), 0.0, 0.0]
  assert face['own_minus_others'] == pytest.approx(np.mean(diffs))
  half = 1.959964 * np.std(diffs, ddof=1) / np.sqrt(5)
  assert face['ci95'] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], abs=1e-5)
  # The mean over faces hides the 'opposes' face: the per-patch mean fall is positive.
  assert r['own_drop'] == pytest.approx([0.14] * 9)


def test_seed_stats_use_the_t_distribution():
  s = report.seed_stats([1.0, 2.0, 3.0], [0, 1, 2])
  # t(0.975, 2 degrees of freedom) = 4.302652729911275 (tables); std 1.
  half = 4.302652729911275 / np.sqrt(3)
  assert s['mean'] == 2 and s['std'] == pytest.approx(1)
  assert s['ci95'] == pytest.approx([2 - half, 2 + half])
  assert s['seeds'] == [0, 1, 2] and s['values'] == [1, 2, 3]
  one = report.seed_stats([5.0], [3])
  assert one['mean'] == 5 and one['std'] is None and one['ci95'] is None


# --- aggregate and README -------------------------------------------------------------------------

def write_record(results, name, seed, attention, final, mean_last, excess=0.0, own_minus=0.0,
                 occlusion_prob=0.0, wall_s=1500.0, from_scratch=True):
  d = os.path.join(results, name)
  os.makedirs(d)
  io.write_json(os.path.join(d, 'config.json'), dict(
      seed=seed, model=dict(attention=attention), data=dict(occlusion_prob=occlusion_prob)))
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    f.write('{}\n')
  io.write_json(os.path.join(d, 'summary.json'), dict(
      test_accuracy_last_epoch=final, test_accuracy_mean_last_epochs=mean_last, epochs=24,
      mean_over_epochs=10, confusion_matrix=[[300, 50], [50, 300]], class_names=list('abcdefg')))
  crucial = {k: 0.5 for k in report.CRUCIAL_KEYS}
  crucial.update(excess_normalised=excess, num_faces=700)
  io.write_json(os.path.join(d, 'crucial.json'), crucial)
  per_face = {k: 0.1 for k in report.OCCLUSION_FACE_KEYS}
  per_face['own_minus_others'] = own_minus
  io.write_json(os.path.join(d, 'occlusion.json'), dict(
      per_face=per_face, clean_accuracy=80.0, accuracy=[70.0, 60.0], occluders_accuracy=50.0,
      num_images=200, clean_faces=700))
  io.write_json(os.path.join(d, 'run.json'), dict(commit='0123456789abcdef', modified=[], diff='',
                                                  usable_cores=2, wall_s=wall_s,
                                                  from_scratch=from_scratch))


def test_aggregate_checks_table_iv_and_both_claims(tmp_path):
  results = str(tmp_path)
  # The models pair by seed. Mean of the last epochs, seed 0 / 1: local − none +2.5 / −0.5 (mean
  # +1.0; 95 % interval ±12.706 × 2.121 / √2 = ±19.06: includes 0), nonlocal − local +3.0 / +3.2
  # (+3.1 ± 1.27: above 0), both − nonlocal −1.0 / −1.1 (−1.05 ± 0.635: below 0). Last epoch:
  # +5, +0.5, −0.5 on both seeds (no spread: above, above, below). Normalised excess: nonlocal's
  # t-interval straddles 0, both's lies above; own − others: local's lies below 0 (−0.029 ±
  # 0.0127), both's above (0.051 ± 0.0127).
  table = {'none': ((50, 50), (52.5, 54.5), 0, 0),
           'local': ((55, 55), (55, 54), 0, (-0.030, -0.028)),
           'nonlocal': ((55.5, 55.5), (58, 57.2), (0.2, -0.1), 0),
           'both': ((55, 55), (57, 56.1), (0.30, 0.32), (0.050, 0.052))}
  for v, (final, last, excess, own) in table.items():
    for s in (0, 1):
      pick = lambda x: x[s] if isinstance(x, tuple) else x
      # Run times: 25 minutes, but 20 for Model-S seed 0; a resumed run's 100 are not counted.
      write_record(results, f'attention_{v}_seed{s}', s, v, final[s], last[s], pick(excess),
                   pick(own), wall_s={('none', 0): 1200, ('local', 1): 6000}.get((v, s), 1500),
                   from_scratch=(v, s) != ('local', 1))
  planned = [m.name for m in evidence.runs([0, 1])]
  os.makedirs(os.path.join(results, 'occluded_both_seed1'))  # incomplete: not counted
  write_record(results, 'occluded_both_seed0', 0, 'both', 60, 60, 0.4, 0.07, occlusion_prob=0.3)
  e = report.aggregate(results, planned, dict(config=report.DEFAULT_CONFIG, seeds=[0, 1]))
  assert e['missing'] == ['occluded_both_seed1'] and len(e['recorded']) == 9
  none = e['accuracy']['attention_none']['mean_last']
  # t(0.975, 1) = 12.706204736174707; std √2, n 2 -> half-width 12.706.
  assert none['mean'] == 53.5 and none['std'] == pytest.approx(np.sqrt(2))
  assert none['ci95'] == pytest.approx([53.5 - 12.706204736174707, 53.5 + 12.706204736174707])
  order = e['claims']['table_iv']['ordering']
  assert order['mean_last']['holds'] is False and order['mean_last']['beyond_spread'] is False
  assert [p['vs_spread'] for p in order['mean_last']['pairs']] == ['within', 'above', 'below']
  last_pair = order['mean_last']['pairs'][-1]
  assert last_pair['difference'] == pytest.approx(-1.05) and last_pair['seeds'] == [0, 1]
  assert last_pair['paired_difference']['values'] == pytest.approx([-1.0, -1.1])
  assert order['final']['holds'] is False
  assert [p['difference'] for p in order['final']['pairs']] == pytest.approx([5, 0.5, -0.5])
  assert order['final']['reversed'] == ['both-nonlocal']
  assert [p['vs_spread'] for p in order['final']['pairs']] == ['above', 'above', 'below']
  assert e['claims']['nonlocal_finds_crucial'] == {
      'attention_nonlocal': 'not shown', 'attention_both': 'holds', 'occluded_both': None}
  assert e['claims']['local_downweights_occluded'] == {
      'attention_local': 'refuted', 'attention_both': 'holds', 'occluded_both': None}  # 1 seed
  assert e['occlusion']['attention_both']['grey_patch_accuracy']['mean'] == 65
  # An interval above 0 is not enough: the effect must reach the analysis module's minimum.
  for s, size in ((0, 0.019), (1, 0.0)):
    path = os.path.join(results, f'attention_both_seed{s}', 'crucial.json')
    io.write_json(path, dict(load(path), excess=size))
    path = os.path.join(results, f'attention_both_seed{s}', 'occlusion.json')
    o = load(path)
    io.write_json(path, dict(o, per_face=dict(o['per_face'], own_drop=size / 2)))
  small = report.aggregate(results, planned)['claims']
  assert small['nonlocal_finds_crucial']['attention_both'] == 'not shown'
  assert small['local_downweights_occluded']['attention_both'] == 'not shown'
  assert e['runs']['occluded_both_seed0']['occlusion_prob'] == 0.3

  text = report.render(e)
  assert '**9 of 10 runs recorded**' in text and 'occluded_both_seed1' in text
  # One missing run at the 8 from-scratch runs' 20–25 minutes: 0.33–0.42 hours.
  assert ('about 0.3–0.4 hours on 2 CPU cores, at the 20–25 minutes of the 8 runs timed from '
          'scratch') in text
  # Every run recorded: the time to regenerate all ten, 10 × 20–25 minutes.
  assert ('**All 10 runs recorded.** Regenerating them all takes about 3.3–4.2 hours on 2 CPU '
          'cores, at the 20–25 minutes of the 8 runs timed from scratch: `python -m launch.evidence '
          '--config=configs/evidence.py --results_dir=DIR` with an empty DIR (resumable;'
          ) in report.render(dict(e, missing=[], recorded=planned))
  assert 'every run: commit 0123456789ab.' in text
  assert '| Model-S | 50.0 ± 0.0 [50.0, 50.0] | 53.5 ± 1.4 [40.8, 66.2] |' in text
  assert 'test accuracy % on 700 test faces, chance 14.3 %; 24 epochs' in text
  assert ('S < Local < NonLocal < LNLAttenNet (mean of the last epochs) does not hold on the means '
          'of the seed-paired differences; every step beyond the seed spread: no; reversed beyond '
          'it: LNLAttenNet − Model-NonLocal.') in text
  assert 'Resumed from their own checkpoints: attention_local_seed1 (tests/' in text
  assert ('Model-Local − Model-S +1.0 points (seeds 0, 1; 95 % interval −18.1 to +20.1, includes '
          '0: within the seed spread)') in text
  assert ('LNLAttenNet − Model-NonLocal −1.1 points (seeds 0, 1; 95 % interval −1.7 to −0.4, below '
          '0: reversed beyond the seed spread)') in text
  assert '| Model-NonLocal | 0.050 ± 0.212 [−1.856, 1.956] |' in text
  assert text.count('| refuted |') == 1 and '| not shown |' in text
  assert '| LNLAttenNet, occlusion-trained | 0.400 (1 seed) |' in text
  path = os.path.join(results, 'attention_none_seed1', 'run.json')
  io.write_json(path, dict(load(path), commit='fedcba9876543210', modified=['lnl_jax/train.py'],
                           diff='--- a/lnl_jax/train.py\n'))
  text = report.render(report.aggregate(results, planned))
  assert ('commit fedcba987654 with local changes (their diff in run.json) (attention_none_seed1)'
          in text)
  made = load(path)
  del made['diff']  # a record without the diff
  io.write_json(path, made)
  text = report.render(report.aggregate(results, planned))
  assert ('commit fedcba987654 with local changes to lnl_jax/train.py (diff not recorded) '
          '(attention_none_seed1)') in text
  io.write_json(path, dict(load(path), commit=None, modified=[]))
  text = report.render(report.aggregate(results, planned))
  assert 'commit unknown (no git checkout) (attention_none_seed1)' in text
  one = {n: r for n, r in e['runs'].items() if n == 'attention_none_seed0'}  # 20 minutes
  assert report._hours(3, one) == ('about 1.0 hours on 2 CPU cores, at the 20 minutes of the one '
                                   'run timed from scratch; ')


def test_a_model_at_chance_in_any_seed_decides_no_attention_claim(tmp_path):
  # write_record's test faces: 350 of each of two classes. Always answering one scores 50 %; the
  # one-sided 97.5 % bound over 700 faces is 50 + 100 × 1.96 × √(0.25 / 700) = 53.70 %.
  results = str(tmp_path)
  for v in ('local', 'both'):
    for s, final in ((0, 80.0), (1, 53.6 if v == 'both' else 53.8)):
      write_record(results, f'attention_{v}_seed{s}', s, v, final, final, excess=0.3,
                   own_minus=0.05 + 0.001 * s)
  planned = ['attention_local_seed0', 'attention_local_seed1', 'attention_both_seed0',
             'attention_both_seed1']
  e = report.aggregate(results, planned, dict(config=report.DEFAULT_CONFIG, seeds=[0, 1]))
  assert e['accuracy']['attention_both']['at_chance_seeds'] == [1]
  assert e['accuracy']['attention_local']['at_chance_seeds'] == []
  # LNLAttenNet's intervals lie above 0 like Model-Local's, but its seed 1 learned nothing.
  assert e['claims']['local_downweights_occluded'] == {'attention_local': 'holds',
                                                       'attention_both': 'at chance'}
  assert e['claims']['nonlocal_finds_crucial'] == {'attention_both': 'at chance'}
  text = report.render(e)
  assert text.count('| at chance (seed 1) |') == 2 and text.count('| holds |') == 1
  assert 'nor do the seeds of a model that is at chance in any of them' in text
  # An evidence.json aggregated without the gate is refused, not rendered as if gated.
  old = json.loads(json.dumps(e))
  del old['accuracy']['attention_both']['at_chance_seeds']
  with pytest.raises(ConfigError, match='--aggregate'):
    report.render(old)


def test_table_iv_pairs_models_on_the_seeds_they_share():
  # Model-S on seeds 0, 1, 2 and Model-Local on 1, 2: the means differ by 66.5 − 60 = 6.5, the
  # shared seeds by 2 and 1 (mean 1.5; 95 % interval ±12.706 × 0.707 / √2 = ±6.35). Model-NonLocal
  # and LNLAttenNet have only seed 5: no seed in common with Model-Local, one with each other.
  acc = lambda values, seeds: {'mean_last': report.seed_stats(values, seeds)}
  groups = {'attention_none': acc([50, 60, 70], [0, 1, 2]),
            'attention_local': acc([62, 71], [1, 2]),
            'attention_nonlocal': acc([40], [5]), 'attention_both': acc([45], [5])}
  order = report._ordering(groups, 'mean_last')
  first, second, third = order['pairs']
  assert first['seeds'] == [1, 2] and first['difference'] == pytest.approx(1.5)
  assert report._pair_text(first) == (
      'Model-Local − Model-S +1.5 points (seeds 1, 2; 95 % interval −4.9 to +7.9, includes 0: '
      'within the seed spread)')
  assert second['difference'] is None and second['vs_spread'] is None
  assert report._pair_text(second) == 'Model-NonLocal − Model-Local: no seed in common'
  assert report._pair_text(third) == 'LNLAttenNet − Model-NonLocal +5.0 points (seed 5)'
  assert order['complete'] and not order['decided'] and order['holds'] is None
  assert report.ordering_verdict(order) == (
      'is not decided yet: it needs two seeds shared by every consecutive pair of models')
  del groups['attention_both']
  assert report.ordering_verdict(report._ordering(groups, 'mean_last')) == (
      'is not decided yet: it needs all four models')


def test_render_says_plainly_when_nothing_is_measured(tmp_path):
  planned = [m.name for m in evidence.runs([0, 1, 2])]
  e = report.aggregate(str(tmp_path), planned, dict(config=report.DEFAULT_CONFIG))
  text = report.render(e)
  assert 'have not been run' in text and 'python -m launch.evidence' in text
  assert 'about 1.3–2.3 hours on 2 CPU cores, estimated below' in report.render(  # 6 × 13, 23 min
      dict(e, missing=planned[:6], planned=planned[:6]))
  assert '%' not in text.replace('100 %', '')  # no measured figure
  assert 'Runs: 15 (' in text
  readme = f'a\n{report.EVIDENCE_BEGIN}\nold\n{report.EVIDENCE_END}\nb\n'
  assert report.readme_block(report.replace_block(readme, text)) == text


def test_a_readme_without_a_whole_evidence_block_is_refused():
  """The block is rendered between its two markers; a README missing the end marker, or with it
  before the beginning, is refused rather than cut (which would drop or duplicate its text)."""
  begin, end = report.EVIDENCE_BEGIN, report.EVIDENCE_END
  for text in (f'a\n{begin}\nold\n', f'a\n{end}\nold\n{begin}\nb\n', 'a\n'):
    with pytest.raises(ConfigError, match='no evidence block'):
      report.replace_block(text, 'new')
  assert report.replace_block(f'a\n{begin}\nold\n{end}\nb\n', 'new') == (
      f'a\n{begin}\nnew\n{end}\nb\n')


def test_readme_quotes_exactly_what_the_committed_records_give():
  e = load(os.path.join(RESULTS, report.EVIDENCE_JSON))
  for name in e['recorded']:
    for f in report.RECORD_FILES:
      assert os.path.exists(os.path.join(RESULTS, name, f)), (name, f)
  assert e == json.loads(json.dumps(report.aggregate(RESULTS, e['planned'], e['settings'])))
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  assert report.readme_block(readme) == report.render(e)
  # Nothing else in the records folder: no checkpoints, no images.
  allowed = set(e['recorded']) | {report.EVIDENCE_JSON}
  assert set(os.listdir(RESULTS)) <= allowed


# --- the runs and their records -------------------------------------------------------------------

def test_runs_are_planned_in_table_iv_order_and_checked():
  """The runs follow Table IV's row order whatever order --variants gives, then the
  occlusion-trained LNLAttenNet per seed; --occlusion_prob=0 leaves those out, a value outside
  [0, 1] or an unknown variant is refused, and --only picks runs in the planned order, refusing a
  name that is not planned (a typo would otherwise run nothing)."""
  planned = evidence.runs([0, 1], ('both', 'none'))
  assert [m.name for m in planned] == [
      'attention_none_seed0', 'attention_none_seed1', 'attention_both_seed0',
      'attention_both_seed1', 'occluded_both_seed0', 'occluded_both_seed1']
  assert planned[0].overrides == {'model.attention': 'none', 'seed': 0, 'data.occlusion_prob': 0.0}
  assert planned[-1].overrides == {'model.attention': 'both', 'seed': 1, 'data.occlusion_prob': 0.3}
  assert [m.name for m in evidence.runs([3], ('local',), occlusion_prob=0)] == [
      'attention_local_seed3']
  for prob in (-0.1, 1.5):
    with pytest.raises(ConfigError, match='must be a probability'):
      evidence.runs([0], occlusion_prob=prob)
  with pytest.raises(ConfigError, match="'global' is not one of"):
    evidence.runs([0], ('none', 'global'))
  chosen = evidence.select(planned, ['occluded_both_seed0', 'attention_none_seed1'])
  assert [m.name for m in chosen] == ['attention_none_seed1', 'occluded_both_seed0']
  with pytest.raises(ConfigError, match='attention_both_seed2 not among the planned runs'):
    evidence.select(planned, ['attention_both_seed0', 'attention_both_seed2'])


def test_a_record_replaces_an_old_one_whole(tmp_path):
  """`record` writes RESULTS/<run>/ whole: the workdir's small files and the analyses, over an
  earlier record of the run (none of whose files survive) and over a .partial folder an
  interrupted record left behind (which is gone afterwards)."""
  workdir, results = tmp_path / 'runs' / 'attention_both_seed0', tmp_path / 'results'
  workdir.mkdir(parents=True)
  for f in report.WORKDIR_FILES:
    (workdir / f).write_text(f'new {f}\n')
  (results / 'attention_both_seed0').mkdir(parents=True)
  (results / 'attention_both_seed0' / 'stale.json').write_text('{}')
  (results / 'attention_both_seed0.partial').mkdir()
  (results / 'attention_both_seed0.partial' / 'crucial.json').write_text('{"half": ')
  path = evidence.record(str(workdir), str(results), 'attention_both_seed0',
                         {'crucial.json': dict(mass=0.5), 'run.json': dict(wall_s=1.0)})
  assert path == str(results / 'attention_both_seed0')
  assert sorted(os.listdir(results)) == ['attention_both_seed0']
  assert sorted(os.listdir(path)) == sorted(report.WORKDIR_FILES + ('crucial.json', 'run.json'))
  assert load(os.path.join(path, 'crucial.json')) == dict(mass=0.5)
  with open(os.path.join(path, 'summary.json')) as f:
    assert f.read() == 'new summary.json\n'


def test_a_record_counts_when_every_file_is_there_and_seeds_group_by_kind(tmp_path):
  """A run is recorded only when its folder holds every record file, run.json and the analyses
  included (a record missing one would be aggregated without what it lacks); its kind is its name
  without the seed, for any number of digits."""
  write_record(str(tmp_path), 'attention_both_seed12', 12, 'both', 80.0, 80.0)
  assert report.is_recorded(str(tmp_path), 'attention_both_seed12')
  for f in ('run.json', 'occlusion.json'):
    os.rename(tmp_path / 'attention_both_seed12' / f, tmp_path / f)
    assert not report.is_recorded(str(tmp_path), 'attention_both_seed12'), f
    os.rename(tmp_path / f, tmp_path / 'attention_both_seed12' / f)
  assert report.group_of('attention_both_seed12') == 'attention_both'
  assert report.group_of('occluded_both_seed0') == 'occluded_both'


# --- the script -----------------------------------------------------------------------------------

def test_analysis_faces_are_the_runs_test_split(tmp_path):
  config = dataset_config('synthetic', 'smoke')
  config.data.num_train, config.data.num_test, config.data.limit = 20, 12, 8
  _, test = datasets.load_splits(config.data, config.seed, 16, 8)
  faces = evidence.analysis_faces(config, 0.0, str(tmp_path))
  assert len(faces) == 8  # data.limit applies
  assert np.array_equal(faces.images, test.images) and np.array_equal(faces.crucial, test.crucial)
  occluded = evidence.analysis_faces(config, 1.0, str(tmp_path))
  assert np.array_equal(occluded.labels, test.labels)
  assert not np.array_equal(occluded.images, test.images)


SMOKE = ('--config=configs/synthetic.py:smoke', '--config.data.num_train=16',
         '--config.data.num_test=16', '--seeds=0', '--variants=both', '--occlusion_prob=0.5',
         '--crucial_faces=16', '--occlusion_faces=4')


def run(*args):
  return fixtures.run_module('launch.evidence', *args)


def test_evidence_script_end_to_end(tmp_path):
  runs, results, readme = (str(tmp_path / d) for d in ('runs', 'results', 'README.md'))
  with open(readme, 'w') as f:
    f.write(f'# x\n{report.EVIDENCE_BEGIN}\n{report.EVIDENCE_END}\n')
  args = (*SMOKE, f'--runs_dir={runs}', f'--results_dir={results}', f'--readme_path={readme}')
  names = ['attention_both_seed0', 'occluded_both_seed0']

  printed = run(*args, '--print_only')
  assert [line.split('--only=')[1].split()[0] for line in printed.stdout.splitlines()] == names

  run(*args, '--only=attention_both_seed0')
  e = load(os.path.join(results, 'evidence.json'))
  assert e['recorded'] == names[:1] and e['missing'] == names[1:]
  with open(readme) as f:
    assert '**1 of 2 runs recorded**' in f.read()

  summary = os.path.join(runs, names[0], 'summary.json')
  trained_at = os.path.getmtime(summary)
  second = run(*args)
  assert 'attention_both_seed0: recorded already' in second.stderr
  assert os.path.getmtime(summary) == trained_at

  e = load(os.path.join(results, 'evidence.json'))
  assert e['recorded'] == names and e['missing'] == []
  assert sorted(os.listdir(results)) == sorted(names + ['evidence.json'])
  for name in names:
    assert sorted(os.listdir(os.path.join(results, name))) == sorted(report.RECORD_FILES)
    config = load(os.path.join(results, name, 'config.json'))
    assert config['data']['occlusion_prob'] == (0.5 if name.startswith('occluded') else 0.0)
    crucial = load(os.path.join(results, name, 'crucial.json'))
    occlusion = load(os.path.join(results, name, 'occlusion.json'))
    assert crucial['num_faces'] + crucial['faces_left_out'] == 16 == occlusion['clean_faces']
    assert occlusion['num_images'] == 4 and len(occlusion['own_drop_rate']) == 16
    assert crucial['step'] == load(summary)['steps'] == 2
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    made = load(os.path.join(results, name, 'run.json'))
    assert made['commit'] == (head.stdout.strip() if head.returncode == 0 else None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    assert made['from_scratch'] and made['wall_s'] > 0 and made['usable_cores'] == cores
  with open(readme) as f:
    assert report.readme_block(f.read()) == report.render(e)
  assert e == json.loads(json.dumps(report.aggregate(results, e['planned'], e['settings'])))



def git_repo(path):
  """A fresh git repository at `path`; returns its `git` command."""
  git = lambda *a: subprocess.run(['git', *a], cwd=path, check=True, capture_output=True,
                                  text=True).stdout
  git('init', '-q')
  git('config', 'user.email', 'evidence@example.org')
  git('config', 'user.name', 'evidence')
  return git


def test_code_version_names_the_commit_and_the_changed_code(tmp_path):
  assert evidence.code_version(str(tmp_path)) == dict(commit=None, modified=[], diff='')
  git = git_repo(tmp_path)
  for d in ('lnl_jax', 'launch', 'configs', 'docs'):
    (tmp_path / d).mkdir()
    (tmp_path / d / 'a.py').write_text('a\n')
  git('add', '.')
  git('commit', '-q', '-m', 'start')
  head = git('rev-parse', 'HEAD').strip()
  assert evidence.code_version(str(tmp_path)) == dict(commit=head, modified=[], diff='')
  (tmp_path / 'lnl_jax' / 'a.py').write_text('b\n')
  (tmp_path / 'configs' / 'new.py').write_text('b\n')
  (tmp_path / 'docs' / 'a.py').write_text('b\n')  # not code
  code = evidence.code_version(str(tmp_path))
  assert (code['commit'], code['modified']) == (head, ['configs/new.py', 'lnl_jax/a.py'])
  assert 'lnl_jax/a.py' in code['diff'] and '\n-a\n+b\n' in code['diff']
  assert 'b/configs/new.py' in code['diff'] and 'new file mode' in code['diff']  # untracked
  assert 'docs/a.py' not in code['diff']


def test_commit_takes_only_the_given_paths(tmp_path):
  git = git_repo(tmp_path)
  for f in ('README.md', 'other.txt'):
    (tmp_path / f).write_text('a\n')
  git('add', '.')
  git('commit', '-q', '-m', 'start')
  record = tmp_path / 'results' / 'attention_none_seed0'
  record.mkdir(parents=True)
  (record / 'summary.json').write_text('{}\n')
  (tmp_path / 'README.md').write_text('b\n')
  (tmp_path / 'other.txt').write_text('b\n')
  evidence.git_commit([str(record), str(tmp_path / 'README.md')], 'evidence: attention_none_seed0')
  assert git('log', '-1', '--format=%s') == 'evidence: attention_none_seed0\n'
  assert sorted(git('show', '--name-only', '--format=', 'HEAD').split()) == [
      'README.md', 'results/attention_none_seed0/summary.json']
  assert git('status', '--porcelain') == ' M other.txt\n'


# --- the analyses' statistics, worked by hand ------------------------------------------------

def test_at_chance_is_the_binomial_bound_of_the_majority_guesser():
  # 4 faces, 2 balanced classes: p = 0.5, bound 0.5 + 1.959964 · √(0.25 / 4) = 0.98999.
  labels = [0, 1, 0, 1]
  assert analysis.at_chance(98.9, labels)
  assert not analysis.at_chance(99.1, labels)
  # 100 faces, balanced: bound 0.5 + 1.959964 · 0.05 = 0.59800 (√(p(1−p)/99) would give 0.59849).
  balanced = [0, 1] * 50
  assert analysis.at_chance(59.75, balanced) and not analysis.at_chance(59.83, balanced)


def test_evidence_at_chance_counts_the_true_classes_in_the_rows():
  # 100 test faces, 90 of class 0 (row sums 90, 10); the model predicts 50 / 50 (column sums) and
  # is right on 60. Always answering class 0 scores 90 %: 60 % is at chance. (Counting the
  # predictions instead gives p = 0.5, bound 59.8 %, and calls the model better than chance.)
  summary = dict(confusion_matrix=[[50, 40], [0, 10]], test_accuracy_last_epoch=60.0)
  assert report.run_at_chance(summary)
  # And the converse: true classes balanced (50 / 50), 90 of the predictions class 0; 60 %
  # right is above the balanced bound 0.5 + 1.96 · 0.05 = 59.8 %.
  summary = dict(confusion_matrix=[[50, 0], [40, 10]], test_accuracy_last_epoch=60.0)
  assert not report.run_at_chance(summary)


def _occlusion_result(d):
  m = len(d)
  own = np.array(d, float) + 0.05
  others = np.full(m, 0.05)
  return dict(own_drop=own.tolist(), others_drop=others.tolist(), baseline_accuracy=90.0,
              accuracy=[80.0] * m, own_drop_largest=int(np.sum(own > others)))


def test_occlusion_verdict_uses_the_t_interval_over_patches():
  # Four patches, d = own − others = [0.10, 0.10, 0.10, −0.02]: mean 0.07, sd 0.06, se 0.03.
  # t(0.975, 3) = 3.182446 -> half-width 0.0955: the interval (−0.025, 0.165) includes 0.
  # The normal quantile would give 0.0588 -> (0.011, 0.129), above 0: 'confirmed'.
  d = [0.10, 0.10, 0.10, -0.02]
  assert np.std(d, ddof=1) == pytest.approx(0.06)
  verdict = analysis.occlusion_verdict(_occlusion_result(d))
  assert 'is not shown for this model' in verdict, verdict
  # Same d with a larger effect: mean/se = 0.13/0.03 = 4.3 > 3.18: confirmed.
  verdict = analysis.occlusion_verdict(_occlusion_result([0.16, 0.16, 0.16, 0.04]))
  assert 'is confirmed for this model' in verdict, verdict


def test_top1_crucial_is_the_share_of_faces_whose_highest_weight_is_crucial():
  w = np.array([[0.1, 0.6, 0.2, 0.1],    # highest: patch 1, crucial
                [0.4, 0.3, 0.2, 0.1],    # highest: patch 0, not crucial
                [0.05, 0.15, 0.7, 0.1]])  # highest: patch 2, crucial
  crucial = np.array([[0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0]], bool)
  r = analysis.crucial_mass(w, crucial)
  assert r['top1_crucial'] == pytest.approx(2 / 3)
  # chance k/M averaged: (1/4 + 2/4 + 2/4) / 3
  assert r['top1_uniform'] == pytest.approx((0.25 + 0.5 + 0.5) / 3)
