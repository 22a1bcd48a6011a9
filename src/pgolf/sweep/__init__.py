"""`pgolf sweep`: hyperparameter search over `--set` fields on Optuna, with multi-fidelity pruning on the runs'
periodic val_bpb and any number of cooperating workers (docs/sweep.md).

space (the search space file) -> study (storage, sampler, pruner, heartbeats, retries) -> trial (one run directory,
one `pgolf train` child) -> report (best trials, importances, plots, the best config as a preset); commands wires
them to the CLI. The worker pool they share with `pgolf seeds` and `pgolf ablate` is pgolf/train/pool.py.
"""
