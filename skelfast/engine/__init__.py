"""Pretraining engine: the training loop (``pretrain``), checkpoints, optimizers and schedules,
torch.distributed set-up, metrics, and the cached synthetic dataset. The ``skelfast pretrain``
command is ``pretrain_cli``. Nothing is imported here, so ``skelfast --help`` stays quick."""
