"""The cost of logit distillation: a student's train step with and without its teacher.

  python benchmarks/distill_step.py --teacher xxs --json

The student is the teacher cut as `models/prune.py` cuts it (the demo's
XXS_L2: 2 layers, 256 MLP units, by default). Jits the real
`trainer.train_step` for the student alone (cross-entropy) and
with the teacher's forward pass and the KL (`distillation`), on the same
synthetic batch (the demo's 8 packed rows of 640 tokens by default), and
times them in alternating rounds so a drifting machine load hits both alike.
Prints one JSON object with both step times and their median ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_step import load_model_config, make_step  # noqa: E402  (beside this file)

from restreact_jax import distillation  # noqa: E402


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--teacher', default='xxs', help='a gin/models/<config>.gin size')
  parser.add_argument('--student_layers', type=int, default=2)
  parser.add_argument('--student_mlp_dim', type=int, default=256)
  parser.add_argument('--vocab_size', type=int, default=1536, help="the demo's vocabulary")
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--seq_len', type=int, default=640)
  parser.add_argument('--steps', type=int, default=5, help='train steps per round')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--json', action='store_true', help='print only the JSON object')
  args = parser.parse_args(argv)

  teacher = dataclasses.replace(load_model_config(args.teacher), vocab_size=args.vocab_size)
  student = dataclasses.replace(teacher, num_layers=args.student_layers,
                                mlp_dim=args.student_mlp_dim)
  plain = make_step(student, args.batch_size, args.seq_len, 1)
  distil = make_step(student, args.batch_size, args.seq_len, 1,
                     distillation.Teacher(teacher, weight=0.5))
  rounds = [(plain(args.steps), distil(args.steps)) for _ in range(args.rounds)]
  ratios = sorted(d / p for p, d in rounds)
  result = {
      'teacher': args.teacher, 'student_layers': args.student_layers,
      'student_mlp_dim': args.student_mlp_dim,
      'plain_seconds_per_step': round(float(np.median([p for p, _ in rounds])), 4),
      'distill_seconds_per_step': round(float(np.median([d for _, d in rounds])), 4),
      'distill_over_plain': round(float(np.median(ratios)), 3),
      'ratio_range': [round(ratios[0], 3), round(ratios[-1], 3)],
      'batch_size': args.batch_size, 'seq_len': args.seq_len, 'rounds': args.rounds,
  }
  if not args.json:
    print(f'student ({args.student_layers} layers) distilling from {args.teacher}: '
          f'{result["distill_over_plain"]:.2f}x the plain step', file=sys.stderr)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
