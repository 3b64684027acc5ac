"""The one exception type for bad input: the CLI prints it as a single line.

Library code raises `UserError` (or a subclass) when the cause is something a
person can fix: a missing file, a malformed row, an unknown gin binding, a NaN
loss. The message must say *what* and *where*; the CLI prints
`restreact: error: <message>` and exits non-zero without a traceback.
"""


class UserError(Exception):
  """A problem with the user's input, reported as one clear line."""


class GinConfigError(UserError):
  """A gin file or binding that cannot be parsed or does not exist."""
