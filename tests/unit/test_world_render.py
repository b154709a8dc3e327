"""The demo world's renderer: deterministic, every cue where the reader expects it, bad words refused."""

import itertools

import numpy as np
import pytest

from dft.prompts.config import PromptsConfig
from dft.prompts.table import PromptTable, neutral_table
from dft.prompts.vocab import load_vocabulary
from dft.world import attributes as A
from dft.world.render import Person, render_batch, render_person


def test_vocabulary_is_the_renderers():
    v = load_vocabulary("world")
    assert tuple(v.values["ethnicity"]) == A.ETHNICITIES
    assert tuple(v.values["gender"]) == A.GENDERS
    assert tuple(v.values["profession"]) == tuple(A.PROFESSIONS)
    assert tuple(v.values["age"]) == A.AGES
    table = PromptTable(PromptsConfig(vocab="world", template_policy="all", images_per_prompt=1))
    assert len(table.combos) == 3 * 2 * 1 * 4 * len(v.templates)
    neutral = neutral_table(PromptsConfig(vocab="world"), images_per_prompt=1)
    from dft.world.corpus import NEUTRAL_TEMPLATES

    # every neutral phrasing of the corpus, the trained one first (vocab_world/neutral.txt lists them in order)
    assert tuple(v.neutral) == NEUTRAL_TEMPLATES
    expected = sorted(t.replace("a {profession}", f"a{'n' if p[0] in 'aeiou' else ''} {p}")
                      for t in NEUTRAL_TEMPLATES for p in A.PROFESSIONS)
    assert "a candid photo of an engineer" in expected and len(expected) == 12
    assert sorted(neutral.column("prompt").to_pylist()) == expected


def test_deterministic_and_seed_dependent():
    p = Person("dark-skinned", "woman", "nurse")
    a, ta = render_person(p, 7)
    b, tb = render_person(p, 7)
    c, _ = render_person(p, 8)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b) and ta == tb
    assert not np.array_equal(a, c)


def test_painted_tone_stays_in_its_group():
    for eth in A.ETHNICITIES:
        tones = {render_person(Person(eth, "man", "doctor"), s)[1] for s in range(40)}
        assert tones <= set(A.SKIN_GROUPS[eth]) and len(tones) > 1  # varies within its class


def test_cues_differ_between_classes():
    # Long hair covers the bands beside the face; short hair leaves the background there.
    man, _ = render_person(Person("light-skinned", "man", "teacher"), 1)
    woman, _ = render_person(Person("light-skinned", "woman", "teacher"), 1)
    band = (slice(15, 21), slice(5, 8))
    bg = np.array(A.PROFESSIONS["teacher"]["background"], float)
    assert np.linalg.norm(man[band].reshape(-1, 3).mean(0) - bg) < 40
    assert np.linalg.norm(woman[band].reshape(-1, 3).mean(0) - bg) > 80
    faces = {e: render_person(Person(e, "man", "doctor"), 3)[0][12:17, 14:19].reshape(-1, 3).mean() for e in A.ETHNICITIES}
    assert faces["light-skinned"] > faces["medium-skinned"] > faces["dark-skinned"]


def test_batch_matches_single_and_rejects_unknown_words():
    people = [Person(*c) for c in itertools.product(A.ETHNICITIES, A.GENDERS, A.PROFESSIONS)]
    imgs, tones = render_batch(people, list(range(len(people))))
    for i in (0, 5, len(people) - 1):
        img, tone = render_person(people[i], i)
        assert np.array_equal(imgs[i], img) and tones[i] == tone
    with pytest.raises(ValueError, match="ethnicity"):
        Person("purple", "man", "doctor")
    with pytest.raises(ValueError, match="profession"):
        Person("dark-skinned", "man", "astronaut")
    with pytest.raises(ValueError, match="seeds"):
        render_batch(people, [1])
