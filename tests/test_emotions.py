"""The emotion control vector (``emotalk.data.emotions``): the paper's one-hot | one-hot input, and the
extensions (blends, fractional intensity) with their errors. Known answers written out by hand."""
import math

import numpy as np
import pytest

from emotalk.data.emotions import (EMOTIONS, INTENSITY_LEVELS, PAPER_EMOTIONS, emotion_dim, emotion_vector,
                                   intensity_weights, parse_emotion)
from emotalk.errors import InputError


def test_vocabulary_is_meads_eight_classes_at_three_levels():
    assert EMOTIONS == ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
    assert INTENSITY_LEVELS == 3 and emotion_dim() == 11


@pytest.mark.parametrize("emotion, level", [("neutral", 1), ("happy", 2), ("surprised", 3), ("angry", 1)])
def test_one_emotion_at_a_level_is_two_one_hots(emotion, level):
    v = emotion_vector(emotion, level)
    expected = np.zeros(11, np.float32)
    expected[EMOTIONS.index(emotion)] = 1
    expected[8 + level - 1] = 1
    assert v.dtype == np.float32 and v.shape == (11,)
    np.testing.assert_array_equal(v, expected)


def test_paper_vocabulary_and_two_levels():
    v = emotion_vector("sad", 2, vocab=PAPER_EMOTIONS, levels=2)
    np.testing.assert_array_equal(v, [0, 0, 1, 0, 0, 0, 0, 1])
    with pytest.raises(InputError, match="disgusted"):  # not in this vocabulary: the message lists the choices
        emotion_vector("contempt", 1, vocab=PAPER_EMOTIONS, levels=2)
    # neutral is no class of the paper's vocabulary, but the all-zero emotion part (Tables 4 and 5)
    np.testing.assert_array_equal(emotion_vector("neutral", 1, vocab=PAPER_EMOTIONS, levels=2),
                                  [0, 0, 0, 0, 0, 0, 1, 0])


def test_aliases_and_case_name_the_same_emotion():
    np.testing.assert_array_equal(emotion_vector(" Happiness ", 1), emotion_vector("happy", 1))
    assert parse_emotion("Surprise") == {"surprised": 1.0}


@pytest.mark.parametrize("spec, expected", [
    ("happy:0.7,surprised:0.3", {"happy": 0.7, "surprised": 0.3}),
    ("happy:7,surprised:3", {"happy": 0.7, "surprised": 0.3}),              # normalised to sum 1
    ("happy:2, sad:1, angry:1", {"happy": 0.5, "sad": 0.25, "angry": 0.25}),
    ("happy,sad", {"happy": 0.5, "sad": 0.5}),                              # no weight: 1 each
    ("happy:1,happy:1,sad:2", {"happy": 0.5, "sad": 0.5}),                  # repeats add up
    ("happy:1,sad:0", {"happy": 1.0, "sad": 0.0}),
    ({"fear": 3, "sad": 1}, {"fear": 0.75, "sad": 0.25}),                    # a mapping
])
def test_blends_are_normalised(spec, expected):
    got = parse_emotion(spec)
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-7)


def test_blend_vector_puts_the_weights_on_the_emotion_part_only():
    v = emotion_vector("happy:0.6,surprised:0.4", 3)
    expected = np.zeros(11, np.float32)
    expected[EMOTIONS.index("happy")], expected[EMOTIONS.index("surprised")] = 0.6, 0.4
    expected[10] = 1
    np.testing.assert_allclose(v, expected, atol=1e-7)
    assert v[:8].sum() == pytest.approx(1.0) and v[8:].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("intensity, expected", [
    (1, [1, 0, 0]), (2, [0, 1, 0]), (3, [0, 0, 1]),
    (1.5, [0.5, 0.5, 0]), (2.25, [0, 0.75, 0.25]), (2.9, [0, 0.1, 0.9]), (1.0, [1, 0, 0]),
    ("2.5", [0, 0.5, 0.5]), (np.float32(1.75), [0.25, 0.75, 0]),
])
def test_fractional_intensity_interpolates_between_the_level_one_hots(intensity, expected):
    np.testing.assert_allclose(intensity_weights(intensity), expected, atol=1e-6)
    np.testing.assert_allclose(emotion_vector("happy", intensity)[8:], expected, atol=1e-6)


def test_fractional_intensity_is_the_linear_mix_of_its_neighbours():
    lo, hi = emotion_vector("angry", 2), emotion_vector("angry", 3)
    for t in (0.1, 0.5, 0.8):
        np.testing.assert_allclose(emotion_vector("angry", 2 + t), (1 - t) * lo + t * hi, atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("furious", "unknown emotion 'furious'"),
    ("happy:0.5,furiuos:0.5", "unknown emotion"),
    ("", "no emotion given"),
    (" , ", "no emotion given"),
    ({}, "no emotion given"),
    ("happy:lots", "not a number"),
    ("happy:-0.5,sad:1.5", ">= 0"),
    ("happy:0,sad:0", "sum to zero"),
    ("happy:nan", "finite"),
    ("happy:inf,sad:1", "finite"),
    ({"happy": "a lot"}, "must be a number"),
])
def test_bad_emotions_and_weights_are_input_errors(spec, message):
    with pytest.raises(InputError, match=message):
        parse_emotion(spec)
    with pytest.raises(InputError):
        emotion_vector(spec, 1)


def test_unknown_emotion_message_lists_the_choices():
    with pytest.raises(InputError) as e:
        emotion_vector("furious", 1)
    assert all(name in str(e.value) for name in EMOTIONS)


@pytest.mark.parametrize("intensity", [0, 0.99, 3.01, 4, -1, math.nan, math.inf, -math.inf, "high", None, "nan"])
def test_out_of_range_or_nan_intensity_is_an_input_error(intensity):
    with pytest.raises(InputError, match="intensity"):
        emotion_vector("happy", intensity)


def test_levels_bound_the_intensity():
    np.testing.assert_array_equal(intensity_weights(5, levels=5), [0, 0, 0, 0, 1])
    with pytest.raises(InputError, match="between 1 and 2"):
        intensity_weights(2.5, levels=2)
