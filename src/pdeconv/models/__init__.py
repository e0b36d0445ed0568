"""PDE-ResNets (floor 1): the essay's ideas as named variants of torchvision-compatible ResNets.

* variants: :func:`variants` lists them, :func:`get_variant` parses ``"seed+neumann"``;
* models: ``pde_resnet18/34/50/101/152`` (ImageNet), ``pde_resnet20/32/56`` and ``pde_resnet18_small``
  (small images); :func:`create` by name, :func:`list_models`; registered with timm when it is installed;
* :func:`convert` applies the ideas to a ConvNet you already have; :func:`profile` measures its cost;
  :func:`load_torchvision_weights` initialises a PDE-ResNet from torchvision's weights.

``pdeconv.models.profile`` is the function; its module is ``pdeconv.models.profile`` in ``sys.modules``.
"""

from __future__ import annotations

from pdeconv.models.blocks import BasicBlock, Bottleneck
from pdeconv.models.convert import ConvertReport, ModulatedConv2d, convert
from pdeconv.models.profile import Profile, profile, saved_activation_bytes
from pdeconv.models.registry import MODELS, create, list_models, register_model, timm_too_old
from pdeconv.models.resnet import PDEResNet, pde_resnet18, pde_resnet34, pde_resnet50, pde_resnet101, pde_resnet152
from pdeconv.models.small import CifarResNet, pde_resnet18_small, pde_resnet20, pde_resnet32, pde_resnet56
from pdeconv.models.variants import (
    VARIANTS,
    Variant,
    VariantOptions,
    get_variant,
    variant_penalty_weight,
    variant_training,
    variants,
)
from pdeconv.models.weights import LoadReport, load_torchvision_weights

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ConvertReport",
    "LoadReport",
    "MODELS",
    "ModulatedConv2d",
    "PDEResNet",
    "Profile",
    "VARIANTS",
    "Variant",
    "VariantOptions",
    "convert",
    "create",
    "get_variant",
    "list_models",
    "load_torchvision_weights",
    "pde_resnet18",
    "pde_resnet34",
    "pde_resnet50",
    "pde_resnet101",
    "pde_resnet152",
    "pde_resnet20",
    "pde_resnet32",
    "pde_resnet56",
    "pde_resnet18_small",
    "profile",
    "saved_activation_bytes",
    "register_model",
    "register_timm",
    "variant_penalty_weight",
    "variant_training",
    "variants",
]



def register_timm() -> list[str]:
    """Register every model with timm (names timm knows already are left alone); returns those added.

    They are built by timm's own machinery (:mod:`pdeconv.models.timm_models`): pretrained configs per variant
    tag, ``features_only``, the options of timm's ``train.py``. A timm older than
    :data:`~pdeconv.models.registry.OLDEST_TIMM` is refused with an ``ImportError`` that says so.
    """
    too_old = timm_too_old()
    if too_old:
        raise ImportError(too_old)
    from timm.models import is_model

    from pdeconv.models import timm_models  # only with timm: its module imports timm

    added = [name for name in MODELS if not is_model(name)]
    timm_models.register(added)
    return added


try:  # timm is optional: register with it only where it is installed (and recent enough)
    import timm  # noqa: F401
except ImportError:
    pass
else:
    if _too_old := timm_too_old():  # the models still work without timm: say why timm does not list them
        import warnings

        warnings.warn(f"{_too_old}; until then pdeconv's models are not registered with timm", stacklevel=2)
    else:
        register_timm()
