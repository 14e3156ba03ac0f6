"""The front door's settings: each bad value stops start-up with one line naming the variable."""

from __future__ import annotations

import pytest

from receiver.settings import ConfigError, read_settings


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("KAYLE_HEADER_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("KAYLE_HEADER_TIMEOUT_SECONDS", "soon", "a valid number"),
        ("KAYLE_MAX_CONNECTIONS", "0", "greater than or equal to 1"),
        ("KAYLE_RECEIVER_PROCESSES", "0", "greater than or equal to 1"),
        ("KAYLE_ADMIN_PORT", "70000", "less than or equal to 65535"),
        ("KAYLE_ADMIN_PORT", "admin", "a valid integer"),
        ("KAYLE_ADMIN_HOST", "", "at least 1 character"),
    ],
)
def test_a_bad_front_door_setting_is_one_line_naming_it(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        read_settings()
    message = str(raised.value)
    assert message.startswith(f"{variable}: ") and fragment in message and "\n" not in message


def test_the_front_door_defaults(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("KAYLE_ADMIN_PORT", "KAYLE_RECEIVER_PROCESSES"):
        monkeypatch.delenv(variable)
    settings = read_settings()
    assert (settings.admin_host, settings.admin_port) == ("127.0.0.1", 9000)
    assert settings.header_timeout_seconds == 10
    assert settings.max_connections is None and settings.receiver_processes is None  # from the machine
