"""The synthetic world: a generated fictional encyclopedia and its questions.

Modules: `schema` (entity types, relations), `canon` (hand-written entities in
every world), `names` (fictional names), `generator` (the entity graph),
`templates` and `render` (articles cut into passages), `questions` (question
families, exemplar templates, entity-disjoint splits), `build` (the whole
world, on disk).
"""
