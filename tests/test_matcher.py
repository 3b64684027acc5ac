"""Tests for the alias-aware answer matcher."""

import pytest

from restreact_jax.evaluation import matcher


@pytest.mark.parametrize('answer, refs, expected', [
    # Case, punctuation, articles, citations.
    ('According to [link_id=3], it is THE Eiffel Tower!', ['Eiffel Tower'], True),
    ('He was born in Paris.', ['paris'], True),
    ('The Beatles', ['Beatles'], True),
    # Whole-word spans only.
    ('The chef was Parisian.', ['Paris'], False),
    ('It is in Parisville', ['Paris'], False),
    ('Paris Hilton was there', ['Paris Hilton'], True),
    ('Hilton Paris', ['Paris Hilton'], False),
    # Aliases: any one is enough.
    ('The answer is Bob Dylan.', ['Robert Zimmerman', 'Bob Dylan'], True),
    ('The answer is Bob Marley.', ['Robert Zimmerman', 'Bob Dylan'], False),
    # Number words <-> digits, ordinals, thousands separators.
    ('There were three hundred and five ships.', ['305'], True),
    ('It had twenty-one floors', ['21'], True),
    ('It had 21 floors', ['twenty one'], True),
    ('He was the third president.', ['3rd president'], True),
    ('She finished 1st.', ['first'], True),
    ('about 1,500 people', ['1500'], True),
    ('about 1500 people', ['one thousand five hundred'], True),
    ('It had 2 floors', ['21'], False),
    ('It had 210 floors', ['21'], False),
    # Dates in different orders; a year inside a full date.
    ('She was born on 29 May 1932.', ['May 29, 1932'], True),
    ('She was born on May 29th, 1932.', ['May 29, 1932'], True),
    ('She was born on 4 March 1958 [link_id=5].', ['1958'], True),
    ('She was born on 28 May 1932.', ['May 29, 1932'], False),
    # Accents.
    ('It was Antonín Dvořák.', ['Antonin Dvorak'], True),
    # Yes / no references.
    ('Yes, both were born in Ohio.', ['yes'], True),
    ('No, they were not.', ['yes'], False),
    ('No, they were not.', ['no'], True),
    ('They were both born in Ohio.', ['yes'], False),
    # Empty answers never match.
    ('', ['Paris'], False),
])
def test_matches(answer, refs, expected):
  assert matcher.matches(answer, refs) is expected


def test_matching_reference_returns_the_alias_that_matched():
  assert matcher.matching_reference('It is NYC.', ['New York City', 'NYC']) == 'NYC'
  assert matcher.matching_reference('It is Boston.', ['New York City', 'NYC']) is None


def test_normalize_tokens():
  assert matcher.normalize_tokens('The Third of [link_id=4, 5] Forty-Two!') == ['3rd', 'of', '42']
  assert matcher.normalize_tokens('One hundred') == ['100']
  # A bare scale word is not a number.
  assert matcher.normalize_tokens('hundred years') == ['hundred', 'years']
