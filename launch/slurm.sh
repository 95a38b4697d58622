#!/usr/bin/env bash
# Multi-host data-parallel training on a Slurm GPU cluster: one process per host, each driving all of
# its host's GPUs and reading its share of every global batch.
#
#   sbatch launch/slurm.sh configs/raf.py /shared/runs/raf --config.data.root=/shared/data/RAF-DB/basic
#   sbatch --nodes=4 --gpus-per-node=4 launch/slurm.sh configs/affectnet.py /shared/runs/affectnet \
#       --config.data.root=/shared/data/AffectNet --config.train.batch_size=256
#
# - The workdir must be on a filesystem every host sees (checkpoints are written jointly by all
#   processes; metrics, summary and plots by process 0). data.root too, or a copy at the same path.
# - `--distributed` makes lnl_jax.main call jax.distributed.initialize(), which reads the
#   coordinator (first host of the job), the process count and this process's id from Slurm
#   (SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID). Left alone it would give each process only
#   the GPU numbered SLURM_LOCALID (JAX's one-process-per-GPU default); JAX_LOCAL_DEVICE_IDS below
#   hands it all of the host's GPUs instead.
# - train.batch_size is global: it must be a multiple of the total GPU count (nodes × GPUs per node).
# - Pre-emption and the time limit: Slurm sends SIGTERM to every process (here 5 minutes before the
#   limit, --signal); the processes agree on a step within train.log_every_steps steps, write a
#   checkpoint of it and exit with status 143; this script then requeues the job, and the rerun of
#   the same command resumes from that step. A SIGKILL loses at most the steps since the last
#   checkpoint (each epoch end, and every train.checkpoint_every_steps steps if set).
#
#SBATCH --job-name=lnl_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: sbatch $0 CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
python=${PYTHON:-.venv/bin/python}
gpus_per_node=${SLURM_GPUS_PER_NODE:-8}
gpus_per_node=${gpus_per_node##*:}  # "h100:8" -> "8"
export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus_per_node - 1)))
export TF_CPP_MIN_LOG_LEVEL=2

# The batch shell gets SIGTERM too when the job is pre-empted: keep it alive to requeue the job.
trap 'echo "$(date): SIGTERM: waiting for the training processes to checkpoint"' TERM

set +e
srun --kill-on-bad-exit=0 "$python" -m lnl_jax.main --distributed \
  --config="$config" --workdir="$workdir" "$@" &
wait $!
status=$?
while kill -0 $! 2>/dev/null; do wait $!; status=$?; done  # `wait` returns early on a trapped signal
set -e

if [[ $status -eq 143 || $status -eq 130 ]]; then
  echo "$(date): pre-empted; checkpoint written in $workdir; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit $status
