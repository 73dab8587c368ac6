"""Configuration: file < environment < flags, validated once."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from node.config import (
    DEFAULT_LISTEN,
    ConfigError,
    load_config,
    render_default_config_file,
    resolve_data_dir,
)

PEER = "/ip4/127.0.0.1/tcp/7717/p2p/12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


def write_config(data_dir: Path, text: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "config.toml").write_text(text)


def test_defaults_without_file_env_or_flags(tmp_path: Path) -> None:
    config = load_config(tmp_path, {}, {})
    assert config.listen == DEFAULT_LISTEN
    assert config.bootstrap == ()
    assert config.api_port == 0
    assert config.log_level == "info"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        'listen = ["/ip4/127.0.0.1/tcp/1001"]\napi_port = 1\nlog_level = "error"\n'
        "redial_max_s = 5.0\n",
    )
    file_only = load_config(tmp_path, {}, {})
    assert file_only.listen == ("/ip4/127.0.0.1/tcp/1001",)
    assert (file_only.api_port, file_only.log_level, file_only.redial_max_s) == (1, "error", 5.0)

    env = {"VIVIM_LISTEN": "/ip4/127.0.0.1/tcp/1002", "VIVIM_API_PORT": "2"}
    with_env = load_config(tmp_path, {}, env)
    assert with_env.listen == ("/ip4/127.0.0.1/tcp/1002",)
    assert with_env.api_port == 2
    assert with_env.log_level == "error"  # still from the file

    flags = {"listen": ["/ip4/127.0.0.1/tcp/1003"], "api_port": 3, "log_level": None}
    with_flags = load_config(tmp_path, flags, env)
    assert with_flags.listen == ("/ip4/127.0.0.1/tcp/1003",)
    assert with_flags.api_port == 3
    assert with_flags.log_level == "error"  # an absent flag does not override
    assert with_flags.sources["listen"] == "--listen"
    assert with_flags.sources["api_port"] == "--api-port"
    assert with_flags.sources["log_level"].endswith("config.toml")


def test_environment_lists_split_on_commas_and_spaces(tmp_path: Path) -> None:
    env = {
        "VIVIM_BOOTSTRAP": f"{PEER}, {PEER}",
        "VIVIM_LISTEN": "/ip4/127.0.0.1/tcp/1 /ip6/::1/tcp/2",
    }
    config = load_config(tmp_path, {}, env)
    assert config.bootstrap == (PEER, PEER)
    assert config.listen == ("/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/2")


def test_the_default_config_file_holds_exactly_the_defaults(tmp_path: Path) -> None:
    with_file, without = tmp_path / "with", tmp_path / "without"
    write_config(with_file, render_default_config_file())
    from_file = load_config(with_file, {}, {})
    assert set(from_file.sources) == set(tomllib.loads(render_default_config_file()))
    assert from_file == replace(load_config(without, {}, {}), data_dir=with_file)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"listen": ["/ip4/999.1.1.1/tcp/1"]}, "malformed multiaddr"),
        ({"listen": ["not a multiaddr"]}, "malformed multiaddr"),
        ({"listen": ["/ip4/127.0.0.1/udp/1"]}, "TCP only"),
        ({"bootstrap": ["/ip4/127.0.0.1/tcp/1"]}, "/p2p/<peer id>"),
        ({"log_level": "loud"}, "log level"),
        ({"api_port": 70000}, "api_port"),
    ],
)
def test_bad_values_name_the_problem(
    tmp_path: Path, flags: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("<", ".").replace(">", ".")):
        load_config(tmp_path, flags, {})


def test_the_source_of_a_bad_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$VIVIM_LISTEN"):
        load_config(tmp_path, {}, {"VIVIM_LISTEN": "/ip4/nope/tcp/1"})
    write_config(tmp_path, 'bootstrap = ["/ip4/127.0.0.1/tcp/1"]\n')
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_config(tmp_path, {}, {})


@pytest.mark.parametrize(
    "text",
    ["listen = [", "colour = 1\n", 'api_port = "x"\n', "listen = [1, 2]\n"],
    ids=["bad-toml", "unknown-key", "wrong-type", "wrong-item-type"],
)
def test_a_bad_config_file_is_refused_with_its_path(tmp_path: Path, text: str) -> None:
    write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_config(tmp_path, {}, {})


def test_data_dir_flag_beats_vivim_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIM_HOME", str(tmp_path / "home"))
    assert resolve_data_dir(None) == tmp_path / "home"
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_dir(None, {"HOME": "/h"}).name == "vivim-node"
