"""`sailmesh bug-report`: everything needed to debug the running mesh in one .tar.gz, secrets redacted.

The archive holds the mesh's config (every applied and watched resource; Secret data redacted), `version`,
`proxy-status`, `analyze`, for every connected proxy its Envoy config dump, /clusters, /certs, /server_info and the
config the control plane would send it now, and the logs of the control plane, agents, Envoys and apps.
Private keys, tokens and JWTs are replaced by markers; the CA key, the API token and join tokens are never read
into the archive (the state dir's files holding them are skipped, their values redacted wherever they appear).

  sailmesh bug-report                              # ./sailmesh-bug-report-<time>.tar.gz
  sailmesh bug-report -o /tmp/report.tar.gz
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from sailmesh.cli import redact
from sailmesh.cli.apiclient import call, get_text
from sailmesh.cli.common import add_state_dir, fail, running_mesh, state_dir
from sailmesh.cli.proxy_config import admin
from sailmesh.errors import PlatformError
from sailmesh.settings import ProxyPorts

# Files in the state dir that hold secrets: never archived (their values are redacted where they appear).
SECRET_FILES = ("api-token", "join-token", "join-tokens.json", "ca-key.pem", "xds-cert.json", "key.pem")
ENVOY_PAGES = {"config_dump.json": "/config_dump?include_eds", "clusters.json": "/clusters?format=json",
               "certs.json": "/certs", "server_info.json": "/server_info"}
CONTROL_PLANE_PAGE = "controlplane-config.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="", help="archive path (default ./sailmesh-bug-report-TIME.tar.gz)")
    parser.add_argument("--admin-port", type=int, default=ProxyPorts().admin, help="Envoy admin port (15000)")
    add_state_dir(parser)


def _secret_values(root: str) -> list[str]:
    """Values the archive must not contain: token files and key files whole, and from JSON files (the agent's
    xDS certificate) the strings under a private key."""
    out: list[str] = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name not in SECRET_FILES and not name.endswith("-key.pem"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as fh:
                    data = fh.read()
            except OSError:
                continue
            if name.endswith(".json"):
                with contextlib.suppress(ValueError):
                    out.extend(_private_strings(json.loads(data), False))
            else:
                out.append(data.strip())
                out.extend(line.strip() for line in data.splitlines() if len(line.strip()) >= 16)
    return out


def _private_strings(node: Any, inside: bool) -> Iterator[str]:
    """Strings under a key naming a private key or a token (privateKey, private_key, token)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _private_strings(v, inside or "private" in k.lower() or "token" in k.lower())
    elif isinstance(node, list):
        for v in node:
            yield from _private_strings(v, inside)
    elif isinstance(node, str) and inside and len(node) >= 8:
        yield node


def _cli(argv: list[str]) -> str:
    """Another verb's output (stdout and stderr), as the user would see it."""
    from sailmesh.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = int(e.code or 0) if not isinstance(e.code, str) else 1
    return out.getvalue() + err.getvalue() + f"\n(exit {code})\n"


def _documents(api_url: str) -> str:
    status, body = call(api_url, "GET", "/api/v1/live")
    if status != 200:
        return f"# the control plane answered HTTP {status}\n"
    docs = [redact.document(d) for d in body.get("items", []) if isinstance(d, dict)]
    # libyaml's emitter where PyYAML has it: the same YAML, 0.16 -> 0.04 CPU s for the demo's config
    return yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def collect(args: argparse.Namespace) -> dict[str, str]:
    """Archive path -> text, before redaction."""
    mesh = running_mesh(args)
    sd = state_dir(args)
    status, syncz = call(mesh.api_url, "GET", "/debug/syncz")
    files: dict[str, str] = {"proxy-status.json": json.dumps(syncz, indent=2)}
    common = ["--state-dir", sd]
    # I/O only: every proxy's pages (one request each) fetched at once, while this thread asks the rest
    with ThreadPoolExecutor(max_workers=16) as pool:
        pages = [pool.submit(_proxy_page, mesh.api_url, p, page, args.admin_port)
                 for p in (syncz if status == 200 else []) for page in (*ENVOY_PAGES, CONTROL_PLANE_PAGE)]
        files["config.yaml"] = _documents(mesh.api_url)
        files["version.txt"] = _cli(["version", *common])
        files["proxy-status.txt"] = _cli(["proxy-status", *common])
        files["analyze.txt"] = _cli(["analyze", *common])
        files.update(f.result() for f in pages)
    for folder in (os.path.join(sd, "logs"), sd):
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, entry)
            if os.path.isfile(path) and (entry.endswith(".log") or entry in ("mesh.json", "workloads.json")):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    files[f"logs/{entry}" if entry.endswith(".log") else entry] = fh.read()
    return files


def _proxy_page(api_url: str, p: dict[str, Any], page: str, admin_port: int) -> tuple[str, str]:
    """(archive path, text) of one page of one proxy: an Envoy admin page, or the config the control plane
    would send it now (CONTROL_PLANE_PAGE)."""
    node_id, name = str(p.get("proxy", "")), str(p.get("name", "") or p.get("proxy", ""))
    if page == CONTROL_PLANE_PAGE:
        try:  # the control plane's JSON text as it is (parsing and dumping it again cost 0.09 CPU s on the demo)
            _, want = get_text(api_url, "/debug/config_dump?" + urllib.parse.urlencode({"proxyID": node_id}))
        except PlatformError as e:
            return f"proxies/{name}/{page}", f"unreadable: {e}\n"
        return f"proxies/{name}/{page}", want
    ip = node_id.split("~")[1] if node_id.count("~") >= 2 else ""
    try:
        return f"proxies/{name}/envoy-{page}", admin(ip, admin_port, ENVOY_PAGES[page]).decode("utf-8", "replace")
    except PlatformError as e:
        return f"proxies/{name}/envoy-{page}", f"unreadable: {e}\n"


def write(path: str, files: dict[str, str], secrets: list[str]) -> int:
    """The redacted archive; returns the number of files."""
    stamp = time.time()
    # gzip level 3: on the demo's 3.5 MB (zlib alone) 0.024 CPU s, 311 kB; level 6 0.062 s, 256 kB; 9 0.164 s
    with tarfile.open(path, "w:gz", compresslevel=3) as tar:
        for name, content in sorted(files.items()):
            data = redact.text(content, secrets).encode()
            info = tarfile.TarInfo(f"sailmesh-bug-report/{name}")
            info.size, info.mtime, info.mode = len(data), int(stamp), 0o600
            tar.addfile(info, io.BytesIO(data))
    return len(files)


def run(args: argparse.Namespace) -> int:
    path = args.output or f"sailmesh-bug-report-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}.tar.gz"
    try:
        files = collect(args)
    except PlatformError as e:
        return fail(f"{e}; bug-report needs a running mesh (sailmesh up / sailmesh demo)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the archive is for the user's eyes first
    os.close(fd)
    n = write(path, files, _secret_values(state_dir(args)))
    print(f"wrote {path}: {n} files (private keys, tokens and Secret data redacted); "
          "look it over before you share it")
    return 0
