"""Shared training utilities: process group, FSDP2 sharding, distributed checkpoints, schedules, EMA, progress,
stops between steps.

Every recipe keeps its own short loop over these (``recipes/``). One process trains the plain modules; under
``torchrun`` the same loop shards them with FSDP2 (``torch.distributed.fsdp.fully_shard``) and checkpoints them with
``torch.distributed.checkpoint``, which reshards on load (a run saved by 2 processes resumes in 1 and the other way).
"""
