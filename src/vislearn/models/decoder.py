"""SaGe's image decoder: an encoder's last feature map -> a 1x1 code -> an image in [-1, 1].

Layout (Tian et al., arXiv 2111.13163; the released ``Decoder``): a convolution whose kernel is
the whole ``map_size x map_size`` map squeezes it to a ``code_dim x 1 x 1`` code; a transposed
convolution with kernel ``stem_size`` (the *stem*) expands the code to a
``stem_channels x stem_size x stem_size`` map (BN, ReLU); ``n`` up-blocks
(ConvTranspose k4 s2 p1 without bias, BN, ReLU) each double the resolution; a 1x1 convolution
maps to ``out_chans`` and ``tanh`` bounds the output to [-1, 1].

**Size rule** (ours; the release only handles 224 px with a 7x7 map). The stem size is the
input size halved exactly as often as possible while staying at least ``map_size``::

    stem, n = image_size, 0
    while stem % 2 == 0 and stem // 2 >= map_size:
        stem, n = stem // 2, n + 1

so ``stem * 2**n == image_size`` always: no final crop or interpolation is ever needed, and
the stem is never coarser than the encoder's map. Examples: 224 px with a 7x7 map -> stem 7,
5 up-blocks (the paper); Fashion-MNIST 28 px with a 4x4 (``resnet_tiny``, ``small_ds``) or 7x7
(``small``) map -> stem 7, 2 up-blocks; 32 px, 4x4 map -> stem 4, 3 blocks; 96 px, 12x12 map ->
stem 12, 3 blocks; 64 px, 2x2 map -> stem 2, 5 blocks. An odd ``image_size`` gives ``n = 0``
(the stem alone produces the image) -- legal, but a weak decoder.

**Channels.** The first up-block doubles ``stem_channels``, every further block halves, never
below ``min_channels`` (the paper: stem 256, blocks 512, 256, 128, 64, 32); ``up_channels``
sets them explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vislearn.core.errors import VislearnError


def decoder_plan(image_size: int, map_size: int) -> tuple[int, int]:
    """``(stem_size, num_up_blocks)`` with ``stem_size * 2**num_up_blocks == image_size``."""
    if image_size < 1 or map_size < 1:
        raise VislearnError(f"image_size and map_size must be >= 1, got {image_size}, {map_size}")
    stem, n = image_size, 0
    while stem % 2 == 0 and stem // 2 >= map_size:
        stem, n = stem // 2, n + 1
    return stem, n


def default_up_channels(stem_channels: int, num_blocks: int, min_channels: int = 8) -> list[int]:
    """``2c, c, c/2, ...`` (``c = stem_channels``), floored at ``min_channels``."""
    return [max(min_channels, (2 * stem_channels) >> i) for i in range(num_blocks)]


class UpBlock(nn.Sequential):
    """``ConvTranspose2d(k=4, s=2, p=1, no bias) -> BN -> ReLU``: twice the resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SaGeDecoder(nn.Module):
    """Feature map ``[N, in_channels, map_size, map_size]`` -> image
    ``[N, out_chans, image_size, image_size]`` in [-1, 1] (see the module docstring).

    Args:
        in_channels, map_size: channels and (square) size of the encoder's last stage map.
        image_size: side of the images to reconstruct.
        out_chans: image channels (1 for Fashion-MNIST, 3 for RGB).
        code_dim: channels of the 1x1 code (512 in the paper).
        stem_channels: channels of the stem map (256 in the paper).
        up_channels: output channels of each up-block (default: ``default_up_channels``); its
            length must equal the number of up-blocks the size rule gives.
        min_channels: floor of the default up-block channels.
    """

    def __init__(
        self,
        in_channels: int,
        map_size: int,
        image_size: int,
        out_chans: int = 3,
        code_dim: int = 512,
        stem_channels: int = 256,
        up_channels: Sequence[int] | None = None,
        min_channels: int = 8,
    ) -> None:
        super().__init__()
        self.map_size = map_size
        self.image_size = image_size
        self.stem_size, n = decoder_plan(image_size, map_size)
        if up_channels is None:
            up_channels = default_up_channels(stem_channels, n, min_channels)
        up_channels = list(up_channels)
        if len(up_channels) != n:
            raise VislearnError(
                f"up_channels has {len(up_channels)} entries but {image_size} px from a "
                f"{map_size}x{map_size} map needs {n} up-blocks (stem {self.stem_size})"
            )
        self.code = nn.Conv2d(in_channels, code_dim, map_size)
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(code_dim, stem_channels, self.stem_size, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        blocks, cin = [], stem_channels
        for cout in up_channels:
            blocks.append(UpBlock(cin, cout))
            cin = cout
        self.up = nn.Sequential(*blocks)
        self.final = nn.Conv2d(cin, out_chans, 1)

    def forward(self, feature_map: Tensor) -> Tensor:
        if feature_map.shape[-2:] != (self.map_size, self.map_size):
            raise VislearnError(
                f"decoder built for {self.map_size}x{self.map_size} maps, got "
                f"{tuple(feature_map.shape[-2:])}"
            )
        x = self.stem(self.code(feature_map))
        return self.final(self.up(x)).tanh()
