"""A small CNN image classifier, and the evaluation of a classifier over a data loader.

The network is `depth` VGG-style blocks (two 3x3 conv-BN-ReLU, the first with stride 2
after the first block, channels doubling per block) and a linear head on the global
average. Stride-2 convolutions rather than pooling: they work down to 1x1 feature maps, so
any depth fits any image size (8x8 digits included).

Shapes: B batch, C channels, H x W pixels, K classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import Tensor, nn
from torch.utils.data import Dataset

from models.arguments import ModelArgs
from models.classification import classification_scores, confusion_matrix, focal_loss
from models.figures import confusion_figure
from models.registry import register_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class ClassifierConfig(ModelArgs):
    """Arguments of `image_classifier`: a CNN of `depth` blocks, `width` channels in the first
    (doubling per block), dropout before the head. Batches carry "images" [B, in_channels, H, W]
    and "labels" [B] class ids 0..num_classes-1."""

    width: PositiveInt = 32
    depth: PositiveInt = 3
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    num_classes: Annotated[int, Field(ge=2)] = 10
    in_channels: PositiveInt = 1
    loss: Literal["ce", "focal"] = "ce"
    focal_gamma: NonNegativeFloat = 2.0  # focal loss only


def conv_bn_relu(in_channels: int, channels: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class ImageClassifier(nn.Module):
    # Validation samples `validation_figures` wants: a confusion matrix needs many (the
    # digits split has 360), where image figures need a few.
    figure_samples = 512

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.num_classes, self.loss_name, self.focal_gamma = config.num_classes, config.loss, config.focal_gamma
        layers, channels = [], config.in_channels
        for index in range(config.depth):
            out_channels = config.width * 2**index
            layers += conv_bn_relu(channels, out_channels, stride=1 if index == 0 else 2)
            layers += conv_bn_relu(out_channels, out_channels, stride=1)
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(channels, config.num_classes))

    def logits(self, images: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, K]."""
        return self.head(self.features(images).mean(dim=(2, 3)))

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.loss_name == "focal":
            return focal_loss(logits, labels, self.focal_gamma)
        return F.cross_entropy(logits.float(), labels)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, labels = self.logits(batch["images"]), batch["labels"].long()
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": self.loss(logits, labels), "accuracy": accuracy.detach()}

    @torch.no_grad()
    def validation_metrics(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Batch loss and accuracy; deterministic in eval mode, so `generator` is not needed."""
        return self(batch)

    @torch.no_grad()
    def validation_figures(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Figure]:
        """The confusion matrix (rows true, columns predicted) over the batch."""
        predicted = self.logits(batch["images"]).argmax(dim=1)
        matrix = confusion_matrix(predicted, batch["labels"].long(), self.num_classes)
        return {"confusion_matrix": confusion_figure({f"{int(matrix.sum())} validation images": matrix})}

    def fit_to_data(self, train_dataset: Dataset) -> None:
        """Refuse training labels outside 0..num_classes-1 before the first step (on a GPU they
        would end the trial with a device-side assert instead of a message)."""
        labels = getattr(train_dataset, "labels", None)
        if labels is None:
            labels = torch.stack([train_dataset[i]["labels"] for i in range(len(train_dataset))])
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels hold class ids {int(labels.min())}..{int(labels.max())} but "
                             f"model.args.num_classes is {self.num_classes} (ids 0..{self.num_classes - 1})")

    def evaluation(self, loader: Iterable[dict[str, Tensor]]) -> dict:
        """`classification_evaluation(self, loader)`: per-class and overall results over the whole loader."""
        return classification_evaluation(self, loader)


@torch.no_grad()
def classification_evaluation(model: ImageClassifier, loader: Iterable[dict[str, Tensor]]) -> dict:
    """Per-class precision, recall, F1 and support, overall accuracy and the confusion matrix of
    `model` over every batch of `loader` (batches with "images" and "labels"), as plain lists.

    Exact over the whole loader, unlike the loop's mean of batch metrics. The keys are those
    of `models.classification.classification_scores`; the model is left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pred, target = [], []
    for batch in loader:
        pred.append(model.logits(batch["images"].to(device)).argmax(dim=1).cpu())
        target.append(batch["labels"].long())
    model.train(was_training)
    return classification_scores(torch.cat(pred), torch.cat(target), model.num_classes)


@register_model
def image_classifier(config: ClassifierConfig) -> ImageClassifier:
    """CNN image classifier; its arguments are `ClassifierConfig`'s."""
    return ImageClassifier(config)
