"""`sailmesh dashboard`: open the running mesh's web UI (served by the control plane under /dashboard/).

  sailmesh dashboard
  sailmesh dashboard --url      # print its URL, open nothing
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.parse
import urllib.request
import webbrowser

from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError

PATH = "/dashboard/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", action="store_true", help="print the dashboard's URL and exit (open nothing)")
    parser.add_argument("--prometheus", default="", metavar="URL",
                        help="read metrics from this Prometheus (PromQL) instead of the sidecars")
    parser.add_argument("--api-url", default="",
                        help="the control plane's HTTP API (default: the running embedded mesh's)")
    add_state_dir(parser)


def dashboard_url(api_url: str, prometheus: str = "", token: str = "") -> str:
    """The dashboard's address on the control plane's HTTP port, with the Prometheus to read, if any, and the API
    token that logs the browser in (it becomes an HttpOnly cookie; the URL is for this user's browser only)."""
    url = api_url.rstrip("/") + PATH
    query = {k: v for k, v in (("prometheus", prometheus), ("token", token)) if v}
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def run(args: argparse.Namespace) -> int:
    try:
        mesh = None if args.api_url else running_mesh(args)
        api_url = args.api_url or (mesh.api_url if mesh else "")
        token = mesh.api_token() if mesh else ""
    except PlatformError as e:
        return fail(f"{e} (or pass --api-url)")
    url = dashboard_url(api_url, args.prometheus, token)
    if args.url:
        print(url)
        return 0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as r:
            r.read()
    except urllib.error.HTTPError as e:
        return fail(f"the control plane at {api_url} does not serve the dashboard (HTTP {e.code})")
    except (urllib.error.URLError, OSError) as e:
        return fail(f"cannot reach the control plane at {api_url}: {e}")
    print(f"dashboard: {url}")
    if not webbrowser.open(url):
        print("no browser could be started here; open the URL above")
    return 0
