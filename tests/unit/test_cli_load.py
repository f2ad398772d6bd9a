"""`sailmesh x load`: N connections, M requests in all, fortio's code histogram; Envoy's overflow 503s (with
`x-envoy-overloaded: true`) counted apart from other 503s."""

from __future__ import annotations

import itertools

from aiohttp import web
from aiohttp.test_utils import TestServer

from sailmesh.cli import main as cli_main
from sailmesh.cli.load import LoadResult, run_load


async def test_load_counts_codes_and_overflow() -> None:
    seq = itertools.count()
    peers: set[object] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        n = next(seq)
        if n % 3 == 1:
            return web.Response(status=503, headers={"x-envoy-overloaded": "true"})
        if n % 3 == 2:
            return web.Response(status=503)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/get", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        result = await run_load(str(server.make_url("/get")), 2, 9, None)
    assert result.calls == 9
    assert result.codes == {200: 3, 503: 6}
    assert result.overloaded == 3
    assert len(peers) == 2  # one kept-alive connection per worker, as fortio -c 2
    text = result.report()
    assert "Code 200 : 3 (33.3 %)" in text and "Code 503 : 6 (66.7 %)  (3 with x-envoy-overloaded" in text
    assert text.splitlines()[-1].startswith("All done 9 calls")


async def test_unreachable_is_code_zero() -> None:
    result = await run_load("http://127.0.0.1:9/", 1, 2, None, timeout=2)
    assert result.codes == {0: 2} and sum(result.errors.values()) == 2
    assert LoadResult().report() == "All done 0 calls 0.000 ms avg, 0.0 qps"


def test_x_load_refuses_zero(capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli_main.main(["x", "load", "-c", "0", "http://x/"]) == 1
    assert "-c and -n must be at least 1" in capsys.readouterr().err
