"""Test-only stand-in for ``dft.evaluate.skin_tone.skin_tone_from_pixels`` (nearest Monk swatch in
true CIELAB of the median colour), used only while the evaluation stage's reader is absent."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dft.world.attributes import MST_RGB


def _lab(rgb: np.ndarray) -> np.ndarray:
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_SWATCH_LAB = _lab(MST_RGB)


def stub_skin_tone_from_pixels(rgb):
    lab = _lab(np.median(np.asarray(rgb, np.float64), axis=0))
    mst = int(np.argmin(np.linalg.norm(_SWATCH_LAB - lab, axis=1))) + 1
    ita = float(np.degrees(np.arctan2(lab[0] - 50, lab[2])))
    return SimpleNamespace(mst=mst, ita=ita, ita_class=None, group=None, lab=tuple(lab))


def skin_tone_fn():
    try:
        from dft.evaluate.skin_tone import skin_tone_from_pixels

        return skin_tone_from_pixels
    except ImportError:
        return stub_skin_tone_from_pixels
