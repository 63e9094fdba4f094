# SITE-SPECIFIC (optional): what every batch job runs before training. Edit for your cluster;
# on the local test cluster (setup_local_cluster.sh) nothing here is needed.
#
# Resource lines (partition, account, GPUs) are the lines marked SITE in the #SBATCH headers of
# train_gpu.sbatch, multinode.sbatch and sweep.sbatch; they can also be given on the command line
# (sbatch --partition=gpu --account=proj ...), which overrides the script.

# module load cuda/12.4 cudnn/9          # SITE: modules, if JAX's CUDA wheels are not used
# source "$HOME/venvs/research/bin/activate"   # SITE: the Python environment with requirements.txt
# export PYTHON=python3.11               # SITE: interpreter name, if not `python`
# export RESEARCH_DATA=/shared/datasets  # SITE: data root (default ../shared/data)
# export XLA_PYTHON_CLIENT_PREALLOCATE=false   # let several jobs share a GPU (not usually wanted)
:
