"""Hypothesis strategies for untrusted input: Istio-shaped documents (mutated samples and kind-guided random
ones), YAML text (valid, truncated, corrupted), HTTP API requests and xDS request scripts."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml
from hypothesis import strategies as st

from sailmesh.api.parse import load_file
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "sailmesh" / "samples"
CONFORMANCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance" / "validation"


def seed_documents(with_conformance: bool = False) -> list[dict[str, Any]]:
    """Every resource of the packaged samples (and of Istio's validation test data when asked and present)."""
    files = sorted(SAMPLES.rglob("*.yaml"))
    if with_conformance and CONFORMANCE.is_dir():
        files += sorted(CONFORMANCE.glob("*/*.yaml"))
    docs = []
    for f in files:
        for r in load_file(str(f)).resources:
            raw = {k: v for k, v in dict(r.raw).items() if not k.startswith("_")}
            docs.append(json.loads(json.dumps(raw, default=str)))
    return docs


def _keys(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(str(k))
            _keys(v, out)
    elif isinstance(node, list):
        for v in node:
            _keys(v, out)
    return out


SEEDS = seed_documents(with_conformance=True)
FIELD_NAMES = sorted(_keys(SEEDS, set()))
KINDS = sorted({(d.get("apiVersion", ""), d.get("kind", "")) for d in SEEDS} | {
    ("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "Gateway"), ("networking.istio.io/v1", "ServiceEntry"),
    ("networking.istio.io/v1", "Sidecar"), ("networking.istio.io/v1", "WorkloadEntry"),
    ("security.istio.io/v1", "AuthorizationPolicy"), ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "RequestAuthentication"), ("telemetry.istio.io/v1", "Telemetry"),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"), ("networking.istio.io/v1beta1", "VirtualService"),
    ("v1", "Namespace"), ("v1", "Service"), ("sailmesh.io/v1alpha1", "LocalWorkload"),
})

# Strings that mean something to a validator: hosts, CIDRs, durations, ports, regexes, names, and hostile ones.
INTERESTING = [
    "", " ", "*", "*.example.com", "a.*.com", "reviews", "reviews.default.svc.cluster.local", "default/reviews",
    "./x", "~", "10.0.0.1", "10.0.0.0/8", "10.0.0.1/33", "::1", "fe80::/10", "1.2.3", "0s", "1s", "1.5s", "-1s",
    "1h", "100ms", "10", "0", "-1", "65535", "65536", "80", "http", "HTTP", "TCP", "TLS", "GRPC", "ISTIO_MUTUAL",
    "SIMPLE", "MUTUAL", "PASSTHROUGH", "ROUND_ROBIN", "STRICT", "PERMISSIVE", "ALLOW", "DENY", "CUSTOM", "v1",
    "v2", "GET", "/", "/api", "^/a(.*)$", "(", "[", "\\", "%", "%00", "\n", "\r\n", "\t", "\x00", "\x1b[2J",
    "ünïcødé", "😀", "a" * 64, "a" * 254, "x" * 5000, "spiffe://cluster.local/ns/default/sa/x", "istio-system",
    "kind: x", "{{", "null", "true", "NaN", "1e400", "0x10", "cluster.local", "outbound|80||reviews",
]

texts = st.one_of(st.sampled_from(INTERESTING), st.text(max_size=24))
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(INTERESTING[:30]), st.text(max_size=10))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**64, max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False), texts,
)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=24,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn, seeds: list[dict[str, Any]] | None = None) -> Any:
    """A sample resource with a few subtrees replaced, removed, added, wrapped or retyped."""
    doc = json.loads(json.dumps(draw(st.sampled_from(seeds or SEEDS))))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "wrap", "text"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent[last], dict):
            parent[last][draw(keys)] = draw(json_values)
        elif action == "add" and isinstance(parent[last], list):
            parent[last].append(draw(json_values))
        elif action == "wrap":
            parent[last] = [parent[last]] if draw(st.booleans()) else {draw(keys): parent[last]}
        else:
            parent[last] = draw(texts)
    return doc


@st.composite
def random_documents(draw: st.DrawFn) -> dict[str, Any]:
    """An Istio-looking resource of a known kind whose spec is random (field names from the samples)."""
    api_version, kind = draw(st.sampled_from(KINDS))
    meta = draw(st.fixed_dictionaries({"name": texts}, optional={"namespace": texts, "labels": json_values,
                                                                 "annotations": json_values}))
    return {"apiVersion": api_version, "kind": kind, "metadata": meta,
            "spec": draw(st.dictionaries(keys, json_values, max_size=6))}


documents = st.one_of(mutated_documents(), random_documents(), json_values)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """Config file text: documents as YAML or JSON, sometimes truncated or with bytes spliced in."""
    docs = draw(st.lists(documents, min_size=1, max_size=3))
    if draw(st.booleans()):
        text = "---\n".join(yaml.safe_dump(d, allow_unicode=True, sort_keys=False) for d in docs)
    else:
        text = json.dumps(docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs})
    edit = draw(st.sampled_from(["none", "truncate", "splice", "indent"]))
    if edit == "truncate" and text:
        text = text[:draw(st.integers(0, len(text)))]
    elif edit == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["\n  - ", ": ", "{", "]", "&a ", "*a", "!!python/object:os.system ",
                                                 "\t", "---\n", "%YAML 1.1\n", "? ", "\x00", "'"])) + text[at:]
    elif edit == "indent":
        text = "\n".join(("  " if i % 3 == 1 else "") + line for i, line in enumerate(text.split("\n")))
    return text


config_texts = st.one_of(yaml_texts(), st.text(max_size=200))

# -- HTTP API requests ---------------------------------------------------------------------------------------
API_PATHS = ["/api/v1/apply", "/api/v1/delete", "/api/v1/resources", "/api/v1/live", "/api/v1/rejected",
             "/api/v1/join-tokens", "/debug/syncz", "/debug/config_dump", "/version", "/ready", "/metrics"]
QUERY_KEYS = ["kind", "namespace", "name", "proxyID", "types", "token", "line", "dryRun"]


@st.composite
def api_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.sampled_from(["documents", "documents-raw", "json", "yaml", "bytes", "deep", "token"]))
    if choice == "documents":
        entries = draw(st.lists(st.fixed_dictionaries(
            {"doc": documents}, optional={"file": st.one_of(texts, json_values), "line": json_values}), max_size=3))
        body: Any = {"documents": entries}
        for flag in ("dryRun", "analyze"):
            if draw(st.booleans()):
                body[flag] = draw(st.one_of(st.booleans(), json_values))
        return json.dumps(body).encode()
    if choice == "documents-raw":
        return json.dumps({"documents": draw(json_values)}).encode()
    if choice == "json":
        return json.dumps(draw(json_values)).encode()
    if choice == "yaml":
        return draw(yaml_texts()).encode()
    if choice == "deep":
        n = draw(st.integers(50, 5000))
        return draw(st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n]))
    if choice == "token":
        return json.dumps(draw(st.fixed_dictionaries({}, optional={"namespace": json_values,
                                                                   "serviceAccount": json_values}))).encode()
    return draw(st.binary(max_size=200))


POSTS = {"/api/v1/apply", "/api/v1/delete", "/api/v1/join-tokens"}


@st.composite
def api_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-aimed requests (a route with its method and the token) with malformed parts."""
    if draw(st.integers(0, 9)) < 8:
        path = draw(st.sampled_from(API_PATHS + sorted(POSTS) * 3))
    else:
        path = draw(st.one_of(st.sampled_from(API_PATHS).map(lambda p: p + "/x"),
                              st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=20)
                              .map(lambda p: "/" + p)))
    method = "POST" if path in POSTS else "GET"
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    return {
        "method": method,
        "path": path,
        "query": draw(st.dictionaries(st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=6)), texts,
                                      max_size=3)),
        "content_type": draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "application/yaml",
                                                                           "application/x-www-form-urlencoded"])),
        "body": draw(st.one_of(st.just(b""), api_bodies())) if method != "GET" else b"",
        "auth": draw(st.sampled_from(["token"] * 12 + ["none", "wrong"])),
    }


# -- xDS requests ----------------------------------------------------------------------------------------------
TYPE_URLS = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET]
type_urls = st.one_of(st.sampled_from(TYPE_URLS), st.sampled_from(["", "type.googleapis.com/foo.Bar"]), texts)
NODE_IDS = ["sidecar~127.0.1.1~productpage-v1-0.default~default.svc.cluster.local",
            "sidecar~127.0.1.3~reviews-v1-0.default~default.svc.cluster.local",
            "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local"]
META_KEYS = ["LABELS", "NAMESPACE", "NAME", "SERVICE_ACCOUNT", "APP_PORTS", "PROXY_TYPE", "CLUSTER_ID",
             "ISTIO_VERSION", "INTERCEPTION_MODE", "WORKLOAD_NAME", "MESH_ID"]
node_ids = st.one_of(st.sampled_from(NODE_IDS), st.sampled_from(NODE_IDS), st.sampled_from(NODE_IDS),
                     st.sampled_from(NODE_IDS).map(lambda i: i.replace("127.0.1.1", "x")),
                     st.builds(lambda t, ip, n, d: f"{t}~{ip}~{n}~{d}", st.sampled_from(["sidecar", "router", "x"]),
                               texts, texts, texts),
                     texts, st.just("a" * 1100))
struct_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), texts,
              st.dictionaries(st.sampled_from(["app", "version", "a"]), texts, max_size=3).map(json.dumps)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)), max_leaves=8)
metadata = st.one_of(
    st.just({}), st.just({"LABELS": json.dumps({"app": "reviews", "version": "v1"}), "APP_PORTS": "9080:41000"}),
    st.dictionaries(st.one_of(st.sampled_from(META_KEYS), texts), struct_values, max_size=5))
names = st.lists(st.one_of(st.sampled_from(["*", "outbound|9080||reviews.default.svc.cluster.local",
                                            "9080", "virtualInbound", "default", "ROOTCA"]), texts), max_size=6)
nonces = st.sampled_from(["", "", "last", "last", "stale"])
error_details = st.one_of(st.none(), st.fixed_dictionaries({"code": st.integers(0, 20), "message": texts}))


@st.composite
def xds_steps(draw: st.DrawFn, delta: bool) -> dict[str, Any]:
    step: dict[str, Any] = {"type_url": draw(type_urls), "nonce": draw(nonces), "error": draw(error_details),
                            "version": draw(st.one_of(st.just(""), texts))}
    if delta:
        step["subscribe"] = draw(names)
        step["unsubscribe"] = draw(names)
        step["initial"] = draw(st.dictionaries(texts, texts, max_size=3))
    else:
        step["names"] = draw(names)
    return step


@st.composite
def xds_scripts(draw: st.DrawFn) -> dict[str, Any]:
    """One stream: a node (id, metadata) and a few requests; `last` nonces answer the last response received."""
    delta = draw(st.booleans())
    return {"delta": delta, "node_id": draw(node_ids), "metadata": draw(metadata),
            "steps": draw(st.lists(xds_steps(delta), min_size=1, max_size=6))}
