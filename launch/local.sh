#!/usr/bin/env bash
# Runs the embedded default experiment on this machine (what `make demo` runs).
#
#   launch/local.sh [--dry-run] [--exp_dir=DIR] [extra restreact flags...]
#
# Extra arguments go to `restreact` unchanged, e.g. --gin.TRAIN_STEPS=50.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/local.sh [--help] [--dry-run] [--exp_dir=DIR] [RESTREACT_FLAGS...]

Runs the full self-improvement pipeline on the synthetic world, on this machine:
  restreact rest --gin_file=gin/experiments/demo_cpu.gin '--gin.EXP_DIR="DIR"' FLAGS...

  --exp_dir=DIR   experiment directory (default: runs/demo, or $EXP_DIR if set);
                  re-running with the same directory resumes what is not done.
  --dry-run       print the command that would run, one per line, and exit.
  --help          this text.
Any other argument (e.g. --gin.TRAIN_STEPS=50) is passed to restreact.
USAGE
}

EXP_DIR="${EXP_DIR:-runs/demo}"
GIN_FILE="gin/experiments/demo_cpu.gin"
DRY_RUN=0
EXTRA=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--dry_run) DRY_RUN=1 ;;
    --exp_dir=*) EXP_DIR="${1#*=}" ;;
    --exp_dir) shift; EXP_DIR="${1:?--exp_dir needs a value}" ;;
    *) EXTRA+=("$1") ;;
  esac
  shift
done

# EXP_DIR stays relative to the caller's directory; gin files are found through
# restreact's search path (the repository root and gin/).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESTREACT="${RESTREACT:-restreact}"
if ! command -v "${RESTREACT}" >/dev/null 2>&1 && [[ -x "${ROOT}/.venv/bin/restreact" ]]; then
  RESTREACT="${ROOT}/.venv/bin/restreact"
fi

CMD=("${RESTREACT}" rest "--gin_file=${GIN_FILE}" "--gin.EXP_DIR=\"${EXP_DIR}\"")
if ((${#EXTRA[@]})); then
  CMD+=("${EXTRA[@]}")
fi

if ((DRY_RUN)); then
  # One copy-pasteable line, quoting only what needs it.
  out=()
  for a in "${CMD[@]}"; do
    if [[ "${a}" =~ ^[-A-Za-z0-9_./:=,@%+]+$ ]]; then out+=("${a}"); else out+=("${a@Q}"); fi
  done
  echo "${out[*]}"
  exit 0
fi
mkdir -p "${EXP_DIR}"
exec "${CMD[@]}"
