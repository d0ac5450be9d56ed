"""The training engine: the trainer, balancers, hooks (EMA, evaluation, checkpoints, logging, time budget),
the optimiser and schedule, evaluation and the launch of a run (its folder, the rules of a resume, the JSON
of its results)."""
