"""The DCGAN generator and critic for square images (Radford, Metz & Chintala 2016, §3–4).

For 64×64 images with width w (ngf/ndf) and latent dimension k:

    generator  z (k×1×1) → 8w×4×4 → 4w×8×8 → 2w×16×16 → w×32×32 → 3×64×64
               4×4 transposed convolutions (stride 1 then 2), BatchNorm + ReLU, Tanh out
    critic     3×64×64 → w×32×32 → 2w×16×16 → 4w×8×8 → 8w×4×4 → 1
               4×4 convolutions (stride 2, the last stride 1 with no padding), LeakyReLU(0.2),
               BatchNorm after every hidden layer but the first, one raw output V(x)

Other powers of two change the number of stride-2 layers (log2(size) − 2), widths doubling
towards the 4×4 end. Weights start as N(0, 0.02²), BatchNorm scales as N(1, 0.02²) (§4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gandiv.models.base import LatentGenerator
from gandiv.models.mlp import LeakyReLU02, _check_positive

INIT_STD = 0.02


def _stride2_layers(image_size: int) -> int:
    """The number of stride-2 layers between 4×4 and ``image_size`` (a power of two ≥ 8)."""
    layers = image_size.bit_length() - 3
    if image_size < 8 or image_size != 1 << (layers + 2):
        raise ValueError(f"image_size must be a power of two ≥ 8, got {image_size}")
    return layers


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation of one layer: convolutions N(0, 0.02²), BatchNorm N(1, 0.02²)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


class DCGANGenerator(LatentGenerator):
    """An implicit image generator x = G(z), z ~ N(0, I): samples are (n, 3, size, size) in [−1, 1].

    ``dim`` is the flattened image size 3·size²; ``image_shape`` the (channels, size, size) of a
    sample. With ``channels_last`` the weights and activations use the NHWC memory format.
    """

    has_density = False

    def __init__(
        self,
        latent_dim: int = 100,
        width: int = 64,
        image_size: int = 64,
        channels: int = 3,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(latent_dim=latent_dim, width=width, channels=channels)
        stride2 = _stride2_layers(image_size)
        self.latent_dim = latent_dim
        self.width = width
        self.image_shape = (channels, image_size, image_size)
        self.dim = channels * image_size * image_size
        self.channels_last = channels_last
        features = width * 2 ** (stride2 - 1)  # at 4×4
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, features, 4, 1, 0, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(),
        ]
        for _ in range(stride2 - 1):
            layers += [
                nn.ConvTranspose2d(features, features // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(features // 2),
                nn.ReLU(),
            ]
            features //= 2
        layers += [nn.ConvTranspose2d(features, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def generate(self, z: Tensor) -> Tensor:
        """Map latents z of shape (n, latent_dim) to images of shape (n, *image_shape)."""
        z = z.reshape(len(z), self.latent_dim, 1, 1)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.net(z)

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            "the dcgan model is an implicit generator: it has no density (use a sample-based "
            "objective)"
        )


class DCGANCritic(nn.Module):
    """A convolutional critic/discriminator T(x) returning one raw real number per image.

    Takes (n, channels, size, size) images, or the same flattened to (n, dim). ``batch_norm``
    gives DCGAN's critic (bias-free convolutions, BatchNorm on the hidden layers); without it
    every convolution has a bias. With ``spectral_norm`` every convolution is divided by its
    largest singular value, estimated by power iteration (Miyato et al. 2018).
    """

    def __init__(
        self,
        width: int = 64,
        image_size: int = 64,
        channels: int = 3,
        batch_norm: bool = True,
        spectral_norm: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(width=width, channels=channels)
        stride2 = _stride2_layers(image_size)
        self.image_shape = (channels, image_size, image_size)
        self.dim = channels * image_size * image_size
        self.channels_last = channels_last
        bias = not batch_norm
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=bias), LeakyReLU02()]
        features = width
        for _ in range(stride2 - 1):
            layers.append(nn.Conv2d(features, 2 * features, 4, 2, 1, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm2d(2 * features))
            layers.append(LeakyReLU02())
            features *= 2
        layers.append(nn.Conv2d(features, 1, 4, 1, 0, bias=bias))
        net = nn.Sequential(*layers)
        net.apply(dcgan_init)
        if spectral_norm:
            for i, layer in enumerate(net):
                if isinstance(layer, nn.Conv2d):
                    net[i] = _spectral_norm(layer)
        self.net = net
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def hidden(self) -> nn.Sequential:
        """Its layers up to the last hidden activation (8w×4×4 at 64×64), without the output
        layer: the trunk of the spread objective's encoder and of mmd's random features."""
        return nn.Sequential(*list(self.net)[:-1])

    def forward(self, x: Tensor) -> Tensor:
        """Return the critic output, shape (n,), for images (n, *image_shape) or (n, dim); float32
        also under bf16 autocast, so that the losses are reduced in float32."""
        x = x.reshape(len(x), *self.image_shape)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).reshape(len(x)).float()


class DCGANFeatures(nn.Module):
    """A fixed random feature map φ(x) of images: the pixels and the activations of every hidden
    layer of a DCGAN critic without BatchNorm (at 64×64 with width w: 3×64×64, w×32×32, 2w×16×16,
    4w×8×8, 8w×4×4), each block flattened and divided by the square root of its size, so that
    ‖φ(x) − φ(y)‖² is a sum of mean squared differences, one per scale, weighted alike.

    The pixels make φ injective, so a Gaussian kernel on φ(x) is characteristic on images as on
    pixels (MMD = 0 only for equal distributions); the layers add distances between local
    patterns at every scale, which pixels alone do not see. The weights are drawn from `seed`
    alone (the global random stream is left as it was) with He et al.'s (2015) variance for
    LeakyReLU(0.2), biases zero, and are never trained (`requires_grad` off). Without BatchNorm
    φ is a fixed function of each image, whatever else is in its batch.
    """

    def __init__(
        self,
        width: int = 64,
        image_size: int = 64,
        channels: int = 3,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            critic = DCGANCritic(width, image_size, channels, batch_norm=False)
            for layer in critic.net:
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight, a=0.2, nonlinearity="leaky_relu")
        # one module per block (each up to its activation), so that trainer.compile reaches them
        blocks: list[list[nn.Module]] = [[]]
        for layer in critic.hidden():
            blocks[-1].append(layer)
            if isinstance(layer, LeakyReLU02):
                blocks.append([])
        self.blocks = nn.ModuleList(nn.Sequential(*block) for block in blocks if block)
        if channels_last:  # (after drawing: the same weights in either layout)
            self.blocks.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.image_shape = critic.image_shape
        self.channels_last = channels_last
        sizes = [critic.dim]
        features, side = width, image_size // 2
        for _ in range(_stride2_layers(image_size)):
            sizes.append(features * side * side)
            features, side = 2 * features, side // 2
        self.dim = sum(sizes)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """φ(x), float32 of shape (n, dim), for images (n, *image_shape) or the same flattened."""
        x = x.reshape(len(x), *self.image_shape)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        blocks, h = [x], x
        for block in self.blocks:
            h = block(h)
            blocks.append(h)
        flat = [b.reshape(len(x), -1).float() for b in blocks]  # (logical order in any layout)
        return torch.cat([b / math.sqrt(b.shape[1]) for b in flat], dim=1)
