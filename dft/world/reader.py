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

Damage is not diversity: a generated face can be skin-coloured and still not be a face as the
renderer draws one (a light face blurred into dark hair reads as a darker tone). ``face_check``
says whether a face is *clean*: its centre is one Monk swatch under some exposure (``swatch_de``,
CIELAB distance to the nearest swatch scaled by 0.85-1.15), it is even once the side lighting is
taken out (``spread``, 90th percentile of the rest), and it fills the disc out to near its edge
(``edge_de``, the ring at radius 4.5-5.5 against the centre). The limits admit every VAE
reconstruction of a render (the cleanest face a generation can have) and catch structural damage:
hair over the face, a face shrunk inside hair, a face blurred into hair. A face evenly washed toward
another colour is not caught: it looks like a clean face of another tone, to this reader and to any.
The evaluation reader counts a degraded face as unreadable, so shares count clean faces only.
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

_DIST = np.hypot(_XX - _CX, _YY - _CY)
FACE_EDGE = (_DIST > 4.5) & (_DIST <= 5.5)

# Limits of a clean face (CIELAB units), set from the base model's VAE: its reconstructions of unseen
# renders, the cleanest faces a generation can have, reach at most swatch 14.1, spread 14.8, edge 17.3
# (renders themselves 1.4 / 6.6 / 2.0); a face with hair over its top half has spread 31-57, a face
# shrunk inside hair edge 41-69, a face blurred into hair from above spread 20-50 (docs/world.md).
CLEAN_SWATCH_DE = 16.0
CLEAN_SPREAD = 18.0
CLEAN_EDGE_DE = 22.0

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
    face: str = "clean"  # "clean", "degraded" (skin-coloured, not a face as rendered) or "none"
    check: FaceCheck | None = None

    def as_dict(self) -> dict:
        return {
            "ethnicity": self.ethnicity,
            "gender": self.gender,
            "profession": self.profession,
            "skin_tone_mst": self.mst,
            "skin_tone_ita": self.ita,
            "reason": self.reason,
            "face": self.face,
        }


@dataclass(frozen=True)
class FaceCheck:
    swatch_de: float  # distance of the face centre to the nearest Monk swatch under exposure 0.85-1.15
    spread: float  # 90th percentile of the centre's deviation once the side lighting is taken out
    edge_de: float  # the ring at radius 4.5-5.5 against the centre

    @property
    def clean(self) -> bool:
        return self.swatch_de <= CLEAN_SWATCH_DE and self.spread <= CLEAN_SPREAD and self.edge_de <= CLEAN_EDGE_DE

    def why(self) -> str:
        parts = []
        if self.swatch_de > CLEAN_SWATCH_DE:
            parts.append(f"colour {self.swatch_de:.1f} from every swatch (limit {CLEAN_SWATCH_DE})")
        if self.spread > CLEAN_SPREAD:
            parts.append(f"uneven {self.spread:.1f} (limit {CLEAN_SPREAD})")
        if self.edge_de > CLEAN_EDGE_DE:
            parts.append(f"edge {self.edge_de:.1f} from the centre (limit {CLEAN_EDGE_DE})")
        return "; ".join(parts)


_SWATCH_LAB = None


def _swatch_lab() -> np.ndarray:
    global _SWATCH_LAB
    if _SWATCH_LAB is None:
        from dft.evaluate.skin_tone import rgb_to_lab

        scaled = [np.clip(np.rint(A.MST_RGB * e), 0, 255).astype(np.uint8) for e in np.linspace(0.85, 1.15, 13)]
        _SWATCH_LAB = rgb_to_lab(np.concatenate(scaled)).reshape(-1, 3)
    return _SWATCH_LAB


def face_check(img: np.ndarray) -> FaceCheck:
    """How far the face of ``img`` (uint8 [32, 32, 3]) is from a rendered one (class docstring)."""
    from dft.evaluate.skin_tone import rgb_to_lab

    lab = rgb_to_lab(img)
    inner = lab[INNER_FACE]
    centre = np.median(inner, axis=0)
    x = _XX[INNER_FACE] - _CX
    slope, offset = np.polyfit(x, inner[:, 0], 1)
    rest = np.sqrt((inner[:, 0] - (slope * x + offset)) ** 2 + ((inner[:, 1:] - centre[1:]) ** 2).sum(1))
    return FaceCheck(
        swatch_de=float(np.min(np.linalg.norm(_swatch_lab() - centre, axis=1))),
        spread=float(np.percentile(rest, 90)),
        edge_de=float(np.linalg.norm(np.median(lab[FACE_EDGE], axis=0) - centre)),
    )


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
        return WorldReading(None, gender, profession, None, None, "no face: face region is not skin-coloured", "none")
    reading = skin_tone_fn(img[INNER_FACE])
    mst = getattr(reading, "mst", None)
    if mst is None:
        return WorldReading(None, gender, profession, None, None, "skin tone unreadable", "none")
    ita = getattr(reading, "ita", None)
    check = face_check(img)
    return WorldReading(A.ethnicity_of_mst(int(mst)), gender, profession, int(mst), None if ita is None else float(ita),
                        None if check.clean else f"degraded face: {check.why()}",
                        "clean" if check.clean else "degraded", check)


def read_images(images: np.ndarray, skin_tone_fn=None) -> list[WorldReading]:
    skin_tone_fn = skin_tone_fn or _skin_tone_fn()
    return [read_image(img, skin_tone_fn) for img in images]


# ---------------------------------------------------------------------------------------------
# The evaluation stage's reader kind "world" (see dft.evaluate.registry): a batch of encoded images in,
# perceived gender and skin tone (coarse group and Monk tone) out, unreadable with a reason.

SKIN_GROUP_OF_ETHNICITY = {"light-skinned": "lighter", "medium-skinned": "medium", "dark-skinned": "darker"}
ETHNICITY_OF_SKIN_GROUP = {v: k for k, v in SKIN_GROUP_OF_ETHNICITY.items()}
WORLD_ATTRIBUTES = {
    "gender": list(A.GENDERS),
    "skin_tone_group": ["lighter", "medium", "darker"],
    "skin_tone": [str(i) for i in range(1, 11)],
}


def world_attributes(cfg=None) -> dict[str, list[str]]:
    return {k: list(v) for k, v in WORLD_ATTRIBUTES.items()}


class WorldReader:
    """Reader kind ``world``: writes ``gender``, ``skin_tone_group`` (lighter / medium / darker, the
    groups the world's ethnicity words name), ``skin_tone`` (Monk tone "1".."10"), each with its
    ``_reason`` column, plus ``skin_tone_ita``, ``world_profession`` (the profession cue read back,
    a fidelity check, not a fairness attribute) and ``world_face`` (clean / degraded / none).

    Every attribute is read from clean faces only: an image with no face or a degraded one is
    unreadable for gender and skin tone alike (reason ``no_face`` or ``degraded_face``), so the
    shares count clean faces and the unreadable rate is the unreadable-or-degraded rate."""

    attributes = WORLD_ATTRIBUTES

    def __init__(self, cfg=None):
        self.attributes = world_attributes(cfg)
        self._skin_tone_fn = _skin_tone_fn()

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        from dft.evaluate.batch import decode_batch, object_column

        images, reasons = decode_batch(batch["image"])
        n = len(images)
        cols = {k: [None] * n for k in ("gender", "skin_tone_group", "skin_tone", "world_profession", "world_face")}
        why = {k: list(reasons) for k in ("gender", "skin_tone_group", "skin_tone")}
        ita = np.full(n, np.nan)
        for i, im in enumerate(images):
            if im is None:
                continue
            if im.size != (A.SIZE, A.SIZE):
                im = im.resize((A.SIZE, A.SIZE), Image.BILINEAR)
            r = read_image(np.asarray(im), self._skin_tone_fn)
            cols["world_profession"][i], cols["world_face"][i] = r.profession, r.face
            if r.face != "clean":
                for k in why:
                    why[k][i] = "no_face" if r.face == "none" else "degraded_face"
                continue
            cols["gender"][i] = r.gender
            cols["skin_tone"][i] = str(r.mst)
            cols["skin_tone_group"][i] = SKIN_GROUP_OF_ETHNICITY[r.ethnicity]
            ita[i] = r.ita if r.ita is not None else np.nan
        out = dict(batch)
        for k, v in cols.items():
            out[k] = object_column(v)
        for k, v in why.items():
            out[f"{k}_reason"] = object_column(v)
        out["skin_tone_ita"] = ita
        return out


# The evaluation reader kind ``world``: pyproject.toml declares it in the ``dft.readers`` entry point group.
READER = (WorldReader, world_attributes)
