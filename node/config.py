"""The node's configuration: one frozen object built from file < environment < flags.

`config.toml` in the data directory is the file; `VIVIM_*` variables are the environment; command
line flags win over both. Everything is validated here, once, so the rest of the node never sees a
malformed multiaddr or an out-of-range number.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
from multiaddr.exceptions import Error as MultiaddrError

from node.errors import NodeError
from protocols.envelope import MAX_ENVELOPE_BYTES

APP_NAME = "vivim-node"
CONFIG_FILE = "config.toml"

# 7717 is unassigned by IANA and clear of 4001 (IPFS), which a libp2p user may already run.
DEFAULT_PORT = 7717
# Loopback by default: a node is only reachable from elsewhere when its owner says so
# (--listen /ip4/0.0.0.0/tcp/7717), so a first `./scripts/run` never opens a public port.
DEFAULT_LISTEN = (f"/ip4/127.0.0.1/tcp/{DEFAULT_PORT}",)
# 0 lets the OS choose a free port for the control API; the node writes the URL it got into
# the data directory (node.json, see node/runtime.py), which is how the CLI finds it.
DEFAULT_API_PORT = 0
DEFAULT_LOG_LEVEL = "info"
LOG_LEVELS = ("debug", "info", "warning", "error")
# Bootstrap redial backoff: first retry after 0.5 s, doubling up to 30 s. 30 s keeps a peer that
# comes back reachable within half a minute, while an unreachable one costs one dial per 30 s.
DEFAULT_REDIAL_MIN_S = 0.5
DEFAULT_REDIAL_MAX_S = 30.0
# Anti-entropy: every connected device of the same identity is synced this often even without an
# announcement, so a lost gossip message costs at most one period (issue 5 names 30 s).
DEFAULT_SYNC_INTERVAL_S = 30.0
# A relay removes expired mail this often (expired mail is never listed in between).
DEFAULT_RELAY_SWEEP_INTERVAL_S = 60.0


class ConfigError(NodeError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = 2


def default_data_dir(env: Mapping[str, str]) -> Path:
    """`VIVIM_HOME`, else `$XDG_DATA_HOME/vivim-node`, else `~/.local/share/vivim-node`."""
    if env.get("VIVIM_HOME"):
        return Path(env["VIVIM_HOME"]).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / APP_NAME


def resolve_data_dir(flag: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The data directory: `--data-dir` wins over the environment."""
    env = os.environ if env is None else env
    path = Path(flag).expanduser() if flag else default_data_dir(env)
    return path.absolute()


@dataclass(frozen=True, kw_only=True)
class Config:
    data_dir: Path
    listen: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    api_port: int = DEFAULT_API_PORT
    log_level: str = DEFAULT_LOG_LEVEL
    redial_min_s: float = DEFAULT_REDIAL_MIN_S
    redial_max_s: float = DEFAULT_REDIAL_MAX_S
    sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S
    # The relay role (node/relay.py): off unless asked for.
    relay: bool = False
    relay_allow: tuple[str, ...] = ()
    relay_max_envelope_bytes: int = MAX_ENVELOPE_BYTES
    relay_sweep_interval_s: float = DEFAULT_RELAY_SWEEP_INTERVAL_S
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError(
                "no listen address: give at least one, e.g. --listen /ip4/127.0.0.1/tcp/7717"
            )
        for addr in self.listen:
            check_listen_addr(addr, self._source("listen"))
        for addr in self.bootstrap:
            check_bootstrap_addr(addr, self._source("bootstrap"))
        if not 0 <= self.api_port <= 65535:
            raise ConfigError(
                f"api_port {self.api_port} ({self._source('api_port')}) is not 0-65535"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log level {self.log_level!r} ({self._source('log_level')}) is not one of "
                + ", ".join(LOG_LEVELS)
            )
        if not 0 < self.redial_min_s <= self.redial_max_s:
            raise ConfigError("redial backoff needs 0 < redial_min_s <= redial_max_s")
        if not 0 < self.sync_interval_s <= 86_400:
            raise ConfigError(
                f"sync_interval_s {self.sync_interval_s} ({self._source('sync_interval_s')}) "
                "must be more than 0 and at most 86400 seconds"
            )

        for did in self.relay_allow:
            if not did.startswith("did:key:z"):
                raise ConfigError(
                    f"relay_allow entry {did!r} ({self._source('relay_allow')}) is not a DID "
                    "like did:key:z6Mk... (`vivim-node id` prints a node's DID)"
                )
        if not 0 < self.relay_sweep_interval_s <= 86_400:
            raise ConfigError(
                f"relay_sweep_interval_s {self.relay_sweep_interval_s} "
                f"({self._source('relay_sweep_interval_s')}) must be more than 0 and at most 86400"
            )
        if not 1024 <= self.relay_max_envelope_bytes <= MAX_ENVELOPE_BYTES:
            raise ConfigError(
                f"relay_max_envelope_bytes {self.relay_max_envelope_bytes} "
                f"({self._source('relay_max_envelope_bytes')}) must be 1024 to {MAX_ENVELOPE_BYTES}"
            )

    def _source(self, key: str) -> str:
        return self.sources.get(key, "default")


def parse_multiaddr(text: str, where: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except (MultiaddrError, ValueError, TypeError) as err:
        raise ConfigError(
            f"malformed multiaddr {text!r} in {where}: {err}. "
            "A listen address looks like /ip4/127.0.0.1/tcp/7717; "
            "a peer address adds /p2p/<peer id>"
        ) from err


def check_listen_addr(text: str, where: str) -> None:
    addr = parse_multiaddr(text, where)
    names = [p.name for p in addr.protocols()]
    if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        raise ConfigError(
            f"listen address {text!r} in {where} is not /ip4/<address>/tcp/<port> or "
            "/ip6/<address>/tcp/<port>: this node speaks TCP only"
        )


def check_bootstrap_addr(text: str, where: str) -> None:
    addr = parse_multiaddr(text, where)
    names = [p.name for p in addr.protocols()]
    if "tcp" not in names or names[-1] != "p2p":
        raise ConfigError(
            f"bootstrap address {text!r} in {where} must be a TCP address "
            "ending in /p2p/<peer id>, "
            "e.g. /ip4/192.0.2.1/tcp/7717/p2p/12D3KooW... (copy it from the peer's ready line or "
            "`vivim-node id`)"
        )


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.replace(",", " ").split() if part)


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML ({err}): fix or delete it") from err
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    known = {
        "listen",
        "bootstrap",
        "api_port",
        "log_level",
        "redial_min_s",
        "redial_max_s",
        "sync_interval_s",
        "relay",
        "relay_allow",
        "relay_max_envelope_bytes",
        "relay_sweep_interval_s",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def _typed(key: str, value: Any, where: str) -> Any:
    """Coerce one raw setting to its type, or say precisely what is wrong."""
    try:
        if key == "relay":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if key in ("listen", "bootstrap", "relay_allow"):
            if isinstance(value, str):
                return _split_list(value)
            if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise TypeError
        if key in ("api_port", "relay_max_envelope_bytes"):
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if key in ("redial_min_s", "redial_max_s", "sync_interval_s", "relay_sweep_interval_s"):
            return float(value)
        if key == "log_level":
            return str(value).lower()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"setting {key} = {value!r} in {where} has the wrong type") from err
    raise ConfigError(f"unknown setting {key} in {where}")


ENV_VARS = {
    "listen": "VIVIM_LISTEN",
    "bootstrap": "VIVIM_BOOTSTRAP",
    "api_port": "VIVIM_API_PORT",
    "log_level": "VIVIM_LOG_LEVEL",
    "redial_min_s": "VIVIM_REDIAL_MIN_S",
    "redial_max_s": "VIVIM_REDIAL_MAX_S",
    "sync_interval_s": "VIVIM_SYNC_INTERVAL_S",
    "relay": "VIVIM_RELAY",
    "relay_allow": "VIVIM_RELAY_ALLOW",
    "relay_max_envelope_bytes": "VIVIM_RELAY_MAX_ENVELOPE_BYTES",
    "relay_sweep_interval_s": "VIVIM_RELAY_SWEEP_INTERVAL_S",
}


def load_config(
    data_dir: Path,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Merge config.toml < VIVIM_* environment < flags (None means "flag not given")."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = data_dir / CONFIG_FILE
    for key, raw in read_config_file(path).items():
        values[key] = _typed(key, raw, str(path))
        sources[key] = str(path)
    for key, var in ENV_VARS.items():
        if env.get(var):
            values[key] = _typed(key, env[var], f"${var}")
            sources[key] = f"${var}"
    for key, raw in (flags or {}).items():
        if raw is None or raw is False or raw == [] or raw == ():
            continue
        values[key] = _typed(key, raw, f"--{key.replace('_', '-')}")
        sources[key] = f"--{key.replace('_', '-')}"
    return Config(data_dir=data_dir, sources=sources, **values)


def render_default_config_file() -> str:
    """The config.toml that `init` writes: every setting, commented with its default."""
    return f"""\
# vivim-node configuration. Precedence: this file < VIVIM_* environment variables < command flags.

# Multiaddrs to listen on (TCP only). Use /ip4/0.0.0.0/tcp/{DEFAULT_PORT} to be reachable from
# other machines.
listen = [{", ".join(f'"{a}"' for a in DEFAULT_LISTEN)}]

# Peers to dial at start and to redial whenever the connection drops, e.g.
# "/ip4/192.0.2.1/tcp/{DEFAULT_PORT}/p2p/12D3KooW...".
bootstrap = []

# Port of the local control API on 127.0.0.1 (0: any free port; the CLI finds it).
api_port = {DEFAULT_API_PORT}

# One of {", ".join(LOG_LEVELS)}.
log_level = "{DEFAULT_LOG_LEVEL}"

# Bootstrap redial backoff in seconds: starts at redial_min_s, doubles up to redial_max_s.
redial_min_s = {DEFAULT_REDIAL_MIN_S}
redial_max_s = {DEFAULT_REDIAL_MAX_S}

# Seconds between syncs with each connected device of this identity (besides syncing on connect
# and whenever one announces something new).
sync_interval_s = {DEFAULT_SYNC_INTERVAL_S}

# The relay role: hold encrypted mail for people who register here while they are offline
# (also `run --relay`). relay_allow lists the DIDs whose mail is held; empty: anyone's.
relay = false
relay_allow = []
relay_max_envelope_bytes = {MAX_ENVELOPE_BYTES}
relay_sweep_interval_s = {DEFAULT_RELAY_SWEEP_INTERVAL_S}
"""
