"""Paraphrase templates that render an entity's facts as encyclopedia sentences.

Each *fact group* (one or more relations stated together, e.g. a company's
founder and founding year) has several paraphrases; the renderer picks one per
article. Every paraphrase of a relation contains that relation's query words
(`schema.Relation.query_words`), so a searcher's natural query for a hop always
shares words with the sentence that answers it (asserted by the tests).

Placeholders: `{s}` the subject's name, `{o}` the object entity's name, `{y}` a
year, `{v}` a literal value, `{x}` another entity's name (inverse mentions and
distractors).
"""

from __future__ import annotations

# (entity type, relations stated together) -> paraphrases.
FACT_TEMPLATES: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {
    ('person', ('occupation',)): (
        '{s} works as a {v}.',
        'By profession, {s} works as a {v}.',
        '{s} works full time as a {v}.',
    ),
    ('person', ('born_in', 'birth_year')): (
        '{s} was born in {o} in {y}.',
        '{s} was born in {y} in the city of {o}.',
        'Born in {o} in {y}, {s} spent a childhood there.',
    ),
    ('person', ('spouse',)): (
        '{s} is married to {o}.',
        '{s} married {o}.',
        '{s} and {o} are married.',
    ),
    ('person', ('member_of',)): (
        '{s} is a member of the band {o}.',
        '{s} became a member of {o}.',
        'For many years {s} was a member of the group {o}.',
    ),
    ('city', ('located_in',)): (
        '{s} is a city in the country of {o}.',
        'The city of {s} lies in the country of {o}.',
        '{s} is one of the cities of the country {o}.',
    ),
    ('city', ('population',)): (
        '{s} has a population of {v}.',
        'The population of {s} is about {v}.',
    ),
    ('country', ('capital',)): (
        'The capital of {s} is {o}.',
        '{s} is a country whose capital is {o}.',
        '{o} is the capital city of {s}.',
    ),
    ('country', ('language',)): (
        'The official language of {s} is {v}.',
        'Most people in {s} speak the {v} language.',
    ),
    ('company', ('founded_by', 'founded_year')): (
        '{s} was founded by {o} in {y}.',
        '{o} founded {s} in {y}.',
        'In {y}, {o} founded the company {s}.',
        '{s} is a company founded in {y} by {o}.',
    ),
    ('company', ('headquartered_in',)): (
        '{s} has its headquarters in {o}.',
        'The headquarters of {s} are in {o}.',
        '{s} keeps its headquarters in the city of {o}.',
    ),
    ('company', ('industry',)): (
        '{s} is a company in the {v} industry.',
        '{s} works in the {v} industry.',
    ),
    ('film', ('genre',)): (
        '{s} is a film of the {v} genre.',
        'The genre of {s} is {v}.',
    ),
    ('film', ('directed_by',)): (
        '{s} was directed by {o}.',
        '{o} directed the film {s}.',
        '{s} is a film directed by {o}.',
    ),
    ('film', ('produced_by',)): (
        '{s} was produced by {o}.',
        'The film {s} was produced by the company {o}.',
        '{o} produced {s}.',
    ),
    ('film', ('release_year',)): (
        '{s} was released in {y}.',
        'The film {s} was first released in {y}.',
    ),
    ('band', ('formed_in', 'formed_year')): (
        '{s} formed in {o} in {y}.',
        '{s} is a band formed in {o} in {y}.',
        'The band {s} was formed in {y} in the city of {o}.',
    ),
    ('band', ('music_style',)): (
        '{s} plays {v} music.',
        'The music of {s} is mostly {v}.',
    ),
    ('book', ('author',)): (
        '{s} is a novel written by {o}.',
        'The book {s} was written by {o}.',
        '{s} was written by the author {o}.',
    ),
    ('book', ('published_year',)): (
        '{s} was published in {y}.',
        'The book {s} was first published in {y}.',
    ),
    ('club', ('club_city',)): (
        '{s} is a club based in {o}.',
        '{s} is based in the city of {o}.',
        'The club {s} is based in {o}.',
    ),
    ('club', ('club_founded_year',)): (
        '{s} was founded in {y}.',
        'The club {s} was founded in {y}.',
    ),
    ('club', ('sport',)): (
        'The sport of {s} is {v}.',
        '{s} competes in the sport of {v}.',
    ),
}

# Openers that say what kind of thing the article is about.
INTROS: dict[str, tuple[str, ...]] = {
    'person': ('{s} is a person of some renown.',
               '{s} is a well known public figure.'),
    'city': ('{s} is a city.', '{s} is an old city with a busy market.'),
    'country': ('{s} is a nation.', '{s} is a small nation with a long history.'),
    'company': ('{s} is a company.', '{s} is a business with many workers.'),
    'film': ('{s} is a film.', '{s} is a feature film.'),
    'band': ('{s} is a band.', '{s} is a music group.'),
    'book': ('{s} is a book.', '{s} is a novel.'),
    'club': ('{s} is a sports club.', '{s} is a club with loyal fans.'),
}

# Inverse mentions: facts about *other* entities seen from this one's article.
INVERSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    'directed_by': ('{s} directed the film {x}.', '{s} was the director of {x}.'),
    'founded_by': ('{s} founded the company {x}.', '{s} is the founder of {x}.'),
    'author': ('{s} wrote the book {x}.', '{s} is the writer of {x}.'),
    'produced_by': ('{s} produced the film {x}.', 'Among the films of {s} is {x}.'),
}

# Distractor facts: true-sounding detail no question asks about.
DISTRACTORS: dict[str, tuple[str, ...]] = {
    'person': ('{s} once visited {x} on a long journey.',
               '{s} spent a few years living in {x}.',
               '{s} was often praised for patience and humor.',
               'Friends of {s} remember a love of old maps.'),
    'city': ('{s} is famous for its bridges and gardens.',
             'Many visitors come to {s} in the summer.',
             'A famous market in {s} opens every morning.',
             'Travelers often compare {s} with {x}.'),
    'country': ('{s} is known for its mountains and rivers.',
                'The flag of {s} is green and white.',
                'Trade between {s} and its neighbors is strong.'),
    'company': ('{s} opened a second office in {x}.',
                '{s} employs several thousand people.',
                'The logo of {s} is a blue circle.'),
    'film': ('{s} was later shown on television.',
             'Critics praised the songs in {s}.',
             'Part of {s} was filmed near {x}.'),
    'band': ('{s} once played a famous concert in {x}.',
             'The first album of {s} sold well.',
             '{s} toured for many years.'),
    'book': ('{s} was translated many times.',
             'Part of {s} is set in {x}.',
             'Readers praised the ending of {s}.'),
    'club': ('{s} plays its home games at a large stadium.',
             'The fans of {s} wear red scarves.',
             '{s} once played a friendly match in {x}.'),
}

OCCUPATIONS: dict[str, tuple[str, ...]] = {
    'director': ('film director', 'director'),
    'founder': ('entrepreneur', 'businessperson', 'industrialist'),
    'writer': ('novelist', 'writer', 'poet'),
    'musician': ('musician', 'singer', 'guitarist'),
    'other': ('teacher', 'doctor', 'painter', 'architect', 'lawyer', 'farmer'),
}
LANGUAGE_SUFFIX = 'ish'
INDUSTRIES = ('film', 'textile', 'steel', 'shipping', 'software', 'food', 'media', 'energy')
GENRES = ('drama', 'comedy', 'thriller', 'western', 'romance', 'mystery', 'documentary')
MUSIC_STYLES = ('rock', 'folk', 'jazz', 'pop', 'blues', 'soul')
SPORTS = ('football', 'hockey', 'rugby', 'basketball', 'cricket')
