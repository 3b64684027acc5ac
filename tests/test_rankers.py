"""Tests for the AI-feedback rankers (LLM, rule-based, self-consistency, oracle, weighted)."""

import dataclasses
import math

import pytest

from restreact_jax import errors
from restreact_jax.feedback import ranker_prompt
from restreact_jax.feedback.consistency import SelfConsistencyRanker
from restreact_jax.feedback.llm_ranker import LLMRanker
from restreact_jax.feedback.oracle import OracleRanker
from restreact_jax.feedback.rankers import (Ranking, WeightedRanker, rank_trajectories,
                                            ranking_row)
from restreact_jax.feedback.rule_ranker import RuleRanker
from restreact_jax.feedback.step_context import Candidate, StepContext, step_contexts
from restreact_jax.llm import Sample
from restreact_jax.search.types import ResultItem

QUESTION = "In what city was the writer of 'The Glass Orchard' born?"
R1 = [{'link_id': 1, 'link_text': 'The Glass Orchard', 'snippet': "'The Glass Orchard' is a 1984 novel written by Mira Castell.", 'doc_id': 'd1'},
      {'link_id': 2, 'link_text': 'Orchard farming', 'snippet': 'Apple orchards need pruning in winter.', 'doc_id': 'd2'}]
R2 = [{'link_id': 3, 'link_text': 'Mira Castell', 'snippet': 'Mira Castell (born 1958 in Lowbridge) is a novelist.', 'doc_id': 'd3'},
      {'link_id': 4, 'link_text': 'Lowbridge', 'snippet': 'Lowbridge is a port town.', 'doc_id': 'd4'}]
SUM1 = "According to [link_id=1], 'The Glass Orchard' is a novel written by Mira Castell."
SUM2 = 'According to [link_id=3], Mira Castell was born in Lowbridge.'
ANSWER = "'The Glass Orchard' is a novel written by Mira Castell [link_id=1], who was born in Lowbridge [link_id=3]."
REVISED = 'Mira Castell, the author, was born in Lowbridge [link_id=3].'


def cand(action, text=None, ppl=1.5):
  ok = action is not None
  return {'text': text if text is not None else repr(action), 'logprobs': [], 'perplexity': ppl,
          'finish_reason': 'stop', 'parse': {'ok': ok, 'action': action, 'error': None if ok else 'bad'}}


def step(step_type, cands, chosen=0, tool=None, prompt='PREAMBLE\nSTATE'):
  return {'step_type': step_type, 'prompt': prompt, 'prefix_len': len('PREAMBLE\n'),
          'candidates': cands, 'chosen': chosen, 'attempts': 1, 'parse_events': [],
          'tool': tool, 'timings': {}}


def search(q, thoughts='Need more facts.'):
  return {'type': 'Search', 'query': q, 'thoughts': thoughts}


def select(summary, ids, thoughts='These links answer part of it.'):
  return {'type': 'LinkSelection', 'grounded_summarization': summary, 'thoughts': thoughts,
          'selected_link_ids': ids}


def trajectory(qid='q1', repeat=0, final=REVISED):
  steps = [
      step('decision', [cand(search("author of 'The Glass Orchard'"))],
           tool={'query': "author of 'The Glass Orchard'", 'results': R1}),
      step('summarize', [cand(select(SUM1, [1]))]),
      step('decision', [cand(search('Mira Castell birthplace'))],
           tool={'query': 'Mira Castell birthplace', 'results': R2}),
      step('summarize', [cand(select(SUM2, [3]))]),
      step('decision', [cand({'type': 'Terminate', 'thoughts': 'I know the answer.'})]),
      step('answer', [cand({'type': 'Answer', 'thoughts': 'Combine.', 'answer': ANSWER})]),
      step('relevance', [cand({'type': 'Revise_Answer', 'revised_answer': REVISED})]),
      step('grounding', [cand({'type': 'Check_Answer', 'passed': True})]),
  ]
  return {'schema_version': 1, 'question_id': qid, 'question': QUESTION, 'repeat': repeat,
          'seed': 0, 'policy': 'test', 'steps': steps, 'answer_generation': ANSWER,
          'final_answer': final, 'status': 'done', 'failure': None, 'num_searches': 2}


def contexts():
  return [ctx for ctx, _ in step_contexts(trajectory())]


def as_cands(actions):
  return [Candidate(text=repr(a) if a is not None else 'garbage(', action=a, ok=a is not None,
                    perplexity=1.0 + 0.1 * i) for i, a in enumerate(actions)]


# --- replay -----------------------------------------------------------------

def test_step_contexts_replay_the_visible_state():
  ctx = contexts()
  assert [c.step_type for c in ctx] == ['decision', 'summarize', 'decision', 'summarize',
                                        'decision', 'answer', 'relevance', 'grounding']
  assert ctx[0].current_results == () and ctx[0].queries == ()
  assert [r.link_id for r in ctx[1].current_results] == [1, 2]
  assert ctx[2].summaries == (SUM1,) and ctx[2].queries == ("author of 'The Glass Orchard'",)
  assert [r.link_id for r in ctx[3].current_results] == [3, 4]
  assert [r.link_id for r in ctx[3].shown_links] == [1, 2, 3, 4]
  assert [r.link_id for r in ctx[5].selected_links] == [1, 3]
  assert ctx[5].answer is None and ctx[6].answer == ANSWER
  assert ctx[7].answer == REVISED  # the relevance check revised it
  assert ctx[3].visible_prompt == 'STATE'
  assert ctx[4].past_actions[1]['selected_links'][0].link_id == 1
  assert (ctx[7].question_id, ctx[7].repeat, ctx[7].step_index) == ('q1', 0, 7)


def test_unknown_step_type_is_a_user_error():
  t = trajectory()
  t['steps'][2]['step_type'] = 'ponder'
  with pytest.raises(errors.UserError, match="step 2: unknown step_type 'ponder'"):
    list(step_contexts(t))


# --- rule-based rater: each step type prefers the grounded candidate ----------

def best(ranking, n=None):
  assert sorted(ranking.order) == list(range(n or len(ranking.order)))
  return ranking.order[0]


def test_rules_decision_first_query_grounded_in_question():
  r = RuleRanker().rank(contexts()[0], as_cands([
      search('best pizza recipe'),
      search("author of The Glass Orchard"),
      search("author of The Glass Orchard", thoughts=''),
      None,
  ]))
  assert best(r) == 1
  assert r.order[-1] == 3  # unparseable is worst
  assert 'query_grounding' in r.explanation and 'empty=-3.00' in r.explanation


def test_rules_decision_penalises_repeats_and_uses_earlier_summaries():
  ctx = contexts()[2]  # after the first summary
  r = RuleRanker().rank(ctx, as_cands([
      search("author of 'The Glass Orchard'"),  # repeat
      search('Mira Castell birthplace'),       # grounded in the summary
      {'type': 'Terminate', 'thoughts': 'Done.'},  # too early: no birthplace yet
  ]))
  assert r.order == [1, 0, 2] or r.order[0] == 1
  assert r.scores[1] > r.scores[0] and r.scores[1] > r.scores[2]
  assert 'repeat=' in r.explanation.splitlines()[0]


def test_rules_decision_prefers_terminate_once_answer_is_in_summaries():
  ctx = contexts()[4]
  r = RuleRanker().rank(ctx, as_cands([
      search('Lowbridge port town history'),
      {'type': 'Terminate', 'thoughts': 'The summaries name the city.'},
  ]))
  assert best(r) == 1


def test_rules_summarize_prefers_supported_and_cited_selection():
  ctx = contexts()[3]
  r = RuleRanker().rank(ctx, as_cands([
      select('According to [link_id=3], Mira Castell was born in Paris in 1901.', [3]),  # unsupported claims
      select('According to [link_id=9], Mira Castell was born in Lowbridge.', [3]),      # cites unshown id
      select(SUM2, [3]),                                                                  # grounded
      select('Mira Castell was born in Lowbridge.', [3]),                                  # no citation
      select('Nothing is selected.', []),                                                  # misses relevant link
      select('', [3]),                                                                     # empty
  ]))
  assert best(r) == 2
  assert r.scores[2] > max(r.scores[i] for i in (0, 1, 3, 4, 5))
  assert r.scores[5] < r.scores[2] - 2


def test_rules_accept_only_fully_grounded_candidates_without_penalties():
  ctx = contexts()[3]
  cands = as_cands([
      select(SUM2, [3]),                                                                  # grounded
      select('According to [link_id=3], Mira Castell was born in Paris in 1901.', [3]),  # partly
      select('Mira Castell was born in Lowbridge.', [3]),                                  # no citation
      select('', [3]),                                                                     # empty
  ])
  rules = RuleRanker()
  assert [rules.acceptable(ctx, c) for c in cands] == [True, False, False, False]
  # "born in Paris in 1901": no snippet sentence states it, at any support level.
  assert 'unstated_claim' in rules.score(ctx, cands[1])
  assert not rules.acceptable(ctx, cands[1], min_support=0.5)


def test_rules_reject_summaries_that_recombine_or_restate_facts():
  ctx = contexts()[1]
  shown = (ResultItem(1, 'The Glass Orchard', 'The Glass Orchard was directed by Ada Vell. '
                      'The Glass Orchard was produced by Tarn Films.'),)
  ctx = dataclasses.replace(ctx, question='Who founded the company that produced The Glass Orchard?',
                            current_results=shown, shown_links=shown)
  rules = RuleRanker()
  cands = as_cands([
      select('The Glass Orchard was produced by Tarn Films [link_id=1].', [1]),   # stated
      select('The Glass Orchard was produced by Ada Vell [link_id=1].', [1]),     # recombined
      select('The Glass Orchard was directed by Ada Vell [link_id=1].', [1]),     # not asked for
      select('The Glass Orchard was produced by The Glass Orchard [link_id=1].', [1]),  # nothing new
      select('The Glass Orchard was produced The Glass Orchard was produced by Tarn Films '
             '[link_id=1].', [1]),                                                # garbled
  ])
  scores = [rules.score(ctx, c) for c in cands]
  assert [rules.acceptable(ctx, c) for c in cands] == [True, False, False, False, False]
  assert 'unstated_claim' in scores[1] and 'off_question' in scores[2]
  assert 'no_progress' in scores[3] and 'garbled' in scores[4]
  assert best(rules.rank(ctx, cands)) == 0


def test_rules_answer_conclusion_must_come_from_the_evidence():
  ctx = contexts()[5]
  rules = RuleRanker()
  good = as_cands([{'type': 'Answer', 'thoughts': 't', 'answer': ANSWER + ' The answer is Lowbridge.'}])[0]
  elsewhere = as_cands([{'type': 'Answer', 'thoughts': 't', 'answer': ANSWER + ' The answer is Paris.'}])[0]
  restated = as_cands([{'type': 'Answer', 'thoughts': 't',
                        'answer': ANSWER + " The answer is The Glass Orchard."}])[0]
  assert not any(k.endswith('unsupported_conclusion') for k in rules.score(ctx, good))
  assert 'unsupported_conclusion' in rules.score(ctx, elsewhere)
  assert 'unsupported_conclusion' in rules.score(ctx, restated)


def test_rules_summarize_selecting_nothing_is_right_when_nothing_is_relevant():
  base = contexts()[1]
  off_topic = (ResultItem(7, 'Weather', 'Rain is expected tomorrow.'),
               ResultItem(8, 'Recipes', 'Bake the bread for an hour.'))
  ctx = StepContext(**{**base.__dict__, 'current_results': off_topic})
  r = RuleRanker().rank(ctx, as_cands([
      select('According to [link_id=7], rain is expected tomorrow.', [7]),
      select('Nothing is selected.', [], thoughts='No result is about the novel.'),
  ]))
  assert best(r) == 1


def test_rules_answer_prefers_grounded_cited_answer():
  ctx = contexts()[5]
  r = RuleRanker().rank(ctx, as_cands([
      {'type': 'Answer', 'thoughts': 'Guess.', 'answer': 'It was written by Tom Baker, born in Rome [link_id=1].'},
      {'type': 'Answer', 'thoughts': 'Combine.', 'answer': 'Mira Castell was born in Lowbridge.'},
      {'type': 'Answer', 'thoughts': 'Combine.', 'answer': ANSWER},
      {'type': 'Answer', 'thoughts': 'Combine.', 'answer': 'Mira Castell was born in Lowbridge [link_id=4].'},
  ]))
  assert best(r) == 2
  assert r.scores[2] > r.scores[1] > r.scores[0]  # uncited beats ungrounded
  assert r.scores[2] > r.scores[3]  # cites a link that was shown but not selected


@pytest.mark.parametrize('step_type', ['relevance', 'grounding'])
def test_rules_checks_pass_grounded_answers_and_revise_ungrounded(step_type):
  base = contexts()[7]
  good = StepContext(**{**base.__dict__, 'step_type': step_type, 'answer': ANSWER})
  bad = StepContext(**{**base.__dict__, 'step_type': step_type,
                       'answer': 'The author was born in Rome in 1901 [link_id=2].'})
  cands = as_cands([{'type': 'Check_Answer', 'passed': True},
                    {'type': 'Revise_Answer', 'revised_answer': REVISED},
                    {'type': 'Check_Answer', 'passed': False}])
  assert best(RuleRanker().rank(good, cands)) == 0
  r = RuleRanker().rank(bad, cands)
  assert best(r) == 1
  assert r.scores[0] < r.scores[1]


def test_rules_wrong_action_type_is_bad():
  r = RuleRanker().rank(contexts()[5], as_cands([
      search('Mira Castell'), {'type': 'Answer', 'thoughts': 'x', 'answer': ANSWER}]))
  assert best(r) == 1 and 'wrong_type' in r.explanation


# --- self-consistency ---------------------------------------------------------

def test_self_consistency_picks_the_majority_answer():
  group = [trajectory(repeat=i, final=f) for i, f in enumerate([
      'The author was born in Lowbridge [link_id=3].', 'Born in Lowbridge.',
      'Lowbridge, according to [link_id=3].', 'She was born in Dunmere [link_id=9].'])]
  ranker = SelfConsistencyRanker(group)
  ctx = StepContext(**{**contexts()[5].__dict__, 'repeat': 3})  # the dissenting rollout
  r = ranker.rank(ctx, as_cands([
      {'type': 'Answer', 'thoughts': 't', 'answer': 'She was born in Dunmere [link_id=9].'},
      {'type': 'Answer', 'thoughts': 't', 'answer': 'She was born in Lowbridge [link_id=3].'},
      None]))
  assert r.order == [1, 0, 2]
  assert not r.oracle
  # Checks follow the answer they commit to.
  chk = StepContext(**{**contexts()[7].__dict__, 'repeat': 3, 'answer': 'Born in Dunmere.'})
  r = ranker.rank(chk, as_cands([{'type': 'Check_Answer', 'passed': True},
                                 {'type': 'Revise_Answer', 'revised_answer': 'Born in Lowbridge.'}]))
  assert best(r) == 1


def test_self_consistency_without_a_group_is_neutral():
  ranker = SelfConsistencyRanker([trajectory()])
  cands = as_cands([{'type': 'Answer', 'thoughts': 't', 'answer': 'x'},
                    {'type': 'Answer', 'thoughts': 't', 'answer': 'y'}])
  r = ranker.rank(contexts()[5], cands)
  assert r.status == 'no_group' and r.scores == [0.0, 0.0] and r.order == [0, 1]


# --- oracle -------------------------------------------------------------------

def test_oracle_uses_gold_and_is_labelled():
  oracle = OracleRanker({'q1': ['Lowbridge', 'Lowbridge town']})
  r = oracle.rank(contexts()[5], as_cands([
      {'type': 'Answer', 'thoughts': 't', 'answer': 'Born in Dunmere.'},
      {'type': 'Answer', 'thoughts': 't', 'answer': 'Born in Lowbridge.'}]))
  assert r.oracle is True and best(r) == 1
  r = oracle.rank(contexts()[2], as_cands([{'type': 'Terminate', 'thoughts': 'x'}, search('Mira Castell')]))
  assert r.oracle is True and best(r) == 1  # gold not found yet: search on
  with pytest.raises(errors.UserError, match="no gold answers for question 'q1'"):
    OracleRanker({'q2': ['x']}).rank(contexts()[5], as_cands([None, None]))


# --- weighted combination ---------------------------------------------------

class Fixed:
  """A ranker with fixed scores (for testing the combination only)."""

  def __init__(self, name, scores, oracle=False):
    self.name, self.scores, self.oracle, self.batches = name, scores, oracle, 0

  def rank_batch(self, items):
    self.batches += 1
    return [Ranking(sorted(range(len(c)), key=lambda i: -self.scores[i]), list(self.scores), self.name,
                    self.name, self.oracle) for _, c in items]

  def rank(self, ctx, cands):
    return self.rank_batch([(ctx, cands)])[0]


def test_weighted_combination_normalises_and_weights():
  a = Fixed('a', [10.0, 0.0, 5.0])   # normalised 1, 0, .5
  b = Fixed('b', [0.0, 2.0, 1.0])    # normalised 0, 1, .5
  cands = as_cands([None, None, None])
  ctx = contexts()[0]
  assert WeightedRanker([(a, 3.0), (b, 1.0)]).rank(ctx, cands).order == [0, 2, 1]
  assert WeightedRanker([(a, 1.0), (b, 3.0)]).rank(ctx, cands).order == [1, 2, 0]
  r = WeightedRanker([(a, 1.0), (b, 1.0)]).rank(ctx, cands)
  assert r.scores == pytest.approx([1.0, 1.0, 1.0])
  assert r.order == [0, 1, 2]  # ties fall back to perplexity
  assert not r.oracle and r.ranker == 'weighted(a:1,b:1)'
  assert WeightedRanker([(a, 1.0), (Fixed('o', [0, 1, 2], oracle=True), 0.5)]).rank(ctx, cands).oracle
  with pytest.raises(errors.UserError, match='weights'):
    WeightedRanker([(a, -1.0)])
  with pytest.raises(errors.UserError, match='at least one'):
    WeightedRanker([])


def test_weighted_rules_and_consistency_on_real_rankers():
  group = [trajectory(repeat=i, final=f) for i, f in enumerate(
      ['Born in Lowbridge [link_id=3].'] * 3 + ['Born in Dunmere.'])]
  ranker = WeightedRanker([(RuleRanker(), 1.0), (SelfConsistencyRanker(group), 1.0)])
  r = ranker.rank(contexts()[5], as_cands([
      {'type': 'Answer', 'thoughts': 't', 'answer': 'Born in Dunmere.'},
      {'type': 'Answer', 'thoughts': 't', 'answer': ANSWER}]))
  assert best(r) == 1 and '[rules x1' in r.explanation and '[consistency x1' in r.explanation


# --- LLM ranker: prompt, parsing, batching -----------------------------------

@pytest.mark.parametrize('text, order, status', [
    ('Explanation: #2 cites the link.\nAnswer: #2\nRanking: #2 > #1 > #3 > #4', [1, 0, 2, 3], 'ok'),
    ('Sure! Here is my rating.\n\nExplanation: ok\nAnswer: #3\nRanking: #3>#1>#4>#2\nThanks.', [2, 0, 3, 1], 'ok'),
    ('**Explanation:** fine\n**Answer:** Output #4\n**Ranking:** Output 4 > Output 2 > Output 1 > Output 3', [3, 1, 0, 2], 'ok'),
    ('Answer: #2', [1, 0, 3, 2], 'partial:missing_ranking'),
    ('Ranking: #3 > #3 > #1 > #2 > #4', [2, 0, 1, 3], 'partial:missing_answer,duplicates'),
    ('Answer: #9\nRanking: #4 > #9 > #1', [3, 0, 2, 1], 'partial:out_of_range,missing_answer,incomplete'),
    ('Answer: #1\nRanking: #2 > #1 > #3 > #4', [0, 1, 2, 3], 'partial:conflict'),
    ('Ranking: 2 > 4 > 1 > 3', [1, 3, 0, 2], 'partial:missing_answer'),
    ('I cannot decide.', [0, 3, 2, 1], 'fallback'),
    ('', [0, 3, 2, 1], 'fallback'),
])
def test_parse_ranking_output(text, order, status):
  parsed = ranker_prompt.parse_ranking_output(text, 4, fallback=[0, 3, 2, 1])
  assert parsed.order == order
  assert parsed.status == status


def test_parse_ranking_output_explanation_spans_lines():
  p = ranker_prompt.parse_ranking_output('Explanation: first line\nsecond line\nAnswer: #1\nRanking: #1 > #2', 2)
  assert p.explanation == 'first line second line' and p.answer == 0 and p.status == 'ok'


def test_ranker_prompt_layout():
  prompt = ranker_prompt.render_ranker_prompt('summarize', 'THE STATE', ['a = 1', '', 'b = 2'])
  for piece in ('Rater Instructions:', 'relevant and grounded answers with minimal steps',
                'empty', '*** Model Can See:\nTHE STATE', '*** Model Output #1:\na = 1',
                '*** Model Output #2:\n(empty output)', '*** Model Output #3:', 'Your Instructions:',
                'outside "Model Can See"', 'Explanation:', 'Answer: #', 'Ranking: #'):
    assert piece in prompt
  assert prompt.index('*** Model Can See') < prompt.index('*** Model Output #1') < prompt.index('Your Instructions')
  assert 'Model Output #4' not in prompt


class RecordingLLM:

  def __init__(self, reply):
    self.reply, self.calls = reply, []

  def generate(self, requests):
    self.calls.append(list(requests))
    return [[Sample(self.reply(r.prompt), (1,), (-0.1,), 'stop')] for r in requests]


def test_llm_ranker_batches_all_steps_into_one_call():
  def reply(prompt):
    if 'Lowbridge' in prompt.split('*** Model Output #2:')[1].split('***')[0]:
      return 'Explanation: #2 names the city.\nAnswer: #2\nRanking: #2 > #1'
    return 'no idea'

  t = trajectory()
  for s in t['steps']:  # give every step two candidates
    s['candidates'].append(cand(s['candidates'][0]['parse']['action'], text='second Lowbridge', ppl=0.5))
  t['steps'][0]['candidates'][1]['text'] = 'second'
  llm = RecordingLLM(reply)
  ranked = rank_trajectories(LLMRanker(llm), [t, trajectory(qid='q2')], progress=False)
  assert len(llm.calls) == 1 and len(llm.calls[0]) == 8  # q2's steps have one candidate each
  assert len(ranked) == 8
  first = ranked[0][2]
  assert first.status == 'fallback' and first.order == [1, 0]  # lower perplexity first
  for _, _, rk in ranked[1:]:
    assert rk.order == [1, 0] and rk.status == 'ok' and rk.explanation == '#2 names the city.'
  req = llm.calls[0][3]
  assert req.temperature == 0.0
  assert '*** Model Can See:\nSTATE' in req.prompt and 'PREAMBLE' not in req.prompt
  row = ranking_row(ranked[2][0], ranked[2][2])
  assert {k: row[k] for k in ('question_id', 'repeat', 'step_index', 'order')} == {
      'question_id': 'q1', 'repeat': 0, 'step_index': 2, 'order': [1, 0]}
  assert row['oracle'] is False and row['ranker'] == 'llm'


def test_llm_ranker_inside_weighted_still_makes_one_call():
  llm = RecordingLLM(lambda p: 'Answer: #1\nRanking: #1 > #2')
  ranker = WeightedRanker([(LLMRanker(llm), 1.0), (RuleRanker(), 0.5)])
  items = [(c, as_cands([search('a'), search('b')])) for c in contexts()[:3]]
  out = ranker.rank_batch(items)
  assert len(out) == 3 and len(llm.calls) == 1
  assert all(math.isfinite(s) for r in out for s in r.scores)


def test_rules_filter_steps_taken_after_an_unsound_summary():
  # The first summary names the wrong relation: "directed" is not stated by R1.
  bad = trajectory()
  bad['steps'][1]['candidates'][0]['parse']['action'] = select(
      "According to [link_id=1], 'The Glass Orchard' was directed by Mira Castell.", [1])
  rules = RuleRanker()
  clean, unsound = contexts()[2], [ctx for ctx, _ in step_contexts(bad)][2]
  query = as_cands([search('Mira Castell born')])[0]
  assert rules.sound_history(clean) and not rules.sound_history(unsound)
  assert rules.acceptable(clean, query)
  assert 'unsound_history' in rules.score(unsound, query)
  assert not rules.acceptable(unsound, query)


def test_rules_answer_before_the_chain_is_complete_is_penalised():
  ctx = contexts()[5]
  early = dataclasses.replace(ctx, summaries=ctx.summaries[:1])   # only "written by"
  answer = as_cands([{'type': 'Answer', 'thoughts': 't',
                      'answer': "'The Glass Orchard' is a novel written by Mira Castell [link_id=1]. "
                                'The answer is Mira Castell.'}])[0]
  rules = RuleRanker()
  assert 'incomplete_chain' in rules.score(early, answer)
  assert 'incomplete_chain' not in rules.score(ctx, answer)
