"""The loop's final test: its models rolled out one at a time vs on threads.

  python benchmarks/eval_workers.py --exp_dir=runs/demo --json [--workers=2]

Takes a finished `make demo` experiment (`--exp_dir`) and redoes its test
split twice in fresh copies without `test/` and `report/`: once with
`rest.eval_workers=1` (one model after another, the reference) and once
with `--workers` (that many models at a time, each on a thread of the same
process). Each run is a fresh `restreact rest` process with an empty
compilation cache of its own, so both pay the same compiles. Nothing else
is redone (every other phase is found done).

Prints one JSON object: each run's wall seconds for the test phases (from
the first test phase's start to the last one's end, as the manifest
records them), `speedup` (reference / threaded), and whether every test
trajectory (timings aside) and every test summary is the same in both.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent


def _copy_without_test(src: pathlib.Path, dst: pathlib.Path) -> None:
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns('test', 'report', 'heldout'))
  manifest = json.loads((dst / 'manifest.json').read_text())
  manifest['phases'] = {k: v for k, v in manifest['phases'].items()
                        if not k.startswith(('test/', 'heldout/')) and k != 'report'}
  (dst / 'manifest.json').write_text(json.dumps(manifest, indent=2))


def _run(exp: pathlib.Path, workers: int, cache: pathlib.Path, gin_file: str) -> float:
  env = dict(os.environ, RESTREACT_COMPILATION_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-m', 'restreact_jax.main', 'rest',
                         f'--gin_file={gin_file}', f"--gin.EXP_DIR='{exp}'",
                         f'--gin.rest.eval_workers={workers}', '--gin.rest.progress=False'],
                        cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode:
    sys.exit(f'eval_workers.py: restreact rest failed in {exp}:\n{proc.stderr[-2000:]}')
  phases = json.loads((exp / 'manifest.json').read_text())['phases']
  test = [p for name, p in phases.items() if name.startswith('test/')]
  return max(p['finished_at'] for p in test) - min(p['finished_at'] - p['seconds'] for p in test)


def _outputs(exp: pathlib.Path) -> dict[str, object]:
  from restreact_jax.rest import phases  # pylint: disable=g-import-not-at-top
  out: dict[str, object] = {}
  for rollouts in sorted((exp / 'test' / 'rollouts').iterdir()):
    trajectories = phases.read_trajectories(rollouts)
    for trajectory in trajectories:
      for step in trajectory['steps']:
        step.pop('timings', None)
    out[str(rollouts.relative_to(exp))] = trajectories
  for summary in sorted((exp / 'test' / 'eval').glob('*/summary.json')):
    data = json.loads(summary.read_text())
    out[str(summary.relative_to(exp))] = {k: data[k] for k in ('final', 'answer_generation')}
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--exp_dir', required=True, help='a finished `make demo` EXP_DIR')
  parser.add_argument('--gin_file', default='gin/experiments/demo_cpu.gin')
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--json', action='store_true', help='print only the JSON result')
  args = parser.parse_args(argv)
  src = pathlib.Path(args.exp_dir).resolve()
  if not (src / 'manifest.json').exists():
    parser.error(f'{src}: no manifest.json; run `make demo` (or `restreact rest`) first')
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    seconds, outputs = {}, {}
    for workers in (1, args.workers):
      exp = root / f'workers_{workers}'
      _copy_without_test(src, exp)
      seconds[workers] = _run(exp, workers, root / f'xla_{workers}', args.gin_file)
      outputs[workers] = _outputs(exp)
  result = {
      'exp_dir': str(args.exp_dir),
      'models': sum(k.endswith('summary.json') for k in outputs[1]),
      'sequential_s': round(seconds[1], 1),
      f'workers_{args.workers}_s': round(seconds[args.workers], 1),
      'speedup': round(seconds[1] / seconds[args.workers], 3),
      'same_outputs': outputs[1] == outputs[args.workers] and bool(outputs[1]),
  }
  print(json.dumps(result) if args.json else json.dumps(result, indent=2))
  return result


if __name__ == '__main__':
  main()
