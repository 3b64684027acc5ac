"""Reading-comprehension text from a world: what a base LM learns to read from.

A large pretrained model has read a great deal of text in which a question is
answered from passages beside it. The from-scratch models here have not, and
fine-tuning on a hundred agent demonstrations does not teach them to find the
sentence that answers a question among several and copy its name: they learn
the demonstrations by heart instead (docs/EXPERIMENTS.md, "Pretrained base").
These examples carry that skill. Each is one multi-hop question of a world,
its supporting passages shuffled among passages of the same entities (the kind
a search returns) and a random one, each shown as `[link_id=N] title: text`;
the target states the supporting sentences with their link ids, then the
answer:

    Question: In which city was the person who directed @1 born?
    Search results:
    [link_id=1] @1: @1 is a film. @1 is a film directed by @2. ...
    [link_id=2] @2: Born in @4 in @5, @2 spent a childhood there.
    ...
    Question: In which city was the person who directed @1 born?
    ->
    Facts: @1 is a film directed by @2 [link_id=1]. Born in @4 in @5, @2 spent
    a childhood there [link_id=2].
    Answer: @4

The format is not the agent's: the agent's prompts, actions and citations
come only from gen 0's demonstrations and the self-improvement data. The
worlds used are not the experiment's (`restreact pretrain_base` draws them
from seeds set apart for it), so no test entity, fact or question is seen.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

_SENTENCE_END = re.compile(r'(?<=\.)\s+')


def sentences(text: str) -> list[str]:
  """`text` cut after each full stop."""
  return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def stating_sentence(passage: str, entity: str, value: str) -> str:
  """The sentence of `passage` that names `value` (and `entity`, if one does)."""
  cut = sentences(passage)
  both = [s for s in cut if value in s and entity in s]
  either = [s for s in cut if value in s]
  return (both or either or cut or [passage])[0]


def _shown(support: Sequence[str], entities: Sequence[str],
           corpus: Mapping[str, Mapping[str, Any]], by_entity: Mapping[str, Sequence[str]],
           rng: random.Random, max_distractors: int) -> list[str]:
  """`support` among other passages of `entities` and one random passage, shuffled."""
  pool = [p for e in entities for p in by_entity.get(e, ()) if p not in support]
  rng.shuffle(pool)
  shown = list(dict.fromkeys([*support, *pool[:rng.randint(1, max_distractors)],
                              *rng.sample(sorted(corpus), 1)]))
  rng.shuffle(shown)
  return shown


def _render(question: str, shown: Sequence[str], hops: Sequence[Mapping[str, Any]],
            answer: str, corpus: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
  link = {p: k + 1 for k, p in enumerate(shown)}
  facts: dict[str, None] = {}  # in hop order, each sentence once
  for hop in hops:
    p = str(hop['passage_id'])
    sentence = stating_sentence(str(corpus[p]['text']), str(hop['entity']), str(hop['value']))
    facts[f'{sentence.rstrip(".")} [link_id={link[p]}].'] = None
  results = ''.join(f'[link_id={link[p]}] {corpus[p]["title"]}: {corpus[p]["text"]}\n'
                    for p in shown)
  return {'inputs': f'Question: {question}\nSearch results:\n{results}Question: {question}\n',
          'targets': f'Facts: {" ".join(facts)}\nAnswer: {answer}'}


def example(question: Mapping[str, Any], corpus: Mapping[str, Mapping[str, Any]],
            by_entity: Mapping[str, Sequence[str]], rng: random.Random,
            max_distractors: int = 3) -> dict[str, str]:
  """One `{"inputs", "targets"}` reading example of a world question.

  Args:
    question: a world question with its gold `hop_chain` and `answers`.
    corpus: passage id → `{"title", "text"}`.
    by_entity: entity id → its passage ids.
    rng: draws the distractors and the order.
    max_distractors: at most this many other passages of the question's
      entities (one random passage comes on top).
  """
  chain = question['hop_chain']
  support = list(dict.fromkeys(str(h['passage_id']) for h in chain))
  shown = _shown(support, [str(h['entity_id']) for h in chain], corpus, by_entity, rng,
                 max_distractors)
  return _render(str(question['question']), shown, chain, str(question['answers'][0]), corpus)


def hop_example(hop: Mapping[str, Any], corpus: Mapping[str, Mapping[str, Any]],
                by_entity: Mapping[str, Sequence[str]], rng: random.Random,
                max_distractors: int = 2) -> dict[str, str]:
  """One reading example of a single hop, asked as the query a searcher types.

  Short (a third of a question's example), so a batch holds several: the
  lookup itself, many times over.
  """
  from restreact_jax.world import questions as questions_lib  # pylint: disable=g-import-not-at-top
  shown = _shown([str(hop['passage_id'])], [str(hop['entity_id'])], corpus, by_entity, rng,
                 max_distractors)
  return _render(questions_lib.natural_query(hop), shown, [hop], str(hop['value']), corpus)


def examples(questions: Sequence[Mapping[str, Any]], corpus: Sequence[Mapping[str, Any]],
             seed: int, mask: Callable[[str, str], tuple[str, str]] | None = None,
             hops: bool = False) -> Iterator[dict[str, str]]:
  """Reading examples of `questions` over `corpus` (passage ids `<entity>/<k>`).

  Args:
    questions: world questions (with `hop_chain`).
    corpus: the world's passages.
    seed: draws distractors and orders.
    mask: `(inputs, targets) -> (inputs, targets)`, e.g. name masking.
    hops: after each question's example, one `hop_example` per hop (ids
      `<question id>/hop<k>`).
  """
  by_id = {str(d['id']): d for d in corpus}
  by_entity: dict[str, list[str]] = {}
  for pid in by_id:
    by_entity.setdefault(pid.rsplit('/', 1)[0], []).append(pid)
  rng = random.Random(seed)
  for q in questions:
    made = [(str(q['id']), example(q, by_id, by_entity, rng))]
    if hops:
      made += [(f'{q["id"]}/hop{k}', hop_example(h, by_id, by_entity, rng))
               for k, h in enumerate(q['hop_chain'])]
    for key, ex in made:
      if mask is not None:
        ex['inputs'], ex['targets'] = mask(ex['inputs'], ex['targets'])
      yield {**ex, 'id': key}
