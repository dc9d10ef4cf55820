"""Launch helpers: build the torchrun command for N nodes x P processes (`torchrun.py`) and the SLURM batch script
that runs it on every node of a job (`sbatch.py`). They only compose commands; torchrun and SLURM do the work."""
