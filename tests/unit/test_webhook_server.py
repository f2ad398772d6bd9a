"""The admission webhook server: AdmissionReview v1 over TLS, validation messages, injection patches."""

from __future__ import annotations

import base64
import json
import pathlib
import ssl
from typing import Any

import aiohttp

from sailmesh.api.parse import parse_text
from sailmesh.api.validate import errors_only, validate
from sailmesh.ca.authority import CertificateAuthority
from sailmesh.webhook.inject import InjectionConfig
from sailmesh.webhook.server import WebhookServer, inject_review, validate_review

BAD_VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "bad", "namespace": "default", "uid": "u1", "managedFields": [{"manager": "kubectl"}]},
          "spec": {"hosts": ["reviews"], "http": [{"match": [{"uri": {"regex": "(("}}],
                                                   "route": [{"destination": {"host": "reviews"}}]}]}}


def _errors(resource: Any) -> list[object]:
    return list(errors_only(validate(resource)))


def _request(obj: dict[str, Any], operation: str = "CREATE", namespace: str = "default") -> dict[str, Any]:
    return {"uid": "req-1", "kind": {"group": "networking.istio.io", "version": "v1", "kind": obj["kind"]},
            "operation": operation, "namespace": namespace, "name": obj["metadata"].get("name"), "object": obj}


def test_a_refusal_carries_istios_prefix_and_the_validators_message() -> None:
    allowed, message = validate_review(_request(BAD_VS), _errors)
    assert not allowed
    # what `sailmesh validate` says of the same object, without a file (the webhook has none)
    parsed = parse_text(json.dumps(BAD_VS), "")
    expected = "; ".join(str(i) for i in _errors(parsed.resources[0]))
    assert message == "configuration is invalid: " + expected
    assert "VirtualService default/bad: spec.http[0].match[0].uri" in message


def test_deletes_and_valid_objects_are_allowed_and_the_namespace_comes_from_the_request() -> None:
    assert validate_review(_request(BAD_VS, "DELETE"), _errors) == (True, "")
    good = json.loads(json.dumps(BAD_VS))
    good["spec"]["http"][0]["match"][0]["uri"] = {"prefix": "/"}
    del good["metadata"]["namespace"]
    assert validate_review(_request(good, namespace="prod"), _errors) == (True, "")


def test_a_kind_sailmesh_does_not_know_is_allowed_with_a_warning_not_refused() -> None:
    ext = {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "TrafficExtension",
           "metadata": {"name": "x", "namespace": "default"}, "spec": {}}
    allowed, message = validate_review(_request(ext), _errors)
    assert allowed and message.endswith("is accepted, not validated: sailmesh does not know this kind")


def test_inject_review_patches_only_pods_that_need_it() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"app": "a"}},
           "spec": {"containers": [{"name": "a", "image": "httpbin"}]}}
    patch, why, warnings = inject_review(_request(pod), InjectionConfig())
    assert why == "injected" and any(op["path"] == "/spec/initContainers" for op in patch) and warnings == []
    assert inject_review(_request(pod, namespace="kube-system"), InjectionConfig())[0] == []
    assert inject_review(_request(pod, operation="UPDATE"), InjectionConfig())[0] == []


async def test_the_server_answers_admission_reviews_over_tls_with_a_ca_certificate(tmp_path: pathlib.Path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path)
    server = WebhookServer(ca, _errors, InjectionConfig(), ["istiod.istio-system.svc"], ["127.0.0.1"])
    port = await server.start("127.0.0.1", 0)
    try:
        ctx = ssl.create_default_context(cadata=ca.trust_bundle())  # what the API server does with caBundle
        async with aiohttp.ClientSession() as http:
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": _request(BAD_VS)}
            async with http.post(f"https://127.0.0.1:{port}/validate", json=review, ssl=ctx) as resp:
                body = await resp.json()
            assert body["response"]["uid"] == "req-1" and body["response"]["allowed"] is False
            assert body["response"]["status"]["message"].startswith("configuration is invalid: ")
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "httpbin"}]}}
            review["request"] = _request(pod)
            async with http.post(f"https://127.0.0.1:{port}/inject", json=review, ssl=ctx) as resp:
                body = await resp.json()
            assert body["response"]["allowed"] is True and body["response"]["patchType"] == "JSONPatch"
            ops = json.loads(base64.b64decode(body["response"]["patch"]))
            assert any(op["path"] == "/spec/initContainers" for op in ops)
            async with http.post(f"https://127.0.0.1:{port}/validate", data=b"{}",
                                 headers={"Content-Type": "application/json"}, ssl=ctx) as resp:
                assert resp.status == 400
        assert server.reviews == {"validate": 1, "denied": 1, "inject": 1, "injected": 1}
    finally:
        await server.stop()
