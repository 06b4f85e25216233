"""The optimiser and learning-rate schedule: AdamW over parameter groups (no weight decay on norms and biases,
a pretrained backbone at a fraction of the head's rate), linear warm-up then cosine, ended early by
trainer.max_time where one is set."""
from __future__ import annotations

import math
import time

import torch

from .config import Model, Optim, duration_seconds
from .models.factory import uses_weights
from .models.weights import head_prefix


def parameter_groups(net, optim: Optim, pretrained: bool) -> list[dict]:
    """AdamW's groups: no weight decay on norms and biases (1-D tensors); a network that starts from weights
    trains its backbone at `optim.backbone_lr_scale` times the learning rate of its new head."""
    head = head_prefix(net) + "."
    scale = float(optim.backbone_lr_scale) if pretrained else 1.0
    lr, decay = float(optim.lr), float(optim.weight_decay)
    groups: dict[tuple, list] = {}
    for name, p in net.named_parameters():
        groups.setdefault((name.startswith(head), p.ndim > 1), []).append(p)
    return [{"params": params, "lr": lr * (1.0 if is_head else scale), "weight_decay": decay if decayed else 0.0}
            for (is_head, decayed), params in groups.items()]


def optimizer_and_schedule(net, optim: Optim, model: Model, max_time, trainer) -> dict:
    """What LightningModule.configure_optimizers returns, for `net` (built from `model`) trained by `trainer` with
    `optim`, its cosine ended by `max_time` (trainer.max_time) where one is set."""
    o = optim
    # fused: one kernel for all tensors; within a short benchmark's noise on 2 CPU cores, 1.19x for
    # EfficientNet on one (benchmarks/RESULTS.md: "A longer fine-tune")
    opt = torch.optim.AdamW(parameter_groups(net, o, uses_weights(model)), lr=float(o.lr),
                            fused=all(p.device.type in ("cpu", "cuda") for p in net.parameters()))
    estimated = trainer.estimated_stepping_batches  # also sizes num_training_batches
    per_epoch = trainer.num_training_batches
    steps_per_epoch = max(1, int(per_epoch) if math.isfinite(per_epoch) else 1)
    # max_epochs=-1: no step count ends the cosine, only max_time (if any)
    total = max(1, int(estimated)) if math.isfinite(estimated) else 10 ** 12
    warmup = min(total - 1, int(float(o.warmup_epochs) * steps_per_epoch))
    budget = duration_seconds(max_time)
    start = time.monotonic()

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if budget:  # with a time budget, the cosine also ends when the time runs out
            progress = max(progress, (time.monotonic() - start) / budget)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
