"""`restreact rest` on the smoke config: end to end, single phases, kill -9 and resume."""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SMOKE = 'gin/experiments/smoke.gin'


def _env():
  env = dict(os.environ)
  # One CPU device: the fake 8-device mesh of the unit tests only costs time here.
  env.pop('XLA_FLAGS', None)
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONUNBUFFERED='1')
  return env


def _cmd(command, exp_dir, *extra):
  return [sys.executable, '-m', 'restreact_jax.main', command, f'--gin_file={SMOKE}',
          f"--gin.EXP_DIR='{exp_dir}'", *extra]


def _run(command, exp_dir, *extra, check=True):
  proc = subprocess.run(_cmd(command, exp_dir, *extra), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=900)
  if check and proc.returncode != 0:
    raise AssertionError(f'{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                         f'{proc.stderr[-3000:]}')
  return proc


def _manifest(exp):
  return json.loads((exp / 'manifest.json').read_text())['phases']


def _strip_timings(trajectory):
  for step in trajectory['steps']:
    step.pop('timings', None)
  return trajectory


def _outputs(exp):
  """Everything that must not depend on interruptions."""
  out = {}
  for path in sorted(exp.glob('**/summary.json')):
    if 'report' in path.parts:
      continue
    summary = json.loads(path.read_text())
    out[str(path.relative_to(exp))] = {k: summary[k] for k in ('final', 'answer_generation')}
  for path in sorted(exp.glob('gen_*/ranked/stats.json')):
    out[str(path.relative_to(exp))] = json.loads(path.read_text())
  for path in sorted(exp.glob('gen_*/ranked/*.tfrecord')):
    out[str(path.relative_to(exp))] = path.read_bytes()
  for directory in sorted({p.parent for p in exp.glob('**/shard-*.jsonl')}):
    rows = [_strip_timings(json.loads(line)) for p in sorted(directory.glob('shard-*.jsonl'))
            for line in p.read_text().splitlines() if line.strip()]
    out[str(directory.relative_to(exp))] = sorted(
        rows, key=lambda t: (t['question_id'], t['repeat']))
  for name, rec in _manifest(exp).items():
    if isinstance(rec['result'], dict) and 'params_digest' in rec['result']:
      out[f'params:{name}'] = (rec['result']['step'], rec['result']['params_digest'])
  return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  exp = tmp_path_factory.mktemp('smoke') / 'exp'
  proc = _run('rest', exp)
  return exp, proc


@pytest.mark.slow
def test_smoke_loop_writes_every_phase(reference):
  exp, proc = reference
  phases = _manifest(exp)
  expected = ['world', 'search', 'gen_0/seed', 'vocab', 'base/tiny', 'base/nano',
              'gen_0/models/tiny', 'gen_0/models/nano', 'gen_0/eval/tiny', 'report']
  for g in (1, 2):
    expected += [f'gen_{g}/rollout', f'gen_{g}/rank', f'gen_{g}/mixture',
                 f'gen_{g}/models/tiny', f'gen_{g}/models/nano', f'gen_{g}/eval/tiny',
                 f'gen_{g}/eval/nano', f'gen_{g}/select']
  expected += ['test/eval/gen_2_tiny', 'test/eval/gen_2_nano', 'test/eval/gen_0_tiny']
  missing = [p for p in expected if p not in phases]
  assert not missing, missing
  assert len(list((exp / 'gen_1' / 'trajectories').glob('shard-*.jsonl'))) == 1
  gen2 = [json.loads(l) for l in
          (exp / 'gen_2' / 'trajectories' / 'shard-00000-of-00001.jsonl').read_text().splitlines()]
  assert sorted((t['question_id'], t['repeat']) for t in gen2) == sorted(
      (t['question_id'], r) for t in gen2 for r in (0, 1) if t['repeat'] == 0)
  assert {t['policy'] for t in gen2} == {'gen_1/tiny'}  # gen 1 was kept
  for step_type in ('decision', 'summarize', 'answer', 'relevance', 'grounding'):
    assert (exp / 'gen_1' / 'ranked' / f'{step_type}.tfrecord').exists()
  stats = json.loads((exp / 'gen_2' / 'ranked' / 'stats.json').read_text())
  assert stats['trajectories'] == len(gen2)
  assert phases['gen_1/rank']['result']['oracle'] is False
  for size in ('tiny', 'nano'):
    steps = [p.name for p in (exp / 'gen_2' / 'models' / size / 'checkpoints').iterdir()
             if p.name.isdigit()]
    assert '4' in steps
    summary = json.loads((exp / 'gen_2' / 'eval' / size / 'summary.json').read_text())
    assert summary['final']['n_runs'] == 2 and summary['n_questions'] == 2
  decision = json.loads((exp / 'gen_1' / 'selection' / 'decision.json').read_text())
  assert decision['kept'] is True and decision['policy_after'] == 'gen_1/tiny'
  assert 'gen_1/tiny dev' in proc.stdout and 'KEPT' in proc.stdout
  assert (exp / 'report' / 'index.html').exists() and (exp / 'report' / 'test.md').exists()
  assert 'gen_2_nano' in (exp / 'report' / 'test.md').read_text()
  assert proc.stdout.rstrip().splitlines()[-1].startswith('rest: final policy gen_2/tiny')


@pytest.mark.slow
def test_kill_anywhere_and_resume_gives_the_same_outputs(reference, tmp_path):
  ref_exp, _ = reference
  exp = tmp_path / 'exp'
  rng = random.Random(0)
  targets = ['base/tiny', 'gen_0/models/tiny', 'gen_0/eval_rollout/tiny', 'gen_1/models/tiny',
             'gen_1/models/nano', 'gen_2/rollout', 'gen_2/models/tiny']
  killed_in = []
  for target in targets:
    proc = subprocess.Popen(_cmd('rest', exp), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    current = None
    for line in proc.stdout:
      if line.startswith('== phase '):
        current = line.split()[-1]
        if current == target or targets.index(target) < _order(current, targets):
          time.sleep(rng.uniform(0.2, 2.0))
          proc.send_signal(signal.SIGKILL)
          break
    proc.wait()
    if proc.returncode == -signal.SIGKILL:
      killed_in.append(current)
  assert len(set(killed_in)) >= 5, killed_in
  _run('rest', exp)
  got, want = _outputs(exp), _outputs(ref_exp)
  assert sorted(got) == sorted(want)
  for key in want:
    assert got[key] == want[key], key


@pytest.mark.slow
def test_heldout_eval_judges_the_tested_models_on_questions_no_rollout_saw(reference, tmp_path):
  exp = tmp_path / 'exp'
  shutil.copytree(reference[0], exp)
  proc = _run('rest', exp, '--gin.rest.heldout_eval=True')
  ran = [line.split(']')[0][1:] for line in proc.stdout.splitlines() if 'finished in' in line]
  assert 'heldout/questions' in ran and 'report' in ran
  assert not [p for p in ran if p.startswith(('gen_', 'test/'))], ran
  heldout = [json.loads(line)['id'] for line in
             (exp / 'heldout' / 'questions.jsonl').read_text().splitlines()]
  unlabeled = [json.loads(line)['id'] for line in
               (exp / 'gen_0' / 'seed' / 'train_unlabeled.jsonl').read_text().splitlines()]
  assert heldout == unlabeled[4:]  # smoke.gin: train_limit = 4
  rolled = {json.loads(line)['question_id'] for p in exp.glob('gen_*/trajectories/shard-*')
            for line in p.read_text().splitlines()}
  assert rolled and not rolled & set(heldout)
  # The same models as the test split, each with its own runs on the held-out questions.
  tested = sorted(p.parent.name for p in (exp / 'test' / 'eval').glob('*/summary.json'))
  judged = sorted(p.parent.name for p in (exp / 'heldout' / 'eval').glob('*/summary.json'))
  assert tested and judged == tested
  for name in judged:
    summary = json.loads((exp / 'heldout' / 'eval' / name / 'summary.json').read_text())
    assert summary['final']['n_runs'] == 2
    rows = [json.loads(line) for p in (exp / 'heldout' / 'rollouts' / name).glob('shard-*')
            for line in p.read_text().splitlines()]
    assert {r['question_id'] for r in rows} <= set(heldout)
  assert 'rest: heldout auto-eval' in proc.stdout
  assert (exp / 'report' / 'heldout.md').read_text().count('| gen_') == len(judged)
  # Without train_limit there is nothing held out: one clear error.
  proc = _run('rest', exp, '--gin.rest.heldout_eval=True', '--gin.rest.train_limit=None',
              check=False)
  assert proc.returncode == 2 and 'rest.heldout_eval needs rest.train_limit' in proc.stderr


@pytest.mark.slow
def test_fresh_questions_roll_out_a_new_window_in_each_generation(reference, tmp_path):
  exp = tmp_path / 'exp'
  shutil.copytree(reference[0], exp)
  proc = _run('rest', exp, '--gin.rest.fresh_questions=True', '--gin.rest.test=False')
  ran = [line.split(']')[0][1:] for line in proc.stdout.splitlines() if 'finished in' in line]
  # Generation 1's window is the first train_limit questions, as before: nothing reruns.
  assert 'gen_2/rollout' in ran and not [p for p in ran if p.startswith(('gen_0', 'gen_1'))], ran
  unlabeled = [json.loads(line)['id'] for line in
               (exp / 'gen_0' / 'seed' / 'train_unlabeled.jsonl').read_text().splitlines()]
  rolled = {g: {json.loads(line)['question_id']
                for p in (exp / f'gen_{g}' / 'trajectories').glob('shard-*')
                for line in p.read_text().splitlines()} for g in (1, 2)}
  assert rolled[1] == set(unlabeled[:4]) and rolled[2] == set(unlabeled[4:8])  # train_limit 4


@pytest.mark.slow
def test_test_models_evaluated_on_threads_give_the_sequential_outputs(reference, tmp_path):
  exp = tmp_path / 'exp'
  shutil.copytree(reference[0], exp)
  shutil.rmtree(exp / 'test')
  manifest = json.loads((exp / 'manifest.json').read_text())
  manifest['phases'] = {k: v for k, v in manifest['phases'].items() if not k.startswith('test/')}
  (exp / 'manifest.json').write_text(json.dumps(manifest))
  proc = _run('rest', exp, '--gin.rest.eval_workers=3')
  ran = [line.split(']')[0][1:] for line in proc.stdout.splitlines() if 'finished in' in line]
  # All three test models (gen 2, its student, gen 0) ran, nothing upstream.
  assert sorted(p for p in ran if p.startswith('test/rollout/')) == [
      'test/rollout/gen_0_tiny', 'test/rollout/gen_2_nano', 'test/rollout/gen_2_tiny'], ran
  assert not [p for p in ran if p.startswith('gen_')], ran
  got, want = _outputs(exp), _outputs(reference[0])
  assert sorted(got) == sorted(want)
  for key in want:
    assert got[key] == want[key], key
  # Whatever finished first, the report lists the models in the loop's order
  # and its fingerprint is the sequential run's.
  assert (exp / 'report' / 'test.md').read_text() == (
      reference[0] / 'report' / 'test.md').read_text()
  assert _manifest(exp)['report']['fingerprint'] == _manifest(reference[0])['report']['fingerprint']


@pytest.mark.slow
def test_rerun_skips_and_single_phase_commands(reference, tmp_path):
  exp, _ = reference
  proc = _run('rest', exp)
  assert 'finished in' not in proc.stdout
  assert proc.stdout.count('done already') == len(_manifest(exp))
  # Re-rank generation 2 with the oracle (an ablation): rows say so, and the
  # mixture of that generation becomes stale.
  before = _manifest(exp)['gen_2/mixture']['fingerprint']
  _run('rank', exp, '--generation=2', '--ranker=oracle')
  rows = [json.loads(l) for l in
          (exp / 'gen_2' / 'rankings' / 'rankings.jsonl').read_text().splitlines()]
  assert rows and all(r['oracle'] for r in rows)
  proc = _run('mixture', exp, '--generation=2',
              "--gin.rest.ranker_by_generation={2: 'oracle'}")
  assert '[gen_2/mixture] stale' in proc.stdout
  assert _manifest(exp)['gen_2/mixture']['fingerprint'] != before
  # Nothing upstream: one clear error, nothing written.
  empty = tmp_path / 'empty'
  proc = _run('rank', empty, '--generation=1', check=False)
  assert proc.returncode == 2
  assert "restreact: error: phase 'world' has not run" in proc.stderr
  assert not (empty / 'manifest.json').exists()


def _order(phase, targets):
  return targets.index(phase) if phase in targets else -1
