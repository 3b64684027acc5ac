"""SeqIO task registrations (importable from gin files).

`import tasks` registers the built-in tasks (`restreact_smoke`). Tasks over an
experiment directory's files are registered at run time with the helpers in
`tasks.common` (`register_corpus_task`, `register_text_to_text_task`,
`register_mixture`); see that module for the pattern.
"""

from tasks import smoke  # noqa: F401  (registers on import)
