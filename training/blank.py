"""The processor's blank detector (`crates/processor/src/blank.rs`), ported to score samples.

The service measures the 64×64 luma of the image's scaled decode (for a 1080p JPEG, its 240×135
DC image); here each sample, the classifier's `synth.INPUT`-sided view, is shrunk to 64×64 with
the same kind of filter (a triangle whose support follows the reduction), so the figures are an
approximation of what the service records. Thresholds are the Rust constants.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 64
FLAT_RANGE = 12.0  # a 1st-percentile-to-brightest range below this is flat (score 0.5)
DARK_MAX = 16.0  # a brightest pixel below this is near-black (score 0.5)
BLANK = 0.5  # the default policy's blank threshold


def blank_score(rgb_u8: np.ndarray) -> float:
    """`blank_stats(..).score` of one HWC RGB image."""
    small = np.asarray(Image.fromarray(rgb_u8).resize((SIDE, SIDE), Image.BILINEAR), np.float32)
    luma = np.sort((0.299 * small[..., 0] + 0.587 * small[..., 1] + 0.114 * small[..., 2]).ravel())
    p1, brightest = luma[int(round((luma.size - 1) * 0.01))], luma[-1]
    flat = 1.0 - (brightest - p1) / (2.0 * FLAT_RANGE)
    dark = 1.0 - brightest / (2.0 * DARK_MAX)
    return float(np.clip(max(flat, dark), 0.0, 1.0))


def blank(x_u8: np.ndarray) -> np.ndarray:
    """Whether the default policy calls each sample blank."""
    return np.array([blank_score(a) >= BLANK for a in x_u8])
