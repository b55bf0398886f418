"""Task-agnostic fine-tuning: torchrun DDP, fp32/fp16/bf16, gradient accumulation, exact resume.

    ctx = setup_distributed()                     # torchrun / old launcher env; 1 process: no group
    result = fit(model, dataset, collate_fn, TrainConfig(...), work_dir, ctx=ctx, lengths=lengths)
    logits, = predict(model, dev_dataset, collate_fn, ctx=ctx)
"""

from bert._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "bert.engine.config",
    "FitResult": "bert.engine.config",
    "DistContext": "bert.engine.distributed",
    "setup_distributed": "bert.engine.distributed",
    "cleanup_distributed": "bert.engine.distributed",
    "strip_launcher_args": "bert.engine.distributed",
    "fit": "bert.engine.loop",
    "predict": "bert.engine.prediction",
    "LossScaleCollapse": "bert.engine.precision",
    "TrainingDiverged": "bert.engine.precision",
    "DistributedLengthGroupedSampler": "bert.engine.sampler",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
