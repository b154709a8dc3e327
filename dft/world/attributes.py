"""The demo world's ground truth: what each vocabulary word looks like, in one place.

The renderer paints from these tables and the reader inverts them, so a word's meaning cannot
drift between the two. Words are those of ``dft/prompts/vocab_world``.
"""

from __future__ import annotations

import numpy as np

# Monk Skin Tone swatches (REFERENCE.md section 4), tones 1..10.
MST_HEX = ("f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96", "a07e56", "825c43", "604134", "3a312a", "292420")
MST_RGB = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in MST_HEX], dtype=np.float32)

# Ethnicity words of the world name coarse Monk groups (MST 1-3 lighter, 4-7 medium, 8-10 darker).
# The renderer paints tones from the middle of each group only, so lighting and noise cannot carry a
# face across a group boundary; the reader still maps any tone 1..10 to its group.
SKIN_GROUPS = {
    "light-skinned": (1, 2, 3),
    "medium-skinned": (4, 5, 6, 7),
    "dark-skinned": (8, 9, 10),
}
PAINTED_TONES = {
    "light-skinned": (1, 2),
    "medium-skinned": (5, 6),
    "dark-skinned": (9, 10),
}
ETHNICITIES = tuple(SKIN_GROUPS)


def ethnicity_of_mst(mst: int) -> str:
    for word, tones in SKIN_GROUPS.items():
        if mst in tones:
            return word
    raise ValueError(f"Monk tone {mst} is not in 1..10")


GENDERS = ("man", "woman")  # short hair / long hair down to the shoulders

# Profession cue: background colour and clothing colour (RGB). Chosen far apart in colour and away
# from every skin swatch and hair colour.
PROFESSIONS = {
    "doctor": {"background": (60, 105, 205), "clothing": (238, 238, 242)},
    "nurse": {"background": (70, 175, 85), "clothing": (40, 70, 150)},
    "engineer": {"background": (235, 150, 35), "clothing": (55, 58, 68)},
    "teacher": {"background": (160, 70, 175), "clothing": (205, 45, 50)},
}

HAIR_COLOURS = ((22, 18, 16), (55, 36, 22), (90, 60, 35), (115, 50, 28))

AGES = ("adult",)

# Fixed geometry of a 32x32 portrait (pixel centres; x to the right, y down).
SIZE = 32
FACE_CENTRE = (16.0, 14.0)  # (x, y)
FACE_RADIUS = 7.0
