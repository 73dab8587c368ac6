"""The CLI's side of the control API: find the running node, call it with its token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.runtime import read_runtime_file, read_token

# A status or peers call answers at once; a node that takes longer is stuck.
TIMEOUT_S = 10.0
# No proxies, whatever http_proxy says: the API is on loopback, and the bearer token must never
# be handed to a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ApiError(NodeError):
    """The control API refused a request or could not be reached."""


def get_json(data_dir: Path, path: str) -> Any:
    return request_json(data_dir, "GET", path)


def request_json(
    data_dir: Path, method: str, path: str, body: Any = None, timeout_s: float = TIMEOUT_S
) -> Any:
    """Call the running node's API; raise ApiError with the node's own message on refusal."""
    info = read_runtime_file(data_dir)
    url = str(info["api"]).rstrip("/") + path
    headers = {"Authorization": f"Bearer {read_token(data_dir, create=False)}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        try:
            message = json.load(err).get("message", err.reason)
        except ValueError:
            message = err.reason
        raise ApiError(f"the node refused {method} {path.split('?')[0]}: {message}") from err
    except (urllib.error.URLError, OSError) as err:
        raise ApiError(
            f"cannot reach the node's control API at {url} ({err}): is it still running?"
        ) from err
