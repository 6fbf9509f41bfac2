"""The CNN baselines of the engine benchmark: the paper's convolutional net and a small ResNet, and their ONNX export.

Both take images ``[N, C, H, W]`` in the RAM models' input format (values in [0, 1], bright ink on dark) and return
logits ``[N, classes]``. ``build(name, height, width)`` makes either at any input size: the paper's net grows with the
pixel count (its fully connected layer sees the whole feature map), the ResNet's parameters do not (global average
pooling), but its arithmetic does.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping

import onnx
import torch
import torch.nn.functional as F
from torch import nn

NAMES = ("paper_cnn", "resnet8")


class PaperConvNet(nn.Module):
    """Mnih et al. 2014's convolutional baseline ("Convolutional, 2 layers" in Tables 1 and 2).

    One convolutional layer of 8 filters of 10×10 with stride 5 and a ReLU, a fully connected layer of 256 ReLU units,
    and a softmax output layer: logits = W_o·ReLU(W_h·flatten(ReLU(conv(x)))).
    """

    def __init__(self, height: int, width: int, channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, kernel_size=10, stride=5)
        features = 8 * ((height - 10) // 5 + 1) * ((width - 10) // 5 + 1)
        self.hidden = nn.Linear(features, 256)
        self.classify = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).flatten(1)  # (N, 8·H'·W')
        return self.classify(F.relu(self.hidden(h)))  # (N, classes)


class BasicBlock(nn.Module):
    """He et al. 2016's residual block: y = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))  # (N, outputs, H / stride, W / stride)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet8(nn.Module):
    """A small modern CNN: a 3×3 stem, three residual blocks (16, 32, 64 channels; strides 1, 2, 2), global average
    pooling and a linear classifier — eight weight layers, ≈ 78k parameters."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(
            BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 4 * width, 2)
        )
        self.classify = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))  # (N, 64, H / 4, W / 4)
        return self.classify(h.mean(dim=(2, 3)))  # (N, classes)


def build(name: str, height: int, width: int, channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The baseline ``name`` (one of NAMES) for images of ``channels × height × width``.

    Raises:
        ValueError: unknown name, or an image smaller than the paper net's 10×10 filter.
    """
    if name == "paper_cnn":
        if min(height, width) < 10:
            raise ValueError(f"paper_cnn needs images of at least 10×10, got {height}×{width}")
        return PaperConvNet(height, width, channels, num_classes)
    if name == "resnet8":
        return ResNet8(channels, num_classes)
    raise ValueError(f"unknown CNN {name!r}; choose one of {', '.join(NAMES)}")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    height: int,
    width: int,
    channels: int = 1,
    metadata: Mapping[str, object] | None = None,
) -> None:
    """Writes ``model`` (in eval mode) as ONNX: input ``images`` [batch, C, H, W], output ``logits`` [batch, classes].

    Args:
        model: a baseline from ``build``.
        path: the ``.onnx`` file.
        height, width, channels: the input size it was built for.
        metadata: string facts stored as the model's ``metadata_props`` (task, test accuracy, training command …).
    """
    buffer = io.BytesIO()
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model,
            (torch.zeros(1, channels, height, width),),
            buffer,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=18,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
