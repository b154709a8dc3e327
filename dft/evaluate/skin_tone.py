"""Perceived skin tone without a model: true CIELAB, the Individual Typology Angle, the Monk scale.

Two layers. ``skin_tone_from_pixels`` turns skin pixels someone already has (the demo world knows
its face regions) into a reading. ``SkinToneReader`` finds them itself: Haar face detection (the
cascades ship in OpenCV's wheel), a colour rule for skin inside the face, then the same function.
An image with no face, or a face with too few skin pixels, is *unreadable*, with its reason; it is
never guessed. Everything here reads appearance (a perceived tone), never identity.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field

import numpy as np

# Monk Skin Tone scale, tones 1 (lightest) .. 10 (darkest), sRGB (REFERENCE.md section 4).
MST_HEX = (
    "#f6ede4", "#f3e7db", "#f7ead0", "#eadaba", "#d7bd96",
    "#a07e56", "#825c43", "#604134", "#3a312a", "#292420",
)
MST_RGB = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in MST_HEX], dtype=np.uint8)
MST_TONES = tuple(range(1, 11))

# Coarse groups used in reports: MST 1-3, 4-7, 8-10.
GROUPS = ("lighter", "medium", "darker")
# Chardon's ITA classes, lightest first, with their lower bounds in degrees.
ITA_CLASSES = ("very light", "light", "intermediate", "tan", "brown", "dark")
_ITA_BOUNDS = (55.0, 41.0, 28.0, 10.0, -30.0)

# D65 reference white and the sRGB -> XYZ matrix (IEC 61966-2-1).
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB component values in 0..1 -> linear light 0..1 (the sRGB transfer curve inverted)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """True CIELAB (D65, L* in 0..100) of sRGB colours ``[..., 3]`` in 0..255 (uint8 or float)."""
    lin = srgb_to_linear(np.asarray(rgb, dtype=np.float64) / 255.0)
    xyz = lin @ _RGB_TO_XYZ.T / _WHITE_D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def ita_degrees(lab: np.ndarray) -> np.ndarray:
    """Individual Typology Angle: atan((L* - 50) / b*) in degrees.

    b* of skin is positive; a b* at or below zero (a grey or bluish patch) would flip the sign of
    the angle, so it is floored at a small positive value (the angle then tends to +-90)."""
    lab = np.asarray(lab, dtype=np.float64)
    b = np.maximum(lab[..., 2], 1e-6)
    return np.degrees(np.arctan((lab[..., 0] - 50.0) / b))


def ita_class(ita: float) -> str:
    """Chardon's class of an ITA value: > 55 very light, 41-55 light, 28-41 intermediate,
    10-28 tan, -30-10 brown, < -30 dark."""
    for name, lower in zip(ITA_CLASSES, _ITA_BOUNDS):
        if ita > lower:
            return name
    return ITA_CLASSES[-1]


def mst_group(mst: int) -> str:
    """Coarse group of a Monk tone: 1-3 lighter, 4-7 medium, 8-10 darker."""
    if not 1 <= int(mst) <= 10:
        raise ValueError(f"Monk tone must be 1..10, got {mst!r}")
    return GROUPS[0] if mst <= 3 else GROUPS[1] if mst <= 7 else GROUPS[2]


MST_LAB = rgb_to_lab(MST_RGB)
MST_ITA = ita_degrees(MST_LAB)


def nearest_mst(lab: np.ndarray) -> np.ndarray:
    """Nearest Monk swatch (1..10) of CIELAB colours ``[..., 3]`` by Euclidean distance (CIE76)."""
    lab = np.asarray(lab, dtype=np.float64)
    d = np.linalg.norm(lab[..., None, :] - MST_LAB, axis=-1)
    return np.argmin(d, axis=-1) + 1


@dataclass
class SkinToneReading:
    """One perceived skin-tone reading. ``lab`` is the robust centre colour of the skin pixels."""

    mst: int
    ita: float
    ita_class: str
    group: str
    lab: tuple[float, float, float]
    pixels: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def skin_tone_from_pixels(rgb: np.ndarray) -> SkinToneReading:
    """A reading from skin pixels ``[N, 3]`` uint8 sRGB (any N >= 1; an ``[H, W, 3]`` patch works too).

    The centre colour is the per-channel median in CIELAB, so a few stray pixels (an eye, a lip, a
    highlight) do not move it. No face detector is involved: the caller says which pixels are skin."""
    px = np.asarray(rgb).reshape(-1, 3)
    if px.shape[0] == 0:
        raise ValueError("skin_tone_from_pixels: no pixels")
    if px.dtype != np.uint8:
        px = np.clip(px, 0, 255).astype(np.uint8)
    lab = np.median(rgb_to_lab(px), axis=0)
    mst = int(nearest_mst(lab))
    ita = float(ita_degrees(lab))
    return SkinToneReading(
        mst=mst,
        ita=ita,
        ita_class=ita_class(ita),
        group=mst_group(mst),
        lab=(float(lab[0]), float(lab[1]), float(lab[2])),
        pixels=int(px.shape[0]),
    )


# ---------------------------------------------------------------------------------------------
# The full reader: face, skin pixels, reading.


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels whose colour can be skin, for ``[..., 3]`` uint8 sRGB.

    The classic YCrCb box (Cr 133-173, Cb 77-127) rejects the ends of the Monk scale itself
    (MST 10, #292420, has Cr ~131), so the rule is stated in CIELAB instead, wide enough for all ten
    swatches under a 0.6x-1.4x change of light: warm hue (atan2(b*, a*) between 10 and 100 degrees),
    some chroma, and neither black (eyes, brows, hair shadow) nor blown-out white."""
    lab = rgb_to_lab(rgb)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a))
    # The least chroma asked for shrinks with lightness: the darkest swatch in dim light keeps its
    # warm hue but has little chroma left (MST 10 at 0.8x exposure is about C* 2.5 at L* 13).
    least = np.minimum(2.5, 0.15 * L)
    return (L > 8.0) & (L < 99.0) & (chroma >= least) & (chroma <= 60.0) & (hue >= 10.0) & (hue <= 100.0)


@dataclass
class FaceReading:
    """The reader's result for one image: a reading, or ``None`` and the reason."""

    reading: SkinToneReading | None
    reason: str | None = None
    box: tuple[int, int, int, int] | None = None
    extra: dict = field(default_factory=dict)


UNREADABLE_NO_FACE = "no_face"
UNREADABLE_NO_SKIN = "no_skin"
UNREADABLE_OVEREXPOSED = "overexposed"
UNREADABLE_DECODE = "decode_error"


class FaceSkinTone:
    """Haar face detection -> skin pixels inside the face -> ``skin_tone_from_pixels``.

    ``min_face`` is the smallest face side in pixels the cascade looks for (and at least
    ``min_face_fraction`` of the image's shorter side); small images are
    upscaled to ``min_side`` first so the 24x24 cascade has something to see. The largest face
    wins. Skin is taken from the central part of the face box (cheeks, forehead, nose), where
    the colour rule has the least hair and background to reject."""

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        min_face: int = 24,
        min_side: int = 128,
        min_skin_fraction: float = 0.15,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        max_blown_fraction: float = 0.4,
        min_face_fraction: float = 0.1,
        detectors: tuple[str, ...] | list[str] = ("regions", "haar"),
        regions: dict | None = None,
        min_region_skin_fraction: float = 0.3,
    ):
        import cv2

        from dft.evaluate.face_regions import FaceRegionFinder

        unknown = set(detectors) - {"regions", "haar"}
        if unknown or not detectors:
            raise ValueError(f"skin_tone detectors: each one of 'regions', 'haar'; got {list(detectors)}")
        self.detectors = tuple(detectors)
        self.regions = FaceRegionFinder(**(regions or {}))
        path = cascade if "/" in cascade else cv2.data.haarcascades + cascade
        self.detector = cv2.CascadeClassifier(path)
        if self.detector.empty():
            raise RuntimeError(f"could not load the Haar cascade {path}")
        self.min_face = min_face
        self.min_side = min_side
        self.min_skin_fraction = min_skin_fraction
        # A region is one even colour: it is skin nearly all over or not at all, and a background
        # that happens to hold eye-like features rarely passes.
        self.min_region_skin_fraction = min_region_skin_fraction
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.max_blown_fraction = max_blown_fraction
        self.min_face_fraction = min_face_fraction

    def detect(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face box (x, y, w, h) in image coordinates, or None."""
        import cv2

        h, w = rgb.shape[:2]
        scale = max(1.0, self.min_side / max(1, min(h, w)))
        img = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        # Equalising makes dark faces (low contrast between skin and eyes) visible to the cascade.
        gray = cv2.equalizeHist(gray)
        # Faces smaller than a tenth of the image side are not portraits worth a reading, and skipping
        # those scales is most of the cascade's time on large images.
        least = max(self.min_face, int(self.min_face_fraction * min(gray.shape)))
        faces = self.detector.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(least, least)
        )
        if len(faces) == 0:
            return None
        x, y, fw, fh = max(faces, key=lambda f: int(f[2]) * int(f[3]))
        return (int(x / scale), int(y / scale), max(1, int(fw / scale)), max(1, int(fh / scale)))

    def find(self, rgb: np.ndarray) -> list[tuple[str, tuple[int, int, int, int], np.ndarray | None]]:
        """Candidate faces, (detector, face box, skin-region mask or None), in the detectors' order."""
        out = []
        for name in self.detectors:
            if name == "regions":
                out.extend((name, f.box, f.mask) for f in self.regions.find_all(rgb))
            else:
                box = self.detect(rgb)
                if box is not None:
                    out.append((name, box, None))
        return out

    def read_array(self, rgb: np.ndarray) -> FaceReading:

        rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8, copy=False)
        first = None
        # The first candidate whose pixels can be read wins; the colour rule (which admits every Monk
        # swatch alike) is what rejects a "face" found in a background.
        for detector, box, region in self.find(rgb):
            fr = self._read_box(rgb, detector, box, region)
            if fr.reading is not None:
                return fr
            if not (detector == "regions" and fr.reason == UNREADABLE_NO_SKIN):  # not a face after all
                first = first or fr
        return first or FaceReading(None, UNREADABLE_NO_FACE)

    def _read_box(self, rgb: np.ndarray, detector: str, box, region) -> FaceReading:
        import cv2

        if region is not None:
            return self._read_pixels(rgb[region], box, {"detector": detector}, self.min_region_skin_fraction)
        x, y, w, h = box
        # Central region of the box: the cascade's box includes brow-to-chin, with hair and
        # background at its corners.
        x0, x1 = x + int(0.2 * w), x + int(0.8 * w)
        y0, y1 = y + int(0.15 * h), y + int(0.9 * h)
        crop = rgb[y0:y1, x0:x1]
        if crop.size == 0:
            return FaceReading(None, UNREADABLE_NO_SKIN, box)
        # A light blur first: sensor noise would otherwise push single pixels out of the skin rule.
        patch = cv2.GaussianBlur(crop, (0, 0), 1.0) if min(crop.shape[:2]) >= 5 else crop
        return self._read_pixels(patch.reshape(-1, 3), box, {"detector": detector})

    def _read_pixels(self, px: np.ndarray, box, extra: dict, min_skin: float | None = None) -> FaceReading:
        """The reading of a face's pixels ``[N, 3]``: exposure check, skin rule, median colour."""
        if len(px) == 0:
            return FaceReading(None, UNREADABLE_NO_SKIN, box, extra)
        # Clipped highlights carry no colour: a face mostly blown out to white cannot be read, and
        # what is left of it (shadows, nostrils) would read several tones too dark. A pixel is blown
        # only when all three channels clip: a bright light face whose red channel clips still has
        # its colour in green and blue, and is read.
        blown = float((px.min(axis=-1) >= 250).mean())
        extra = {**extra, "blown_fraction": blown}
        if blown >= self.max_blown_fraction:
            return FaceReading(None, UNREADABLE_OVEREXPOSED, box, extra)
        mask = skin_mask(px)
        extra["skin_fraction"] = float(mask.mean())
        if mask.sum() < max(8, (self.min_skin_fraction if min_skin is None else min_skin) * len(px)):
            return FaceReading(None, UNREADABLE_NO_SKIN, box, extra)
        return FaceReading(skin_tone_from_pixels(px[mask]), None, box, extra)

    def read_bytes(self, data: bytes) -> FaceReading:
        try:
            rgb = decode_rgb(data)
        except Exception as exc:  # a broken file is unreadable, not a crash of the whole batch
            return FaceReading(None, UNREADABLE_DECODE, extra={"error": f"{type(exc).__name__}: {exc}"})
        return self.read_array(rgb)


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, WebP, ...) -> ``[H, W, 3]`` uint8 sRGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
