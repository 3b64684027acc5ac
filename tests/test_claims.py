"""Tests for the claim-level checks behind the rule rater (feedback/claims.py)."""

from restreact_jax.feedback import claims as cl

SNIPPET = ('The Iron Crown was released in 1999. The Iron Crown was produced by Duismar Studios. '
           'The Iron Crown is a film directed by Lador Torlava.')


def test_read_splits_names_from_relation_words():
  names, relations = cl.read('The Iron Crown was produced by Duismar Studios in 1999.')
  assert names == {'iron', 'crown', 'duismar', 'studios', '1999'}
  assert relations == {'produ'}
  # Irregular forms share a stem; stop words and articles are dropped.
  assert cl.read('Kelren wrote it')[1] == cl.read('it was written by Kelren')[1] == {'write'}


def test_entailed_needs_one_source_sentence_per_fact():
  assert cl.entailed('The Iron Crown was produced by Duismar Studios [link_id=1].', [SNIPPET])
  # Every word is on screen, but no sentence says Lador Torlava produced it.
  assert not cl.entailed('The Iron Crown was produced by Lador Torlava [link_id=1].', [SNIPPET])
  # A wrong year is a name the source sentence does not hold.
  assert not cl.entailed('The Iron Crown was released in 1998.', [SNIPPET])
  # Two facts in two clauses, each stated by its own sentence.
  assert cl.entailed('The Iron Crown was produced by Duismar Studios, and it was released in 1999.',
                     [SNIPPET])
  # Nothing checkable, or nothing at all, is not entailed.
  assert not cl.entailed('it was good.', [SNIPPET])
  assert not cl.entailed('', [SNIPPET])
  # A conclusion sentence is not a claim.
  assert cl.claims('Duismar Studios made it. The answer is Duismar Studios.') == ['Duismar Studios made it.']


def test_relevant_compares_relation_words_with_the_question():
  question = 'Who founded the company that produced the film The Iron Crown?'
  assert cl.relevant('The Iron Crown was produced by Duismar Studios.', question)
  assert not cl.relevant('The Iron Crown was directed by Lador Torlava.', question)
  assert cl.relevant('The Island was written by Kelren.', 'When was the person who wrote The Island born?')
  # A sentence-initial relation word is capitalised and still counts.
  born_first = 'Who was born first, Fafa Losene or Lador Marantor?'
  assert cl.relevant('Born in Neanba in 1897, Lador Marantor spent a childhood there.', born_first)
  assert not cl.relevant('Lador Marantor spent a few years living in Rabama.', born_first)


def test_connected_needs_a_known_and_a_new_name():
  known = cl.known_names('Who founded the company that produced The Iron Crown?',
                         ['The Iron Crown was produced by Duismar Studios [link_id=1].'])
  assert {'iron', 'crown', 'duismar', 'studios'} <= known
  assert cl.connected('Duismar Studios was founded by Sata Vael.', known)
  assert not cl.connected('Sata Vael was born in Seis.', known)                 # nothing known
  assert not cl.connected('The Iron Crown was produced by Duismar Studios.', known)  # nothing new
  assert not cl.connected('', known)


def test_conclusions_and_choices():
  assert cl.conclusion_names('X was born in Seis [link_id=2]. The answer is Seis.') == {'seis'}
  assert cl.conclusion_names('The answer is 41.') == {'41'}
  assert cl.conclusion_names('Seis.') == frozenset()
  assert cl.offers_choice('Which came out earlier, the film A or the film B?')
  assert not cl.offers_choice('Where was the founder of Ordo Works born?')


def test_coverage_counts_the_relations_the_summaries_state():
  question = 'In what country was the writer of the book The Mirror of Manorza born?'
  first = ['The Mirror of Manorza is a novel written by Kamar Veloper [link_id=1].']
  assert cl.coverage(question, first) == 1 / 3          # write; not born, not country
  assert not cl.complete(question, first)
  chain = first + ['Kamar Veloper was born in Seis [link_id=2].',
                   'Seis is a city in the country of Zenfaora [link_id=4].']
  assert cl.coverage(question, chain) == 1.0 and cl.complete(question, chain)
  # Type nouns ("film", "person") are not relations to follow.
  assert cl.complete('Who directed the film The Iron Crown?',
                     ['The Iron Crown was directed by Lador Torlava.'])
  assert cl.coverage('Is it?', []) == 1.0


def test_a_quantity_question_asks_for_the_years_its_calculation_needs():
  age = 'How old was the director of The Iron Crown when the film was released?'
  after = 'How many years after its founder was born was Dudu Labs founded?'
  chains = {age: ['The film The Iron Crown was released in 2001 [link_id=1].',
                  'Lador Torlava directed the film The Iron Crown [link_id=1].',
                  'Lador Torlava was born in Seis in 1976 [link_id=4].'],
            after: ['Dudu Labs is a company founded in 1994 by Persol Belgor [link_id=1].',
                    'Persol Belgor was born in Radu in 1946 [link_id=4].']}
  for question, chain in chains.items():
    # Read as asked, no summary states "old" or "how many years".
    assert not cl.complete(question, chain)
    computed = cl.as_computed(question)
    assert cl.complete(computed, chain), computed
    assert not cl.complete(computed, chain[:-1])  # the birth is still needed
    assert cl.read(computed)[0] == cl.read(question)[0]  # the same names
  # "How old" asks for a birth: a birth-year summary is about the question.
  assert not cl.relevant(chains[age][-1], age)
  assert cl.relevant(chains[age][-1], cl.as_computed(age))
  # Other questions read as they are.
  for question in ('Who is older, Lador Torlava or Persol Belgor?',
                   'In what year was Persol Belgor born?'):
    assert cl.as_computed(question) == question


def test_repetitive_claims_are_garbled():
  assert cl.repetitive('The Lost Summer was produced The Lost Summer was produced by Duda Studios.')
  assert cl.repetitive('X was born in Seis in Seis in the city of Seis. The answer is Seis.')
  assert not cl.repetitive('The Lost Summer was produced by Duda Studios [link_id=1].')
  # The conclusion may repeat what the claim said.
  assert not cl.repetitive('Duda Studios made it. The answer is Duda Studios.')
