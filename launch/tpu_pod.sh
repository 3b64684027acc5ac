#!/usr/bin/env bash
# Runs a restreact experiment on every worker of a Cloud TPU VM slice.
#
# Creates the slice (or reuses it), copies or clones the project onto every
# worker, installs it with jax[tpu], runs one command on all workers at once
# (each process calls jax.distributed.initialize via --multihost; JAX detects
# the TPU topology itself), streams the logs, and deletes the slice on request.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/tpu_pod.sh --zone=ZONE --accelerator_type=TYPE --gin_file=FILE [options] [--gin.NAME=VALUE...]

Slice:
  --name=NAME               TPU VM name (default: restreact-$USER)
  --zone=ZONE               e.g. us-central2-b (required)
  --project=PROJECT         GCP project (default: gcloud's configured project)
  --accelerator_type=TYPE   e.g. v4-32, v5litepod-16 (required to create)
  --runtime_version=V       TPU VM image (default: tpu-ubuntu2204-base)
  --spot                    create a Spot slice
Code:
  --repo_url=URL            git clone URL on every worker instead of copying this checkout
  --branch=BRANCH           branch or tag for --repo_url (default: main)
  --skip_setup              the slice already has the code and the venv
Run:
  --command=CMD             restreact command (default: rest)
  --gin_file=FILE           gin file, repeatable (required unless --delete_only)
  --exp_dir=DIR             experiment directory on the workers; use a shared
                            path (gcsfuse / Filestore mount) so every host sees
                            every shard (default: runs/NAME inside the project
                            directory on each worker)
  --gin.NAME=VALUE          gin overrides, passed through
Lifecycle:
  --delete                  delete the slice after the run (also when it fails)
  --delete_only             only delete the slice
  --dry-run                 print the commands, one per line, and run nothing
  --help                    this text

Example:
  launch/tpu_pod.sh --zone=us-central2-b --accelerator_type=v4-32 \
    --gin_file=gin/experiments/gemma_2b_tpu.gin --gin.MESH_SHAPE='(4, 4)' --delete
USAGE
}

die() { echo "launch/tpu_pod.sh: error: $*" >&2; exit 2; }

NAME="restreact-${USER:-user}"
ZONE=""
PROJECT=""
ACCELERATOR_TYPE=""
RUNTIME_VERSION="tpu-ubuntu2204-base"
SPOT=0
REPO_URL=""
BRANCH="main"
SKIP_SETUP=0
COMMAND="rest"
GIN_FILES=()
EXP_DIR=""
EXTRA=()
DELETE=0
DELETE_ONLY=0
DRY_RUN=0

while (($#)); do
  arg="$1"
  case "${arg}" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--dry_run) DRY_RUN=1 ;;
    --delete) DELETE=1 ;;
    --delete_only) DELETE_ONLY=1 ;;
    --spot) SPOT=1 ;;
    --skip_setup) SKIP_SETUP=1 ;;
    --gin.*|--gin_search_path=*) EXTRA+=("${arg}") ;;
    --*=*)
      key="${arg%%=*}"; value="${arg#*=}"
      case "${key}" in
        --name) NAME="${value}" ;;
        --zone) ZONE="${value}" ;;
        --project) PROJECT="${value}" ;;
        --accelerator_type) ACCELERATOR_TYPE="${value}" ;;
        --runtime_version) RUNTIME_VERSION="${value}" ;;
        --repo_url) REPO_URL="${value}" ;;
        --branch) BRANCH="${value}" ;;
        --command) COMMAND="${value}" ;;
        --gin_file) GIN_FILES+=("${value}") ;;
        --exp_dir) EXP_DIR="${value}" ;;
        *) EXTRA+=("${arg}") ;;  # a flag for the restreact command itself
      esac ;;
    *) die "unexpected argument '${arg}' (see --help)" ;;
  esac
  shift
done

[[ -n "${ZONE}" ]] || die "--zone is required"
[[ "${NAME}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '${NAME}' is not a valid TPU name (lowercase letters, digits, -)"
if ((!DELETE_ONLY)); then
  ((${#GIN_FILES[@]})) || die "--gin_file is required"
fi
EXP_DIR="${EXP_DIR:-runs/${NAME}}"  # relative to the project directory on the worker

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JAX_VERSION="$(sed -n 's/^jax==\([^ #]*\).*/\1/p' "${ROOT}/requirements.txt")"
[[ -n "${JAX_VERSION}" ]] || die "requirements.txt does not pin jax"
REMOTE_DIR="restreact-jax"       # relative to the worker's home directory
ARCHIVE="/tmp/restreact-jax-${NAME}.tar.gz"

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
SCOPE=("--zone=${ZONE}")
[[ -n "${PROJECT}" ]] && SCOPE+=("--project=${PROJECT}")

# Prints a command as one copy-pasteable line, quoting only what needs it.
show() {
  local out=() a
  for a in "$@"; do
    if [[ "${a}" =~ ^[-A-Za-z0-9_./:=,@%+]+$ ]]; then out+=("${a}"); else out+=("${a@Q}"); fi
  done
  echo "${out[*]}"
}

# Runs (or, with --dry-run, prints) one command.
step() {
  if ((DRY_RUN)); then show "$@"; else "$@"; fi
}

# A command to run on every worker.
on_all_workers() {
  step "${GCLOUD_TPU[@]}" ssh "${NAME}" "${SCOPE[@]}" --worker=all --command="$1"
}

delete_slice() {
  step "${GCLOUD_TPU[@]}" delete "${NAME}" "${SCOPE[@]}" --quiet
}

if ((DELETE_ONLY)); then
  delete_slice
  exit 0
fi

# 1. The slice: reuse it if it exists.
CREATE=("${GCLOUD_TPU[@]}" create "${NAME}" "${SCOPE[@]}"
        "--accelerator-type=${ACCELERATOR_TYPE}" "--version=${RUNTIME_VERSION}")
((SPOT)) && CREATE+=(--spot)
DESCRIBE=("${GCLOUD_TPU[@]}" describe "${NAME}" "${SCOPE[@]}" --format=value\(state\))
if ((DRY_RUN)); then
  echo "$(show "${DESCRIBE[@]}") >/dev/null 2>&1 || $(show "${CREATE[@]}")"
elif ! "${DESCRIBE[@]}" >/dev/null 2>&1; then
  [[ -n "${ACCELERATOR_TYPE}" ]] || die "slice '${NAME}' does not exist; --accelerator_type is required to create it"
  "${CREATE[@]}"
fi

if ((DELETE)) && ((!DRY_RUN)); then
  trap delete_slice EXIT
fi

# 2. The code and its environment on every worker.
if ((!SKIP_SETUP)); then
  if [[ -n "${REPO_URL}" ]]; then
    on_all_workers "$(printf 'if [ -d %s/.git ]; then git -C %s fetch -q origin %q && git -C %s checkout -q FETCH_HEAD; else git clone -q --branch %q %q %s; fi' \
      "${REMOTE_DIR}" "${REMOTE_DIR}" "${BRANCH}" "${REMOTE_DIR}" "${BRANCH}" "${REPO_URL}" "${REMOTE_DIR}")"
  else
    step tar -czf "${ARCHIVE}" -C "${ROOT}" --exclude=./.venv --exclude=./.git --exclude=./runs \
      --exclude='*.egg-info' --exclude=__pycache__ .
    step "${GCLOUD_TPU[@]}" scp "${ARCHIVE}" "${NAME}:restreact-jax.tar.gz" "${SCOPE[@]}" --worker=all
    on_all_workers "mkdir -p ${REMOTE_DIR} && tar -xzf restreact-jax.tar.gz -C ${REMOTE_DIR}"
  fi
  on_all_workers "cd ${REMOTE_DIR} && python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q 'jax[tpu]==${JAX_VERSION}' -r requirements.txt && .venv/bin/pip install -q --no-deps -e ."
fi

# 3. The run: the same command on every worker; logs stream back and stay in
# ~/restreact-<name>.log on each worker.
RUN=(.venv/bin/restreact "${COMMAND}")
for f in "${GIN_FILES[@]}"; do RUN+=("--gin_file=${f}"); done
RUN+=("--gin.EXP_DIR=\"${EXP_DIR}\"" --multihost)
if ((${#EXTRA[@]})); then RUN+=("${EXTRA[@]}"); fi
RUN_LINE="$(show "${RUN[@]}")"
on_all_workers "cd ${REMOTE_DIR} && ${RUN_LINE} 2>&1 | tee -a \$HOME/restreact-${NAME}.log; exit \${PIPESTATUS[0]}"

if ((DELETE)) && ((DRY_RUN)); then
  delete_slice
fi
