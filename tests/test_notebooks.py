"""The notebooks under notebooks/ run top to bottom (nbclient) and do real work.

Each notebook is executed in a fresh kernel of the interpreter running the
tests, with its `parameters` cell overridden to keep it small, and fails on any
cell error. The checks read what the notebook printed (its `SUMMARY` /
`MANIFEST_PHASES` lines) and cross-check it against the files it wrote, using
the library directly.
"""

import json
import math
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / 'notebooks'
CELL_TIMEOUT_S = 300
KERNEL = 'restreact-notebook-test'


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A kernelspec for this interpreter, found first, and a CPU environment.

  A user's own `python3` kernelspec may point at another interpreter; this one
  always runs `sys.executable`, so a fresh clone needs no manual kernel setup.
  """
  spec_dir = tmp_path / 'jupyter' / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'restreact tests', 'language': 'python'}))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  # One CPU device: the 8 fake devices of the unit tests only cost time here.
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '3')
  monkeypatch.setenv('PYTHONWARNINGS', 'ignore')
  return tmp_path


def execute(name, params, cwd):
  """Runs `notebooks/<name>` with `params` appended to its parameters cell.

  Returns:
    The executed notebook's text outputs, one string per code cell.
  """
  import nbclient
  import nbformat
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  cells = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(cells) == 1, f'{name} needs exactly one cell tagged "parameters"'
  cells[0].source += '\n# Test overrides.\n' + ''.join(
      f'{k} = {v!r}\n' for k, v in params.items())
  client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                                   resources={'metadata': {'path': str(cwd)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  outputs = []
  for cell in nb.cells:
    if cell.cell_type != 'code':
      continue
    text = []
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'stream' and out.get('name') == 'stdout':
        text.append(out['text'])
      elif out.get('output_type') in ('execute_result', 'display_data'):
        text.append(out.get('data', {}).get('text/plain', ''))
    outputs.append(''.join(text))
  return outputs


def tagged_json(outputs, tag):
  lines = [l for o in outputs for l in o.splitlines() if l.startswith(tag + ' ')]
  assert len(lines) == 1, f'expected one {tag} line, got {len(lines)}'
  return json.loads(lines[0][len(tag) + 1:])


def test_notebooks_have_a_first_markdown_and_a_parameters_cell():
  import nbformat
  for name in ('agent_debug.ipynb', 'trajectories.ipynb', 'rest_walkthrough.ipynb'):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == 'markdown' and 'should print' in nb.cells[0].source, name
    assert 'parameters' in nb.cells[1].metadata.get('tags', []), name
    setup = nb.cells[2].source
    assert "'google.colab' in sys.modules" in setup and 'jax.devices()' in setup, name
    # Stored outputs would go stale; the tests produce them.
    assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), name


@pytest.mark.slow
def test_agent_debug_with_the_random_tiny_model(kernel_env):
  exp = kernel_env / 'exp'
  outputs = execute('agent_debug.ipynb', {'EXP_DIR': str(exp), 'MAX_ATTEMPTS': 2,
                                          'NUM_SAMPLES': 3, 'MAX_TOKENS': 24}, kernel_env)
  summary = tagged_json(outputs, 'SUMMARY')
  assert summary['policy'] == 'random-init'
  steps = summary['steps']
  assert steps and steps[0]['step_type'] == 'decision'
  step = steps[0]
  assert len(step['perplexities']) == 3 and step['attempts'] == 2
  # Byte noise from random weights: finite, large perplexities (a uniform
  # guess over 259 byte ids is ~259), and nothing parses, so the agent
  # resampled and then failed without an answer, judged wrong without a call.
  assert all(math.isfinite(p) and p > 10 for p in step['perplexities'])
  assert step['parsed'] == [False] * 3 and step['chosen'] is None
  assert summary['status'] == 'failed' and summary['failure'].startswith('parse_failed')
  assert summary['final_answer'] is None
  assert summary['verdicts']['final'] == {'correct': False, 'source': 'empty'}
  text = '\n'.join(outputs)
  assert 'ORIGINAL_QUESTION' in text  # the prompt tail was shown
  assert 'attempt 1 (seed' in text and 'error=syntax' in text
  # The world it built is the one the question came from.
  dev = [json.loads(l) for l in (exp / 'world' / 'questions' / 'dev.jsonl').open()]
  assert summary['question_id'] == dev[0]['id']


@pytest.mark.slow
def test_agent_debug_walks_all_five_steps_with_the_scripted_policy(kernel_env):
  # Seed 3 makes the scripted policy search before it answers.
  outputs = execute('agent_debug.ipynb', {'POLICY': 'scripted', 'MAX_ATTEMPTS': 3,
                                          'SEED': 3}, kernel_env)
  summary = tagged_json(outputs, 'SUMMARY')
  steps = summary['steps']
  types = [s['step_type'] for s in steps]
  assert summary['status'] == 'ok' and summary['final_answer']
  assert types[-3:] == ['answer', 'relevance', 'grounding']
  assert set(summary['verdicts']) == {'answer_generation', 'final'}
  for s in steps:
    assert len(s['perplexities']) == 4
    # The agent continued with the parseable candidate of lowest perplexity.
    ok = [p for p, parsed in zip(s['perplexities'], s['parsed']) if parsed]
    assert s['parsed'][s['chosen']] and s['perplexities'][s['chosen']] == min(ok)
  searched = [i for i, s in enumerate(steps) if s['query'] is not None]
  assert summary['num_searches'] == len(searched) >= 1
  for i in searched:  # every search is a decision followed by a summarize step
    assert types[i] == 'decision' and types[i + 1] == 'summarize'
  text = '\n'.join(outputs)
  assert all(f"== search '{steps[i]['query']}'" in text for i in searched)


@pytest.mark.slow
def test_trajectories_summarises_and_ranks_a_scripted_generation(kernel_env):
  from restreact_jax.agent import trajectory as trajectory_lib
  from restreact_jax.feedback import rankers
  from restreact_jax.rest import phases
  outputs = execute('trajectories.ipynb', {'EXP_DIR': None, 'NUM_QUESTIONS': 4, 'REPEATS': 3},
                    kernel_env)
  summary = tagged_json(outputs, 'SUMMARY')
  # The notebook made its own experiment; find it from what it printed.
  shards = sorted(pathlib.Path(p) for p in _printed_paths(outputs, 'shard-'))
  assert shards, 'the notebook should name the shard it read'
  trajectories = [t for s in shards for t in trajectory_lib.read_jsonl(str(s))]
  assert summary['trajectories'] == len(trajectories) == 4 * 3
  multi = [s for t in trajectories for s in t.steps if len(s.candidates) >= 2]
  assert summary['multi_candidate_steps'] == len(multi) >= 1
  assert summary['finite_perplexities'] == summary['candidates'] > 0
  assert all(n == len(multi) for n in summary['ranked_steps'].values())
  # Recompute the rules ranker's agreement with the rollout's pick here.
  records = [t.to_json() for t in trajectories]
  ranked = rankers.rank_trajectories(
      phases.make_ranker('rules', records, rule_weight=1.0, consistency_weight=1.0), records,
      progress=False)
  chosen = {(t.question_id, t.repeat, i): s.chosen
            for t in trajectories for i, s in enumerate(t.steps)}
  agree = [r.best == chosen[(c.question_id, c.repeat, c.step_index)] for c, _, r in ranked
           if chosen[(c.question_id, c.repeat, c.step_index)] is not None]
  assert summary['agreement_steps']['rules'] == len(agree)
  assert summary['agreement']['rules']['all'] == pytest.approx(sum(agree) / len(agree))
  text = '\n'.join(outputs)
  assert 'total=' in text and 'agreement with' in text  # explanations were shown


def _printed_paths(outputs, needle):
  """Absolute paths printed by a notebook that contain `needle`."""
  paths = set()
  for o in outputs:
    for token in o.split():
      if needle in token and token.startswith('/'):
        paths.add(token.rstrip('.,:'))
  return paths


@pytest.mark.slow
def test_rest_walkthrough_runs_one_generation_phase_by_phase(kernel_env):
  exp = kernel_env / 'exp'
  outputs = execute('rest_walkthrough.ipynb', {'EXP_DIR': str(exp)}, kernel_env)
  phases = tagged_json(outputs, 'MANIFEST_PHASES')
  size = re.search(r'policy size: (\w+);', '\n'.join(outputs)).group(1)  # 'tiny' in smoke.gin
  expected = [
      'world', 'search', 'gen_0/seed', 'vocab', f'base/{size}', f'gen_0/models/{size}',
      f'gen_0/eval_rollout/{size}', f'gen_0/eval/{size}', 'gen_1/rollout', 'gen_1/rank',
      'gen_1/mixture', f'gen_1/models/{size}', f'gen_1/eval_rollout/{size}',
      f'gen_1/eval/{size}', 'gen_1/select', 'report']
  assert phases == expected  # in the order they finished
  manifest = json.loads((exp / 'manifest.json').read_text())['phases']
  assert sorted(manifest) == sorted(expected)
  for name in expected:
    assert (exp / manifest[name]['output']).exists(), name
  # The final full call found everything done and redid nothing.
  final = outputs[-1]
  assert final.count('done already') == len(expected) and 'finished in' not in final
  summary = tagged_json(outputs, 'EVAL_SUMMARY')
  on_disk = json.loads((exp / 'gen_1' / 'eval' / size / 'summary.json').read_text())
  assert summary['final'] == on_disk['final'] and summary['final']['n_runs'] >= 1
  assert 0.0 <= summary['final']['mean'] <= 100.0
  trained = manifest[f'gen_1/models/{size}']['result']
  assert trained['step'] >= 1 and math.isfinite(trained['loss'])
  # A fine-tune changes the weights it starts from.
  assert trained['params_digest'] != manifest[f'base/{size}']['result']['params_digest']
