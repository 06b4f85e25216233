"""The LightningModule that trains: the network (passed in, or built from the config) with its normalisation,
one shared step, metrics per stage. The loss is lesion_pl/losses.py's, the optimiser and schedule
lesion_pl/optim.py's, validation's decision rule calibration.validation_decision_bias."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from .calibration import validation_decision_bias
from .classes import label_space
from .config import Config
from .data.transforms import batch_mixer
from .evaluate.metrics import metric_collection
from .losses import GroupDRO, training_loss
from .models.factory import Normalize, build_network, weights_normalization
from .models.ood_features import ood_features_and_logits
from .optim import optimizer_and_schedule


class LesionClassifier(pl.LightningModule):
    """Takes uint8 NCHW images (0..255), returns logits over the label space.

    `mean`/`std` are the channel statistics the inputs are normalised with (0..1 scale): the training
    split's, or None for the pretrained weights' own (`models.normalization_stats`). They are buffers of
    the model and hyperparameters of the checkpoint, so they travel into test, export and the ONNX graph.
    `net`: the network to train (`models.build_network(config.model, classes)`, which is what a checkpoint rebuilds;
    built here where not given). `groups`: the names of group DRO's groups (`loss.group_dro`; the datamodule's
    `groups()`), whose weights each training epoch logs.
    """

    def __init__(self, config: Config, mean: list | None, std: list | None, class_weights: list | None = None,
                 class_prior: list | None = None, net: nn.Module | None = None, groups: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "config"])
        # plain values in the checkpoint (it loads with weights_only=True); checkpoint.load_classifier reads them back
        self.hparams["config"] = config.model_dump()
        self.config = config
        self.space = label_space(config.data)
        self.net = net if net is not None else build_network(config.model, self.space.num_classes)
        if mean is None:  # the weights' own preprocessing, recorded so that a reloaded model needs no weights
            mean, std = weights_normalization(self.net)
            self.hparams.update(mean=mean, std=std)
        self.normalize = Normalize(mean, std, config.data.color_constancy)
        self.channels_last = bool(config.trainer.channels_last)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.set_class_prior(class_prior)
        self.mix = batch_mixer(config.data.augment, self.space.num_classes)
        self.group_names = groups
        self.dro = GroupDRO(len(groups), config.loss.group_dro_step) if groups else None
        self.train_metrics = metric_collection(auroc=False, space=self.space).clone(prefix="train/")
        self.val_metrics = metric_collection(per_class=True, space=self.space).clone(prefix="val/")

    def set_class_prior(self, class_prior: list | None) -> None:
        """The class prior of the training batches, and the logit shifts that follow from it."""
        tau = float(self.config.loss.logit_adjustment)
        # logit adjustment (Menon et al., ICLR 2021): the training loss sees logits + tau * log(prior of the
        # training batches), so the logits themselves learn the class-balanced posterior
        shift = tau * torch.log(torch.tensor(class_prior, dtype=torch.float32)) if tau and class_prior else None
        weights = self.class_weights.tolist() if self.class_weights is not None else None
        # plain attributes, not buffers: the weight average (EMA) pairs the buffers of the model and of its
        # average one to one, and a shift can come and go as the prior changes
        self.logit_shift = shift
        bias = validation_decision_bias(self.config.calibration, weights, class_prior, tau)
        self.eval_shift = None if bias is None else torch.tensor(bias, dtype=torch.float32)

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
        if self.config.data.sampler_start is not None and dm is not None:  # the sampler ramps
            self.set_class_prior(dm.sampled_class_prior(self.current_epoch))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_normalized(self.normalize(images))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised float NCHW images -> logits."""
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NCHW images -> (the features the out-of-distribution score reads, logits): one pass."""
        x = self.normalize(images)
        return ood_features_and_logits(self.net, x.contiguous(memory_format=torch.channels_last)
                                       if self.channels_last else x, images)

    def _step(self, batch, stage: str):
        images, target, *tags = batch  # tags: what the loss needs of each training image (datamodule.tags)
        if stage == "train" and self.mix is not None:
            # the loss sees the mixed soft targets, the training metrics the original labels
            x, soft = self.mix(self.normalize(images), target)
            logits = self.forward_normalized(x)
        else:
            logits, soft = self(images), target
        shifted = self._shifted(logits, "logit_shift") if stage == "train" else logits.float()
        loss = training_loss(shifted, soft, self.class_weights, self.config.loss, self.space, target,
                             tags[0] if tags and stage == "train" else None, self.dro)
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
        if self.dro is not None:  # where group DRO's weights went (each 1/groups at the start)
            weights = zip(self.group_names, self.dro.q.tolist(), strict=True)
            self.log_dict({f"train/dro_weight/{name}": w for name, w in weights})

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.dro is not None:  # group DRO's weights: training state that --resume continues from
            checkpoint["group_dro_q"] = self.dro.q.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.dro is not None and "group_dro_q" in checkpoint:
            self.dro.q = checkpoint["group_dro_q"].clone()

    def configure_optimizers(self):
        c = self.config
        return optimizer_and_schedule(self.net, c.optim, c.model, c.trainer.max_time, self.trainer)
