"""Perceived skin tone: CIELAB, ITA, Monk swatches, and the face reader on painted faces."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from dft.evaluate import skin_tone as S
from dft.evaluate.synthetic_faces import paint_face, paint_no_face


def test_lab_of_reference_colours():
    np.testing.assert_allclose(S.rgb_to_lab(np.array([255, 255, 255], np.uint8)), [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(S.rgb_to_lab(np.array([0, 0, 0], np.uint8)), [0, 0, 0], atol=0.01)
    # sRGB red, a textbook value (D65): L 53.24, a 80.09, b 67.20
    np.testing.assert_allclose(S.rgb_to_lab(np.array([255, 0, 0], np.uint8)), [53.24, 80.09, 67.20], atol=0.05)
    # mid grey 128 is L* 53.59, not OpenCV's 8-bit scaled value
    assert S.rgb_to_lab(np.array([128, 128, 128], np.uint8))[0] == pytest.approx(53.59, abs=0.02)


def test_monk_swatch_ita_matches_reference():
    np.testing.assert_allclose(S.MST_ITA, [83, 80, 72, 65, 50, 11, -20, -55, -78, -84], atol=1.0)


@pytest.mark.parametrize(
    "ita,name",
    [(60, "very light"), (55.0, "light"), (41.0, "intermediate"), (30, "intermediate"), (10.0, "brown"),
     (12, "tan"), (0, "brown"), (-30.0, "dark"), (-29.9, "brown"), (-80, "dark")],
)
def test_ita_classes(ita, name):
    assert S.ita_class(ita) == name


def test_groups():
    assert [S.mst_group(m) for m in range(1, 11)] == ["lighter"] * 3 + ["medium"] * 4 + ["darker"] * 3
    with pytest.raises(ValueError):
        S.mst_group(0)


@pytest.mark.parametrize("tone", range(1, 11))
def test_swatch_pixels_read_as_their_own_tone(tone):
    px = np.repeat(S.MST_RGB[tone - 1][None], 50, axis=0)
    r = S.skin_tone_from_pixels(px)
    assert r.mst == tone
    assert r.group == S.mst_group(tone)
    assert r.ita == pytest.approx(S.MST_ITA[tone - 1], abs=0.01)
    assert r.ita_class == S.ita_class(r.ita)


def test_median_ignores_a_minority_of_stray_pixels():
    skin = np.repeat(S.MST_RGB[6][None], 80, axis=0)
    stray = np.array([[0, 0, 0]] * 10 + [[255, 255, 255]] * 10, np.uint8)
    assert S.skin_tone_from_pixels(np.concatenate([skin, stray])).mst == 7


def test_all_swatches_pass_the_skin_rule_and_grey_does_not():
    assert S.skin_mask(S.MST_RGB).all()
    assert not S.skin_mask(np.array([[128, 128, 128], [30, 60, 200], [0, 0, 0], [255, 255, 255]], np.uint8)).any()


@pytest.fixture(scope="module")
def reader():
    return S.FaceSkinTone()


def test_painted_faces_are_detected_by_the_cascade(reader):
    for tone in (1, 5, 10):
        assert reader.detect(paint_face(S.MST_RGB[tone - 1])) is not None


def test_painted_faces_read_within_one_tone_under_lighting_and_noise(reader):
    """Every Monk swatch, darker/normal/brighter exposure, side light, sensor noise, random shifts."""
    hits, total, readable_hits, readable = 0, 0, 0, 0
    misses = []
    for tone in range(1, 11):
        for i, (light, side, noise) in enumerate(itertools.product([0.8, 1.0, 1.1], [0.0, 0.25], [0.0, 8.0])):
            img = paint_face(S.MST_RGB[tone - 1], lighting=light, side_light=side, noise=noise, seed=tone * 100 + i, jitter=0.05)
            fr = reader.read_array(img)
            total += 1
            if fr.reading is not None:
                readable += 1
                ok = abs(fr.reading.mst - tone) <= 1
                readable_hits += ok
                hits += ok
            if fr.reading is None or abs(fr.reading.mst - tone) > 1:
                misses.append((tone, light, side, noise, fr.reason, fr.reading and fr.reading.mst))
    assert hits / total >= 0.9, misses
    assert readable_hits / readable >= 0.95, misses


def test_blown_out_faces_are_unreadable_not_guessed(reader):
    fr = reader.read_array(paint_face(S.MST_RGB[0], lighting=1.4))
    assert fr.reading is None and fr.reason == S.UNREADABLE_OVEREXPOSED


def test_no_face_is_unreadable(reader):
    for seed in range(10):
        fr = reader.read_array(paint_no_face(seed=seed))
        assert fr.reading is None and fr.reason == S.UNREADABLE_NO_FACE
    flat = np.full((128, 128, 3), S.MST_RGB[4], np.uint8)  # skin colour everywhere, but no face
    assert reader.read_array(flat).reason == S.UNREADABLE_NO_FACE


def test_bytes_and_broken_bytes(reader):
    buf = io.BytesIO()
    Image.fromarray(paint_face(S.MST_RGB[7])).save(buf, format="PNG")
    assert abs(reader.read_bytes(buf.getvalue()).reading.mst - 8) <= 1
    assert reader.read_bytes(b"not an image").reason == S.UNREADABLE_DECODE


def test_region_finder_sees_every_tone_and_no_face_in_a_flat_field():
    from painted_faces import paint_portrait

    from dft.evaluate.face_regions import FaceRegionFinder

    finder = FaceRegionFinder()
    found = 0
    for tone in (1, 5, 8, 10):
        for seed in range(3):
            img, _ = paint_portrait(tone, np.random.default_rng(1000 + 10 * tone + seed))
            found += finder.find(img) is not None
    assert found >= 10  # of 12; the painted set's audit is in test_eval_audit.py
    for tone in (1, 5, 10):
        assert finder.find(np.full((160, 160, 3), S.MST_RGB[tone - 1], np.uint8)) is None


def test_bright_light_face_is_read_not_called_overexposed(reader):
    """Red clips (MST 1 at 1.15x light) but green and blue keep the colour: read, as a light tone."""
    fr = reader.read_array(paint_face(S.MST_RGB[0], lighting=1.15))
    assert fr.reading is not None and fr.reading.mst <= 3, (fr.reason, fr.extra)


def test_unknown_detector_is_an_error():
    with pytest.raises(ValueError, match="detectors"):
        S.FaceSkinTone(detectors=["yolo"])
