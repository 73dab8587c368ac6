"""The control API of a real node: loopback only, every route but /openapi.json behind the token.

Requests go through urllib on a worker thread, with proxies switched off (a proxy must never see
the token), so the tests see exactly what the node answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.local_cluster import NodeProcess, node_command
from tests.integration.conftest import StartNode, run_cli

GUARDED_PATHS = ("/v1/status", "/v1/peers", "/metrics")
CONNECT_TIMEOUT_S = 30
HTTP_TIMEOUT_S = 10
METRIC_LINE = re.compile(r"^vivim_connected_peers (\S+)$", re.MULTILINE)

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        assert self.content_type.startswith("application/json"), self.content_type
        return json.loads(self.body)


def _request(url: str, method: str, headers: dict[str, str], data: bytes | None = None) -> Reply:
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with _direct.open(request, timeout=HTTP_TIMEOUT_S) as response:
            return Reply(response.status, response.headers["content-type"], response.read())
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, err.headers["content-type"], err.read())


async def http(
    node: NodeProcess,
    path: str,
    *,
    method: str = "GET",
    authorization: str | None = None,
    data: bytes | None = None,
) -> Reply:
    headers = {} if authorization is None else {"Authorization": authorization}
    if data is not None:
        headers["Content-Type"] = "application/json"
    url = node.ready["api"] + path
    return await trio.to_thread.run_sync(_request, url, method, headers, data)


def token_of(node: NodeProcess) -> str:
    return (node.data_dir / "api.token").read_text().strip()


def bearer(node: NodeProcess) -> str:
    return f"Bearer {token_of(node)}"


async def connected_peers_metric(node: NodeProcess) -> float:
    reply = await http(node, "/metrics", authorization=bearer(node))
    assert reply.status == 200
    match = METRIC_LINE.search(reply.body.decode())
    assert match is not None, reply.body
    return float(match.group(1))


async def test_api_is_on_loopback_and_answers_only_with_the_token(start: StartNode) -> None:
    node = await start("a")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", node.ready["api"]), node.ready["api"]
    token = token_of(node)

    wrong = [
        None,
        "Bearer not-the-token",
        token,  # without the scheme
        f"Bearer {token}x",
        f"Bearer {token[:-1]}",
        f"Basic {token}",
    ]
    for path in GUARDED_PATHS:
        for authorization in wrong:
            reply = await http(node, path, authorization=authorization)
            assert reply.status == 401, (path, authorization)
            body = reply.json()
            assert body["error"] == "unauthorized"
            assert str(node.data_dir / "api.token") in body["message"]
            assert token not in reply.body.decode()

    reply = await http(node, "/v1/status", authorization=f"Bearer {token}")
    assert reply.status == 200
    status = reply.json()
    assert status["did"] == node.ready["did"]
    assert status["peer_id"] == node.peer_id
    assert status["addrs"] == node.ready["addrs"]
    assert status["addrs"]
    for addr in status["addrs"]:
        assert addr.endswith(f"/p2p/{node.peer_id}")
    assert isinstance(status["uptime_s"], int | float)
    assert status["uptime_s"] >= 0
    assert status["connected_peers"] == 0

    reply = await http(node, "/v1/peers", authorization=f"Bearer {token}")
    assert reply.status == 200
    assert reply.json() == {"peers": []}


async def test_status_cli_uses_the_token_and_refuses_with_a_wrong_one(
    start: StartNode, tmp_path: Path
) -> None:
    node = await start("a")
    result = await run_cli("status", "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["did"], status["peer_id"]) == (node.ready["did"], node.peer_id)

    # Someone who can find the node (node.json) but does not hold its token.
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    shutil.copy(node.data_dir / "node.json", other / "node.json")
    (other / "api.token").write_text("not-the-token\n")
    (other / "api.token").chmod(0o600)

    result = await run_cli("status", "--json", "--data-dir", str(other))
    assert result.returncode != 0
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "token" in lines[0]
    assert "not-the-token" not in lines[0]


async def test_status_cli_never_sends_the_token_through_an_http_proxy(start: StartNode) -> None:
    node = await start("a")
    # A proxy that refuses every connection: if the CLI used it, the call would fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        env = {
            **os.environ,
            "http_proxy": proxy_url,
            "HTTP_PROXY": proxy_url,
            "no_proxy": "",
            "NO_PROXY": "",
        }
        result = await trio.to_thread.run_sync(
            partial(
                subprocess.run,
                node_command("status", "--json", "--data-dir", str(node.data_dir)),
                capture_output=True,
                timeout=60,
                env=env,
            )
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["peer_id"] == node.peer_id


async def test_metrics_count_connected_peers(start: StartNode) -> None:
    a = await start("a")
    reply = await http(a, "/metrics", authorization=bearer(a))
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain")
    assert await connected_peers_metric(a) == 0

    b = await start("b", bootstrap=[a.addr])
    with trio.fail_after(CONNECT_TIMEOUT_S):
        while await connected_peers_metric(a) != 1:
            await trio.sleep(0.1)
    assert await a.connected_peers() == {b.peer_id}

    await b.stop()
    with trio.fail_after(CONNECT_TIMEOUT_S):
        while await connected_peers_metric(a) != 0:
            await trio.sleep(0.1)
    assert await a.connected_peers() == set()


async def test_openapi_document_is_public_and_lists_the_routes(start: StartNode) -> None:
    node = await start("a")
    reply = await http(node, "/openapi.json")
    assert reply.status == 200
    document = reply.json()
    assert document["openapi"].startswith("3.")
    assert set(GUARDED_PATHS) <= set(document["paths"])


async def test_unknown_path_and_wrong_method_answer_json_errors(start: StartNode) -> None:
    node = await start("a")
    reply = await http(node, "/v1/nothing-here", authorization=bearer(node))
    assert reply.status == 404
    body = reply.json()
    assert body["error"] == "not_found"
    assert "/v1/nothing-here" in body["message"]

    reply = await http(node, "/v1/status", method="POST", authorization=bearer(node))
    assert reply.status == 405
    body = reply.json()
    assert body["error"] == "method_not_allowed"
    assert "POST" in body["message"]


async def test_every_documented_route_needs_the_token(start: StartNode) -> None:
    node = await start("a")
    document = (await http(node, "/openapi.json")).json()
    routes = [
        (re.sub(r"{[a-z_]+}", "x", path), method.upper())
        for path, operations in document["paths"].items()
        for method in operations
        if path != "/openapi.json"
    ]
    assert ("/v1/import", "POST") in routes
    for path, method in routes:
        data = b"{}" if method == "POST" else None
        for authorization in (None, "Bearer wrong"):
            reply = await http(node, path, method=method, authorization=authorization, data=data)
            assert reply.status == 401, (path, method, authorization)
            assert reply.json()["error"] == "unauthorized"


async def test_an_oversized_or_malformed_body_is_refused_and_the_node_serves_on(
    start: StartNode,
) -> None:
    node = await start("a")
    # A declared length over the limit is refused before the body is read (a client that
    # insists on sending it then sees the connection close).
    host, port = node.ready["api"].removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            b"POST /v1/import HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: {bearer(node)}\r\n".encode()
            + f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode()
        )
        answer = b""
        with trio.fail_after(HTTP_TIMEOUT_S):
            while b"send smaller batches" not in answer:
                chunk = await stream.receive_some()
                assert chunk, answer
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    for body in (b"not json", b"[]", b'{"export_format": "chatgpt", "items": "x"}'):
        reply = await http(node, "/v1/import", method="POST", authorization=bearer(node), data=body)
        assert reply.status == 400, body
        assert reply.json()["error"] == "bad_request"
    reply = await http(node, "/v1/acus?limit=0", authorization=bearer(node))
    assert reply.status == 400
    reply = await http(node, "/v1/acus/not-an-id", authorization=bearer(node))
    assert reply.status == 404
    assert (await http(node, "/v1/status", authorization=bearer(node))).status == 200
