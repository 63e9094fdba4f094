# Site settings for the batch jobs in slurm/. Every job sources slurm/site.local.sh (yours; ignored
# by git) when it exists, else this file, right after it changes to the repository root:
#   cp slurm/site.example.sh slurm/site.local.sh      # then edit the lines marked SITE
# As it is, this file works on the local test cluster (slurm/setup_local_cluster.sh) and wherever
# the submitting shell's `python` has the packages of requirements.txt (sbatch passes the
# submitting shell's environment on by default).
#
# Resource lines (partition, account, GPUs, time) are the #SBATCH lines marked SITE in
# train_gpu.sbatch, multinode.sbatch and sweep.sbatch, or options on the sbatch command line.

# module load cuda/12.4 cudnn/9                # SITE: modules, if JAX's CUDA wheels are not used
# source "$HOME/venvs/research/bin/activate"   # SITE: the Python environment with requirements.txt
# export PYTHON=python3.11                     # SITE: interpreter name, if not `python`
# export RESEARCH_DATA=/shared/datasets        # SITE: data root (default ../shared/data)
# export XLA_PYTHON_CLIENT_PREALLOCATE=false   # let several jobs share a GPU (not usually wanted)

# JAX's platform: the GPUs when SLURM gave the job any (JAX then fails loudly instead of training
# on the CPU when it cannot use them), else the CPU. SITE: set it outright if your GPUs are not
# SLURM resources.
if [[ -n ${SLURM_JOB_GPUS:-}${SLURM_STEP_GPUS:-} ]]; then
    export JAX_PLATFORMS=cuda
else
    export JAX_PLATFORMS=cpu
fi
