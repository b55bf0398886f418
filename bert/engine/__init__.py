"""Task-agnostic fine-tuning: torchrun DDP, fp32/fp16/bf16, gradient accumulation, exact resume.

    ctx = setup_distributed()                     # torchrun / old launcher env; 1 process: no group
    result = fit(model, dataset, collate_fn, TrainConfig(...), work_dir, ctx=ctx, lengths=lengths)
    logits, = predict(model, dev_dataset, collate_fn, ctx=ctx)
"""

from bert.engine.config import FitResult, TrainConfig
from bert.engine.distributed import (
    DistContext,
    cleanup_distributed,
    setup_distributed,
    strip_launcher_args,
)
from bert.engine.loop import fit
from bert.engine.precision import LossScaleCollapse
from bert.engine.predict import predict
from bert.engine.sampler import DistributedLengthGroupedSampler

__all__ = [
    "TrainConfig",
    "FitResult",
    "DistContext",
    "setup_distributed",
    "cleanup_distributed",
    "strip_launcher_args",
    "fit",
    "predict",
    "LossScaleCollapse",
    "DistributedLengthGroupedSampler",
]
