"""LipSim training on Ray Train: distillation (:mod:`~jobs.train.distill`) and 2AFC fine-tuning
(:mod:`~jobs.train.finetune`), driven by ``[[train]]`` tables (:mod:`~jobs.train.spec`) through
:func:`jobs.train.runner.run_all` or the ``lipsim train`` commands (:mod:`~jobs.train.cli`)."""
