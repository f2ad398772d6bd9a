"""The control plane's HTTP API answers malformed input with a 4xx and a clear JSON message, never a 500
(issue 13). A real control plane on loopback, called with its API token, as a hostile or careless client would.

On main: a non-numeric `line` (int() in the backend) and JSON nested 100k deep (RecursionError in the parser)
were 500s; a text/plain or YAML body was parsed as JSON anyway; an oversized body got aiohttp's plain-text 413.
Codes: 400 for a malformed body, 413 for one over the size limit and 415 for a body that is not
application/json (HTTP's meanings, as the Kubernetes API server answers them).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile

import aiohttp
import pytest

from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.controlplane.http_api import MAX_BODY, MAX_DEPTH
from sailmesh.processes import free_port
from sailmesh.settings import Settings

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "reviews", "namespace": "default"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}


@pytest.fixture
async def api():
    """(base URL, headers with the API token) of a running control plane."""
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_tls_port=0, ca_port=0, http_port=free_port(), state_dir=state),
                         Settings())
    await plane.start()
    assert plane.identity is not None
    token = plane.identity.api_token_path.read_text().strip()
    try:
        yield f"http://127.0.0.1:{plane.opts.http_port}", {"Authorization": f"Bearer {token}"}, plane
    finally:
        await plane.stop()
        shutil.rmtree(state, ignore_errors=True)


async def _post(api, path: str, body: bytes | str, content_type: str = "application/json") -> tuple[int, dict]:
    url, headers, _ = api
    async with aiohttp.ClientSession(trust_env=False) as s, \
            s.post(url + path, data=body, headers={**headers, "Content-Type": content_type}) as r:
        assert r.content_type == "application/json", await r.text()
        return r.status, await r.json()


def _docs(**entry: object) -> str:
    return json.dumps({"documents": [{"file": "f.yaml", "line": 1, "doc": VS, **entry}]})


@pytest.mark.parametrize("line", ["abc", "12", [1], {"a": 1}, -1, 1.5, True])
async def test_a_non_integer_line_is_a_400_naming_the_field(api, line) -> None:
    status, body = await _post(api, "/api/v1/apply", _docs(line=line))
    assert status == 400 and body["errors"][0].startswith("documents[0].line must be a non-negative integer")
    assert not api[2].store.list("VirtualService")


async def test_an_infinite_line_is_a_400(api) -> None:
    status, body = await _post(api, "/api/v1/apply", _docs(line=0).replace('"line": 0', '"line": 1e400'))
    assert status == 400 and "line" in body["errors"][0]


@pytest.mark.parametrize("path", ["/api/v1/apply", "/api/v1/delete", "/api/v1/join-tokens"])
async def test_json_nested_100k_deep_is_a_400(api, path) -> None:
    status, body = await _post(api, path, "[" * 100_000 + "]" * 100_000)
    assert status == 400 and body["errors"] == [f"request body nests deeper than {MAX_DEPTH} levels"]


async def test_json_nested_past_the_limit_inside_a_document_is_a_400(api) -> None:
    deep = json.dumps({"documents": [{"doc": {**VS, "spec": json.loads('{"a":' * 300 + "1" + "}" * 300)}}]})
    status, body = await _post(api, "/api/v1/apply", deep)
    assert status == 400 and "deeper than" in body["errors"][0]


async def test_a_body_over_the_limit_is_a_413_with_a_json_message(api) -> None:
    status, body = await _post(api, "/api/v1/apply", b" " * (MAX_BODY + 1))
    assert status == 413 and body["errors"] == [f"request body over {MAX_BODY} bytes"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/yaml", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_by_content_type_is_a_415(api, content_type) -> None:
    status, body = await _post(api, "/api/v1/apply", _docs(), content_type)
    assert status == 415 and "send application/json" in body["errors"][0]
    assert not api[2].store.list("VirtualService")


@pytest.mark.parametrize("raw", [
    "kind: VirtualService\nmetadata: {name: [", "documents:\n- doc: {}", b"\xff\xfe\x00", "", "{", "NaN", "[]",
    '{"documents": {}}', '{"documents": [1]}', '{"documents": [{"doc": "x"}]}', '{"documents": [{"doc": null}]}',
])
async def test_bad_yaml_or_json_bodies_are_400s(api, raw) -> None:
    status, body = await _post(api, "/api/v1/apply", raw)
    assert status == 400 and body["errors"]


@pytest.mark.parametrize("entry,error", [
    ({"file": {"a": 1}}, "documents[0].file must be a string"),
    ({"doc": [VS]}, "documents[0].doc must be an object (one resource)"),
])
async def test_wrong_field_types_in_a_document_are_400s(api, entry, error) -> None:
    status, body = await _post(api, "/api/v1/apply", _docs(**entry))
    assert status == 400 and body["errors"] == [error]


async def test_flags_must_be_booleans(api) -> None:
    # bool("false") is True: a string flag would have done the opposite of what it says
    status, body = await _post(api, "/api/v1/apply", json.dumps({"documents": [], "dryRun": "false"}))
    assert status == 400 and body["errors"] == ["dryRun must be true or false"]
    status, body = await _post(api, "/api/v1/apply", json.dumps({"documents": [], "dryRun": False}))
    assert status == 200


async def test_a_path_with_a_newline_cannot_forge_a_log_line(api, caplog) -> None:
    caplog.set_level(logging.WARNING)
    url, _, _ = api
    async with aiohttp.ClientSession(trust_env=False) as s, \
            s.get(url + "/api/v1/x%0AWARNING%20forged%20line") as r:
        assert r.status == 401
    logged = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert logged and all("\n" not in m for m in logged) and "x\\nWARNING forged line" in logged[0]
