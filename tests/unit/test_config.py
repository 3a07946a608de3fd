"""One declaration and one parser for every MLFLOW_SHARE_* setting (mlflow_share/config.py):
defaults, types, one error naming every bad value, and no module reading its own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mlflow_share
from mlflow_share import config
from mlflow_share.cli import cli
from mlflow_share.errors import InvalidInput


def test_defaults_when_nothing_is_set() -> None:
    options = config.parse_options({})
    for setting in config.DECLARED:
        assert getattr(options, setting.attribute) == setting.default


@pytest.mark.parametrize("variable,raw,expected", [
    ("MLFLOW_SHARE_GATEWAY", "1", True),
    ("MLFLOW_SHARE_GATEWAY", "0", False),
    ("MLFLOW_SHARE_WEBHOOK_ATTEMPTS", "3", 3),
    ("MLFLOW_SHARE_GATEWAY_FRESHNESS_SECONDS", "0", 0.0),
    ("MLFLOW_SHARE_WEBHOOK_ALLOW", "127.0.0.1/8, ::1/128", ("127.0.0.0/8", "::1/128")),
    ("MLFLOW_SHARE_MANIFEST_KEY", "~/k.pem", Path("~/k.pem").expanduser()),
])
def test_values_are_parsed_to_their_type(variable: str, raw: str, expected: object) -> None:
    setting = next(s for s in config.DECLARED if s.env == variable)
    assert getattr(config.parse_options({variable: raw}), setting.attribute) == expected


def test_every_bad_value_is_named_in_one_error_and_secrets_are_not_echoed() -> None:
    with pytest.raises(InvalidInput) as caught:
        config.parse_options({"MLFLOW_SHARE_WEBHOOK_ATTEMPTS": "x",
                              "MLFLOW_SHARE_GATEWAY_FRESHNESS_SECONDS": "nan",
                              "MLFLOW_SHARE_DB_POOL_SIZE": "-1",
                              "MLFLOW_SHARE_GATEWAY": "maybe",
                              "MLFLOW_SHARE_WEBHOOK_ALLOW": "10.0.0.0/99"})
    message = caught.value.message
    for variable in ("WEBHOOK_ATTEMPTS", "GATEWAY_FRESHNESS_SECONDS", "DB_POOL_SIZE",
                     "GATEWAY ", "WEBHOOK_ALLOW"):
        assert f"MLFLOW_SHARE_{variable}" in message


def test_no_module_reads_its_own_settings() -> None:
    """MLflow's variables are MLflow's; every MLFLOW_SHARE_* one goes through config."""
    package = Path(mlflow_share.__file__).parent
    own = "|".join(re.escape(setting.env) for setting in config.DECLARED)
    declared_names = [name for name in dir(config) if name.endswith("_ENV")]
    # A literal variable, config's constant, or a module's own ``*_ENV`` constant (MLflow's
    # end in ``_ENV_VAR``).
    names = rf"(?:[\"']?(?:{own})[\"']?|config\.(?:{'|'.join(declared_names)})|\w+_ENV\b)"
    reads = re.compile(rf"os\.(?:environ\.get|getenv)\(\s*{names}|os\.environ\[{names}\](?!\s*=)")
    found = [f"{path.relative_to(package)}: {match.group(0)}"
             for path in package.rglob("*.py") if path.name != "config.py"
             for match in reads.finditer(path.read_text())]
    assert found == []


def _config_command(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> Any:
    """``mlflow-share config`` in a process whose environment has ``variable=value``."""
    monkeypatch.setenv(variable, value)
    config.options.cache_clear()
    try:
        return CliRunner().invoke(cli, ["config"])
    finally:
        config.options.cache_clear()


def test_config_command_lists_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _config_command(monkeypatch, "MLFLOW_SHARE_ADMIN_PASSWORD", "not-to-be-shown")
    assert result.exit_code == 0, result.output
    for setting in config.DECLARED:
        assert setting.env in result.output
    assert "not-to-be-shown" not in result.output


def test_a_bad_setting_stops_the_cli_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _config_command(monkeypatch, "MLFLOW_SHARE_WEBHOOK_ATTEMPTS", "many")
    assert result.exit_code == 1
    assert "MLFLOW_SHARE_WEBHOOK_ATTEMPTS must be an integer" in result.output
    assert "Traceback" not in result.output


def test_every_command_and_option_says_what_it_is_for() -> None:
    """`--help` everywhere: every command and option has help, and no metavar shows a Python
    name (``_TEAM``, ``TOKEN_ID``)."""
    import click

    def walk(command: click.Command, path: str) -> Any:
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")

    missing = []
    for path, command in walk(cli, "mlflow-share"):
        if not command.help:
            missing.append(path)
        context = click.Context(command)
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{path} {param.opts[0]}")
            if "_" in param.make_metavar(context):
                missing.append(f"{path} {param.make_metavar(context)}")
    assert missing == []
