"""The Kubernetes Gateway API on the real kube-apiserver (issues 12 and 14): the Gateway API's own CRDs (the
sigs.k8s.io/gateway-api module's config/crd/standard, fetched from the Go module proxy into the cache), Bookinfo
(Istio's platform-kube/bookinfo.yaml) and Istio's gateway-api/bookinfo-gateway.yaml applied with kubectl, as
Istio's Bookinfo getting-started task does it:

- the control plane creates the default GatewayClass `istio` and, for the Gateway, its own gateway (ServiceAccount,
  Deployment and Service `bookinfo-gateway-istio`, owned by the Gateway), which the test node runs;
- the Lease holder writes the status to the status subresources: with the default LoadBalancer Service and no
  load-balancer controller the Gateway is Programmed=False (AddressNotAssigned), as Istio reports it on a cluster
  without one; after the task's `kubectl annotate gateway bookinfo-gateway networking.istio.io/service-type=
  ClusterIP` it is Programmed=True with the Service's host name as its address, and the HTTPRoute's parent is
  Accepted with its references resolved;
- /productpage answers 200 through that gateway;
- an HTTPRoute on that Gateway with a header match (`end-user: jason` -> reviews-v2) and weighted backendRefs
  (reviews-v1:reviews-v3 = 1:3) routes requests through the gateway's deployment as the client sees it.

The Bookinfo pods are not injected here (the namespace has no injection label): the gateway reaches them in plain
text, as Istio's auto mTLS does for workloads without a sidecar.
"""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import urllib.request
from typing import Any

import pytest

from sailmesh.processes import free_port
from sailmesh.testing import gatewayapi_crds
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_pod import ControlPlaneAddresses
from sailmesh.testing.waiting import await_for, random_loopback_block
from tests.conftest import CONFORMANCE
from tests.e2e import kube_support as ks
from tests.e2e.test_kube_bookinfo import _ok, _ready, control_plane_process, get, pods_ready

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)
BOOKINFO = CONFORMANCE / "bookinfo"
NS = "kt-gwapi"


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}


async def get_json(kube: KubeCluster, *args: str) -> dict[str, Any]:
    out = await ks.kubectl(kube, "get", *args, "-o", "json", check=False)
    return dict(json.loads(out)) if out.strip() else {}


async def install_gateway_api_crds(kube: KubeCluster) -> None:
    folder, why = await asyncio.to_thread(gatewayapi_crds.available)
    if folder is None:
        pytest.skip(why)
    await ks.kubectl(kube, "apply", "--server-side", "-f", str(folder))
    await ks.kubectl(kube, "wait", "--for=condition=Established", "crd", "gateways.gateway.networking.k8s.io",
                     "httproutes.gateway.networking.k8s.io", "gatewayclasses.gateway.networking.k8s.io",
                     "--timeout=60s")


@pytest.mark.timeout(900)  # a cluster start plus seven processes of Bookinfo and its gateway on a loaded machine
async def test_bookinfo_gateway_api_on_the_api_server_status_and_traffic(kube: KubeCluster,
                                                                        tmp_path: pathlib.Path) -> None:
    if not (BOOKINFO / "gateway-api" / "bookinfo-gateway.yaml").exists():
        pytest.skip("../shared/conformance/bookinfo not found")
    await install_gateway_api_crds(kube)
    for ns in ("istio-system", NS):
        await ks.kubectl(kube, "create", "namespace", ns, check=False)
    await ks.wait_service_account(kube, NS)
    # another module of this worker's shared cluster may have left the class created and Accepted: nothing to write
    existed = conditions(await get_json(kube, "gatewayclass", "istio")).get("Accepted", {}).get("status") == "True"
    try:
        await run(kube, tmp_path, 0 if existed else 1)
    finally:  # the cluster may be shared with other modules: leave no Gateway (nor its gateway) behind
        await ks.kubectl(kube, "delete", "namespace", NS, "--wait=false", check=False)


async def run(kube: KubeCluster, tmp_path: pathlib.Path, class_writes_min: int) -> None:
    with control_plane_process(kube, tmp_path, free_port()) as (http, xds, ca), ks.short_dir("kg-") as short:
        await await_for(lambda: asyncio.to_thread(_ready, http), timeout=120, what="the control plane ready")
        async with ks.running_node(kube, "node-gwapi", random_loopback_block(), short) as node:
            node.control_plane = ControlPlaneAddresses(f"127.0.0.1:{xds}", f"127.0.0.1:{ca}")

            # the default GatewayClass, made by the control plane and Accepted
            async def class_accepted() -> bool:
                gc = await get_json(kube, "gatewayclass", "istio")
                return conditions(gc).get("Accepted", {}).get("status") == "True"

            await await_for(class_accepted, timeout=60, interval=0.5, what="GatewayClass istio Accepted")
            gc = await get_json(kube, "gatewayclass", "istio")
            assert gc["spec"]["controllerName"] == "istio.io/gateway-controller"

            await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "platform-kube" / "bookinfo.yaml"))
            await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "gateway-api" / "bookinfo-gateway.yaml"))

            # LoadBalancer by default; no load-balancer controller here: Istio's AddressNotAssigned
            async def pending() -> dict[str, Any] | None:
                gw = await get_json(kube, "gateway", "bookinfo-gateway", "-n", NS)
                programmed = conditions(gw).get("Programmed", {})
                return gw if programmed.get("reason") == "AddressNotAssigned" else None

            gw = await await_for(pending, timeout=60, interval=0.5, what="Gateway Programmed=False pending address")
            assert conditions(gw)["Programmed"]["status"] == "False"
            assert conditions(gw)["Accepted"]["status"] == "True"
            svc = await get_json(kube, "service", "bookinfo-gateway-istio", "-n", NS)
            assert svc["spec"]["type"] == "LoadBalancer"
            assert svc["metadata"]["ownerReferences"][0]["kind"] == "Gateway"

            # Istio's getting-started step for clusters without a load balancer
            await ks.kubectl(kube, "annotate", "gateway", "bookinfo-gateway", "-n", NS,
                             "networking.istio.io/service-type=ClusterIP")

            async def programmed() -> dict[str, Any] | None:
                gw = await get_json(kube, "gateway", "bookinfo-gateway", "-n", NS)
                return gw if conditions(gw).get("Programmed", {}).get("status") == "True" else None

            await await_for(programmed, timeout=60, interval=0.5, what="Gateway Programmed=True")
            shown = await ks.kubectl(kube, "get", "gateway", "bookinfo-gateway", "-n", NS, "-o", "yaml")
            print("\n" + shown)
            gw = await get_json(kube, "gateway", "bookinfo-gateway", "-n", NS)
            host = f"bookinfo-gateway-istio.{NS}.svc.cluster.local"
            assert gw["status"]["addresses"] == [{"type": "Hostname", "value": host}]
            assert conditions(gw)["Programmed"]["message"] == \
                f"Resource programmed, assigned to service(s) {host}:80"
            assert all(c["lastTransitionTime"] for c in gw["status"]["conditions"])
            [listener] = gw["status"]["listeners"]
            assert listener["attachedRoutes"] == 1
            assert {c["type"]: c["status"] for c in listener["conditions"]} == {
                "Accepted": "True", "Programmed": "True", "ResolvedRefs": "True"}
            route = await get_json(kube, "httproute", "bookinfo", "-n", NS)
            [parent] = route["status"]["parents"]
            assert parent["controllerName"] == "istio.io/gateway-controller"
            assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True",
                                                                             "ResolvedRefs": "True"}
            assert (await get_json(kube, "service", "bookinfo-gateway-istio", "-n", NS))["spec"]["type"] == \
                "ClusterIP"

            # traffic through the Gateway's own gateway, which the test node runs
            async def all_ready() -> bool:
                return len(await pods_ready(kube, NS)) == 7

            await await_for(all_ready, timeout=300, interval=1.0, what="Bookinfo's six pods and the gateway Ready")

            async def productpage() -> tuple[int, str] | None:  # at the gateway's current pod (see gateway_pod_ip)
                ip = await gateway_pod_ip(kube)
                return await _ok(f"http://{ip}:8080/productpage") if ip else None

            _, body = await await_for(productpage, timeout=120, interval=0.5,
                                      what="/productpage 200 through the Gateway's gateway")
            assert "Comedy of Errors" in body

            # the status is written when it changes, not again for its own watch event (which would write it
            # again and again while the pods started and the traffic flowed)
            log = (tmp_path / "cp.log").read_text(errors="replace")
            writes = log.count(f"wrote the status of Gateway {NS}/bookinfo-gateway")
            class_writes = log.count("wrote the status of GatewayClass istio")
            print(f"status writes: Gateway {writes}, GatewayClass {class_writes}")
            assert 2 <= writes <= 8 and class_writes_min <= class_writes <= 3

            await routed_through_the_gateway(kube)


REVIEWS_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-gw}
spec:
  parentRefs: [{name: bookinfo-gateway}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /reviews}, headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /reviews}}]
    backendRefs: [{name: reviews-v1, port: 9080, weight: 1}, {name: reviews-v3, port: 9080, weight: 3}]
"""


def reviews_served_by(url: str, headers: dict[str, str] | None = None) -> str:
    """v1, v2 or v3: the reviews version that answered GET url (its pod name, else its stars: v1 none, v2 black,
    v3 red); "" on failure."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener.addheaders = list((headers or {}).items())
    status, body = get(url, opener)
    if status != 200:
        return ""
    doc = json.loads(body)
    pod = str(doc.get("podname", ""))
    if pod.startswith("reviews-v"):
        return pod[len("reviews-"):len("reviews-") + 2]
    rating = (doc.get("reviews") or [{}])[0].get("rating")
    return "v1" if rating is None else {"black": "v2", "red": "v3"}.get(str(rating.get("color")), "")


async def gateway_pod_ip(kube: KubeCluster) -> str | None:
    """The address of the Gateway's Ready pod (its Deployment rolls out a new pod, at a new address, when the
    service-type annotation changes its template: the address /productpage used may be gone by now)."""
    # only once the rollout is over (the Deployment's status says every replica is updated and ready, and one pod is
    # left): a pod picked while the old one still answered was deleted under the traffic (CI: RemoteDisconnected)
    dep = await get_json(kube, "deployment", "bookinfo-gateway-istio", "-n", NS)
    st = dep.get("status") or {}
    if st.get("observedGeneration") != dep["metadata"].get("generation") or \
            not st.get("replicas") == st.get("updatedReplicas") == st.get("readyReplicas") == 1:
        return None
    pods = (await get_json(kube, "pods", "-n", NS, "-l", "gateway.networking.k8s.io/gateway-name=bookinfo-gateway"))
    items = list(pods.get("items") or ())
    ready = [p["status"].get("podIP") for p in items if not p["metadata"].get("deletionTimestamp")
             and {c["type"]: c["status"] for c in p["status"].get("conditions") or ()}.get("Ready") == "True"]
    return ready[0] if len(items) == 1 and len(ready) == 1 and ready[0] else None


async def routed_through_the_gateway(kube: KubeCluster) -> None:
    """Requests through the Gateway's deployment follow an HTTPRoute's header match and backendRef weights (Gateway
    API HTTPRoute: a rule with more header matches takes precedence over one with the same path and fewer; traffic
    is split over backendRefs in proportion to their weights). Istio's bookinfo-versions.yaml gives each reviews
    version its Service."""
    await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "platform-kube" / "bookinfo-versions.yaml"))
    await ks.kubectl(kube, "apply", "-n", NS, "-f", "-", input=REVIEWS_ROUTE)
    jason = {"end-user": "jason"}
    url = ""

    async def routed() -> bool:
        nonlocal url
        ip = await gateway_pod_ip(kube)
        url = f"http://{ip}:8080/reviews/0"
        return ip is not None and await asyncio.to_thread(reviews_served_by, url, jason) == "v2"

    await await_for(routed, timeout=120, interval=0.5, what="the HTTPRoute's header match at the gateway")

    async def parents() -> list[Any] | None:  # the Lease holder writes the status apart from the config push
        return ((await get_json(kube, "httproute", "reviews-gw", "-n", NS)).get("status") or {}).get("parents")

    [parent] = await await_for(parents, timeout=60, interval=0.5, what="the HTTPRoute's status")
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}
    with_header = [await asyncio.to_thread(reviews_served_by, url, jason) for _ in range(20)]
    assert with_header == ["v2"] * 20, with_header
    # weights 1:3 over 200 requests: v3 expected 150 (sd 6.1); +-27 (4.4 sd) excludes an even split (100)
    split = collections.Counter([await asyncio.to_thread(reviews_served_by, url) for _ in range(200)])
    print(f"reviews through the Gateway, weights v1:v3 = 1:3: {dict(split)}")
    assert set(split) == {"v1", "v3"} and 123 <= split["v3"] <= 177, split
    await another_controllers_parent_is_kept(kube, parent)


async def another_controllers_parent_is_kept(kube: KubeCluster, ours: dict[str, Any]) -> None:
    """A route attached to another implementation's Gateway too carries that controller's parent status; ours is
    rewritten beside it, never over it (Istio's createRouteStatus: "we don't own this status, so keep it around")."""
    other = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other-gw"},
             "controllerName": "example.com/other-controller",
             "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                             "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}
    await ks.kubectl(kube, "patch", "httproute", "reviews-gw", "-n", NS, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"parents": [other, ours]}}))
    # a new generation of the route (one more rule, on a path nothing asks for): our parent status is written again
    await ks.kubectl(kube, "apply", "-n", NS, "-f", "-", input=REVIEWS_ROUTE + """\
  - matches: [{path: {type: PathPrefix, value: /never}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
""")

    async def rewritten() -> list[Any] | None:
        route = await get_json(kube, "httproute", "reviews-gw", "-n", NS)
        parents = (route.get("status") or {}).get("parents") or []
        mine = [p for p in parents if p.get("controllerName") == "istio.io/gateway-controller"]
        return parents if mine and all(c.get("observedGeneration") == route["metadata"]["generation"]
                                       for c in mine[0]["conditions"]) else None

    parents = await await_for(rewritten, timeout=60, interval=0.5, what="our parent status for the new generation")
    assert parents[0] == other, parents  # untouched, first (Istio's order)
    assert [p["controllerName"] for p in parents] == ["example.com/other-controller", "istio.io/gateway-controller"]
