"""Istio's CustomResourceDefinitions, generated from the project's own data: the kind table (api/kinds.py) and
the OpenAPI schemas already shipped for validation (api/schemas/crds.json, derived from Istio's
crd-all.gen.yaml). Group, kind, plural, short names, categories, scope, served versions and their schemas,
the storage version, the status subresource and the printer columns are Istio's; only the schema descriptions
are absent (crds.json keeps only deprecated fields' ones), so objects valid for Istio's CRDs are valid for these
and the other way round.
"""

from __future__ import annotations

from typing import Any

from sailmesh.api.kinds import KINDS
from sailmesh.api.schemas import all_schemas

# kind -> (plural, short names, storage version, printer columns (name, type, jsonPath))
_AGE = ("Age", "date", ".metadata.creationTimestamp")
NAMES: dict[str, tuple[str, tuple[str, ...], str, tuple[tuple[str, str, str], ...]]] = {
    "VirtualService": ("virtualservices", ("vs",), "v1", (("Gateways", "string", ".spec.gateways"),
                                                          ("Hosts", "string", ".spec.hosts"), _AGE)),
    "DestinationRule": ("destinationrules", ("dr",), "v1", (("Host", "string", ".spec.host"), _AGE)),
    "Gateway": ("gateways", ("gw",), "v1", ()),
    "ServiceEntry": ("serviceentries", ("se",), "v1", (("Hosts", "string", ".spec.hosts"),
                                                       ("Location", "string", ".spec.location"),
                                                       ("Resolution", "string", ".spec.resolution"), _AGE)),
    "Sidecar": ("sidecars", (), "v1", ()),
    "WorkloadEntry": ("workloadentries", ("we",), "v1", (_AGE, ("Address", "string", ".spec.address"))),
    "WorkloadGroup": ("workloadgroups", ("wg",), "v1", (_AGE,)),
    "EnvoyFilter": ("envoyfilters", (), "v1alpha3", ()),
    "ProxyConfig": ("proxyconfigs", (), "v1beta1", ()),
    "PeerAuthentication": ("peerauthentications", ("pa",), "v1", (("Mode", "string", ".spec.mtls.mode"), _AGE)),
    "AuthorizationPolicy": ("authorizationpolicies", ("ap",), "v1", (("Action", "string", ".spec.action"), _AGE)),
    "RequestAuthentication": ("requestauthentications", ("ra",), "v1", ()),
    "Telemetry": ("telemetries", ("telemetry",), "v1alpha1", (_AGE,)),
    "WasmPlugin": ("wasmplugins", (), "v1alpha1", (_AGE,)),
}
LABELS = {"app": "istio-pilot", "chart": "istio", "heritage": "Tiller", "release": "istio"}


def _restore(node: Any) -> Any:
    """crds.json keeps a deprecated field's description as `x-sailmesh-deprecated`: back to `description`."""
    if isinstance(node, dict):
        return {("description" if k == "x-sailmesh-deprecated" else k): _restore(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_restore(v) for v in node]
    return node


def crd(group: str, kind: str) -> dict[str, Any]:
    """One CRD object for an Istio kind."""
    plural, short, storage, columns = NAMES[kind]
    entry = all_schemas()[f"{group}/{kind}"]
    versions = []
    for name in sorted(entry["versions"]):
        v: dict[str, Any] = {"name": name, "served": True, "storage": name == storage,
                             "schema": {"openAPIV3Schema": _restore(entry["schemas"][entry["versions"][name]])},
                             "subresources": {"status": {}}}
        if columns:
            v["additionalPrinterColumns"] = [{"name": n, "type": t, "jsonPath": p} for n, t, p in columns]
        versions.append(v)
    names: dict[str, Any] = {"categories": ["istio-io", group.replace(".", "-")], "kind": kind,
                             "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()}
    if short:
        names["shortNames"] = list(short)
    labels = dict(LABELS)
    if group == "security.istio.io":
        labels["istio"] = "security"
    elif group == "telemetry.istio.io":
        labels["istio"] = "telemetry"
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": labels,
                     "annotations": {"helm.sh/resource-policy": "keep"}},
        "spec": {"group": group, "names": names, "scope": entry["scope"], "versions": versions},
    }


def istio_crds() -> list[dict[str, Any]]:
    """Every Istio kind of the kind table that has a schema, as a CRD, in a stable order."""
    return [crd(k.group, k.kind) for k in sorted(KINDS, key=lambda k: (k.group, k.kind))
            if k.istio_crd and k.kind in NAMES]
