"""Training-step throughput as a fraction of this machine's measured matmul peak.

  python benchmarks/train_step.py --config s --json

Builds the model of `gin/models/<config>.gin`, jits the real `trainer.train_step`
on the default devices, times it on synthetic token batches, and measures the
float32 peak (a jitted 4096x4096 `jnp.dot`) in the same run, alternating with
the steps: each round's ratio uses the larger of the peaks measured around its
steps, and the median round is reported. Prints one JSON object:
`{"config", "tokens_per_s", "flops_per_s", "peak_flops_per_s", "fraction_of_peak", ...}`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np

from restreact_jax import distillation
from restreact_jax import gin_utils
from restreact_jax import partitioning
from restreact_jax import trainer
from restreact_jax.models import configs

_GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / 'gin'


@gin.configurable
def _model(model=gin.REQUIRED):
  return model


def load_model_config(name: str) -> configs.TransformerConfig:
  """The `MODEL` of `gin/models/<name>.gin`."""
  import restreact_jax.gin_registry  # noqa: F401  (registers models.TransformerConfig)
  gin.clear_config(clear_constants=True)
  gin_utils.parse([str(_GIN_DIR / 'models' / f'{name}.gin')], ['_model.model = %MODEL'])
  return _model()


def matmul_peak(n: int = 4096, repeats: int = 3) -> float:
  """FLOP/s of the best of `repeats` jitted float32 `n x n` matmuls."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def make_step(config: configs.TransformerConfig, batch_size: int, seq_len: int,
              num_microbatches: int, teacher: distillation.Teacher | None = None
              ) -> Callable[[int], float]:
  """Compiles the train step; returns `run(n) -> seconds per step` over n steps.

  With `teacher`, the distilling step (`distillation`) with random teacher params.
  """
  mesh = partitioning.make_mesh((-1, 1))
  rules = partitioning.logical_axis_rules()
  optimizer_config = trainer.OptimizerConfig(warmup_steps=10, decay_steps=1000)
  program = trainer.build_program(config, mesh, rules, optimizer_config, num_microbatches,
                                  z_loss=1e-4, teacher=teacher)
  holder = {'state': program.init(jax.random.key(0))}
  extra = () if teacher is None else (trainer.init_state(
      teacher.config, mesh, rules, jax.random.key(2),
      trainer.make_optimizer(optimizer_config, 1000)).params,)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, config.vocab_size, size=(batch_size, seq_len + 1)).astype(np.int32)
  sharding = partitioning.batch_sharding(mesh)
  batch = {
      'decoder_input_tokens': jax.device_put(tokens[:, :-1], sharding),
      'decoder_target_tokens': jax.device_put(tokens[:, 1:], sharding),
      'decoder_loss_weights': jax.device_put(np.ones((batch_size, seq_len), np.int32), sharding),
  }
  key = jax.random.key(1)

  def run(steps: int) -> float:
    state = holder['state']
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = program.steps.train(state, batch, key, *extra)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / steps
    if not np.isfinite(float(metrics['loss'])):
      raise RuntimeError('benchmark loss is not finite')
    holder['state'] = state
    return seconds

  run(2)  # compile and warm up
  return run


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='s', help='a gin/models/<config>.gin size')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--steps', type=int, default=3, help='train steps per round')
  parser.add_argument('--rounds', type=int, default=3, help='peak/steps measurement rounds')
  parser.add_argument('--num_microbatches', type=int, default=1)
  parser.add_argument('--json', action='store_true', help='print only the JSON object')
  args = parser.parse_args(argv)

  config = load_model_config(args.config)
  run = make_step(config, args.batch_size, args.seq_len, args.num_microbatches)
  # Peak and steps alternate, and each round's ratio uses its own peak: on a
  # shared machine the load drifts, and a ratio of far-apart measurements would
  # mostly measure that drift.
  rounds = []
  for _ in range(args.rounds):
    peak = matmul_peak(repeats=2)
    seconds = run(args.steps)
    rounds.append((seconds, max(peak, matmul_peak(repeats=1))))
  tokens = args.batch_size * args.seq_len
  flops_per_step = configs.flops_per_token(config, args.seq_len) * tokens
  fractions = sorted(flops_per_step / s / p for s, p in rounds)
  seconds = float(np.median([s for s, _ in rounds]))
  peak = float(np.median([p for _, p in rounds]))
  tokens_per_s = tokens / seconds
  flops_per_s = flops_per_step / seconds
  result = {
      'config': args.config,
      'tokens_per_s': round(tokens_per_s, 1),
      'flops_per_s': round(flops_per_s),
      'peak_flops_per_s': round(peak),
      'fraction_of_peak': round(float(np.median(fractions)), 4),
      'fraction_of_peak_range': [round(fractions[0], 4), round(fractions[-1], 4)],
      'rounds': args.rounds,
      'batch_size': args.batch_size,
      'seq_len': args.seq_len,
      'num_microbatches': args.num_microbatches,
      'params': configs.param_count(config),
      'devices': jax.device_count(),
      'seconds_per_step': round(seconds, 4),
  }
  if not args.json:
    print(f'{args.config}: {tokens_per_s:.0f} tokens/s, {flops_per_s / 1e9:.1f} GFLOP/s = '
          f'{result["fraction_of_peak"]:.2f} of the measured {peak / 1e9:.1f} GFLOP/s peak',
          file=sys.stderr)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
