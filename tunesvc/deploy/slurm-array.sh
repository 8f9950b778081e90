#!/usr/bin/env bash
# N Slurm array tasks joining one tunesvc study, one GPU each:
#
#   echo "TUNESVC_STORAGE='postgresql://tunesvc:PASSWORD@db-host:5433/tunesvc'" \
#     > ~/.tunesvc-storage && chmod 600 ~/.tunesvc-storage
#   sbatch --export=STUDY=mystudy tunesvc/deploy/slurm-array.sh
#
# Each task runs `tunesvc study run $STUDY` until the study's queue is empty. Slurm sends
# SIGTERM at the time limit (then SIGKILL after KillWait): the running trial is queued again
# and resumes from its checkpoint in the next task that claims it. A node that dies takes its
# trial with it; another task fails it after two heartbeats and runs it again.
#SBATCH --job-name=tunesvc
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=tunesvc-%A_%a.log
set -euo pipefail

: "${STUDY:?set STUDY, e.g. sbatch --export=STUDY=mystudy $0}"
# The URL (with its password) comes from a file only you can read, never the command line.
set -a; source "${TUNESVC_STORAGE_FILE:-$HOME/.tunesvc-storage}"; set +a
# Checkpoints on a filesystem every node reaches, so a retried trial resumes.
export TUNESVC_ARTIFACTS="${TUNESVC_ARTIFACTS:-$HOME/tunesvc-artifacts}"
# Slurm sets CUDA_VISIBLE_DEVICES to this task's GPU, which is cuda:0 inside it.
exec tunesvc study run "$STUDY" --device cuda:0 --quiet
