"""The grid on a Slurm cluster (docs/cluster.md): `submit` (make grid SCHEDULER=slurm)
hands the runs to Slurm as one job array of grid.sbatch plus an evaluation job (eval.sbatch);
`status` (make grid-status) reports each run; local_cluster.sh (make slurm-up / slurm-down) runs a
one-node cluster on this machine."""
