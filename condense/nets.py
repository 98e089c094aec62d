"""Model zoo of the dataset-distillation literature, with a registry by name.

``ConvNet`` is the network of DC/DSA/DM/MTT (Gidaris & Komodakis 2018 style): ``depth`` blocks of
conv3x3 -> norm -> ReLU -> 2x2 pooling, then one linear layer. ``instancenorm`` is
``GroupNorm(C, C, affine=True)`` exactly as in the official code, so the default network has no
buffers and works with :func:`torch.func.functional_call`. MLP, LeNet, AlexNet and ResNet-18 follow
the DC code base's ``networks.py`` and serve cross-architecture evaluation.

Every constructor takes ``(channels, num_classes, image_size, **kwargs)`` and sizes its linear
layers with a dry run, so any input size works (tiny inputs get the padding adjustments noted in
the class docstrings).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .utils import UserError

__all__ = ["ConvNet", "convnet_depth", "MLP", "LeNet", "AlexNet", "ResNet18", "get_network", "register_network", "NETWORKS"]

NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a constructor ``f(channels, num_classes, image_size, **kw)`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        NETWORKS[name.lower()] = fn
        return fn

    return deco


def get_network(name: str, channels: int, num_classes: int, image_size: int | tuple[int, int], **kwargs) -> nn.Module:
    """Build the registered network ``name`` (case-insensitive) for the given input shape."""
    key = name.lower()
    if key not in NETWORKS:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(sorted(NETWORKS))}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        return NETWORKS[key](channels, num_classes, size, **kwargs)
    except TypeError as exc:
        raise UserError(f"bad options for model {name!r}: {exc}") from exc


def _norm(kind: str, channels: int, hw: tuple[int, int]) -> nn.Module | None:
    """Normalisation layer for a ``channels`` x ``hw`` feature map.

    Instance norm over a 1x1 map normalises every channel to zero (the output is the affine bias
    whatever the input), so such a network cannot learn; it is rejected with the way out.
    """
    if kind == "instancenorm":
        if hw[0] * hw[1] == 1:
            raise UserError(
                "instance norm would act on a 1x1 feature map (constant output): the input is too small for this "
                "network; use larger images, a shallower network, or the batchnorm variant"
            )
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return nn.LayerNorm([channels, hw[0], hw[1]], elementwise_affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return None
    raise UserError(f"unknown norm {kind!r}; choose instancenorm, batchnorm, layernorm, groupnorm or none")


def _flat_dim(module: nn.Module, channels: int, size: tuple[int, int]) -> int:
    with torch.no_grad():
        was_training = module.training
        module.eval()
        out = module(torch.zeros(1, channels, *size))
        module.train(was_training)
    if out.numel() == 0:
        raise UserError(f"input size {size} is too small for this architecture")
    return out.numel()


def convnet_depth(image_size: int | tuple[int, int]) -> int:
    """ConvNet depth by resolution, as the official code runs it: 3 up to 32x32 (DC/DSA/DM/MTT), 4 at 64x64
    (MTT/DataDAM Tiny-ImageNet ``ConvNetD4``), 5 at 128x128 (MTT ImageNet subsets ``ConvNetD5``, MTT's ``--res``)."""
    side = min((image_size, image_size) if isinstance(image_size, int) else image_size)
    return 3 if side < 64 else 4 if side < 128 else 5


class ConvNet(nn.Module):
    """ConvNet-``width``-``depth`` (DC/DSA/DM/MTT): [conv3x3 -> norm -> act -> pool] x depth -> linear.

    ``depth=None`` picks it by resolution (:func:`convnet_depth`); ``convnetd3``/``d4``/``d5`` fix it.
    As in the official code, single-channel inputs get padding 3 in the first conv (28x28 -> 32x32)
    so that three poolings end at 4x4.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int | None = None,
        norm: str = "instancenorm",
        pooling: str = "avgpooling",
        act: str = "relu",
    ) -> None:
        super().__init__()
        depth = convnet_depth(image_size) if depth is None else depth
        if depth < 1 or width < 1:
            raise UserError(f"ConvNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        acts = {"relu": lambda: nn.ReLU(inplace=False), "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid}
        pools = {"avgpooling": lambda: nn.AvgPool2d(2, 2), "maxpooling": lambda: nn.MaxPool2d(2, 2), "none": None}
        if act not in acts:
            raise UserError(f"unknown activation {act!r}; choose {', '.join(acts)}")
        if pooling not in pools:
            raise UserError(f"unknown pooling {pooling!r}; choose {', '.join(pools)}")
        self.depth = depth
        self.blocks = nn.ModuleList()
        self.pools = nn.ModuleList()
        h, w = image_size
        c_in = channels
        for d in range(depth):
            pad = 3 if channels == 1 and d == 0 else 1
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=pad)]
            n = _norm(norm, width, (h, w))
            if n is not None:
                layers.append(n)
            layers.append(acts[act]())
            self.blocks.append(nn.Sequential(*layers))
            self.pools.append(pools[pooling]() if pools[pooling] else nn.Identity())
            if pooling != "none":
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise UserError(f"image size {image_size} is too small for ConvNet depth {depth}")
            c_in = width
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of every block's activation (before pooling), e.g. for attention matching."""
        feats = []
        for block, pool in zip(self.blocks, self.pools):
            x = block(x)
            feats.append(x)
            x = pool(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened final features (the classifier's input), used by DM/DataDAM and herding."""
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """Three-layer perceptron of the DC code base: in -> 128 -> 128 -> classes, ReLU."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128) -> None:
        super().__init__()
        in_dim = channels * image_size[0] * image_size[1]
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class LeNet(nn.Module):
    """LeNet of the DC code base: conv5(6) -> pool -> conv5(16) -> pool -> 120 -> 84 -> classes.

    Deviation for inputs smaller than 20 px (e.g. 8x8 digits): the second conv gets padding 2 so the
    feature map does not vanish.
    """

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        pad1 = 2 if channels == 1 else 0
        h_after = (min(image_size) + 2 * pad1 - 4) // 2
        pad2 = 2 if h_after < 10 else 0
        self.body = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5, padding=pad2), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
        )  # fmt: skip
        dim = _flat_dim(self.body, channels, image_size)
        self.head = nn.Sequential(nn.Linear(dim, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.classifier = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """AlexNet-style network of the DC code base (5 convs, 3 max-pools, one linear layer)."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 128, 5, padding=4 if channels == 1 else 2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Linear(_flat_dim(self.body, channels, image_size), num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, hw: tuple[int, int]) -> None:
        """``hw`` is the block's output map size (for the norm check)."""
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, c_out, hw)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, c_out, hw)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(norm, c_out, hw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 of the DC code base (3x3 stem, 4 stages of 2 basic blocks).

    ``norm="instancenorm"`` (the DC default, ``GroupNorm(C, C)``) or ``"batchnorm"`` (ResNet18BN).
    Global average pooling replaces the fixed 4x4 pooling so any input size works (with instance
    norm: at least 9 px, so that the last stage is not 1x1).
    """

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], norm: str = "instancenorm") -> None:
        super().__init__()
        if norm not in ("instancenorm", "batchnorm"):
            raise UserError(f"ResNet18 norm must be instancenorm or batchnorm, got {norm!r}")
        hw = tuple(image_size)
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), _norm(norm, 64, hw), nn.ReLU())
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            hw = ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)  # 3x3 conv, padding 1
            stages += [_BasicBlock(c_in, c_out, stride, norm, hw), _BasicBlock(c_out, c_out, 1, norm, hw)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


register_network("convnet")(ConvNet)
register_network("convnetd3")(lambda c, n, s, **kw: ConvNet(c, n, s, depth=3, **kw))
register_network("convnetd4")(lambda c, n, s, **kw: ConvNet(c, n, s, depth=4, **kw))
register_network("convnetd5")(lambda c, n, s, **kw: ConvNet(c, n, s, depth=5, **kw))
register_network("mlp")(MLP)
register_network("lenet")(LeNet)
register_network("alexnet")(AlexNet)
register_network("resnet18")(ResNet18)

#: registered variants whose name fixes the normalisation (DC's ``ConvNetBN`` / ``ResNet18BN``): an
#: evaluation protocol's default norm never overrides them, and passing ``norm=`` to them is an error
FIXED_NORM: set[str] = set()


def _register_fixed_norm(name: str, cls: Callable[..., nn.Module], norm: str) -> None:
    FIXED_NORM.add(name)
    register_network(name)(lambda c, n, s, **kw: cls(c, n, s, norm=norm, **kw))


_register_fixed_norm("convnet_bn", ConvNet, "batchnorm")
_register_fixed_norm("resnet18_bn", ResNet18, "batchnorm")


class LeNet5(nn.Module):
    """LeNet-5 of DAFL (Chen et al., ICCV 2019, official ``lenet.py``): the MNIST teacher.

    conv5(``c1``) -> ReLU -> maxpool2 -> conv5(``c2``) -> ReLU -> maxpool2 -> conv5(``c3``) -> ReLU
    -> flatten (the ``embed`` features, DAFL's ``feature``) -> fc(``f``) -> ReLU -> fc(classes).
    Defaults 6/16/120/84 are LeNet-5; ``lenet5_half`` (3/8/60/42) is DAFL's MNIST student.
    ``norm="batchnorm"`` (not in DAFL) adds BatchNorm after every conv so that BN-statistics losses
    (DeepInversion, Fast-DFKD) have running statistics to match.

    Deviation for inputs smaller than 32x32 (e.g. 8x8 digits): a conv whose input is too small gets
    padding 2 (so it keeps the size); the fc input size comes from a dry run.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        widths: tuple[int, int, int, int] = (6, 16, 120, 84),
        norm: str = "none",
    ) -> None:
        super().__init__()
        if norm not in ("none", "batchnorm"):
            raise UserError(f"LeNet-5 norm must be none or batchnorm, got {norm!r}")
        c1, c2, c3, f = widths
        h = min(image_size)
        convs = []
        for i, (c_in, c_out) in enumerate(((channels, c1), (c1, c2), (c2, c3))):
            pooled = i < 2
            pad = 0 if h - 4 >= (2 if pooled else 1) else 2
            h = h + 2 * pad - 4
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 5, padding=pad)]
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
            convs.append(nn.Sequential(*layers))
            h = h // 2 if pooled else h
        self.convs = nn.ModuleList(convs)
        self.pool = nn.MaxPool2d(2, 2)
        self.feature_dim = _flat_dim(nn.Sequential(convs[0], self.pool, convs[1], self.pool, convs[2]), channels, image_size)
        self.classifier = nn.Sequential(nn.Linear(self.feature_dim, f), nn.ReLU(), nn.Linear(f, num_classes))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each conv block's ReLU output (before pooling), e.g. for attention transfer."""
        feats = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            feats.append(x)
            if i < 2:
                x = self.pool(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened conv3 output (DAFL's ``feature``, 120-d at 32x32)."""
        return self.features(x)[-1].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


register_network("lenet5")(LeNet5)
register_network("lenet5_half")(lambda c, n, s, **kw: LeNet5(c, n, s, widths=(3, 8, 60, 42), **kw))
