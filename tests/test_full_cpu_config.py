"""gin/experiments/full_cpu.gin: it resolves into a RestConfig, and its agent runs the loop."""

import json
import os
import pathlib
import subprocess
import sys

import gin
import pytest

from restreact_jax.agent import prompts

REPO = pathlib.Path(__file__).resolve().parent.parent
FULL = 'gin/experiments/full_cpu.gin'
DEMO = 'gin/experiments/demo_cpu.gin'
SMOKE = 'gin/experiments/smoke.gin'


def _rest_config(monkeypatch, tmp_path, gin_file, *extra):
  """The RestConfig `restreact rest` builds from a gin file, without running the loop."""
  from restreact_jax import main  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import loop  # pylint: disable=g-import-not-at-top
  captured = {}

  def capture(cfg, exp, **kwargs):
    del exp, kwargs
    captured['cfg'] = cfg
    return {}
  monkeypatch.setattr(loop, 'self_improve', capture)
  gin.clear_config(clear_constants=True)
  main.run(['rest', f'--gin_file={gin_file}', f"--gin.EXP_DIR='{tmp_path}'", *extra])
  gin.clear_config(clear_constants=True)
  cfg = captured['cfg']
  cfg.validate()
  return cfg


def test_full_cpu_resolves_to_a_bigger_two_tool_run(monkeypatch, tmp_path):
  cfg = _rest_config(monkeypatch, tmp_path / 'full', FULL)
  demo = _rest_config(monkeypatch, tmp_path / 'demo', DEMO)
  # The two-tool agent, seeded with the exemplars that calculate.
  assert cfg.agent.tools == ('search', 'calculator')
  assert cfg.exemplar_set == 'world_tools'
  assert prompts.exemplar_set_tools(cfg.exemplar_set) == cfg.agent.tools
  # Four generations, the demo's policy, two students smaller than it.
  assert cfg.generations == 4
  assert cfg.policy_size == demo.policy_size
  assert cfg.models[cfg.policy_size] == demo.models[demo.policy_size]
  assert len(cfg.student_sizes) == 2 and len(set(cfg.student_sizes)) == 2
  policy = cfg.models[cfg.policy_size]
  students = [cfg.models[s] for s in cfg.student_sizes]
  sizes = [(m.embed_dim, m.num_layers, m.mlp_dim) for m in students]
  assert len(set(sizes)) == 2
  for student in students:
    assert student.embed_dim <= policy.embed_dim and student.mlp_dim <= policy.mlp_dim
    assert student != policy
    # Every model shares the trained vocabulary (the loop fixes its size).
    assert student.vocab_size == policy.vocab_size
  # A bigger world, more questions rolled out, longer training than the demo.
  assert cfg.world.num_entities > demo.world.num_entities
  assert cfg.world.num_train > demo.world.num_train
  assert cfg.world.num_test >= demo.world.num_test
  assert (cfg.train_limit or cfg.world.num_train) > (demo.train_limit or demo.world.num_train)
  for name in ('pretrain', 'seed_finetune', 'finetune', 'distill'):
    assert getattr(cfg, name).steps > getattr(demo, name).steps, name
  # Everything else is the demo's (included, not copied).
  for name in ('init_from', 'ranker', 'judge', 'repeats', 'vocab_size', 'name_masking',
               'only_acceptable', 'seed_fraction'):
    assert getattr(cfg, name) == getattr(demo, name), name
  # Every generation's policy and student read the ranked data of all
  # generations so far (the README's table), the four of full_cpu too.
  assert demo.policy_all_generations and demo.distill_all_generations
  assert cfg.policy_all_generations and cfg.distill_all_generations
  assert cfg.eval_runs >= demo.eval_runs and cfg.pilot_questions >= demo.pilot_questions
  for name in ('num_samples', 'temperature', 'max_tokens', 'max_searches', 'max_attempts'):
    assert getattr(cfg.agent, name) == getattr(demo.agent, name), name
  assert (tmp_path / 'full' / 'config.gin').exists()
  assert "'calculator'" in (tmp_path / 'full' / 'config.gin').read_text()


def test_the_loop_asks_the_question_mix_it_is_given(monkeypatch, tmp_path):
  assert _rest_config(monkeypatch, tmp_path / 'a', DEMO).world.qtype_weights is None
  cfg = _rest_config(monkeypatch, tmp_path / 'b', DEMO,
                     "--gin.rest.qtype_weights={'two_hop': 0.9, 'one_hop': 0.1}")
  assert cfg.world.qtype_weights == {'two_hop': 0.9, 'one_hop': 0.1}


def test_the_oracle_ablation_is_one_override(monkeypatch, tmp_path):
  cfg = _rest_config(monkeypatch, tmp_path, FULL, "--gin.rest.ranker='oracle'")
  assert cfg.ranker == 'oracle' and cfg.agent.tools == ('search', 'calculator')


def test_world_command_reads_the_bigger_world():
  from restreact_jax import main  # pylint: disable=g-import-not-at-top
  main.load_command('world')
  gin.clear_config(clear_constants=True)
  from restreact_jax import gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.parse([FULL], ["EXP_DIR = 'unused'"])
  full = {k: gin.query_parameter(f'world.{k}') for k in ('num_entities', 'num_train')}
  rest = {k: gin.query_parameter(f'rest.{k}') for k in ('num_entities', 'num_train')}
  gin.clear_config(clear_constants=True)
  assert full == rest  # `restreact world` and `restreact rest` build the same world


def test_make_full_runs_both_rankers():
  out = subprocess.run(['make', '-n', 'full'], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, 'MAKEFLAGS': ''}, timeout=60)
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if 'full_cpu.gin' in l]
  assert len(lines) == 2
  assert "runs/full'" in lines[0] and 'oracle' not in lines[0]
  assert "runs/full_oracle'" in lines[1] and "rest.ranker=\"'oracle'\"" in lines[1]


def _full_cpu_agent_bindings():
  """The agent/tool bindings of full_cpu.gin, as command-line overrides."""
  from restreact_jax import gin_utils, main  # pylint: disable=g-import-not-at-top
  main.load_command('rest')
  gin.clear_config(clear_constants=True)
  gin_utils.parse([FULL], ["EXP_DIR = 'unused'"])
  names = ('rest.AgentSettings.tools', 'rest.AgentSettings.max_searches', 'rest.exemplar_set')
  values = {name: gin.query_parameter(name) for name in names}
  gin.clear_config(clear_constants=True)
  return [f'--gin.{name}={value!r}' for name, value in values.items()]


@pytest.mark.slow
def test_loop_runs_end_to_end_with_full_cpu_agent_settings(tmp_path):
  exp = tmp_path / 'exp'
  bindings = _full_cpu_agent_bindings()
  assert "--gin.rest.AgentSettings.tools=('search', 'calculator')" in bindings
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # one CPU device: a fake mesh only costs time here
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONUNBUFFERED='1')
  # Smoke-sized everything else: tiny models, a handful of questions, a few
  # steps, one generation.
  cmd = [sys.executable, '-m', 'restreact_jax.main', 'rest', f'--gin_file={SMOKE}',
         f"--gin.EXP_DIR='{exp}'", '--gin.GENERATIONS=1', *bindings]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
  assert 'rest: final policy gen_' in proc.stdout
  phases = json.loads((exp / 'manifest.json').read_text())['phases']
  for name in ('gen_0/seed', 'gen_1/rollout', 'gen_1/mixture', 'report'):
    assert name in phases, sorted(phases)
  # The seed data hold the calculating exemplar.
  seed = [json.loads(line) for line in (exp / 'gen_0' / 'seed' / 'seed.jsonl').open()]
  assert any('action=Calculate(' in r['targets'] for r in seed if r['step_type'] == 'decision')
  # The rollouts ran the two-tool agent: its decision prompt, its parser.
  tool_doc = prompts.compact_preamble('decision', ('search', 'calculator'))
  rows = [json.loads(line) for p in sorted((exp / 'gen_1' / 'trajectories').glob('shard-*'))
          for line in p.open()]
  decisions = [s for t in rows for s in t['steps'] if s['step_type'] == 'decision']
  assert rows and decisions
  assert all(s['prompt'].startswith(tool_doc) for s in decisions)
  assert "'calculator'" in (exp / 'config.gin').read_text()


def test_the_xs_demo_differs_from_the_demo_in_the_policy_only(monkeypatch, tmp_path):
  demo = _rest_config(monkeypatch, tmp_path / 'demo', DEMO)
  xs = _rest_config(monkeypatch, tmp_path / 'xs', 'gin/experiments/demo_cpu_xs.gin')
  assert xs.policy_size == 'xs' and demo.policy_size == 'xxs'
  big, small = xs.models['xs'], demo.models['xxs']
  assert big.embed_dim > small.embed_dim and big.num_layers > small.num_layers
  assert big.vocab_size == small.vocab_size and big.max_len == small.max_len
  # XS keeps the XXXS student of its own (the demo's is cut from its XXS).
  assert xs.student_sizes == ('xxxs',) and xs.student_init == 'base'
  for name in ('world', 'seed_finetune', 'finetune', 'agent', 'guided_rollouts',
               'select_on_dev', 'train_limit', 'mixture_rates'):
    assert getattr(xs, name) == getattr(demo, name), name


def test_the_demos_student_is_cut_from_its_policy(monkeypatch, tmp_path):
  from restreact_jax.models import configs, prune  # pylint: disable=g-import-not-at-top
  demo = _rest_config(monkeypatch, tmp_path / 'demo', DEMO)
  policy = demo.models[demo.policy_size]
  (size,) = demo.student_sizes
  student = demo.models[size]
  assert demo.student_init == 'pruned'
  prune.check_prunable(policy, student)
  assert student.num_layers < policy.num_layers and student.mlp_dim < policy.mlp_dim
  assert configs.param_count(student) < 0.7 * configs.param_count(policy)
