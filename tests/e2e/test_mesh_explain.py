"""`sailmesh explain` against the Bookinfo demo mesh (real Envoy): its answers checked against real requests.

For every Bookinfo routing file Istio ships (../shared/conformance/bookinfo/virtual-service-*.yaml and
fault-injection-details-v1.yaml) the test applies the file, waits until every proxy is SYNCED on the new
version, asks `explain -o json` what a request would do, and sends the same request through the source's
sidecar: the status code, and for reviews the pod that answered (its `podname`), must be what explain said.

That loop's `apply` and `delete`, and every `explain -o json` here, run through the CLI's own main() in this
process (cli_here) rather than in a new interpreter each (~0.8 s of start-up apiece, 51 in the loop); a probe's
requests go four at a time (the two delayed ratings requests wait their 7 s together). The other CLI calls
here run `sailmesh` as a user does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sailmesh.cli.demo import BOOKINFO
from sailmesh.cli.main import main as cli_main
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

pytestmark = pytest.mark.e2e
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

ALLOW_GET_FROM_PRODUCTPAGE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}
    to:
    - operation: {methods: ["GET"]}
"""

DR_REVIEWS_V1_ONLY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    state = tmp_path_factory.mktemp("explain") / "state"
    with RunningMesh(str(state), dirs=[os.path.join(BOOKINFO, "mesh"), os.path.join(BOOKINFO, "networking")],
                     extra=["--proxy-concurrency", "1"]) as m:
        yield m


def proxies(mesh: RunningMesh) -> list[dict[str, Any]]:
    """The control plane's sync status (what `proxy-status -o json` prints), read from its API directly."""
    req = urllib.request.Request(mesh.api_url + "/debug/syncz", headers=mesh.api_headers)
    with NO_PROXY.open(req, timeout=10) as r:
        return list(json.loads(r.read()))


def ip_of(mesh: RunningMesh, name: str) -> str:
    return next(p["proxy"].split("~")[1] for p in proxies(mesh) if p["name"].startswith(name))


def settled(mesh: RunningMesh, after: int) -> None:
    """Every proxy on a config version newer than `after`, and SYNCED (its Envoy ACKed it)."""
    def ok() -> bool:
        ps = proxies(mesh)
        return len(ps) == 7 and all(int(p["version"]) > after and all(
            t.get("sent") and t.get("acked") == t.get("sent") for t in p["types"].values()) for p in ps)
    wait_for(ok, timeout=60, what="every proxy SYNCED on the new config")


def version(mesh: RunningMesh) -> int:
    return max(int(p["version"]) for p in proxies(mesh))


def send(proxy_ip: str, method: str, url: str, headers: dict[str, str]) -> tuple[int, str, float]:
    """A request through a sidecar's HTTP proxy listener, as the app sends it: (status, podname, seconds)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{proxy_ip}:15001"}))
    req = urllib.request.Request(url, method=method, headers=headers)
    start = time.monotonic()
    try:
        with opener.open(req, timeout=30) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        pod = str(json.loads(body).get("podname", ""))
    except (ValueError, AttributeError):
        pod = ""
    return status, pod, time.monotonic() - start


def cli_here(mesh: RunningMesh, *args: str) -> str:
    """`sailmesh ARGS --state-dir STATE` run by the CLI's main() in this process: the same code and the same output
    as `mesh.cli(..., check=True)` without starting an interpreter; a non-zero exit fails with what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([*args, "--state-dir", mesh.state_dir])
    if code != 0:
        raise AssertionError(f"sailmesh {' '.join(args)} failed ({code}):\n{out.getvalue()}{err.getvalue()}")
    return out.getvalue()


def explain(mesh: RunningMesh, source: str, method: str, url: str, headers: dict[str, str]) -> dict[str, Any]:
    args = ["explain", "--from", source, method, url, "-o", "json"]
    for k, v in headers.items():
        args += ["-H", f"{k}:{v}"]
    return dict(json.loads(cli_here(mesh, *args)))


def predicted(ex: dict[str, Any]) -> tuple[set[int], dict[str, float], float]:
    """From explain's answer: the possible status codes, pods by weight, and the injected delay in seconds."""
    faults = ex.get("route", {}).get("faults", [])
    delay = sum(float(f.split()[1].rstrip("s")) for f in faults if f.startswith("delay") and " 100% " in f)
    for f in faults:
        if f.startswith("abort") and " 100% " in f:
            return {int(f.split()[3])}, {}, delay
    statuses, pods = set(), {}
    for c in ex["clusters"]:
        weight = float(c["weight"].rstrip("%"))
        if weight == 0:
            continue
        usable = [e for e in c["endpoints"] if e["eds_health"] == "HEALTHY" and not e["outlier_ejected"]]
        if not usable:
            statuses.add(503)
        for e in usable:
            authz = e.get("authorization", {})
            statuses.add(403 if authz.get("allowed") is False else 200)
            pods[e["proxy"].split(".")[0]] = weight
    return statuses, pods, delay


# file -> probes: (source proxy, method, URL, headers)
REVIEWS = ("productpage-v1-0", "GET", "http://reviews:9080/reviews/0")
RATINGS = ("reviews-v2-0", "GET", "http://ratings:9080/ratings/0")
DETAILS = ("productpage-v1-0", "GET", "http://details:9080/details/0")
JASON = {"end-user": "jason"}
ROUTING_FILES = {
    "virtual-service-all-v1.yaml": [(*REVIEWS, {}), (*RATINGS, {}), (*DETAILS, {})],
    "virtual-service-reviews-v3.yaml": [(*REVIEWS, {})],
    "virtual-service-reviews-50-v3.yaml": [(*REVIEWS, {})],
    "virtual-service-reviews-80-20.yaml": [(*REVIEWS, {})],
    "virtual-service-reviews-90-10.yaml": [(*REVIEWS, {})],
    "virtual-service-reviews-v2-v3.yaml": [(*REVIEWS, {})],
    "virtual-service-reviews-test-v2.yaml": [(*REVIEWS, JASON), (*REVIEWS, {})],
    "virtual-service-reviews-jason-v2-v3.yaml": [(*REVIEWS, JASON), (*REVIEWS, {"end-user": "mary"})],
    "virtual-service-ratings-test-abort.yaml": [(*RATINGS, JASON), (*RATINGS, {})],
    "virtual-service-ratings-test-delay.yaml": [(*RATINGS, JASON), (*RATINGS, {})],
    "virtual-service-details-v2.yaml": [(*DETAILS, {})],
    "virtual-service-ratings-db.yaml": [(*REVIEWS, {}), (*RATINGS, {})],
    "virtual-service-ratings-mysql.yaml": [(*RATINGS, {})],
    "virtual-service-ratings-mysql-vm.yaml": [(*RATINGS, {})],
    "fault-injection-details-v1.yaml": [(*DETAILS, {})],
}


def check_probe(mesh: RunningMesh, name: str, probe: tuple[str, str, str, dict[str, str]]) -> None:
    source, method, url, headers = probe
    ex = explain(mesh, source, method, url, headers)
    statuses, pods, delay = predicted(ex)
    assert statuses, (name, ex)
    n = 20 if len(pods) > 1 else 2
    ip = ip_of(mesh, source)
    with ThreadPoolExecutor(max_workers=4) as pool:  # each request is independent: four at a time
        seen = list(pool.map(lambda _: send(ip, method, url, headers), range(n)))
    what = f"{name}: {method} {url} {headers} from {source}: explain said {statuses} {pods} ({ex['result']})"
    assert {s for s, _, _ in seen} <= statuses, f"{what}; real: {seen}"
    served = {p for _, p, _ in seen if p}
    if served:
        assert served <= set(pods), f"{what}; served by {served}"
        # every destination with at least half the traffic answers in 20 requests (miss: 2^-20)
        assert {p for p, w in pods.items() if w >= 50} <= served, f"{what}; served by {served}"
    if delay:
        assert min(t for _, _, t in seen) >= delay * 0.9, f"{what}; took {[t for _, _, t in seen]}"


@pytest.mark.timeout(900)
def test_explain_matches_real_requests_for_every_bookinfo_routing_file(mesh: RunningMesh,
                                                                       conformance: pathlib.Path) -> None:
    folder = conformance / "bookinfo"
    shipped = {p.name for p in folder.glob("virtual-service-*.yaml")} | {"fault-injection-details-v1.yaml"}
    assert shipped == set(ROUTING_FILES), "a routing file without probes (or probes for a file Istio dropped)"
    for name, probes in ROUTING_FILES.items():
        before = version(mesh)
        cli_here(mesh, "apply", "-f", str(folder / name))
        settled(mesh, before)
        for probe in probes:
            check_probe(mesh, name, probe)
        print(f"{name}: {len(probes)} probes agree", flush=True)
        before = version(mesh)
        cli_here(mesh, "delete", "-f", str(folder / name))
        settled(mesh, before)


def test_explain_steps_authorization_and_errors(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    out = mesh.cli("explain", "--from", "productpage-v1-0", "GET", "http://reviews:9080/reviews/0",
                   "-H", "end-user:jason", check=True).stdout
    for words in ("Listener virtualOutbound", "Virtual host reviews.default.svc.cluster.local:9080",
                  "MATCH route 0", "Cluster outbound|9080||reviews.default.svc.cluster.local",
                  "ISTIO_MUTUAL", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "Result:"):
        assert words in out, out

    # authorization at the destination, and the policy that decided, as real requests see it
    policy = tmp_path / "authz.yaml"
    policy.write_text(ALLOW_GET_FROM_PRODUCTPAGE)
    before = version(mesh)
    mesh.cli("apply", "-f", str(policy), check=True)
    settled(mesh, before)
    allowed = explain(mesh, "productpage-v1-0", "GET", "http://reviews:9080/reviews/0", {})
    denied = explain(mesh, "details-v1-0", "GET", "http://reviews:9080/reviews/0", {})
    steps = allowed["clusters"][0]["endpoints"][0]["authorization"]["steps"]
    assert steps[0]["policy"] == "reviews-viewer.default", steps
    assert "403" in denied["result"], denied["result"]
    check_probe(mesh, "authz", ("productpage-v1-0", "GET", "http://reviews:9080/reviews/0", {}))
    check_probe(mesh, "authz", ("details-v1-0", "GET", "http://reviews:9080/reviews/0", {}))
    check_probe(mesh, "authz", ("productpage-v1-0", "POST", "http://reviews:9080/reviews/0", {}))
    # x authz check: the same rules, readable (istioctl x authz check)
    table = mesh.cli("x", "authz", "check", "reviews-v1-0", check=True).stdout
    row = next(line for line in table.splitlines() if "reviews-viewer.default" in line)
    assert row.split()[0] == "ALLOW" and "peer spiffe://cluster.local/ns/default/sa/bookinfo-productpage" in row \
        and row.endswith("method GET"), table
    rows = json.loads(mesh.cli("x", "authz", "check", "reviews-v2-0", "-o", "json", check=True).stdout)
    assert {(r["action"], r["policy"]) for r in rows} == {("ALLOW", "reviews-viewer.default")}, rows
    assert "no authorization policies apply" in mesh.cli("x", "authz", "check", "ratings-v1-0", check=True).stdout
    missing = mesh.cli("x", "authz", "check", "nope")
    assert missing.returncode == 1 and "ratings-v1-0.default" in missing.stderr
    before = version(mesh)
    mesh.cli("delete", "-f", str(policy), check=True)
    settled(mesh, before)

    # a resource both in a watched directory and applied: apply, get and delete say which copy is in force
    dr = tmp_path / "dr.yaml"
    dr.write_text(DR_REVIEWS_V1_ONLY)
    out = mesh.cli("apply", "-f", str(dr), check=True).stdout
    assert "DestinationRule default/reviews" in out and "overrides the watched directory's copy" in out, out
    got = mesh.cli("get", "dr", "reviews")
    assert got.returncode == 0 and "DestinationRule default/reviews: the applied copy is in force (overrides the " \
        "watched directory's copy in" in got.stderr, got.stderr
    assert "in force" not in mesh.cli("get", "dr", "ratings", check=True).stderr  # only in the file: no note
    out = mesh.cli("delete", "-f", str(dr), check=True).stdout
    assert "deleted; the copy in" in out and "is in force now" in out, out
    assert "in force" not in mesh.cli("get", "dr", "reviews", check=True).stderr

    # the gateway: its listener on the request's port, the Bookinfo Gateway's routes
    gw = explain(mesh, "istio-ingressgateway", "GET", f"{mesh.gateway_url()}/productpage", {})
    assert gw["route"]["config"] == "bookinfo.default" and "productpage-v1-0" in gw["result"], gw
    nr = explain(mesh, "istio-ingressgateway", "GET", f"{mesh.gateway_url()}/nowhere", {})
    assert "404" in nr["result"] and all(not t["matched"] for t in nr["routes_tried"]), nr

    # errors: non-zero exits that say what to do
    r = mesh.cli("explain", "--from", "nope", "GET", "http://reviews:9080/")
    assert r.returncode == 1 and "reviews-v1-0.default" in r.stderr, r.stderr  # names the proxies that exist
    r = mesh.cli("explain", "--from", "productpage-v1-0", "GET", "http://reviews:9080/", "-H", "bad")
    assert r.returncode == 2 and "NAME:VALUE" in r.stderr, r.stderr
    r = mesh.cli("explain", "--from", "istio-ingressgateway", "GET", "http://127.0.0.1:9/")
    assert r.returncode == 1 and "no listener on port 9" in r.stdout, r.stdout
    r = mesh.cli("explain", "--help", check=True)
    assert "sailmesh explain --from productpage-v1-0 GET" in r.stdout


def test_explain_and_authz_check_are_walked_by_the_control_plane(mesh: RunningMesh) -> None:
    """The control plane walks (POST /api/v1/explain, GET /api/v1/authz): the CLI process loads neither the walk
    nor Envoy's protos, grpc or YAML (a module list, not a timing: docs/troubleshooting.md has the timings)."""
    from tests.unit.test_cli_startup import heavy, imported

    request = ("GET", "http://reviews:9080/reviews/0", "-H", "end-user:jason")
    for args in (("explain", "--from", "productpage-v1-0", *request), ("x", "authz", "check", "reviews-v1-0"),
                 ("analyze",)):
        mods = imported(*args, state_dir=mesh.state_dir)
        walk = sorted(m for m in mods if m.startswith("sailmesh.explain.") and m != "sailmesh.explain.refs")
        assert not heavy(mods) and not walk, (args, heavy(mods), walk)
    assert "Result:" in mesh.cli("explain", "--from", "productpage-v1-0", "GET", "http://reviews:9080/reviews/0",
                                 check=True).stdout


def test_bug_report_has_everything_and_no_secret(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    import base64
    import tarfile

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    secret = tmp_path / "secret.yaml"
    secret.write_text(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                                  "metadata": {"name": "leaky", "namespace": "istio-system"},
                                  "data": {"tls.key": base64.b64encode(key.encode()).decode()},
                                  "stringData": {"password": "hunter2-hunter2"}}))
    mesh.cli("apply", "-f", str(secret), check=True)
    # an app that logs what it should not: the report must still not carry it
    with open(os.path.join(mesh.state_dir, "logs", "productpage-v1-0.default.log"), "a", encoding="utf-8") as fh:
        fh.write(f"debug: key\n{key}\nAuthorization: Bearer leaked-token-1234567890\n")

    archive = tmp_path / "report.tar.gz"
    out = mesh.cli("bug-report", "-o", str(archive), check=True).stdout
    assert str(archive) in out and "redacted" in out
    with tarfile.open(archive) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore
    names = set(files)
    assert {"config.yaml", "version.txt", "proxy-status.txt", "proxy-status.json", "analyze.txt",
            "logs/controlplane.log", "logs/supervisor.log"} <= names, sorted(names)
    assert sum(n.endswith("envoy-config_dump.json") for n in names) == 7, sorted(names)
    assert sum(n.endswith("controlplane-config.json") for n in names) == 7
    assert b"SYNCED" in files["proxy-status.txt"] and b"kind: Secret" in files["config.yaml"]

    everything = b"\n".join(files.values())
    forbidden = [key.splitlines()[1].encode(), b"PRIVATE KEY", b"hunter2-hunter2", b"leaked-token-1234567890",
                 base64.b64encode(key.encode())[:40]]
    for folder, _, found in os.walk(mesh.state_dir):  # the mesh's own secrets: API token, join tokens, CA key
        for name in found:
            path = os.path.join(folder, name)
            if name in ("api-token", "join-token"):
                forbidden.append(open(path, "rb").read().strip())
            elif name == "ca-key.pem":
                forbidden.extend(line for line in open(path, "rb").read().splitlines() if b"-----" not in line)
            elif name == "xds-cert.json":
                for res in json.load(open(path, encoding="utf-8"))["resources"]:
                    forbidden.append(res["tlsCertificate"]["privateKey"]["inlineBytes"].encode()[:40])
    assert len(forbidden) > 10, forbidden
    leaked = [f for f in forbidden if f and f in everything]
    assert not leaked, f"{len(leaked)} secret values in the archive"

    empty = tmp_path / "none"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "sailmesh", "bug-report", "--state-dir", str(empty)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and "needs a running mesh" in r.stderr, r.stderr


def test_verify_install_and_precheck_against_the_running_mesh(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    envoy = json.loads(mesh.cli("version", "-o", "json", check=True).stdout)["envoy"]
    r = mesh.cli("verify-install")
    assert r.returncode == 0 and "all" in r.stdout and "checks passed" in r.stdout, r.stdout + r.stderr
    for name in ("reviews-v1-0.default", "istio-ingressgateway-0.istio-system"):
        assert any(line.startswith("OK") and f"{name} sync" in line and line.endswith("SYNCED")
                   for line in r.stdout.splitlines()), r.stdout
    assert r.stdout.count(f"Envoy {envoy}") == 7, r.stdout  # every proxy runs the installed Envoy
    assert "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" in r.stdout
    assert "FAIL" not in r.stdout

    # precheck refuses the running mesh's state dir and its ports, naming the fix
    pre = mesh.cli("x", "precheck", "--http-port", mesh.api_url.rsplit(":", 1)[1])
    assert pre.returncode == 1 and "FAIL  no mesh running there" in pre.stdout and "sailmesh down" in pre.stdout
    assert "FAIL  ports free" in pre.stdout, pre.stdout

    empty = tmp_path / "none"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "sailmesh", "verify-install", "--state-dir", str(empty)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "fix: start the mesh" in r.stderr, r.stderr
