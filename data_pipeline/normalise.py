"""The eval transform's normalisation for images kept as uint8 until they are used (a lesion sweep's images travel
through Ray's object store as uint8: a quarter of the float32 size).

`normalise_uint8` gives, bit for bit, the float32 values the loader gives (`loaders.normalise_image`, compiled
without fast math: a true float32 division, (x - 127.5) / 127.5). The 256 possible values are computed once with
that arithmetic and looked up, so they do not depend on how a device divides. Free of FFCV, so that Ray workers
need not load it.
"""

from __future__ import annotations

import numpy as np
import torch

_HALF = np.float32(127.5)
_NORMALISED = torch.from_numpy((np.arange(256, dtype=np.float32) - _HALF) / _HALF)


def normalise_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape, e.g. NCHW) -> float32 with mean 0.5 and std 0.5 per channel, on the images' device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise_uint8 takes uint8 images, not {images.dtype}")
    return _NORMALISED.to(images.device)[images.int()]
