"""Sampling settings are validated before anything is created, with messages that name the setting."""

import pytest

from apps.inference.services import DEFAULTS, InferenceError, params_parse


def test_defaults_fill_what_is_left_out():
    p = params_parse({})
    assert {k: p[k] for k in DEFAULTS} == DEFAULTS


def test_form_strings_are_numbers_and_empty_ones_defaults():
    p = params_parse({"temperature": "0.5", "top_k": "0", "seed": "", "max_new_tokens": "12"})
    assert p["temperature"] == 0.5 and p["top_k"] == 0 and p["seed"] is None and p["max_new_tokens"] == 12


@pytest.mark.parametrize("raw,param,words", [
    ({"temperature": -0.1}, "temperature", ">= 0"),
    ({"temperature": "hot"}, "temperature", "must be a number"),
    ({"top_p": 0}, "top_p", "> 0"),
    ({"top_p": 1.5}, "top_p", "<= 1"),
    ({"top_k": 2.5}, "top_k", "whole number"),
    ({"max_new_tokens": 10**6}, "max_new_tokens", "above the limit"),
    ({"max_new_tokens": 0}, "max_new_tokens", ">= 1"),
    ({"repetition_penalty": 0}, "repetition_penalty", "> 0"),
    ({"min_p": 1}, "min_p", "<="),
    ({"seed": -1}, "seed", ">= 0"),
    ({"temperature": float("nan")}, "temperature", "finite"),
    ({"temperature": True}, "temperature", "must be a number"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"stop": [1]}, "stop", "string"),
    ({"stop": ["x" * 101]}, "stop", "100 characters"),
])
def test_bad_settings_are_refused_naming_the_setting(raw, param, words):
    with pytest.raises(InferenceError, match=words) as refused:
        params_parse(raw)
    assert refused.value.param == param and refused.value.status == 400


def test_one_stop_string_may_come_alone_and_empty_ones_are_dropped():
    assert params_parse({"stop": "\n\n"})["stop"] == ["\n\n"]
    assert params_parse({"stop": ["END", "", "STOP"]})["stop"] == ["END", "STOP"]
