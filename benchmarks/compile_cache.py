"""Start-up benchmark: the persistent compilation cache, cold vs warm vs off.

  python benchmarks/compile_cache.py --json [--model gin/models/xxs.gin]

What a short command pays before its first useful token: a fresh process
builds the sampling engine for a model of `--model`'s shape (random weights,
byte vocabulary) and answers 16 prompts of mixed lengths (several prefill
buckets, the decode chunk, the slot insertion: the programs a rollout
compiles). Three fresh processes, side by side in one run:

* `off`: no persistent cache (every program compiled);
* `cold`: an empty cache directory (compiled and written);
* `warm`: the same directory again (every program loaded).

Prints one JSON object with each process's wall seconds from import to the
last sample, `warm_vs_off` (off / warm: the start-up speed-up a rerun or a
later phase gets), the cache's entry count and size, and whether the three
processes sampled identical tokens (a cache hit is the same executable).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

_CHILD = r'''
import json, sys, time
start = time.perf_counter()
from restreact_jax import compilation_cache
compilation_cache.enable(sys.argv[2])
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import seqio
from restreact_jax import engine as engine_lib, gin_registry, gin_utils, llm  # noqa: F401
from restreact_jax.models import transformer
gin_utils.parse([sys.argv[1]], ['VOCAB_SIZE = 512', 'MAX_LEN = 640'])
config = gin.query_parameter('MODEL/macro.value').scoped_configurable_fn()
model = transformer.Transformer(config)
params = nn.unbox(jax.jit(lambda k: model.init(k, jnp.zeros((1, 4), jnp.int32))['params'])(
    jax.random.key(0)))
vocab = seqio.ByteVocabulary()
engine = engine_lib.Engine(config, params, vocab, num_slots=16, max_len=640, eos_id=-1)
prompts = ['x' * n for n in (20, 60, 100, 150, 200, 260, 330, 420) * 2]
requests = [llm.SamplingRequest(p, temperature=0.5, max_tokens=24, stop=(), seed=i)
            for i, p in enumerate(prompts)]
samples = engine.generate(requests)
print(json.dumps({'seconds': time.perf_counter() - start,
                  'tokens': [list(s[0].tokens) for s in samples]}))
'''


def _run(model: str, cache: str) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT_CACHE'))}
  env.setdefault('JAX_PLATFORMS', 'cpu')
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  out = subprocess.run([sys.executable, '-c', _CHILD, model, cache], env=env,
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='gin/models/xxs.gin')
  parser.add_argument('--json', action='store_true', help='print only the JSON result')
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    off = _run(args.model, 'none')
    cold = _run(args.model, tmp)
    warm = _run(args.model, tmp)
    files = [p for p in pathlib.Path(tmp).iterdir() if p.is_file()]
    result = {
        'model': args.model,
        'off_s': off['seconds'], 'cold_s': cold['seconds'], 'warm_s': warm['seconds'],
        'warm_vs_off': off['seconds'] / warm['seconds'],
        'cache_entries': len(files),
        'cache_mib': sum(p.stat().st_size for p in files) / 2**20,
        'identical_tokens': off['tokens'] == cold['tokens'] == warm['tokens'],
        'cpu_count': os.cpu_count(),
    }
  print(json.dumps(result, indent=None if args.json else 2))
  return result


if __name__ == '__main__':
  main()
