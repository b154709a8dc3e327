"""Reader of the demo world: recovers perceived attributes from a portrait's pixels.

The geometry is fixed, so the reader knows where to look:
- skin tone: the pixels of the inner face disc go to the evaluation stage's own colour-to-Monk-tone
  code (``dft.evaluate.skin_tone.skin_tone_from_pixels``), so the world exercises the real reader's
  core; the Monk tone then gives the world's ethnicity word (its coarse group);
- perceived gender: are the bands beside the face (where long hair falls) closer in colour to the
  hair on the crown or to the background in the top corners?
- profession: the nearest profession background colour to the top corners.

A face whose centre is not skin-like (e.g. a blurred sample with no face) is unreadable, never
guessed: the reason is returned instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dft.world import attributes as A

_YY, _XX = np.mgrid[0 : A.SIZE, 0 : A.SIZE].astype(np.float32)
_CX, _CY = A.FACE_CENTRE
INNER_FACE = ((_XX - _CX) ** 2 + (_YY - _CY) ** 2) <= 4.5**2
CORNERS = np.zeros((A.SIZE, A.SIZE), bool)
CORNERS[0:3, 0:4] = True
CORNERS[0:3, A.SIZE - 4 :] = True
CROWN = np.zeros((A.SIZE, A.SIZE), bool)
CROWN[4:6, 13:20] = True
SIDE_BANDS = np.zeros((A.SIZE, A.SIZE), bool)
SIDE_BANDS[15:21, 5:8] = True
SIDE_BANDS[15:21, 25:28] = True

_BACKGROUNDS = np.array([v["background"] for v in A.PROFESSIONS.values()], np.float32)
_PROFESSION_NAMES = tuple(A.PROFESSIONS)


@dataclass(frozen=True)
class WorldReading:
    ethnicity: str | None
    gender: str | None
    profession: str | None
    mst: int | None
    ita: float | None
    reason: str | None  # why the skin tone is unreadable, else None

    def as_dict(self) -> dict:
        return {
            "ethnicity": self.ethnicity,
            "gender": self.gender,
            "profession": self.profession,
            "skin_tone_mst": self.mst,
            "skin_tone_ita": self.ita,
            "reason": self.reason,
        }


def _skin_tone_fn():
    # Imported late so the world's renderer and corpus work without the evaluation stage loaded.
    from dft.evaluate.skin_tone import skin_tone_from_pixels

    return skin_tone_from_pixels


def read_gender(img: np.ndarray) -> str:
    px = img.astype(np.float32)
    bands = px[SIDE_BANDS].mean(0)
    crown = px[CROWN].mean(0)
    background = px[CORNERS].mean(0)
    return "woman" if np.linalg.norm(bands - crown) < np.linalg.norm(bands - background) else "man"


def read_profession(img: np.ndarray) -> str:
    background = img.astype(np.float32)[CORNERS].mean(0)
    return _PROFESSION_NAMES[int(np.argmin(np.linalg.norm(_BACKGROUNDS - background, axis=1)))]


def _skin_like(face_px: np.ndarray) -> bool:
    # The face centre must look like one skin colour: darker than the brightest swatch by little, no
    # saturated hue (profession colours), and not a mix of regions (low spread).
    centre = np.median(face_px, axis=0)
    spread = np.median(np.abs(face_px - centre), axis=0).max()
    r, g, b = centre
    return bool(r >= g - 8 and g >= b - 8 and spread < 30)


def read_image(img: np.ndarray, skin_tone_fn=None) -> WorldReading:
    if img.shape != (A.SIZE, A.SIZE, 3):
        raise ValueError(f"world reader expects {A.SIZE}x{A.SIZE} RGB images, got shape {img.shape}")
    skin_tone_fn = skin_tone_fn or _skin_tone_fn()
    face_px = img[INNER_FACE].astype(np.float32)
    gender, profession = read_gender(img), read_profession(img)
    if not _skin_like(face_px):
        return WorldReading(None, gender, profession, None, None, "no face: face region is not skin-coloured")
    reading = skin_tone_fn(img[INNER_FACE])
    mst = getattr(reading, "mst", None)
    if mst is None:
        return WorldReading(None, gender, profession, None, None, "skin tone unreadable")
    ita = getattr(reading, "ita", None)
    return WorldReading(A.ethnicity_of_mst(int(mst)), gender, profession, int(mst), None if ita is None else float(ita), None)


def read_images(images: np.ndarray, skin_tone_fn=None) -> list[WorldReading]:
    skin_tone_fn = skin_tone_fn or _skin_tone_fn()
    return [read_image(img, skin_tone_fn) for img in images]
