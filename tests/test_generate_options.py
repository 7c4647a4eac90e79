"""GenerateOptions: the one definition of what a generation run is asked to do, checked before any work."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emotalk.errors import InputError
from emotalk.inference import RENDERERS, GenerateOptions


def test_defaults_are_the_cli_defaults_and_valid():
    o = GenerateOptions()
    assert (o.emotion, o.intensity, o.renderer, o.finetune_steps, o.blink, o.smoothing, o.background, o.paste,
            o.size, o.batch_size, o.seed, o.fps) == ("neutral", 1.0, "neural", 5, True, 5, True, True, 256, None,
                                                    0, None)
    assert set(RENDERERS) >= {"neural", "warp"}


BAD = {
    "renderer": ("pixar", "unknown renderer 'pixar'; choose one of: neural, warp"),
    "size": (99, "size must be an even number of pixels >= 64"),
    "finetune_steps": (-1, "finetune_steps must be an integer >= 0"),
    "batch_size": (0, "batch_size must be an integer >= 1"),
    "smoothing": (4, "smoothing must be an odd number of frames"),
    "intensity": ("high", "intensity must be a number"),
    "emotion": (3, "emotion must be a name"),
    "fps": (0, "fps must be a positive number"),
    "seed": (1.5, "seed must be an integer"),
    "blink": ("yes", "blink must be True or False"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_option_is_an_input_error_naming_it(name):
    value, message = BAD[name]
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        GenerateOptions(**{name: value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_intensity_must_be_a_finite_number(value):
    with pytest.raises(InputError, match="intensity"):
        GenerateOptions(intensity=value)


def test_good_values_pass_and_numpy_numbers_are_fine():
    o = GenerateOptions(emotion={"happy": 0.7, "surprised": 0.3}, intensity=2.5, renderer="warp", size=np.int64(192),
                        finetune_steps=0, smoothing=1, batch_size=4, fps=25, seed=np.int32(3), blink=np.bool_(False))
    assert o.size == 192 and o.smoothing == 1 and o.fps == 25


def test_replace_validates_and_names_unknown_options():
    o = GenerateOptions(emotion="happy")
    p = o.replace(intensity=2, renderer="warp")
    assert (p.emotion, p.intensity, p.renderer) == ("happy", 2, "warp") and o.renderer == "neural"
    with pytest.raises(InputError, match="size must be"):
        o.replace(size=100 + 1)
    with pytest.raises(InputError, match=r"unknown generate option\(s\) colour, speed; valid options: .*background"):
        o.replace(colour="red", speed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.emotion = "sad"  # type: ignore[misc]


def test_generate_rejects_a_positional_emotion_with_a_hint():
    from emotalk.inference.pipeline import Pipeline

    with pytest.raises(InputError, match="pass the emotion by name"):
        Pipeline.generate(object.__new__(Pipeline), "photo.jpg", "speech.wav", "happy")
