"""The one family of checks: predicates refuse bools, checkers name the field or key."""
from __future__ import annotations

import math

import pytest

from context.settings import ContextSettings
from messages.errors import ConfigError, InvalidInput
from messages.validation import check, is_int, is_number, require, require_seconds, require_text
from supervisor.config import HealthSettings, RestartSettings


@pytest.mark.parametrize("value,expected", [(3, True), (0, True), (True, False), (3.0, False), ("3", False)])
def test_is_int(value, expected):
    assert is_int(value) is expected


@pytest.mark.parametrize("value,expected", [
    (3, True), (2.5, True), (False, False), (math.nan, False), (math.inf, False), ("1", False)])
def test_is_number(value, expected):
    assert is_number(value) is expected


def test_a_message_check_raises_invalid_input_naming_the_field():
    with pytest.raises(InvalidInput) as caught:
        require(False, "timeout_s", "must be > 0")
    assert caught.value.message == "timeout_s: must be > 0"
    assert caught.value.details == {"field": "timeout_s"}


def test_a_config_check_raises_config_error_naming_the_key():
    with pytest.raises(ConfigError) as caught:
        check(False, "max_queue", "must be positive")
    assert caught.value.message == "max_queue: must be positive"
    assert caught.value.details == {"key": "max_queue"}


def test_checkers_take_the_error_type():
    with pytest.raises(ConfigError, match=r"^ttl: must be a positive number of seconds, got 0$") as caught:
        require_seconds(0, "ttl", allow_none=False, error=ConfigError)
    assert caught.value.details == {"key": "ttl"}
    with pytest.raises(ConfigError):
        require_text("", "name", error=ConfigError)
    require_seconds(None, "ttl")  # None is allowed unless told otherwise


@pytest.mark.parametrize("build", [
    lambda: HealthSettings(missed_heartbeats=True),
    lambda: RestartSettings(max_restarts=True),
    lambda: ContextSettings(max_items=True),
])
def test_a_bool_is_not_a_count_in_config(build):
    with pytest.raises(ConfigError):
        build()


def test_context_settings_keep_their_message():
    with pytest.raises(ConfigError, match=r"^context\.default_ttl_s: must be a positive number of seconds, got -1$"):
        ContextSettings.from_config({"default_ttl_s": -1})
