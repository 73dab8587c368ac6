"""The CLI's side of the control API: find the running node, call it with its token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.runtime import read_runtime_file, read_token

TIMEOUT_S = 10.0
# No proxies, whatever http_proxy says: the API is on loopback, and the bearer token must never
# be handed to a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ApiError(NodeError):
    """The control API refused a request or could not be reached."""


def get_json(data_dir: Path, path: str) -> Any:
    info = read_runtime_file(data_dir)
    url = str(info["api"]).rstrip("/") + path
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {read_token(data_dir)}"}
    )
    try:
        with _OPENER.open(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        try:
            message = json.load(err).get("message", err.reason)
        except ValueError:
            message = err.reason
        raise ApiError(f"the node refused {path}: {message}") from err
    except (urllib.error.URLError, OSError) as err:
        raise ApiError(
            f"cannot reach the node's control API at {url} ({err}): is it still running?"
        ) from err
