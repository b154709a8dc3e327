"""Renderer of the demo world: 32x32 stylised portraits whose attributes are known exactly.

One portrait = background and clothing in the profession's colours, a hair shape for perceived
gender (short cap, or long hair falling beside the face to the shoulders), and a face disc painted
with a Monk Skin Tone swatch of the ethnicity word's group, under a lighting gradient and noise.
Every cue varies within its class (tone, lighting, hair colour and length, colour jitter) and is
several latent cells large, so a VAE that downsamples 4x (8x8 latents) can carry it.

Deterministic: the same attributes and seed give the same pixels (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dft.world import attributes as A


@dataclass(frozen=True)
class Person:
    ethnicity: str
    gender: str
    profession: str
    age: str = "adult"

    def __post_init__(self):
        if self.ethnicity not in A.SKIN_GROUPS:
            raise ValueError(f"world: unknown ethnicity {self.ethnicity!r}; expected one of {A.ETHNICITIES}")
        if self.gender not in A.GENDERS:
            raise ValueError(f"world: unknown gender {self.gender!r}; expected one of {A.GENDERS}")
        if self.profession not in A.PROFESSIONS:
            raise ValueError(f"world: unknown profession {self.profession!r}; expected one of {tuple(A.PROFESSIONS)}")
        if self.age not in A.AGES:
            raise ValueError(f"world: unknown age {self.age!r}; expected one of {A.AGES}")


_YY, _XX = np.mgrid[0 : A.SIZE, 0 : A.SIZE].astype(np.float32)


def _jitter(rng: np.random.Generator, colour, amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def render_person(person: Person, seed: int) -> tuple[np.ndarray, int]:
    """One portrait (uint8 [32, 32, 3]) and the Monk tone painted on its face."""
    rng = np.random.default_rng(seed)
    prof = A.PROFESSIONS[person.profession]
    img = np.empty((A.SIZE, A.SIZE, 3), np.float32)

    # Background: the profession's colour, jittered, with a soft vertical gradient.
    bg = _jitter(rng, prof["background"], 14)
    grad = rng.uniform(-10, 10)
    img[:] = bg + (grad * (_YY / (A.SIZE - 1) - 0.5))[..., None]

    # Clothing: shoulders as the top of an ellipse below the face.
    cloth = _jitter(rng, prof["clothing"], 12)
    shoulders = ((_XX - 16) / rng.uniform(11.5, 13.0)) ** 2 + ((_YY - 33) / 10.0) ** 2 <= 1.0
    img[shoulders] = cloth

    cx, cy = A.FACE_CENTRE
    cx += rng.uniform(-0.5, 0.5)
    cy += rng.uniform(-0.5, 0.5)
    r = A.FACE_RADIUS + rng.uniform(-0.3, 0.3)
    hair = _jitter(rng, A.HAIR_COLOURS[rng.integers(len(A.HAIR_COLOURS))], 8)

    # Long hair (woman): a curtain behind the face from the crown down to the shoulders.
    if person.gender == "woman":
        half_width = rng.uniform(11.0, 12.0)
        bottom = rng.uniform(24.0, 28.0)
        curtain = (np.abs(_XX - cx) <= half_width) & (_YY >= cy - 4) & (_YY <= bottom)
        img[curtain] = hair

    # Hair cap on the crown (both): the upper half of a disc a little larger than the face.
    cap_r = r + rng.uniform(1.6, 2.4)
    cap = (((_XX - cx) ** 2 + (_YY - (cy - 1.5)) ** 2) <= cap_r**2) & (_YY <= cy - 1)
    img[cap] = hair

    # Neck and face: the Monk swatch under a side-lighting gradient and an overall exposure.
    tone = int(rng.choice(A.PAINTED_TONES[person.ethnicity]))
    skin = A.MST_RGB[tone - 1]
    neck = (np.abs(_XX - cx) <= 2.5) & (_YY >= cy) & (_YY <= cy + r + 2.5)
    face = ((_XX - cx) ** 2 + (_YY - cy) ** 2) <= r**2
    side = rng.uniform(-0.06, 0.06)
    exposure = rng.uniform(0.96, 1.04)
    light = exposure * (1.0 + side * (_XX - cx) / r)
    shaded = skin[None, None, :] * light[..., None]
    img[neck] = shaded[neck] * 0.9
    img[face] = shaded[face]

    img += rng.normal(0.0, 3.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), tone


def render_batch(people: list[Person], seeds: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Portraits [N, 32, 32, 3] uint8 and their painted Monk tones [N]."""
    if len(people) != len(seeds):
        raise ValueError(f"render_batch: {len(people)} people but {len(seeds)} seeds")
    images = np.empty((len(people), A.SIZE, A.SIZE, 3), np.uint8)
    tones = np.empty(len(people), np.int64)
    for i, (p, s) in enumerate(zip(people, seeds)):
        images[i], tones[i] = render_person(p, int(s))
    return images, tones
