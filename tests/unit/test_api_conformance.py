"""Istio's validation conformance sets: every document classified (valid/invalid) exactly as Istio does.

Checks the CRD schema + CEL rules + Go-side semantics against istio/istio and istio/api test data
(crd-valid-invalid, api-repo-valid-invalid: `_err` carries a substring of Istio's message; and
tests-testdata-config, all valid). Prints the classification and message-match rates per kind.
"""

from __future__ import annotations

import collections
import dataclasses

from sailmesh.api.parse import load_file
from sailmesh.api.validate import errors_only, validate

SETS = ("crd-valid-invalid", "api-repo-valid-invalid", "tests-testdata-config")


def _cases(conformance):
    for s in SETS:
        for f in sorted((conformance / "validation" / s).glob("*.yaml")):
            r = load_file(str(f))
            assert not r.errors, r.errors
            for res in r.resources:
                raw = dict(res.raw)
                expected = raw.pop("_err", None)
                yield s, f.name, dataclasses.replace(res, raw=raw), expected


def test_conformance_classification_is_100_percent(conformance):
    per_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    misses, msg_misses = [], []
    for s, fname, res, expected in _cases(conformance):
        errs = errors_only(validate(res))
        c = per_kind[res.kind]
        c["total"] += 1
        rejected = bool(errs)
        if rejected == (expected is not None):
            c["ok"] += 1
        else:
            misses.append(f"{s}/{fname} {res.key}: expected {expected or 'valid'}, got {[str(e) for e in errs]}")
        if expected is not None:
            c["invalid"] += 1
            if any(expected in str(e) for e in errs):
                c["msg"] += 1
            else:
                msg_misses.append(f"{s}/{fname} {res.key}: {expected!r} not in {[str(e) for e in errs]}")
    total = sum(c["total"] for c in per_kind.values())
    ok = sum(c["ok"] for c in per_kind.values())
    print(f"\n{'kind':24} {'docs':>5} {'classified':>10} {'invalid':>8} {'msg match':>9}")
    for kind, c in sorted(per_kind.items()):
        print(f"{kind:24} {c['total']:5} {c['ok'] / c['total']:10.0%} {c['invalid']:8} "
              f"{(c['msg'] / c['invalid']) if c['invalid'] else 1:9.0%}")
    print(f"{'TOTAL':24} {total:5} {ok / total:10.0%}")
    assert total >= 300
    assert not misses, "\n".join(misses)
    # Istio's own wording: every invalid document's expected substring appears in one of our messages.
    assert not msg_misses, "\n".join(msg_misses)


def test_every_kind_in_the_sets_is_covered(conformance):
    kinds = {res.kind for _, _, res, _ in _cases(conformance)}
    assert {"AuthorizationPolicy", "DestinationRule", "EnvoyFilter", "PeerAuthentication", "ProxyConfig",
            "RequestAuthentication", "ServiceEntry", "Telemetry", "WasmPlugin", "WorkloadEntry", "WorkloadGroup",
            "VirtualService", "Gateway"} <= kinds
