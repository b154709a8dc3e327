"""The ``skin_tone`` reader kind: perceived skin tone of a batch of images, without a model
(``dft.evaluate.skin_tone`` holds the colour science)."""

from __future__ import annotations

import numpy as np

from dft.evaluate.batch import object_column
from dft.evaluate.config import ReaderConfig
from dft.evaluate.registry import ReaderPlugin
from dft.evaluate.skin_tone import GROUPS, ITA_CLASSES, FaceSkinTone


class SkinToneReader:
    """Perceived skin tone by face detection, a skin colour rule and the Monk scale.

    Writes ``skin_tone`` (Monk tone "1".."10"), ``skin_tone_group`` (lighter / medium / darker),
    ``skin_tone_ita_class`` (Chardon's class), the numbers ``skin_tone_ita``, ``skin_tone_l``,
    ``skin_tone_a``, ``skin_tone_b``, and the reasons when unreadable. Options (``cfg.options``)
    go to ``FaceSkinTone`` (``cascade``, ``min_face``, ``min_side``, ``min_skin_fraction``...)."""

    def __init__(self, cfg: ReaderConfig | None = None):
        self.face = FaceSkinTone(**(cfg.options if cfg else {}))
        self.attributes = skin_tone_attributes(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        mst, group, klass, reason = [None] * n, [None] * n, [None] * n, [None] * n
        nums = np.full((4, n), np.nan)
        for i, data in enumerate(batch["image"]):
            fr = self.face.read_bytes(bytes(data))
            if fr.reading is None:
                reason[i] = fr.reason
                continue
            r = fr.reading
            mst[i], group[i], klass[i] = str(r.mst), r.group, r.ita_class
            nums[:, i] = (r.ita, *r.lab)
        out = dict(batch)
        out["skin_tone"] = object_column(mst)
        out["skin_tone_group"] = object_column(group)
        out["skin_tone_ita_class"] = object_column(klass)
        for a in ("skin_tone", "skin_tone_group", "skin_tone_ita_class"):
            out[f"{a}_reason"] = object_column(reason)
        out["skin_tone_ita"], out["skin_tone_l"], out["skin_tone_a"], out["skin_tone_b"] = nums
        return out


def skin_tone_attributes(cfg: ReaderConfig | None = None) -> dict[str, list[str]]:
    return {
        "skin_tone": [str(i) for i in range(1, 11)],
        "skin_tone_group": list(GROUPS),
        "skin_tone_ita_class": list(ITA_CLASSES),
    }


# Declared in pyproject.toml's ``dft.readers`` entry point group.
SKIN_TONE = ReaderPlugin(SkinToneReader, skin_tone_attributes)
