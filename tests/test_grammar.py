"""Constrained decoding: patterns, token tables, and sampling inside them."""

import functools
import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from restreact_jax import decoding
from restreact_jax import engine as engine_lib
from restreact_jax import errors
from restreact_jax import grammar as g
from restreact_jax import llm
from restreact_jax.agent import parsing
from restreact_jax.agent import prompts
from restreact_jax.agent import step_grammars
from restreact_jax.models import configs
from restreact_jax.models import transformer

VOCAB = seqio.ByteVocabulary()
MAX_LEN = 64
CONFIG = configs.TransformerConfig(vocab_size=VOCAB.vocab_size, embed_dim=32, num_layers=1,
                                   num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=32,
                                   max_len=MAX_LEN)
CALL = g.seq('f(x=', g.py_string(), ', ids=', g.int_list(), ')')


# ----------------------------------------------------------------------------
# Patterns and the character DFA.


@pytest.mark.parametrize('text,want', [
    ("f(x='a b', ids=[1, 23])", 'complete'),
    ("f(x='a', ids=[])  # [END] and anything after", 'complete'),
    ('f(x="it\'s", ids=[7])', 'complete'),
    ("f(x='a\\'b\\x23', ids=[1])", 'complete'),
    ("f(x='a", 'partial'),
    ("f(x='a', ids=[1, ", 'partial'),
    ("f(x='', ids=[1])", 'broken'),       # empty string
    ("f(x='  ', ids=[1])", 'broken'),     # blank string
    ("f(x='a\\q', ids=[1])", 'broken'),   # an escape Python rejects
    ("f(x='a', ids=[1,2])", 'broken'),    # the list's separator is ', '
    ("f(y='a', ids=[1])", 'broken'),      # another field
    ("f(x='a'b', ids=[1])", 'broken'),    # the string ended early
    ("f(x='a\nb', ids=[1])", 'broken'),   # one line only
])
def test_the_dfa_accepts_exactly_the_pattern(text, want):
  assert g.compile_chars(CALL).follows(text) == want


def test_alternatives_and_repeats():
  dfa = g.compile_chars(g.seq(g.alt('Search(', 'Stop('), g.digits(), ')'))
  assert dfa.follows('Search(12)') == 'complete'
  assert dfa.follows('Stop(0)') == 'complete'
  assert dfa.follows('Stop()') == 'broken'
  assert dfa.follows('Sto') == 'partial'
  assert dfa.follows('Start(1)') == 'broken'


# ----------------------------------------------------------------------------
# Token tables.

TEXTS = [None, None, 'f', '(', 'x', '=', "'", 'ab', "'a", "', ids=[", '1', ', ', '2', '])',
         ')', '  # [END]', "b'", "f(x='", ') tail', 'zz']


def allowed(tables, state):
  row = tables.table()[state]
  return {TEXTS[i] for i in range(len(TEXTS)) if row[i] >= 0}


def test_token_table_follows_characters_across_token_boundaries():
  tables = g.TokenTables(TEXTS)
  start = tables.start(CALL)
  assert allowed(tables, start) == {'f', "f(x='"}
  after_eq = tables.start(CALL, 'f(x=')
  # A string opens with a quote and holds a solid character first (',' is one).
  assert allowed(tables, after_eq) == {"'", "'a", "', ids=["}
  inside = tables.table()[after_eq, TEXTS.index("'a")]
  # Inside the string anything but control ids goes (quotes close it).
  assert allowed(tables, inside) == set(TEXTS[2:]) - {"'a"}  # a quote must be followed by ', ids='
  # Control ids (EOS) never continue an unfinished pattern.
  assert tables.table()[inside, 1] == -1


def test_a_token_that_finishes_the_pattern_part_way_frees_the_row():
  tables = g.TokenTables(TEXTS)
  state = tables.start(CALL, "f(x='a', ids=[1")
  table = tables.table()
  assert table[state, TEXTS.index('])')] >= 0          # completes: an accepting state
  done = table[state, TEXTS.index('])')]
  assert table[done, 1] == g.FREE                      # EOS after a complete pattern
  assert table[state, TEXTS.index(') tail')] == -1     # ']' is still missing
  closing = tables.start(CALL, "f(x='a', ids=[1]")
  assert table[closing, TEXTS.index(') tail')] == g.FREE  # ')' completes, ' tail' is free
  assert table[g.FREE].min() == g.FREE                 # the free row allows everything


def test_tables_share_rows_for_equal_patterns_and_reject_a_bad_prefix():
  tables = g.TokenTables(TEXTS)
  a = tables.start(CALL)
  version = tables.version
  assert tables.start(g.seq('f(x=', g.py_string(), ', ids=', g.int_list(), ')')) == a
  assert tables.version == version
  tables.start(g.Lit('zz'))
  assert tables.version == version + 1
  with pytest.raises(errors.UserError, match='does not fit the request grammar'):
    tables.start(CALL, 'g(')


def test_a_state_the_vocabulary_cannot_continue_is_free():
  tables = g.TokenTables([None, None, 'a', 'b'])
  start = tables.start(g.Lit('ac'), 'a')
  assert start != g.FREE
  assert (tables.table()[start] == g.FREE).all()


# ----------------------------------------------------------------------------
# Sampling inside a grammar.


@pytest.fixture(scope='module')
def params():
  model = transformer.Transformer(CONFIG)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 4), jnp.int32))['params'])
  return nn.unbox(init(jax.random.key(1)))


def requests(pattern):
  return [llm.SamplingRequest(prompt=f'prompt {k}', n=3, temperature=1.0, max_tokens=40,
                              seed=k, stop=(), grammar=pattern, response_prefix='f(x=' * (k % 2))
          for k in range(4)]


def test_engine_samples_stay_inside_the_grammar_and_match_the_plain_sampler(params):
  # Quotes and digits come quickly from a random model: short strings.
  pattern = g.seq('f(x=', g.alt("'ab'", "'b'"), ', ids=', g.int_list(), ')  # [END]')
  eng = engine_lib.Engine(CONFIG, params, VOCAB, num_slots=4, decode_chunk=4)
  got = eng.generate(requests(pattern))
  dfa = g.compile_chars(pattern)
  verdicts = [dfa.follows(s.text) for samples in got for s in samples]
  assert 'broken' not in verdicts
  assert verdicts.count('complete') >= 1
  sampler = decoding.StaticSampler(
      functools.partial(engine_lib.apply_model, CONFIG),
      lambda batch, max_len: transformer.KVCache.init(CONFIG, batch, max_len), VOCAB,
      max_len=MAX_LEN, batch_size=4, decode_chunk=4)
  want = sampler.generate(params, requests(pattern))
  assert [[s.tokens for s in x] for x in got] == [[s.tokens for s in x] for x in want]
  # Unconstrained, the same random model breaks the pattern at once.
  free = eng.generate([llm.SamplingRequest(prompt='prompt 0', n=3, temperature=1.0,
                                           max_tokens=10, seed=0, stop=())])
  assert all(dfa.follows(s.text) == 'broken' for s in free[0])


def test_forced_tokens_have_log_prob_zero_and_mixed_batches_keep_free_rows_free(params):
  eng = engine_lib.Engine(CONFIG, params, VOCAB, num_slots=4, decode_chunk=4)
  forced = llm.SamplingRequest(prompt='p', n=2, temperature=1.0, max_tokens=12, seed=3,
                               stop=(), grammar=g.Lit('hello'))
  free = llm.SamplingRequest(prompt='p', n=2, temperature=1.0, max_tokens=12, seed=3, stop=())
  got_forced, got_free = eng.generate([forced, free])
  for s in got_forced:
    assert s.text.startswith('hello')
    np.testing.assert_allclose(s.logprobs[:5], 0.0, atol=1e-6)
  alone = engine_lib.Engine(CONFIG, params, VOCAB, num_slots=4, decode_chunk=4)
  assert [s.tokens for s in got_free] == [s.tokens for s in alone.generate([free])[0]]


def test_a_model_with_a_padded_vocabulary_never_samples_past_it_under_a_grammar():
  wide = configs.TransformerConfig(**{**CONFIG.__dict__, 'vocab_size': 384})
  model = transformer.Transformer(wide)
  params = nn.unbox(model.init(jax.random.key(2), jnp.zeros((1, 4), jnp.int32))['params'])
  # A third of a random model's mass is on the padding ids.
  # Longer than the budget: no row reaches the end, where the rest would be free.
  pattern = g.seq("f(x='", g.Repeat(g.CharSet('ab')), "'" + 'z' * 12)
  eng = engine_lib.Engine(wide, params, VOCAB, num_slots=2, decode_chunk=4)
  got = eng.generate([llm.SamplingRequest(prompt='p', n=2, temperature=1.0, max_tokens=12,
                                          seed=1, stop=(), grammar=pattern)])
  for s in got[0]:
    assert len(s.tokens) == 12 and max(s.tokens) < VOCAB.vocab_size
    assert g.compile_chars(pattern).follows(s.text) == 'partial'
  table = g.TokenTables(g.token_texts(VOCAB))
  table.start(pattern)
  full = table.table(384)
  assert full.shape[1] == 384
  assert (full[g.FREE, VOCAB.vocab_size:] == g.FREE).all()
  assert (full[1:table.num_states, VOCAB.vocab_size:] < 0).all()


def test_a_prefix_outside_the_grammar_is_one_clear_error(params):
  eng = engine_lib.Engine(CONFIG, params, VOCAB, num_slots=2)
  bad = llm.SamplingRequest(prompt='p', grammar=g.Lit('hello'), response_prefix='bye')
  with pytest.raises(errors.UserError, match=r"request 0: response_prefix 'bye' does not fit"):
    eng.generate([bad])
  with pytest.raises(errors.UserError, match='grammar must be a grammar.Pattern'):
    llm.SamplingRequest(prompt='p', grammar='f(').validate()


# ----------------------------------------------------------------------------
# The agent's step grammars.

ACTIONS = {
    'decision': [({'type': 'Search', 'query': 'Who founded @1?', 'thoughts': 'I need @1.'}, ()),
                 ({'type': 'Terminate', 'thoughts': 'Done.'}, ('I have it.',))],
    'summarize': [({'grounded_summarization': "@1's founder is @2 [link_id=4].",
                    'thoughts': 'Link 4.', 'selected_link_ids': [4, 6], 'type': 'x'}, ())],
    'answer': [({'type': 'Answer', 'thoughts': 'From link 4.', 'answer': 'It is @2 # [END]'}, ())],
    'relevance': [({'type': 'Check_Answer', 'passed': True}, ()),
                  ({'type': 'Revise_Answer', 'revised_answer': 'It is @3.'}, ())],
    'grounding': [({'type': 'Check_Answer', 'passed': False}, ())],
}


@pytest.mark.parametrize('step_type', sorted(ACTIONS))
def test_rendered_targets_follow_their_step_grammar(step_type):
  for action, comments in ACTIONS[step_type]:
    text = prompts.render_target(step_type, action, comments) + '  ' + llm.END_MARKER
    pattern = step_grammars.step_grammar(step_type, valid_link_ids=[4, 5, 6])
    assert g.compile_chars(pattern).follows(text) == 'complete', text


def test_step_grammars_refuse_the_shapes_small_models_write():
  answer = g.compile_chars(step_grammars.step_grammar('answer'))
  head = prompts.ACTION_HEADS['answer']
  assert answer.follows(head + "'x. The answer is y.')") == 'broken'      # no answer field
  assert answer.follows(head + "'x', answer='Link answer='y')") == 'broken'
  # The stop marker cannot open inside a string (the sampler would stop there).
  assert answer.follows(head + "'x', answer='y])  # [END]") == 'broken'
  summarize = g.compile_chars(step_grammars.step_grammar('summarize', valid_link_ids=[1, 2]))
  text = prompts.ACTION_HEADS['summarize'] + "'s', thoughts='t', selected_link_ids=[3])"
  assert summarize.follows(text) == 'broken'
  # After a search without results only the empty selection is left.
  nothing = g.compile_chars(step_grammars.step_grammar('summarize', valid_link_ids=[]))
  assert nothing.follows(text) == 'broken'
  assert nothing.follows(text.replace('[3]', '[]') + '  ' + llm.END_MARKER) == 'complete'
  decision = g.compile_chars(step_grammars.step_grammar('decision'))
  calc = prompts.ACTION_HEADS['decision'] + "'t', action=Calculate(expression='1+1'))"
  assert decision.follows(calc) == 'broken'
  with_calc = g.compile_chars(step_grammars.step_grammar('decision', ('search', 'calculator')))
  assert with_calc.follows(calc + '  ' + llm.END_MARKER) == 'complete'


def _random_match(dfa, rng):
  """A random text the DFA accepts (closing moves grow likelier with length)."""
  spare = next(ch for ch in 'Zµq~' if ch not in dfa.classes)
  by_class = {c: ch for ch, c in dfa.classes.items()}
  state, out = 0, []
  while True:
    if dfa.accept[state] and (dfa.trans[state] < 0).all():
      return ''.join(out)
    moves = [c for c in range(dfa.trans.shape[1]) if dfa.trans[state, c] >= 0]
    # Prefer moves that leave the state (towards the end) as the text grows.
    leaving = [c for c in moves if dfa.trans[state, c] != state]
    c = rng.choice(leaving if leaving and rng.random() < min(0.9, len(out) / 40) else moves)
    out.append(by_class.get(c, spare))
    state = int(dfa.trans[state, c])


@pytest.mark.parametrize('step_type', sorted(ACTIONS))
def test_everything_a_step_grammar_admits_parses(step_type):
  rng = random.Random(step_type)
  dfa = g.compile_chars(step_grammars.step_grammar(step_type, valid_link_ids=[4, 5, 6]))
  for _ in range(200):
    text = _random_match(dfa, rng)
    body = text[:text.index(llm.END_MARKER)]
    result = parsing.parse_step(step_type, body, valid_link_ids=[4, 5, 6])
    assert result.ok, (text, result.error)
