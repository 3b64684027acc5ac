"""Top-level commands: the only gin-configurable functions (gin at the edge).

Each command lives in its own module and is registered here as
`name -> "module:function"`. `restreact_jax.main` imports every module listed so
that any gin file can bind any command, then calls the one asked for.
"""

COMMANDS: dict[str, str] = {
    'world': 'restreact_jax.commands.world:world',
    'search': 'restreact_jax.commands.search:search',
    'params': 'restreact_jax.commands.params:params',
    'train': 'restreact_jax.commands.train:train',
    'compile': 'restreact_jax.commands.compile:compile_ahead',
    'rollout': 'restreact_jax.commands.rollout:rollout',
    'agent': 'restreact_jax.commands.agent:agent',
    'sample': 'restreact_jax.commands.sample:sample',
    'rest': 'restreact_jax.commands.rest:rest',
    'pretrain_base': 'restreact_jax.commands.pretrain_base:pretrain_base',
    'rank': 'restreact_jax.commands.rank:rank',
    'mixture': 'restreact_jax.commands.mixture:mixture',
    'evaluate': 'restreact_jax.commands.evaluate:evaluate',
    'bamboogle': 'restreact_jax.commands.bamboogle:bamboogle',
    'report': 'restreact_jax.commands.report:report',
    'seeds': 'restreact_jax.commands.seeds:seeds',
}
