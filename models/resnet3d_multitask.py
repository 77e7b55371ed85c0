"""Multi-task, multi-view 3-D ResNet for short video clips.

One backbone, torchvision's `VideoResNet` (R3D: `BasicStem` and `BasicBlock`s of full 3x3x3
convolutions, Tran et al. 2018) scaled to a base `width`, embeds every view of a clip; the
views' embeddings are fused (mean, or attention pooling as in Ilse et al. 2018) and one
linear head per task classifies the fused embedding.

Training-time augmentation runs inside the model, on whole batches on the model's device
(a random window of frames, time reversal, brightness per view), drawn from torch's RNG,
which the training loop seeds.

Shapes: B batch, V views, C channels, T frames, H x W pixels, F = clip_frames (or T),
D = 8 * width the embedding, K_t the classes of task t.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from models.classification import (
    confusion_matrix,
    focal_loss,
    inverse_frequency_weights,
    macro_f1,
    report_from_confusion,
)
from models.figures import confusion_figure
from models.registry import register_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Residual blocks per stage; 34 uses BasicBlocks like torchvision's r3d_18 does.
STAGE_BLOCKS: dict[int, tuple[int, ...]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
DEFAULT_TASKS: dict[str, int] = {"phase": 3, "quality": 2}
FUSIONS = ("mean", "attention")
LOSSES = ("weighted_ce", "focal")
FREEZES = ("none", "frozen", "gradual")
# Task names become buffer names and metric keys (acc_<task>): no dots or spaces.
TASK_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class BasicBlock3d(nn.Module):
    """torchvision's video BasicBlock: two 3x3x3 conv-BN pairs and a residual connection."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm3d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class AttentionPool(nn.Module):
    """Attention-based pooling over views (Ilse et al. 2018): [B, V, D] -> [B, D].

    Lets the model lean on the views that show a clip best instead of averaging a poor
    view in at full weight.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        weights = self.score(x).softmax(dim=1)  # [B, V, 1]
        return (weights * x).sum(dim=1)


def augment_clips(clips: Tensor, frames: int, flip: bool, brightness: float) -> Tensor:
    """Random training augmentation of a batch: [B, V, C, T, H, W] -> [B, V, C, frames, H, W].

    Per clip, a random window of `frames` frames, reversed in time with probability 1/2 if
    `flip`; the same for every view, since views film the same moment. Per view, a gain in
    [1 - brightness, 1 + brightness], since cameras differ in exposure. Pure tensor ops, so
    it runs on the batch's device (and on the meta device).
    """
    B, V, C, T, H, W = clips.shape
    device = clips.device
    start = torch.randint(0, T - frames + 1, (B, 1), device=device)
    index = start + torch.arange(frames, device=device)  # [B, frames]
    if flip:
        reverse = torch.rand(B, 1, device=device) < 0.5
        index = torch.where(reverse, index.flip(1), index)
    clips = clips.gather(3, index.view(B, 1, 1, frames, 1, 1).expand(B, V, C, frames, H, W))
    gain = 1 + brightness * (2 * torch.rand(B, V, 1, 1, 1, 1, device=device) - 1)
    return clips * gain


class MultiTaskResNet3d(nn.Module):
    # Validation clips `validation_figures` wants: enough for a confusion matrix per task.
    figure_samples = 256

    def __init__(
        self,
        tasks: Mapping[str, int],
        in_channels: int,
        depth: int,
        width: int,
        fusion: str,
        loss: str,
        focal_gamma: float,
        weight_cap: float,
        task_weights: Mapping[str, float],
        freeze: str,
        freeze_epochs: int,
        clip_frames: int | None,
        augment: bool,
        temporal_flip: bool,
        brightness: float,
    ) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.loss_name, self.focal_gamma, self.weight_cap = loss, focal_gamma, weight_cap
        self.task_weights = {task: float(task_weights.get(task, 1.0)) for task in self.tasks}
        self.freeze, self.freeze_epochs = freeze, freeze_epochs
        self.clip_frames, self.augment = clip_frames, augment
        self.temporal_flip, self.brightness = temporal_flip, brightness
        # DDP must expect parameters without gradients while part of the backbone is frozen.
        self.ddp_find_unused_parameters = freeze != "none"

        # torchvision's BasicStem: spatial stride only, so short clips keep their frames.
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for index, blocks in enumerate(STAGE_BLOCKS[depth]):
            out_channels, stride = width * 2**index, 1 if index == 0 else 2
            layers = [BasicBlock3d(channels, out_channels, stride)]
            layers += [BasicBlock3d(out_channels, out_channels, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.fusion = AttentionPool(channels) if fusion == "attention" else None
        self.heads = nn.ModuleDict({task: nn.Linear(channels, k) for task, k in self.tasks.items()})
        # Set by fit_to_data from the training labels; persistent, so checkpoints carry them.
        self.class_weights = nn.Module()
        for task, k in self.tasks.items():
            self.class_weights.register_buffer(task, torch.ones(k))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # As torchvision's VideoResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # --- optional hooks of the training loop -------------------------------------------------

    def fit_to_data(self, train_dataset: Dataset) -> None:
        """Check the training labels against `tasks` and set the class weights from their frequencies."""
        labels = training_labels(train_dataset, self.tasks)
        for task, k in self.tasks.items():
            ids = labels[task]
            if ids.min() < 0 or ids.max() >= k:
                raise ValueError(f"labels_{task} holds class ids {int(ids.min())}..{int(ids.max())} but "
                                 f"model.args.tasks gives {task!r} {k} classes (ids 0..{k - 1})")
            self.class_weights.get_buffer(task).copy_(inverse_frequency_weights(ids, k, self.weight_cap))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Freeze or unfreeze backbone stages for `epoch` (1-based) according to `freeze`.

        Only requires_grad changes: batch-norm statistics keep following the data, which a
        backbone that is not pre-trained on this data needs.
        """
        trainable = self.trainable_stages(epoch)
        for index, stage in enumerate(self.stages):
            stage.requires_grad_(index >= len(self.stages) - trainable)
        self.stem.requires_grad_(trainable == len(self.stages))

    def trainable_stages(self, epoch: int) -> int:
        """How many of the deepest stages train in `epoch`: all of them (and the stem), or fewer while frozen.

        frozen: none for the first freeze_epochs epochs, then all. gradual: none for the first
        freeze_epochs, then one more every freeze_epochs, deepest first; the stem joins with
        the first stage.
        """
        stages = len(self.stages)
        if self.freeze == "none":
            return stages
        if self.freeze == "frozen":
            return 0 if epoch <= self.freeze_epochs else stages
        return min(stages, (epoch - 1) // self.freeze_epochs)

    # --- forward --------------------------------------------------------------------------------

    def logits(self, clips: Tensor) -> dict[str, Tensor]:
        """[B, V, C, T, H, W] clips -> task -> [B, K_t] logits; augments in training mode."""
        B, V, C, T, H, W = clips.shape
        frames = self.clip_frames or T
        if frames > T:
            raise ValueError(f"clip_frames ({frames}) exceeds the {T} frames of the clips")
        if self.training and self.augment:
            clips = augment_clips(clips, frames, self.temporal_flip, self.brightness)
        else:
            start = (T - frames) // 2  # the centre window: validation is deterministic
            clips = clips[:, :, :, start:start + frames]
        x = self.stem(clips.reshape(B * V, C, frames, H, W))
        for stage in self.stages:
            x = stage(x)
        x = x.mean(dim=(2, 3, 4)).view(B, V, -1)  # [B, V, D]
        fused = x.mean(dim=1) if self.fusion is None else self.fusion(x)  # [B, D]
        return {task: head(fused) for task, head in self.heads.items()}

    def task_loss(self, task: str, logits: Tensor, target: Tensor) -> Tensor:
        if self.loss_name == "focal":
            return focal_loss(logits, target, self.focal_gamma)
        return F.cross_entropy(logits.float(), target, weight=self.class_weights.get_buffer(task))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        targets = self.targets(batch)
        logits = self.logits(batch["clips"])
        parts = {task: self.task_loss(task, logits[task], targets[task]) for task in self.tasks}
        loss = sum(self.task_weights[task] * part for task, part in parts.items())
        return {"loss": loss, **{f"loss_{task}": part.detach() for task, part in parts.items()}}

    def targets(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [f"labels_{task}" for task in self.tasks if f"labels_{task}" not in batch]
        if missing:
            raise ValueError(f"the batch has no {', '.join(missing)}; it holds {', '.join(sorted(batch))} "
                             "(model.args.tasks must name label datasets of the data)")
        return {task: batch[f"labels_{task}"].long() for task in self.tasks}

    @torch.no_grad()
    def validation_metrics(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Batch loss, accuracy and macro-F1 per task (acc_<task>, f1_<task>) and their means (acc, f1).

        Deterministic (no augmentation in eval mode), so `generator` is not needed. The
        loop's sample-weighted mean of batch macro-F1s approximates the macro-F1 of the whole
        set; `report` computes it exactly.
        """
        targets = self.targets(batch)
        logits = self.logits(batch["clips"])
        metrics = {"loss": sum(self.task_weights[t] * self.task_loss(t, logits[t], targets[t]) for t in self.tasks)}
        for task, k in self.tasks.items():
            pred = logits[task].argmax(dim=1)
            metrics[f"acc_{task}"] = (pred == targets[task]).float().mean()
            metrics[f"f1_{task}"] = macro_f1(pred, targets[task], k)
        metrics["acc"] = torch.stack([metrics[f"acc_{t}"] for t in self.tasks]).mean()
        metrics["f1"] = torch.stack([metrics[f"f1_{t}"] for t in self.tasks]).mean()
        return metrics

    @torch.no_grad()
    def validation_figures(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Figure]:
        """One confusion matrix per task (rows true, columns predicted) over the batch."""
        targets = self.targets(batch)
        matrices = {f"{task} ({len(targets[task])} clips)": confusion_matrix(logits.argmax(dim=1), targets[task],
                                                                              self.tasks[task])
                    for task, logits in self.logits(batch["clips"]).items()}
        return {"confusion_matrix": confusion_figure(matrices)}

    @torch.no_grad()
    def report(self, loader: Iterable[dict[str, Tensor]]) -> dict:
        """Exact per-task classification reports over a whole loader, plus the mean accuracy and macro-F1.

        {"tasks": {task: report}, "accuracy": ..., "macro_f1": ...}, each report as
        `models.classification.report_from_confusion` (JSON-serialisable).
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        matrices = {task: torch.zeros(k, k, dtype=torch.long, device=device) for task, k in self.tasks.items()}
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            targets = self.targets(batch)
            for task, logits in self.logits(batch["clips"]).items():
                matrices[task] += confusion_matrix(logits.argmax(dim=1), targets[task], self.tasks[task])
        self.train(was_training)
        tasks = {task: report_from_confusion(matrix.cpu()) for task, matrix in matrices.items()}
        return {
            "tasks": tasks,
            "accuracy": sum(r["accuracy"] for r in tasks.values()) / len(tasks),
            "macro_f1": sum(r["macro"]["f1"] for r in tasks.values()) / len(tasks),
        }


def training_labels(dataset: Dataset, tasks: Iterable[str]) -> dict[str, Tensor]:
    """task -> (N,) class ids of a training set: its `labels` attribute when it has one (the clips
    kind reads them without decoding a clip), else every item's `labels_<task>`."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        items = [dataset[i] for i in range(len(dataset))]
        labels = {key.removeprefix("labels_"): torch.stack([item[key] for item in items])
                  for key in items[0] if key.startswith("labels_")}
    missing = [task for task in tasks if task not in labels]
    if missing:
        raise ValueError(f"the training data have no labels for task(s) {', '.join(missing)}; "
                         f"they hold labels for {', '.join(sorted(labels)) or 'none'}")
    return {task: torch.as_tensor(labels[task]).long() for task in tasks}


@register_model
def resnet3d_multitask(
    tasks: dict[str, int] | None = None,
    in_channels: int = 1,
    depth: int = 10,
    width: int = 8,
    fusion: str = "mean",
    loss: str = "weighted_ce",
    focal_gamma: float = 2.0,
    weight_cap: float = 10.0,
    task_weights: dict[str, float] | None = None,
    freeze: str = "none",
    freeze_epochs: int = 1,
    clip_frames: int | None = None,
    augment: bool = True,
    temporal_flip: bool = True,
    brightness: float = 0.2,
) -> MultiTaskResNet3d:
    """3-D ResNet-`depth` (10, 18 or 34) of base `width` (64 in the original) over clips of several views.

    tasks: task -> number of classes (default {"phase": 3, "quality": 2}); batches carry
    `labels_<task>`. fusion: mean | attention over views. loss: weighted_ce (class weights
    n / (K n_k) from the training labels, capped at weight_cap) | focal (focal_gamma).
    task_weights: task -> weight of its loss (default 1 each). freeze: none | frozen
    (backbone frozen for freeze_epochs, then trained) | gradual (frozen for freeze_epochs,
    then one more stage every freeze_epochs, deepest first). clip_frames: frames the model
    sees (a random window when training, the centre one otherwise; None = all). augment,
    temporal_flip (turn off when a task depends on the direction of time), brightness: the
    training augmentation.
    """
    tasks = dict(DEFAULT_TASKS if tasks is None else tasks)
    task_weights = dict(task_weights or {})
    # Validate before allocating: a bad trial config should fail in milliseconds.
    if not tasks:
        raise ValueError("tasks must name at least one task")
    bad_names = [t for t in tasks if not TASK_NAME.match(t)]
    if bad_names:
        raise ValueError(f"task names must be letters, digits and _; got {bad_names}")
    few = {t: k for t, k in tasks.items() if k < 2}
    if few:
        raise ValueError(f"every task needs at least 2 classes, got {few}")
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"depth must be one of {', '.join(map(str, STAGE_BLOCKS))}; got {depth}")
    for name, value in [("in_channels", in_channels), ("width", width), ("freeze_epochs", freeze_epochs)]:
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    for name, value, allowed in [("fusion", fusion, FUSIONS), ("loss", loss, LOSSES), ("freeze", freeze, FREEZES)]:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    unknown = sorted(set(task_weights) - set(tasks))
    if unknown:
        raise ValueError(f"task_weights has unknown tasks {unknown}; expected keys: {', '.join(tasks)}")
    if any(w < 0 for w in task_weights.values()) or not any(task_weights.get(t, 1.0) > 0 for t in tasks):
        raise ValueError(f"task_weights must be >= 0 and not all 0, got {task_weights}")
    if focal_gamma < 0 or weight_cap < 1:
        raise ValueError(f"focal_gamma must be >= 0 and weight_cap >= 1, got {focal_gamma} and {weight_cap}")
    if clip_frames is not None and clip_frames < 1:
        raise ValueError(f"clip_frames must be a positive integer or null, got {clip_frames}")
    if not 0 <= brightness < 1:
        raise ValueError(f"brightness must be in [0, 1), got {brightness}")
    return MultiTaskResNet3d(
        tasks=tasks, in_channels=in_channels, depth=depth, width=width, fusion=fusion, loss=loss,
        focal_gamma=focal_gamma, weight_cap=weight_cap, task_weights=task_weights, freeze=freeze,
        freeze_epochs=freeze_epochs, clip_frames=clip_frames, augment=augment, temporal_flip=temporal_flip,
        brightness=brightness,
    )
