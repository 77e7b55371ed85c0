"""Models for the search service, built by name: `create_model("mae_vit", size="base")`."""

from models.arguments import ModelArgs, ModelArgumentError, refuse
from models.registry import (
    UnknownModelError,
    check_model_args,
    create_model,
    list_models,
    model_arguments,
    model_factory,
    register_model,
)

# Imported for their side effect: each module registers its factories on import.
from models import mae_vit  # noqa: F401  isort: skip
from models import classifier, resnet3d_multitask  # noqa: F401  isort: skip
from models import attention_unet, keypoint_unet  # noqa: F401  isort: skip

__all__ = ["ModelArgs", "ModelArgumentError", "UnknownModelError", "check_model_args", "create_model", "list_models",
           "model_arguments", "model_factory", "refuse", "register_model"]
