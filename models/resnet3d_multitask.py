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

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveInt,
    StringConstraints,
    model_validator,
)
from torch import Tensor, nn
from torch.utils.data import Dataset

from models.arguments import ModelArgs, refuse
from models.classification import (
    classification_scores,
    confusion_matrix,
    focal_loss,
    inverse_frequency_weights,
    macro_f1,
)
from models.figures import confusion_figure
from models.registry import register_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Residual blocks per stage; 34 uses BasicBlocks like torchvision's r3d_18 does.
STAGE_BLOCKS: dict[int, tuple[int, ...]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
DEFAULT_TASKS: dict[str, int] = {"phase": 3, "quality": 2}
# Task names become buffer names and metric keys (acc_<task>): no dots or spaces.
TaskName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$")]


class ResNet3dConfig(ModelArgs):
    """Arguments of `resnet3d_multitask`: a 3-D ResNet-`depth` of base `width` (64 in the
    original) over clips of several views, one linear head per task.

    Batches carry `labels_<task>` for every task. freeze: none | frozen (backbone frozen for
    freeze_epochs, then trained) | gradual (frozen for freeze_epochs, then one more stage
    every freeze_epochs, deepest first).
    """

    tasks: dict[TaskName, Annotated[int, Field(ge=2)]] = Field(default=DEFAULT_TASKS, min_length=1)  # task -> classes
    in_channels: PositiveInt = 1
    depth: Literal[tuple(STAGE_BLOCKS)] = 10
    width: PositiveInt = 8
    fusion: Literal["mean", "attention"] = "mean"  # pooling over views
    # weighted_ce: class weights n / (K n_k) from the training labels, capped at weight_cap.
    loss: Literal["weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: NonNegativeFloat = 2.0
    weight_cap: Annotated[float, Field(ge=1)] = 10.0
    task_weights: dict[str, NonNegativeFloat] = Field(default_factory=dict)  # task -> loss weight; 1 if left out
    freeze: Literal["none", "frozen", "gradual"] = "none"
    freeze_epochs: PositiveInt = 1
    # Frames the model sees: a random window when training, the centre one otherwise; None = all.
    clip_frames: PositiveInt | None = None
    augment: bool = True
    temporal_flip: bool = True  # turn off when a task depends on the direction of time
    brightness: Annotated[float, Field(ge=0, lt=1)] = 0.2  # gain per view in [1 - b, 1 + b]

    @model_validator(mode="after")
    def _task_weights_fit(self) -> ResNet3dConfig:
        unknown = sorted(set(self.task_weights) - set(self.tasks))
        if unknown:
            refuse("task_weights", f"has unknown tasks {unknown}; expected keys among: {', '.join(self.tasks)}",
                   self.task_weights)
        if not any(self.loss_weight(task) > 0 for task in self.tasks):
            refuse("task_weights", "expected a weight > 0 for some task, not all 0", self.task_weights)
        return self

    def loss_weight(self, task: str) -> float:
        return self.task_weights.get(task, 1.0)


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

    def __init__(self, config: ResNet3dConfig) -> None:
        super().__init__()
        self.tasks = dict(config.tasks)
        self.loss_name, self.focal_gamma, self.weight_cap = config.loss, config.focal_gamma, config.weight_cap
        self.task_weights = {task: config.loss_weight(task) for task in self.tasks}
        self.freeze, self.freeze_epochs = config.freeze, config.freeze_epochs
        self.clip_frames, self.augment = config.clip_frames, config.augment
        self.temporal_flip, self.brightness = config.temporal_flip, config.brightness
        # DDP must expect parameters without gradients while part of the backbone is frozen.
        self.ddp_find_unused_parameters = config.freeze != "none"
        width = config.width

        # torchvision's BasicStem: spatial stride only, so short clips keep their frames.
        self.stem = nn.Sequential(
            nn.Conv3d(config.in_channels, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for index, blocks in enumerate(STAGE_BLOCKS[config.depth]):
            out_channels, stride = width * 2**index, 1 if index == 0 else 2
            layers = [BasicBlock3d(channels, out_channels, stride)]
            layers += [BasicBlock3d(out_channels, out_channels, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.fusion = AttentionPool(channels) if config.fusion == "attention" else None
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
        set; `evaluation` computes it exactly.
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
    def evaluation(self, loader: Iterable[dict[str, Tensor]]) -> dict:
        """Exact per-task classification scores over a whole loader, plus the mean accuracy and macro-F1.

        {"tasks": {task: scores}, "accuracy": ..., "macro_f1": ...}, each task's scores as
        `models.classification.classification_scores` (JSON-serialisable).
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        pred: dict[str, list[Tensor]] = {task: [] for task in self.tasks}
        target: dict[str, list[Tensor]] = {task: [] for task in self.tasks}
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            targets = self.targets(batch)
            for task, logits in self.logits(batch["clips"]).items():
                pred[task].append(logits.argmax(dim=1).cpu())
                target[task].append(targets[task].cpu())
        self.train(was_training)
        tasks = {task: classification_scores(torch.cat(pred[task]), torch.cat(target[task]), k)
                 for task, k in self.tasks.items()}
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
def resnet3d_multitask(config: ResNet3dConfig) -> MultiTaskResNet3d:
    """Multi-task, multi-view 3-D ResNet; its arguments are `ResNet3dConfig`'s."""
    return MultiTaskResNet3d(config)
