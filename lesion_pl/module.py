"""The LightningModule that trains: the network (passed in, or built from the config) with its normalisation,
one shared step, the loss (lesion_pl/losses.py), the optimiser and schedule, metrics per stage."""
from __future__ import annotations

import math
import time

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torchvision.transforms import v2

from .calibration import decision_bias
from .classes import NUM_CLASSES
from .config_rules import duration_seconds
from .errors import LesionPLError
from .evaluate.metrics import metric_collection
from .losses import training_loss
from .models.factory import Normalize, build_network, uses_weights
from .models.weights import head_prefix


def _batch_mixer(augment: dict):
    """torchvision's MixUp and/or CutMix on whole training batches (None when both alphas are 0);
    with both, each batch gets one of the two at random, as in timm."""
    mixers = [cls(alpha=float(alpha), num_classes=NUM_CLASSES)
              for cls, alpha in ((v2.MixUp, augment["mixup"]), (v2.CutMix, augment["cutmix"]))
              if alpha and float(alpha) > 0]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def _balanced_rule_shift(config: dict, class_weights, class_prior, tau: float) -> torch.Tensor | None:
    """What validation adds to the logits so that its metrics score the class `calibration.decision` names.

    The logits learn the class distribution the loss sees: the sampler's class prior times the loss's
    class weights, less the part logit adjustment (tau) took out. Test names the class with the run's
    decision rule (`decision_bias`: the balanced rule divides the prior out); validation, which picks the
    checkpoint and stops early, does the same, so a sampler that is not class-balanced is judged as test
    will judge it. The default balanced sampler has a uniform prior: no shift.
    """
    c = config["calibration"]
    if not class_prior or not c["prior_correction"]:
        return None  # calibrate then names the most probable class
    prior = np.asarray(class_prior, dtype=np.float64)
    if class_weights:
        prior = prior * np.asarray(class_weights, dtype=np.float64)
    bias = decision_bias((1.0 - tau) * np.log(prior / prior.sum()), c["decision"])
    return None if bias is None or np.allclose(bias, 0.0) else torch.tensor(bias, dtype=torch.float32)


def _malignant_weight(loss: dict) -> float:
    """`loss.malignant_weight` as a float >= 0 (0: off)."""
    value = loss["malignant_weight"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise LesionPLError(f"loss.malignant_weight must be a number >= 0, got {value!r}")
    return float(value)


def parameter_groups(net, optim: dict, pretrained: bool) -> list[dict]:
    """AdamW's groups: no weight decay on norms and biases (1-D tensors); a network that starts from weights
    trains its backbone at `optim.backbone_lr_scale` times the learning rate of its new head."""
    head = head_prefix(net) + "."
    scale = float(optim["backbone_lr_scale"]) if pretrained else 1.0
    lr, decay = float(optim["lr"]), float(optim["weight_decay"])
    groups: dict[tuple, list] = {}
    for name, p in net.named_parameters():
        groups.setdefault((name.startswith(head), p.ndim > 1), []).append(p)
    return [{"params": params, "lr": lr * (1.0 if is_head else scale), "weight_decay": decay if decayed else 0.0}
            for (is_head, decayed), params in groups.items()]


class LesionClassifier(pl.LightningModule):
    """Takes uint8 NCHW images (0..255), returns logits over the label space.

    `mean`/`std` are the channel statistics the inputs are normalised with (0..1 scale): the training
    split's, or None for the pretrained weights' own (`models.normalization_stats`). They are buffers of
    the model and hyperparameters of the checkpoint, so they travel into test, export and the ONNX graph.
    `net`: the network to train (`models.build_network(config["model"])`, which is what a checkpoint rebuilds;
    built here where not given).
    """

    def __init__(self, config: dict, mean: list | None, std: list | None, class_weights: list | None = None,
                 class_prior: list | None = None, net: nn.Module | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.config = config
        self.net = net if net is not None else build_network(config["model"])
        if mean is None:  # the weights' own preprocessing, recorded so that a reloaded model needs no weights
            loaded = self.net.loaded_weights
            if loaded is None or loaded.mean is None:
                raise LesionPLError("model.normalization: auto needs weights that name their mean and std; "
                                    "give model.normalization={mean: [...], std: [...]} or dataset")
            mean, std = list(loaded.mean), list(loaded.std)
            self.hparams.update(mean=mean, std=std)
        self.normalize = Normalize(mean, std, config["data"]["color_constancy"])
        self.channels_last = bool(config["trainer"]["channels_last"])
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.set_class_prior(class_prior)
        self.mix = _batch_mixer(config["data"]["augment"])
        self.malignant_weight = _malignant_weight(config["loss"])
        self.train_metrics = metric_collection(auroc=False).clone(prefix="train/")
        self.val_metrics = metric_collection(per_class=True).clone(prefix="val/")

    def set_class_prior(self, class_prior: list | None) -> None:
        """The class prior of the training batches, and the logit shifts that follow from it."""
        tau = float(self.config["loss"]["logit_adjustment"])
        # logit adjustment (Menon et al., ICLR 2021): the training loss sees logits + tau * log(prior of the
        # training batches), so the logits themselves learn the class-balanced posterior
        shift = tau * torch.log(torch.tensor(class_prior, dtype=torch.float32)) if tau and class_prior else None
        weights = self.class_weights.tolist() if self.class_weights is not None else None
        # plain attributes, not buffers: the weight average (EMA) pairs the buffers of the model and of its
        # average one to one, and a shift can come and go as the prior changes
        self.logit_shift = shift
        self.eval_shift = _balanced_rule_shift(self.config, weights, class_prior, tau)

    def _shifted(self, logits: torch.Tensor, name: str) -> torch.Tensor:
        """float logits plus the shift `name` (none: unchanged); the shift moves to their device once."""
        shift = getattr(self, name)
        if shift is None:
            return logits.float()
        if shift.device != logits.device:
            shift = shift.to(logits.device)
            setattr(self, name, shift)
        return logits.float() + shift

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.config["data"].get("sampler_start") is not None and dm is not None:  # the sampler ramps
            self.set_class_prior(dm.sampled_class_prior(self.current_epoch))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_normalized(self.normalize(images))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised float NCHW images -> logits."""
        return self.net(self._prepare(x))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _step(self, batch, stage: str):
        images, target = batch
        if stage == "train" and self.mix is not None:
            # the loss sees the mixed soft targets, the training metrics the original labels
            x, soft = self.mix(self.normalize(images), target)
            logits = self.forward_normalized(x)
        else:
            logits, soft = self(images), target
        shifted = self._shifted(logits, "logit_shift") if stage == "train" else logits.float()
        loss = training_loss(shifted, soft, self.class_weights, float(self.config["loss"]["label_smoothing"]),
                             self.malignant_weight)
        metrics = getattr(self, f"{stage}_metrics")
        scored = self._shifted(logits, "eval_shift") if stage != "train" else logits.float()
        metrics.update(scored.softmax(dim=1), target)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(target),
                 sync_dist=not on_step)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def _log_epoch(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        self.log_dict(values)
        self.log(f"{stage}/bal_acc", values[f"{stage}/balanced_accuracy"], prog_bar=True, logger=False)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self):
        o = self.config["optim"]
        # fused: one kernel for all tensors; within a short benchmark's noise on 2 CPU cores, 1.19x for
        # EfficientNet on one (benchmarks/RESULTS.md: "A longer fine-tune")
        opt = torch.optim.AdamW(parameter_groups(self.net, o, uses_weights(self.config["model"])), lr=float(o["lr"]),
                                fused=all(p.device.type in ("cpu", "cuda") for p in self.net.parameters()))
        estimated = self.trainer.estimated_stepping_batches  # also sizes num_training_batches
        per_epoch = self.trainer.num_training_batches
        steps_per_epoch = max(1, int(per_epoch) if math.isfinite(per_epoch) else 1)
        # max_epochs=-1: no step count ends the cosine, only max_time (if any)
        total = max(1, int(estimated)) if math.isfinite(estimated) else 10 ** 12
        warmup = min(total - 1, int(float(o["warmup_epochs"]) * steps_per_epoch))
        budget = duration_seconds(self.config["trainer"].get("max_time"))
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
