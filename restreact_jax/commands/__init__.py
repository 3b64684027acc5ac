"""Top-level commands: the only gin-configurable functions (gin at the edge).

Each command lives in its own module and is registered here as
`name -> "module:function"`. `restreact_jax.main` imports every module listed so
that any gin file can bind any command, then calls the one asked for.
"""

COMMANDS: dict[str, str] = {
    'params': 'restreact_jax.commands.params:params',
}
