#!/usr/bin/env bash
# Runs a restreact command on GPU hosts: one host directly, several hosts as one
# multi-controller JAX job (one process per host, or per GPU).
#
# Multi-process settings come from flags or, inside a SLURM allocation
# (srun ... launch/gpu.sh ...), from SLURM's environment. They are exported as
# RESTREACT_COORDINATOR / RESTREACT_NUM_PROCESSES / RESTREACT_PROCESS_ID /
# RESTREACT_LOCAL_DEVICE_IDS, which restreact_jax/distributed.py reads before
# JAX touches a device.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/gpu.sh --gin_file=FILE [options] [--gin.NAME=VALUE...] [RESTREACT_FLAGS...]

  --command=CMD             restreact command (default: rest)
  --gin_file=FILE           gin file, repeatable (required)
  --exp_dir=DIR             experiment directory; on several hosts a shared
                            file system path (default: runs/gpu)
Several processes (all three, on every process; process 0 hosts the coordinator):
  --coordinator=HOST:PORT   address of process 0
  --num_processes=N         total processes
  --process_id=I            this process, 0..N-1
  --local_device_ids=0,1    GPUs this process owns (default: all visible)
  --no_slurm                ignore SLURM_* variables
  --port=PORT               coordinator port under SLURM (default: 29500 + job id % 1000)
Other:
  --dry-run                 print the exports and the command, one per line; run nothing
  --help                    this text

Examples:
  # one host, all its GPUs, data x model mesh 2 x 4
  launch/gpu.sh --gin_file=gin/experiments/llama3_8b_gpu.gin --gin.MESH_SHAPE='(2, 4)'
  # two hosts, run once on each
  launch/gpu.sh --gin_file=F --coordinator=10.0.0.1:29500 --num_processes=2 --process_id=0
  launch/gpu.sh --gin_file=F --coordinator=10.0.0.1:29500 --num_processes=2 --process_id=1
  # SLURM: one task per node
  srun --nodes=2 --ntasks-per-node=1 launch/gpu.sh --gin_file=F
USAGE
}

die() { echo "launch/gpu.sh: error: $*" >&2; exit 2; }

COMMAND="rest"
GIN_FILES=()
EXP_DIR="runs/gpu"
COORDINATOR=""
NUM_PROCESSES=""
PROCESS_ID=""
LOCAL_DEVICE_IDS=""
USE_SLURM=1
PORT=""
EXTRA=()
DRY_RUN=0

while (($#)); do
  arg="$1"
  case "${arg}" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--dry_run) DRY_RUN=1 ;;
    --no_slurm) USE_SLURM=0 ;;
    --gin.*|--gin_search_path=*) EXTRA+=("${arg}") ;;
    --*=*)
      key="${arg%%=*}"; value="${arg#*=}"
      case "${key}" in
        --command) COMMAND="${value}" ;;
        --gin_file) GIN_FILES+=("${value}") ;;
        --exp_dir) EXP_DIR="${value}" ;;
        --coordinator) COORDINATOR="${value}" ;;
        --num_processes) NUM_PROCESSES="${value}" ;;
        --process_id) PROCESS_ID="${value}" ;;
        --local_device_ids) LOCAL_DEVICE_IDS="${value}" ;;
        --port) PORT="${value}" ;;
        *) EXTRA+=("${arg}") ;;  # a flag for the restreact command itself
      esac ;;
    *) die "unexpected argument '${arg}' (see --help)" ;;
  esac
  shift
done

((${#GIN_FILES[@]})) || die "--gin_file is required"

# SLURM: derive what was not given from the allocation (one task per process).
if ((USE_SLURM)) && [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]]; then
  NUM_PROCESSES="${NUM_PROCESSES:-${SLURM_NTASKS}}"
  PROCESS_ID="${PROCESS_ID:-${SLURM_PROCID:-}}"
  if [[ -z "${COORDINATOR}" ]]; then
    [[ -n "${SLURM_JOB_NODELIST:-}" ]] || die "SLURM_JOB_NODELIST is not set; pass --coordinator"
    command -v scontrol >/dev/null 2>&1 || die "scontrol not found; pass --coordinator=HOST:PORT"
    first_host="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
    COORDINATOR="${first_host}:${PORT:-$((29500 + SLURM_JOB_ID % 1000))}"
  fi
  # Several tasks per node: each owns the GPU of its local rank.
  if [[ -z "${LOCAL_DEVICE_IDS}" && "${SLURM_NTASKS_PER_NODE:-1}" -gt 1 ]]; then
    LOCAL_DEVICE_IDS="${SLURM_LOCALID:-}"
  fi
fi

EXPORTS=()
if [[ -n "${COORDINATOR}${NUM_PROCESSES}${PROCESS_ID}" ]]; then
  [[ -n "${COORDINATOR}" && -n "${NUM_PROCESSES}" && -n "${PROCESS_ID}" ]] ||
    die "several processes need --coordinator, --num_processes and --process_id together"
  [[ "${COORDINATOR}" == *:* ]] || die "--coordinator must be HOST:PORT, got '${COORDINATOR}'"
  [[ "${NUM_PROCESSES}" =~ ^[0-9]+$ && "${PROCESS_ID}" =~ ^[0-9]+$ ]] ||
    die "--num_processes and --process_id must be integers"
  ((PROCESS_ID < NUM_PROCESSES)) || die "--process_id=${PROCESS_ID} is not below --num_processes=${NUM_PROCESSES}"
  EXPORTS+=("RESTREACT_COORDINATOR=${COORDINATOR}" "RESTREACT_NUM_PROCESSES=${NUM_PROCESSES}"
            "RESTREACT_PROCESS_ID=${PROCESS_ID}")
fi
if [[ -n "${LOCAL_DEVICE_IDS}" ]]; then
  EXPORTS+=("RESTREACT_LOCAL_DEVICE_IDS=${LOCAL_DEVICE_IDS}")
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESTREACT="${RESTREACT:-restreact}"
if ! command -v "${RESTREACT}" >/dev/null 2>&1 && [[ -x "${ROOT}/.venv/bin/restreact" ]]; then
  RESTREACT="${ROOT}/.venv/bin/restreact"
fi
CMD=("${RESTREACT}" "${COMMAND}")
for f in "${GIN_FILES[@]}"; do CMD+=("--gin_file=${f}"); done
CMD+=("--gin.EXP_DIR=\"${EXP_DIR}\"")
if ((${#EXTRA[@]})); then CMD+=("${EXTRA[@]}"); fi

if ((DRY_RUN)); then
  quote() {
    if [[ "$1" =~ ^[-A-Za-z0-9_./:=,@%+]+$ ]]; then echo -n "$1"; else echo -n "${1@Q}"; fi
  }
  for e in "${EXPORTS[@]}"; do echo "export ${e%%=*}=$(quote "${e#*=}")"; done
  out=()
  for a in "${CMD[@]}"; do out+=("$(quote "${a}")"); done
  echo "${out[*]}"
  exit 0
fi
for e in "${EXPORTS[@]}"; do export "${e?}"; done
exec "${CMD[@]}"
