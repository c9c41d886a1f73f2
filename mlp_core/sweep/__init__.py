"""Hyperparameter sweeps: Optuna searches over Config fields, each trial a normal run directory,
the sweep's root a TensorBoard HParams experiment (scripts/sweep.py, docs/sweeps.md)."""
