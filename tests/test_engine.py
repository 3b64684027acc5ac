"""Tests of the continuous-batching engine on a tiny Transformer."""

import dataclasses
import functools
import json
import threading

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from restreact_jax import decoding
from restreact_jax import engine as engine_lib
from restreact_jax import errors
from restreact_jax import llm
from restreact_jax import partitioning
from restreact_jax.models import configs
from restreact_jax.models import transformer

VOCAB = seqio.ByteVocabulary()
MAX_LEN = 96
CONFIG = configs.TransformerConfig(vocab_size=VOCAB.vocab_size, embed_dim=32, num_layers=2,
                                   num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
                                   max_len=MAX_LEN)


@pytest.fixture(scope='module')
def params():
  model = transformer.Transformer(CONFIG)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 4), jnp.int32))['params'])
  return nn.unbox(init(jax.random.key(0)))


@pytest.fixture(scope='module')
def reference(params):
  """The plain static-batch sampler over the same model."""
  sampler = decoding.StaticSampler(
      functools.partial(engine_lib.apply_model, CONFIG),
      lambda batch, max_len: transformer.KVCache.init(CONFIG, batch, max_len), VOCAB,
      max_len=MAX_LEN, batch_size=8, decode_chunk=8)
  return functools.partial(sampler.generate, params)


def make_engine(params, **kw):
  kw.setdefault('num_slots', 4)
  kw.setdefault('decode_chunk', 8)  # the engine's default, shared with the CLI test
  return engine_lib.Engine(CONFIG, params, VOCAB, **kw)


def mixed_requests(stop_text=''):
  """Mixed prompt lengths, budgets, temperatures, filters and `n`."""
  reqs = []
  for k in range(7):
    reqs.append(llm.SamplingRequest(
        prompt='q' * (2 + 9 * k) + str(k), n=1 + k % 3, temperature=(0.0, 0.8, 1.2)[k % 3],
        top_k=(0, 0, 30)[k % 3], top_p=(1.0, 0.9, 1.0)[k % 3], max_tokens=3 + 6 * k,
        stop=(stop_text,) if stop_text and k % 2 else (), seed=100 + k))
  return reqs


def as_tuples(out):
  return [[(s.tokens, s.finish_reason, s.text) for s in samples] for samples in out]


def assert_same(got, want):
  assert as_tuples(got) == as_tuples(want)
  for g_samples, w_samples in zip(got, want):
    for g, w in zip(g_samples, w_samples):
      np.testing.assert_allclose(g.logprobs, w.logprobs, rtol=1e-4, atol=1e-4)


def test_engine_equals_plain_sampler_with_refilled_slots(params, reference):
  base = reference(mixed_requests())
  # A stop string the model really produces, two bytes from inside a sample.
  stop = VOCAB.decode(base[5][0].tokens[5:7])  # request 5 has stop strings
  reqs = mixed_requests(stop)
  want = reference(reqs)
  assert any(s.finish_reason == 'stop' for samples in want for s in samples)
  eng = make_engine(params)
  got = eng.generate(reqs)
  assert_same(got, want)
  # 14 samples over 4 slots: slots were refilled; every counted token is kept.
  stats = eng.stats
  assert stats.samples == sum(r.n for r in reqs)
  assert stats.tokens == sum(len(s.tokens) for samples in got for s in samples)
  assert 0.3 < stats.slot_occupancy <= 1.0
  assert stats.prefill_s > 0 and stats.decode_s > 0


def test_prefix_reuse_changes_nothing(params, reference):
  preamble = 'def step():\n  """A shared preamble."""\n'
  reqs = [llm.SamplingRequest(preamble + f'Q{k} ' + 'x' * k, prefix=preamble, n=2,
                              temperature=0.9, max_tokens=6 + k, stop=(), seed=k)
          for k in range(5)]
  reqs.append(llm.SamplingRequest(preamble, prefix=preamble, temperature=0.0, max_tokens=5,
                                  stop=()))
  other = '# another step type\n'
  reqs += [llm.SamplingRequest(other + 'z' * k, prefix=other, temperature=0.0, max_tokens=4,
                               stop=()) for k in range(3)]
  with_reuse = make_engine(params, reuse_prefixes=True)
  got = with_reuse.generate(reqs)
  assert with_reuse.stats.reused_prefix_tokens >= 6 * len(preamble) + 3 * len(other)
  # A one-row pool: prefixes evict each other, or fall back to a full prefill.
  tiny_pool = make_engine(params, prefix_pool_size=1)
  assert_same(got, tiny_pool.generate(reqs))
  assert 0 < tiny_pool.stats.reused_prefix_tokens
  without = make_engine(params, reuse_prefixes=False)
  assert_same(got, without.generate(reqs))
  assert without.stats.reused_prefix_tokens == 0
  assert_same(got, reference(reqs))


def test_response_prefix_is_read_not_generated(params, reference):
  # Bytes tokenize the same apart or together, so a response prefix must
  # give exactly what the prompt with the prefix appended gives, its text
  # aside: the prefix starts the text and is not among the tokens.
  preamble = 'def step():\n'
  heads = ('ACTION_SELECTED: Answer =', 'X =')
  primed = [llm.SamplingRequest(preamble + f'Q{k}\n', prefix=preamble, n=2, temperature=0.7,
                                max_tokens=5 + k, stop=(), seed=k, response_prefix=heads[k % 2])
            for k in range(4)]
  plain = [dataclasses.replace(r, prompt=r.prompt + r.response_prefix, response_prefix='')
           for r in primed]
  want = reference(plain)
  for got in (make_engine(params).generate(primed), reference(primed)):
    for g_samples, w_samples, r in zip(got, want, primed):
      for g, w in zip(g_samples, w_samples):
        assert g.text == r.response_prefix + w.text
        assert g.tokens == w.tokens and g.finish_reason == w.finish_reason
        np.testing.assert_allclose(g.logprobs, w.logprobs, rtol=1e-4, atol=1e-4)
  prepared = decoding.prepare(VOCAB, primed[0], max_len=MAX_LEN)
  assert prepared.tokens[-len(heads[0]):] == tuple(VOCAB.encode(heads[0]))
  with pytest.raises(errors.UserError, match='response_prefix must not contain a stop'):
    llm.SamplingRequest('p', response_prefix='a # [END]').validate()


def test_sharded_engine_equals_unsharded(params):
  assert len(jax.devices()) >= 8
  mesh = partitioning.make_mesh((2, 4))
  reqs = mixed_requests()[:4]
  sharded = make_engine(params, mesh=mesh)
  cache_sharding = sharded._state.cache.k.sharding
  assert cache_sharding.spec[1] == 'data'  # slots over data
  assert_same(sharded.generate(reqs), make_engine(params).generate(reqs))


def test_concurrent_callers_get_their_own_results(params, reference):
  groups = [[llm.SamplingRequest(f'caller {c} asks {k}', n=2, temperature=1.0,
                                 max_tokens=4 + 3 * c + k, stop=(), seed=10 * c + k)
             for k in range(2)] for c in range(4)]
  eng = make_engine(params)
  results = [None] * len(groups)

  def call(i):
    results[i] = eng.generate(groups[i])

  threads = [threading.Thread(target=call, args=(i,)) for i in range(len(groups))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=300)
  want = reference([r for g in groups for r in g])
  for i, group in enumerate(groups):
    assert_same(results[i], want[2 * i:2 * i + 2])


def test_submit_and_run(params):
  eng = make_engine(params)
  futures = [eng.submit(llm.SamplingRequest('ab', temperature=0.0, max_tokens=m, stop=()))
             for m in (0, 3)]
  assert futures[0].done() and futures[0].result()[0].finish_reason == 'length'
  assert not futures[1].done()
  eng.run()
  assert len(futures[1].result()[0].tokens) == 3


def test_step_drives_requests_submitted_between_steps(params, reference):
  reqs = mixed_requests()
  eng = make_engine(params)
  assert eng.steppable and llm.can_step(eng)
  assert not eng.busy and eng.step() == 0
  futures, finished = [eng.submit(r) for r in reqs[:2]], 0
  for r in reqs[2:]:  # one more request after every step, as the rollout pool does
    finished += eng.step()
    futures.append(eng.submit(r))
  while eng.busy:
    finished += eng.step()
  assert all(f.done() for f in futures)
  assert_same([f.result() for f in futures], reference(reqs))
  assert finished == eng.stats.samples == sum(r.n for r in reqs)


def test_prefill_batches_are_powers_of_two_shortest_first(params, reference):
  reqs = [llm.SamplingRequest('p' * (5 + 11 * ((3 * k) % 7)), temperature=0.7, max_tokens=4,
                              stop=(), seed=k) for k in range(7)]
  eng = make_engine(params, num_slots=8)
  batches = []
  prefill = eng._prefill  # pylint: disable=protected-access

  def recording(works):
    batches.append([len(w.prepared.tokens) for w in works])
    prefill(works)

  eng._prefill = recording  # pylint: disable=protected-access
  assert_same(eng.generate(reqs), reference(reqs))
  # Seven prompts in one fill: 4 + 2 + 1, each batch of similar lengths.
  assert [len(b) for b in batches] == [4, 2, 1]
  flat = [n for b in batches for n in b]
  assert flat == sorted(flat) == sorted(len(r.prompt) + 1 for r in reqs)


def test_bad_input_is_rejected_and_loses_nothing(params):
  eng = make_engine(params)
  good = llm.SamplingRequest('fine', temperature=0.0, max_tokens=4, stop=())
  with pytest.raises(errors.UserError, match=r'request 1: .*n must be'):
    eng.generate([good, dataclasses.replace(good, n=0)])
  with pytest.raises(errors.UserError, match='temperature'):
    eng.generate([dataclasses.replace(good, temperature=float('nan'))])
  with pytest.raises(errors.UserError, match='top_p'):
    eng.generate([dataclasses.replace(good, top_p=1.5)])
  too_long = dataclasses.replace(good, prompt='y' * 200)
  with pytest.raises(errors.UserError, match=r'request 0: prompt is 201 tokens.*96'):
    eng.generate([too_long])
  # Nothing was queued by the failed calls; the engine still works.
  (sample,), = eng.generate([good])
  assert len(sample.tokens) == 4 and eng.stats.samples == 1
  # Left-truncation when asked: the model sees the last tokens of the prompt.
  cut = make_engine(params, truncate_prompts=True)
  (sample,), = cut.generate([too_long])
  expect = dataclasses.replace(good, prompt='y' * (MAX_LEN - 4))
  (plain,), = make_engine(params, bos_id=None).generate([expect])
  assert sample.tokens == plain.tokens


def test_empty_prompt_works(params, reference):
  req = llm.SamplingRequest('', n=2, temperature=1.0, max_tokens=5, stop=(), seed=1)
  got = make_engine(params).generate([req])
  assert [len(s.tokens) for s in got[0]] == [5, 5]
  assert_same(got, reference([req]))


def test_sample_command_prints_samples_and_rejects_bad_files(tmp_path, capsys):
  from restreact_jax import main
  prompts = tmp_path / 'prompts.jsonl'
  prompts.write_text('plain line\n{"prompt": "def f():\\n", "prefix": "def"}\n"quoted"\n')
  # The shapes of CONFIG, so the engine's compiled steps are reused.
  shape = [f'--gin.models.TransformerConfig.{k}={getattr(CONFIG, k)}'
           for k in ('embed_dim', 'num_heads', 'num_kv_heads', 'head_dim', 'mlp_dim')]
  flags = ['--gin_file=gin/models/tiny.gin', '--gin.VOCAB_SIZE=259', f'--gin.MAX_LEN={MAX_LEN}',
           *shape, '--random_init', '--max_tokens=3', '--n=2', '--num_slots=4', '--json']
  assert main.main(['sample', *flags, f'--prompts_file={prompts}']) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [(r['prompt'], r['sample']) for r in rows] == [(i, j) for i in range(3) for j in range(2)]
  assert all(r['num_tokens'] == 3 and r['perplexity'] > 1 for r in rows)
  prompts.write_text('ok\n{"prompt": 3}\n')
  gin.clear_config(clear_constants=True)  # each CLI call parses gin afresh
  assert main.main(['sample', *flags, f'--prompts_file={prompts}']) == 2
  assert f'{prompts}:2: expected' in capsys.readouterr().err
  gin.clear_config(clear_constants=True)
  assert main.main(['sample', '--gin_file=gin/models/tiny.gin', '--prompt=x']) == 2
  assert 'exactly one of --checkpoint_dir, --hf_dir or --random_init' in capsys.readouterr().err
