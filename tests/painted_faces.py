"""A tone-stratified audit set of painted portraits, independent of the readers it audits.

Cartoon portraits at every Monk tone (REFERENCE.md section 4) plus images without a face, with a
TRUTH.csv that says what was painted. Nothing here is drawn to suit a detector: face shape, size,
position, roll, features, hair (style and colour, including hair as dark as the darkest skin),
clothes and backgrounds vary at random, backgrounds are often close to skin colours (the face's
own among them), lighting changes exposure (0.8x-1.25x in linear light), side light and colour
cast, and the image is blurred, noised and sometimes JPEG-compressed. The "no face" images include
scenes, textures, flat skin-coloured fields and heads seen from behind.

The truth is the swatch the skin was painted with: shading (darker at the face's edge, a lit side)
and lighting change the pixels around it, as light does. ``gender`` is the *painted presentation cue*
(conventional cartoon cues: beard, hair length, lip colour), not anyone's identity.

    python tests/painted_faces.py OUT --seed 1 [--per-tone 12] [--no-face 24] [--sheet sheet.png]

writes OUT/<key>.png and OUT/TRUTH.csv. Same seed, same set. The generator does not import dft.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os

import cv2
import numpy as np

MST_HEX = ("#f6ede4", "#f3e7db", "#f7ead0", "#eadaba", "#d7bd96",
           "#a07e56", "#825c43", "#604134", "#3a312a", "#292420")
MST = [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in MST_HEX]
GROUP = {**{t: "lighter" for t in (1, 2, 3)}, **{t: "medium" for t in (4, 5, 6, 7)},
         **{t: "darker" for t in (8, 9, 10)}}
# Chardon's ITA class of each swatch (ITA about 83, 80, 72, 65, 50, 11, -20, -55, -78, -84).
ITA_CLASS = {1: "very light", 2: "very light", 3: "very light", 4: "very light", 5: "light",
             6: "tan", 7: "brown", 8: "dark", 9: "dark", 10: "dark"}
HAIR = [(15, 12, 10), (28, 22, 18), (40, 30, 22), (70, 48, 30), (110, 75, 45), (150, 90, 50),
        (200, 165, 100), (225, 200, 140), (160, 160, 160), (225, 225, 220), (120, 30, 40), (40, 60, 130)]
FIELDS = ("key", "file", "skin_tone", "skin_tone_group", "skin_tone_ita_class", "gender")


def _lin(c):
    c = np.asarray(c, np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _srgb(lin):
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055) * 255.0


def _scale(rgb, f):
    """A colour with its light scaled by ``f`` (linear light), as a shadow or a highlight does."""
    return tuple(float(v) for v in _srgb(_lin(rgb) * f))


def _mix(a, b, t):
    return tuple(float(x) * (1 - t) + float(y) * t for x, y in zip(a, b))


def _rand_colour(rng):
    return tuple(float(v) for v in rng.uniform(0, 255, 3))


def _near_skin(rng):
    base = MST[int(rng.integers(10))]
    return tuple(float(np.clip(v + rng.normal(0, 12), 0, 255)) for v in base)


def _background(rng, size, skin):
    """Flat, two-tone, gradient or textured; a third of the time close to a skin colour (the face's
    own in half of those), the hardest case for a reader that takes skin by colour."""
    kind = rng.choice(["flat", "gradient", "wall", "texture"])
    r = rng.random()
    c1 = _near_skin(rng) if r < 0.17 else (_mix(skin, _rand_colour(rng), 0.15) if r < 0.33 else _rand_colour(rng))
    c2 = _rand_colour(rng) if rng.random() < 0.5 else _mix(c1, _rand_colour(rng), 0.4)
    img = np.empty((size, size, 3), np.float64)
    img[:] = c1
    if kind == "gradient":
        t = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
        img = img * (1 - t) + np.asarray(c2) * t
    elif kind == "wall":
        cut = int(rng.uniform(0.3, 0.8) * size)
        img[cut:] = c2
    elif kind == "texture":
        small = rng.normal(0, 30, (int(rng.integers(4, 16)),) * 2 + (3,))
        img = img + cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return img


def _poly(cx, cy, rx, ry, squareness, chin, angle, n=72):
    """A head outline: a superellipse whose lower half narrows to a chin."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    e = 2.0 / (2.0 + squareness)
    x = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** e * rx
    y = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** e * ry
    lower = np.clip(y / ry, 0, 1)
    x = x * (1 - chin * lower ** 2)
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + x * ca - y * sa, cy + x * sa + y * ca], axis=1).astype(np.int32)


def paint_portrait(tone: int, rng: np.random.Generator, size: int = 192) -> tuple[np.ndarray, str]:
    """A portrait whose skin is Monk swatch ``tone``; returns (uint8 RGB image, painted gender cue)."""
    ss = 2  # paint at twice the size and downsample: anti-aliased edges
    S = size * ss
    skin = MST[tone - 1]
    gender = "woman" if rng.random() < 0.5 else "man"
    img = _background(rng, S, skin)
    fh = rng.uniform(0.30, 0.48) * S  # half height of the face
    fw = fh * rng.uniform(0.66, 0.86)
    cx = S / 2 + rng.uniform(-0.10, 0.10) * S
    cy = S / 2 + rng.uniform(-0.06, 0.10) * S
    roll = math.radians(rng.uniform(-12, 12))
    ca, sa = math.cos(roll), math.sin(roll)

    def P(x, y):  # face coordinates (units of the face's half width/height) -> pixels
        px, py = x * fw, y * fh
        return (int(cx + px * ca - py * sa), int(cy + px * sa + py * ca))

    def R(a, b):
        return (max(1, int(a * fw)), max(1, int(b * fh)))

    deg = math.degrees(roll)
    hair = HAIR[int(rng.integers(len(HAIR)))] if rng.random() < 0.85 else _scale(skin, 0.5)
    style = rng.choice(["long", "bob", "bun"] if gender == "woman" else ["short", "short", "bald", "curly", "long"])
    shirt = _rand_colour(rng)
    # shoulders and neck
    cv2.ellipse(img, P(0, 1.75), R(2.1, 0.75), deg, 180, 360, shirt, -1)
    cv2.rectangle(img, P(-0.28, 0.6), P(0.28, 1.2), _scale(skin, 0.75), -1)
    if style in ("long", "bob"):
        drop = 1.35 if style == "long" else 0.55
        cv2.ellipse(img, P(0, -0.05), R(1.22, 1.12), deg, 180, 360, hair, -1)
        cv2.rectangle(img, P(-1.2, -0.1), P(1.2, drop), hair, -1)
    elif style == "curly":
        for _ in range(18):
            a = rng.uniform(math.pi, 2 * math.pi)
            cv2.circle(img, P(1.0 * math.cos(a), -0.15 + 1.0 * math.sin(a)), int(rng.uniform(0.2, 0.32) * fw), hair, -1)
    if rng.random() < 0.8:  # ears
        for s in (-1, 1):
            cv2.ellipse(img, P(s * 0.97, 0.05), R(0.14, 0.22), deg, 0, 360, _scale(skin, 0.85), -1)
    outline = _poly(cx, cy, fw, fh, rng.uniform(0, 1.5), rng.uniform(0.05, 0.35), roll)
    face_mask = np.zeros((S, S), np.uint8)
    cv2.fillPoly(face_mask, [outline], 255)
    # skin with shading: darker towards the edge, one side lit
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    u = ((xx - cx) * ca + (yy - cy) * sa) / fw
    v = (-(xx - cx) * sa + (yy - cy) * ca) / fh
    lit = rng.uniform(-0.12, 0.12)
    shade = (1.0 - 0.22 * np.clip(u ** 2 + v ** 2, 0, 1) ** 2) * (1.0 + lit * u)
    skin_img = _srgb(_lin(skin)[None, None, :] * shade[..., None])
    m = face_mask > 0
    img[m] = skin_img[m]
    # cheeks (blush) sometimes
    if rng.random() < 0.4:
        overlay = img.copy()
        for s in (-1, 1):
            cv2.ellipse(overlay, P(s * 0.45, 0.25), R(0.2, 0.12), deg, 0, 360, _mix(skin, (200, 60, 60), 0.3), -1)
        img = np.where(m[..., None], img * 0.6 + overlay * 0.4, img)
    ey = rng.uniform(-0.22, -0.05)  # eye line
    # hair on top (cap / fringe, ending above the brows) and buns
    if style in ("short", "long", "bob", "curly", "bun"):
        top = rng.uniform(-0.55, -0.35)
        cv2.ellipse(img, P(0, top + 0.05), R(1.05, 0.62), deg, 180, 360, hair, -1)
        low = ey - 0.3 - (top + 0.05)
        if rng.random() < 0.4 and low > 0.05:  # fringe
            cv2.ellipse(img, P(rng.uniform(-0.3, 0.3), top + 0.05), R(0.8, min(0.3, low)), deg, 0, 180, hair, -1)
    if style == "bun":
        cv2.circle(img, P(0, -1.25), int(0.35 * fw), hair, -1)
    # eyes and brows
    ex = rng.uniform(0.30, 0.42)
    er = rng.uniform(0.10, 0.17)
    iris = [(60, 40, 25), (30, 20, 15), (70, 110, 150), (80, 110, 60), (100, 70, 40)][int(rng.integers(5))]
    sclera = _mix((245, 242, 236), skin, rng.uniform(0.0, 0.35))
    brow_col = hair if rng.random() < 0.7 else _scale(hair, 0.6)
    for s in (-1, 1):
        cv2.ellipse(img, P(s * ex, ey), R(er, er * 0.55 * fw / fh), deg, 0, 360, sclera, -1)
        cv2.circle(img, P(s * ex, ey), max(1, int(er * 0.45 * fw)), iris, -1)
        cv2.circle(img, P(s * ex, ey), max(1, int(er * 0.2 * fw)), (12, 10, 8), -1)
        cv2.ellipse(img, P(s * ex, ey), R(er * 1.05, er * 0.6 * fw / fh), deg, 190, 350, _scale(skin, 0.45),
                    max(1, int(0.02 * fw)))
        by = ey - rng.uniform(0.12, 0.2)
        cv2.ellipse(img, P(s * ex, by), R(er * 1.2, 0.03), deg + s * rng.uniform(-10, 10), 180, 360, brow_col,
                    max(1, int(rng.uniform(0.03, 0.07) * fw)))
    # nose: a shadow along one side and nostrils
    ny = rng.uniform(0.18, 0.32)
    cv2.line(img, P(0.05, ey + 0.1), P(0.1, ny), _scale(skin, 0.7), max(1, int(0.03 * fw)))
    for s in (-1, 1):
        cv2.ellipse(img, P(s * 0.09, ny + 0.02), R(0.05, 0.025), deg, 0, 360, _scale(skin, 0.45), -1)
    # mouth
    my = rng.uniform(0.5, 0.62)
    mw = rng.uniform(0.22, 0.38)
    lip = _mix(_scale(skin, 0.7), (170, 40, 60), 0.6 if gender == "woman" else rng.uniform(0.1, 0.3))
    if rng.random() < 0.3:  # open smile, teeth
        cv2.ellipse(img, P(0, my), R(mw, 0.1), deg, 0, 180, (60, 20, 25), -1)
        cv2.ellipse(img, P(0, my), R(mw * 0.8, 0.05), deg, 0, 180, (235, 230, 220), -1)
        cv2.ellipse(img, P(0, my), R(mw, 0.1), deg, 0, 180, lip, max(1, int(0.03 * fw)))
    else:
        cv2.ellipse(img, P(0, my), R(mw, 0.05), deg, 0, 360, lip, -1)
    if gender == "man" and rng.random() < 0.3:  # beard or stubble
        overlay = img.copy()
        cv2.ellipse(overlay, P(0, 0.55), R(0.75, 0.45), deg, 0, 180, hair, -1)
        cv2.ellipse(overlay, P(0, my), R(mw, 0.05), deg, 0, 360, lip, -1)
        alpha = rng.uniform(0.35, 0.95) * m[..., None]  # on the face only
        img = img * (1 - alpha) + overlay * alpha
    if rng.random() < 0.15:  # glasses
        frame = _rand_colour(rng) if rng.random() < 0.5 else (20, 20, 20)
        for s in (-1, 1):
            cv2.ellipse(img, P(s * ex, ey), R(er * 1.6, er * 1.3 * fw / fh), deg, 0, 360, frame, max(1, int(0.03 * fw)))
        cv2.line(img, P(-ex + er * 1.6, ey), P(ex - er * 1.6, ey), frame, max(1, int(0.03 * fw)))
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return _finish(img, rng), gender


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera and light: exposure, side light, colour cast, blur, sensor noise, sometimes JPEG."""
    size = img.shape[0]
    lin = _lin(np.clip(img, 0, 255)) * rng.uniform(0.8, 1.25)
    side = rng.uniform(-0.2, 0.2)
    lin = lin * np.linspace(1 - side, 1 + side, size)[None, :, None]
    lin = lin * rng.uniform(0.96, 1.04, 3)[None, None, :]
    out = _srgb(lin)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.2))
    out = out + rng.normal(0, rng.uniform(0, 6), out.shape)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def paint_no_face(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """An image without a face: a scene, a texture, a skin-coloured field, blobs, a head from behind."""
    kind = rng.choice(["scene", "texture", "skin_field", "blobs", "back_of_head"])
    img = _background(rng, size, _near_skin(rng))
    if kind == "scene":
        horizon = int(rng.uniform(0.4, 0.7) * size)
        img[:horizon] = _mix((120, 170, 230), _rand_colour(rng), 0.2)
        ridge = [[x, horizon + int(rng.normal(0, 12))] for x in range(0, size + 1, 16)]
        pts = np.array([[0, size]] + ridge + [[size, size]], np.int32)
        cv2.fillPoly(img, [pts], _mix((60, 120, 50), _rand_colour(rng), 0.3))
        cv2.circle(img, (int(rng.uniform(0.1, 0.9) * size), int(0.15 * size)), int(0.07 * size), (250, 230, 150), -1)
    elif kind == "texture":
        small = rng.integers(0, 256, (6, 6, 3)).astype(np.float64)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == "skin_field":
        img[:] = _near_skin(rng)
        t = np.linspace(0.85, 1.1, size)[:, None, None]
        img = img * t
    elif kind == "blobs":
        for _ in range(int(rng.integers(3, 9))):
            c = _near_skin(rng) if rng.random() < 0.5 else _rand_colour(rng)
            cv2.ellipse(img, (int(rng.uniform(0, size)), int(rng.uniform(0, size))),
                        (int(rng.uniform(0.05, 0.3) * size), int(rng.uniform(0.05, 0.3) * size)),
                        rng.uniform(0, 180), 0, 360, c, -1)
    else:  # a head seen from behind: hair over a neck, shoulders
        hair = HAIR[int(rng.integers(len(HAIR)))]
        cx, cy, r = size // 2, int(0.45 * size), int(rng.uniform(0.22, 0.32) * size)
        cv2.ellipse(img, (cx, int(1.05 * size)), (int(0.45 * size), int(0.3 * size)), 0, 180, 360, _rand_colour(rng), -1)
        cv2.rectangle(img, (cx - r // 3, cy), (cx + r // 3, int(0.8 * size)), _near_skin(rng), -1)
        cv2.ellipse(img, (cx, cy), (int(r * 0.85), r), 0, 0, 360, hair, -1)
    return _finish(img, rng)


def write_set(out: str, seed: int, per_tone: int = 12, no_face: int = 24, size: int = 192) -> list[dict]:
    """Paint the set into folder ``out`` (PNGs and TRUTH.csv); returns the truth rows."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    from PIL import Image

    for tone in range(1, 11):
        for i in range(per_tone):
            img, gender = paint_portrait(tone, np.random.default_rng(rng.integers(1 << 62)), size)
            key = f"mst{tone:02d}_{i:03d}"
            Image.fromarray(img).save(os.path.join(out, key + ".png"))
            rows.append({"key": key, "file": key + ".png", "skin_tone": str(tone), "skin_tone_group": GROUP[tone],
                         "skin_tone_ita_class": ITA_CLASS[tone], "gender": gender})
    for i in range(no_face):
        img = paint_no_face(np.random.default_rng(rng.integers(1 << 62)), size)
        key = f"noface_{i:03d}"
        Image.fromarray(img).save(os.path.join(out, key + ".png"))
        rows.append({"key": key, "file": key + ".png", **{f: "none" for f in FIELDS[2:]}})
    with open(os.path.join(out, "TRUTH.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    return rows


def contact_sheet(folder: str, rows: list[dict], out: str, thumb: int = 96, per_row: int = 12) -> None:
    """All images of a set on one PNG, each captioned with its key."""
    from PIL import Image, ImageDraw

    n = len(rows)
    sheet = Image.new("RGB", (per_row * thumb, math.ceil(n / per_row) * (thumb + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        im = Image.open(os.path.join(folder, r["file"])).convert("RGB").resize((thumb, thumb))
        x, y = (i % per_row) * thumb, (i // per_row) * (thumb + 12)
        sheet.paste(im, (x, y))
        draw.text((x + 2, y + thumb), r["key"], fill="black")
    sheet.save(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-tone", type=int, default=12)
    p.add_argument("--no-face", type=int, default=24)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--sheet", help="Also write a contact sheet PNG here.")
    a = p.parse_args(argv)
    rows = write_set(a.out, a.seed, a.per_tone, a.no_face, a.size)
    if a.sheet:
        contact_sheet(a.out, rows, a.sheet)


if __name__ == "__main__":
    main()
