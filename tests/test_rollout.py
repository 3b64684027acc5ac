"""Tests for agent/rollout.py: pooling, determinism, shards, resuming."""

import concurrent.futures
import json

import pytest

from restreact_jax import errors
from restreact_jax import llm as llm_lib
from restreact_jax.agent import prompts
from restreact_jax.agent import rollout as rollout_lib
from restreact_jax.agent.agent import AgentConfig
from restreact_jax.agent.backends import ScriptedLLM, synthetic_policy
from restreact_jax.agent.trajectory import Trajectory, read_jsonl
from tests.test_agent import FakeSearch

QUESTIONS = [{'id': f'q{i:03d}', 'question': f'Who founded company number {i}?'}
             for i in range(30)]


def _comparable(traj: Trajectory) -> dict:
  d = traj.to_json()
  for step in d['steps']:
    step['timings'] = {}
  return d


def _run(tmp_path=None, max_concurrent=64, questions=QUESTIONS, repeats=2, **kw):
  collected = []
  llm = ScriptedLLM(synthetic_policy(garbage_prob=0.7))
  tool = FakeSearch()
  stats = rollout_lib.rollout(
      llm, tool, questions, out_dir=tmp_path, prompter=prompts.Prompter('world', 1),
      config=AgentConfig(num_samples=4, max_searches=4, max_attempts=2, base_seed=5),
      repeats=repeats, max_concurrent=max_concurrent, show_progress=False, collect=collected,
      **kw)
  return stats, collected, llm


def test_pooled_equals_one_at_a_time():
  stats_pool, pooled, llm_pool = _run(max_concurrent=64)
  stats_seq, sequential, llm_seq = _run(max_concurrent=1)
  assert len(pooled) == len(sequential) == 60
  key = lambda t: t.key  # noqa: E731
  assert [_comparable(t) for t in sorted(pooled, key=key)] == [
      _comparable(t) for t in sorted(sequential, key=key)]
  # Pooling really batched: far fewer generate calls, bigger batches.
  assert llm_pool.calls < llm_seq.calls / 10
  assert stats_pool.max_llm_batch > 30 and stats_seq.max_llm_batch == 1
  # The scripted policy produces both outcomes, so both paths are compared.
  statuses = {t.status for t in pooled}
  assert statuses == {'ok', 'failed'}
  assert stats_pool.ok + stats_pool.failed == stats_pool.trajectories == 60
  assert 0.0 < stats_pool.outside_engine_fraction < 1.0


class SteppedScriptedLLM(ScriptedLLM):
  """`ScriptedLLM` behind the stepped door, finishing requests out of order.

  Each `step` answers every third queued request (rotating which), so an
  agent submitted later often finishes earlier.
  """

  steppable = True

  def __init__(self, script):
    super().__init__(script)
    self.queue, self.steps = [], 0

  def submit(self, request):
    future = concurrent.futures.Future()
    self.queue.append((request, future))
    return future

  def step(self):
    self.steps += 1
    due = [item for i, item in enumerate(self.queue) if i % 3 == self.steps % 3]
    self.queue = [item for item in self.queue if item not in due]
    for request, future in due:
      future.set_result(self.generate([request])[0])
    return len(due)


def test_stepped_pool_equals_rounds():
  stats_rounds, rounds, _ = _run(max_concurrent=16)
  llm = SteppedScriptedLLM(synthetic_policy(garbage_prob=0.7))
  stepped = []
  stats = rollout_lib.rollout(
      llm, FakeSearch(), QUESTIONS, out_dir=None, prompter=prompts.Prompter('world', 1),
      config=AgentConfig(num_samples=4, max_searches=4, max_attempts=2, base_seed=5),
      repeats=2, max_concurrent=16, show_progress=False, collect=stepped)
  key = lambda t: t.key  # noqa: E731
  assert [_comparable(t) for t in sorted(stepped, key=key)] == [
      _comparable(t) for t in sorted(rounds, key=key)]
  # Really stepped: one request per call, many steps, a different finishing order.
  assert llm.calls == stats.llm_requests == stats_rounds.llm_requests
  assert stats.llm_batches == llm.steps > stats_rounds.llm_batches
  assert [t.key for t in stepped] != [t.key for t in rounds]
  assert stats.trajectories == 60 and stats.max_llm_batch <= 16
  # The same LLM can still be driven round by round.
  again = []
  rollout_lib.run_pool(SteppedScriptedLLM(synthetic_policy(garbage_prob=0.7)), FakeSearch(),
                       (rollout_lib.Agent(q['question'], prompter=prompts.Prompter('world', 1),
                                          config=AgentConfig(num_samples=4, max_searches=4,
                                                             max_attempts=2, base_seed=5),
                                          question_id=q['id'], repeat=0)
                        for q in QUESTIONS[:5]),
                       on_finished=again.append, stepped=False)
  assert [_comparable(t) for t in sorted(again, key=key)] == [
      _comparable(t) for t in sorted(rounds, key=key) if t.repeat == 0][:5]


def test_shards_are_written_and_valid(tmp_path):
  stats, collected, _ = _run(tmp_path)
  path = tmp_path / 'shard-00000-of-00001.jsonl'
  lines = path.read_text().splitlines()
  assert len(lines) == 60 == stats.trajectories
  on_disk = read_jsonl(str(path))
  assert [t.to_json() for t in on_disk] == [t.to_json() for t in collected]
  for line in lines:
    d = json.loads(line)
    assert d['schema_version'] == 1 and d['status'] in ('ok', 'failed')
    for step in d['steps']:
      assert step['prompt'][:step['prefix_len']] == prompts.Prompter('world', 1).preambles[
          step['step_type']]
      assert len(step['candidates']) == 4


def test_process_shards_split_the_questions(tmp_path):
  seen = []
  for p in range(3):
    stats, collected, _ = _run(tmp_path, process_index=p, process_count=3, repeats=1)
    assert (tmp_path / f'shard-{p:05d}-of-00003.jsonl').exists()
    seen += [t.question_id for t in collected]
  assert sorted(seen) == [q['id'] for q in QUESTIONS]


def test_resume_after_torn_shard(tmp_path):
  _, full, _ = _run(tmp_path)
  path = tmp_path / 'shard-00000-of-00001.jsonl'
  lines = path.read_text().splitlines(keepends=True)
  # Keep 25 whole lines and half of the 26th, as a crash mid-write leaves it.
  path.write_text(''.join(lines[:25]) + lines[25][:len(lines[25]) // 2])
  stats, resumed, _ = _run(tmp_path)
  assert stats.skipped == 25 and stats.trajectories == 35
  final = read_jsonl(str(path))
  assert len(final) == 60
  assert len({t.key for t in final}) == 60
  by_key = {t.key: _comparable(t) for t in full}
  assert all(_comparable(t) == by_key[t.key] for t in final)
  # Nothing left to do: a rerun writes nothing.
  stats, _, _ = _run(tmp_path)
  assert stats.trajectories == 0 and stats.skipped == 60
  assert len(path.read_text().splitlines()) == 60


def test_corrupt_line_inside_shard_is_an_error_and_keeps_the_file(tmp_path):
  _run(tmp_path, questions=QUESTIONS[:3], repeats=1)
  path = tmp_path / 'shard-00000-of-00001.jsonl'
  lines = path.read_text().splitlines(keepends=True)
  broken = lines[0] + '{oops\n' + ''.join(lines[1:])
  path.write_text(broken)
  with pytest.raises(errors.UserError, match=r'shard-00000-of-00001.jsonl:2'):
    _run(tmp_path, questions=QUESTIONS[:3], repeats=1)
  assert path.read_text() == broken


def test_bad_arguments_are_user_errors(tmp_path):
  with pytest.raises(errors.UserError, match='process_index'):
    _run(None, process_index=2, process_count=2)
  with pytest.raises(errors.UserError, match='appears more than once'):
    _run(None, questions=[('a', 'x?'), ('a', 'y?')])
  with pytest.raises(errors.UserError, match='"id" and "question"'):
    _run(None, questions=[{'text': 'x'}])
  bad = tmp_path / 'q.jsonl'
  bad.write_text('{"id": "a", "question": "x?"}\nnot json\n')
  with pytest.raises(errors.UserError, match='q.jsonl:2'):
    rollout_lib.load_questions(bad)
  bad.write_text('{"question_id": "a", "question": "x?"}\n')
  assert rollout_lib.load_questions(bad) == [rollout_lib.QuestionItem('a', 'x?')]


@pytest.mark.slow
def test_real_rollout_with_a_tiny_random_jax_model(tmp_path):
  """50 questions through the real engine: garbage outputs fail gracefully."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent.backends import jax_backend  # pylint: disable=g-import-not-at-top
  from restreact_jax.models import configs, transformer  # pylint: disable=g-import-not-at-top
  vocab = seqio.ByteVocabulary()
  cfg = configs.TransformerConfig(vocab_size=vocab.vocab_size, embed_dim=32, num_layers=1,
                                  num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64,
                                  max_len=512)
  params = nn.unbox(transformer.Transformer(cfg).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'])
  engine = jax_backend(cfg, vocab=vocab, params=params, num_slots=32)
  assert llm_lib.can_step(engine)
  questions = [{'id': f'r{i}', 'question': f'Where was person {i} born?'} for i in range(50)]
  stats = rollout_lib.rollout(
      engine, FakeSearch(), questions, out_dir=tmp_path, prompter=prompts.Prompter(None, 0),
      config=AgentConfig(num_samples=2, max_tokens=16, max_attempts=2), show_progress=False)
  assert stats.trajectories == 50 and stats.ok + stats.failed == 50
  assert stats.generated_tokens > 0 and stats.llm_s > 0
  # Stepped (the default for the engine) and round by round give the same
  # trajectories: a sample does not depend on what shares its batch.
  assert not engine.busy and engine.step() == 0
  rounds = []
  rollout_lib.run_pool(engine, FakeSearch(), (
      rollout_lib.Agent(q['question'], prompter=prompts.Prompter(None, 0),
                        config=AgentConfig(num_samples=2, max_tokens=16, max_attempts=2),
                        question_id=q['id']) for q in questions), on_finished=rounds.append,
      stepped=False)
  shard = read_jsonl(str(tmp_path / 'shard-00000-of-00001.jsonl'))
  stepped = {t.key: _comparable(t) for t in shard}
  assert {t.key: _comparable(t) for t in rounds} == stepped
  trajs = read_jsonl(str(tmp_path / 'shard-00000-of-00001.jsonl'))
  assert sorted(t.question_id for t in trajs) == sorted(q['id'] for q in questions)
  for t in trajs:
    assert t.steps and t.steps[0].step_type == 'decision'
    for step in t.steps:
      assert len(step.candidates) == 2
      for c in step.candidates:
        assert len(c.logprobs) <= 16 and all(lp <= 0.0 for lp in c.logprobs)
        assert c.finish_reason in ('stop', 'eos', 'length')
    if t.status == 'failed':
      assert t.failure.startswith('parse_failed') and t.final_answer is None


def _reset_gin():
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config(clear_constants=True)  # also unlocks what the CLI finalized


def _write_world(exp_dir):
  from restreact_jax import main  # pylint: disable=g-import-not-at-top
  main.run(['world', '--gin_file=gin/runs/world.gin', f"--gin.EXP_DIR='{exp_dir}'",
            '--gin.world.num_entities=40', '--gin.world.num_train=6', '--gin.world.num_dev=2',
            '--gin.world.num_test=2'])


def test_rollout_and_agent_commands_over_http(tmp_path, capsys):
  """The CLI end to end: world + BM25 + an OpenAI-compatible server."""
  import gin  # pylint: disable=g-import-not-at-top
  from restreact_jax import main  # pylint: disable=g-import-not-at-top
  from tests.test_agent import ANSWER, PASS, SEARCH, STOP  # pylint: disable=g-import-not-at-top
  from tests.test_backends import _Server  # pylint: disable=g-import-not-at-top
  exp = tmp_path / 'exp'
  _write_world(exp)
  _reset_gin()

  def reply(p):
    step_type = prompts.detect_step_type(p['prompt'])
    if step_type == 'decision':
      state = p['prompt'].rsplit('#########################\n', 1)[-1]
      text = STOP if 'SelectLink(' in state else SEARCH('founded by')
    elif step_type == 'summarize':
      text = prompts.render_target('summarize', {
          'type': 'LinkSelection', 'grounded_summarization': 'According to [link_id=1], x.',
          'thoughts': 't', 'selected_link_ids': [1]})
    else:
      text = {'answer': ANSWER, 'relevance': PASS, 'grounding': PASS}[step_type]
    return [(text, [-0.3, -0.2], 'stop')] * p['n']

  server = _Server()
  server.reply = reply
  try:
    common = ['--gin_file=gin/runs/rollout.gin', f"--gin.EXP_DIR='{exp}'", '--gin.MODEL=None',
              "--gin.LLM_BACKEND='openai'", f"--gin.OPENAI_BASE_URL='{server.url}'",
              '--gin.NUM_SAMPLES=2', "--gin.EXEMPLAR_SET='world'", '--gin.NUM_EXEMPLARS=1']
    result = main.run(['rollout', *common, '--gin.rollout.progress=False', '--repeats=2'])
    assert result['trajectories'] == 12 and result['ok'] == 12 and result['searches'] == 12
    shard = exp / 'gen_1' / 'trajectories' / 'shard-00000-of-00001.jsonl'
    trajs = read_jsonl(str(shard))
    assert len(trajs) == 12
    hits = trajs[0].steps[0].tool.results
    assert hits and hits[0].doc_id  # real BM25 hits over the world corpus
    assert (exp / 'gen_1' / 'trajectories' / 'rollout_config.gin').exists()
    _reset_gin()
    capsys.readouterr()
    main.run(['agent', *common, '--question', 'Who founded Lanternfield Pictures?'])
    out = capsys.readouterr().out
    assert '== step 1: decision' in out and "search 'founded by':" in out
    assert '== final answer: Oren Vasko [link_id=4].' in out
  finally:
    server.close()
  _reset_gin()
  assert main.main(['rollout', '--gin_file=gin/runs/rollout.gin', f"--gin.EXP_DIR='{exp}'",
                    '--gin.MODEL=None', '--gin.SPLIT="nope"']) == 2
