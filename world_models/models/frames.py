"""Frame encoders and decoders: frames [B, T, 3, H, W] <-> feature vectors [B, T, F].

``model.encoder`` picks a pair::

    encoder, decoder = build_frame_codec(name, frame_shape=(3, H, W), hidden_size=Hd)
    features = encoder(frames)  # [B, T, 3, H, W] -> [B, T, encoder.output_size]
    frames = decoder(hidden)    # [B, T, Hd] -> [B, T, 3, H, W]

``flat`` is the course report's: the flattened frame in, one linear layer out; ``pooled`` the
same with the input frame at half its side (the decoder paints the full frame);
``pooled_dash`` pools the scene but keeps CarRacing's dashboard (the bottom eighth of the frame)
at full resolution, where its bars are a pixel or two long. ``conv`` is a
small convolutional pair (0.93M parameters at 32x32 with hidden 128 and an LSTM core).
``decoder.zero_output_()`` zeroes the last layer, so a residual model starts as copy-last.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FlatEncoder(nn.Module):
    """The frame's pixels as one vector; no parameters."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        self.output_size = math.prod(frame_shape)

    def forward(self, frames: Tensor) -> Tensor:
        return frames.flatten(start_dim=2)  # [B, T, 3HW]


class PooledEncoder(nn.Module):
    """The frame area-averaged to half its side, flattened; no parameters. A quarter of the flat
    encoder's inputs, so the core's input layer (most of a flat model's arithmetic) costs a
    quarter; a warp decoder still moves the full-resolution frame."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        channels, height, width = frame_shape
        self.output_size = channels * (height // 2) * (width // 2)

    def forward(self, frames: Tensor) -> Tensor:
        B, T = frames.shape[:2]
        pooled = F.avg_pool2d(frames.flatten(0, 1), 2)  # [BT, 3, H/2, W/2]
        return pooled.flatten(start_dim=1).unflatten(0, (B, T))  # [B, T, 3HW/4]


class PooledDashEncoder(nn.Module):
    """The scene (all but the bottom eighth of the frame) area-averaged to half its side, and
    the dashboard (the bottom eighth: CarRacing's speed, ABS, steering and gyro bars) as it is,
    flattened one after the other; no parameters. Pooling halves the bars' lengths into
    blurred pixels, and on held-out uniform random actions a pooled model's one-step dashboard
    error was 1.6x the flat model's (reports/FINDINGS.md); the strip costs 3 * W * H/8 inputs."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        channels, height, width = frame_shape
        self.dash_rows = height // 8
        scene_rows = height - self.dash_rows
        self.output_size = channels * ((scene_rows // 2) * (width // 2) + self.dash_rows * width)

    def forward(self, frames: Tensor) -> Tensor:
        B, T = frames.shape[:2]
        flat = frames.flatten(0, 1)  # [BT, 3, H, W]
        scene = F.avg_pool2d(flat[:, :, : -self.dash_rows], 2)  # [BT, 3, 7H/16, W/2]
        dash = flat[:, :, -self.dash_rows :]  # [BT, 3, H/8, W]
        return torch.cat([scene.flatten(1), dash.flatten(1)], dim=1).unflatten(0, (B, T))


class FlatDecoder(nn.Linear):
    """One linear layer to every pixel. Subclassing nn.Linear keeps the state dict keys
    (``decoder.weight``, ``decoder.bias``) of checkpoints made before encoders were options."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__(hidden_size, math.prod(frame_shape))
        self.frame_shape = tuple(frame_shape)

    def forward(self, hidden: Tensor) -> Tensor:
        return super().forward(hidden).unflatten(-1, self.frame_shape)  # [B, T, 3, H, W]

    def zero_output_(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class ConvEncoder(nn.Module):
    """Three stride-2 convolutions (3 -> 32 -> 64 -> 64 channels, H/8 x W/8), then a linear
    layer to a vector of hidden_size features. The third convolution keeps that linear layer
    small: 64 x 4 x 4 inputs at 32x32 instead of 64 x 8 x 8."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        channels, height, width = frame_shape
        self.output_size = hidden_size
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),  # [N, 32, H/2, W/2]
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # [N, 64, H/4, W/4]
            nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # [N, 64, H/8, W/8]
            nn.Flatten(),
            nn.Linear(64 * (height // 8) * (width // 8), hidden_size), nn.ReLU(),
        )

    def forward(self, frames: Tensor) -> Tensor:
        B, T = frames.shape[:2]
        return self.net(frames.flatten(0, 1)).unflatten(0, (B, T))  # [B, T, F]


class ConvDecoder(nn.Module):
    """A linear layer to 64 x H/4 x W/4, then two stride-2 transposed convolutions to 3 x H x W."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        channels, height, width = frame_shape
        self.net = nn.Sequential(
            nn.Linear(hidden_size, 64 * (height // 4) * (width // 4)), nn.ReLU(),
            nn.Unflatten(1, (64, height // 4, width // 4)),  # [N, 64, H/4, W/4]
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # [N, 32, H/2, W/2]
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),  # [N, 3, H, W]
        )

    def forward(self, hidden: Tensor) -> Tensor:
        B, T = hidden.shape[:2]
        return self.net(hidden.flatten(0, 1)).unflatten(0, (B, T))  # [B, T, 3, H, W]

    def zero_output_(self) -> None:
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)


# name -> (encoder, decoder, the multiple that frame height and width must be)
FRAME_CODECS: dict[str, tuple[type[nn.Module], type[nn.Module], int]] = {
    "flat": (FlatEncoder, FlatDecoder, 1),
    "conv": (ConvEncoder, ConvDecoder, 8),
    "pooled": (PooledEncoder, FlatDecoder, 2),
    "pooled_dash": (PooledDashEncoder, FlatDecoder, 16),  # H/8 rows kept, 7H/8 pooled by 2
}


def build_frame_codec(name: str, frame_shape: tuple[int, int, int],
                      hidden_size: int) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder called ``name`` (a key of :data:`FRAME_CODECS`)."""
    encoder, decoder, _ = FRAME_CODECS[name]
    return encoder(frame_shape, hidden_size), decoder(frame_shape, hidden_size)
