"""Every ```yaml example in the seed write-ups (../shared/seeds) with an Istio/core kind gets a recorded verdict.

Accepted unless the example itself is wrong; each expected rejection names the reason.
"""

from __future__ import annotations

import re

import pytest

from sailmesh.api.parse import parse_text
from sailmesh.api.schemas import SCHEMA_FILE
from sailmesh.api.schemas.regen import render
from sailmesh.api.validate import errors_only, validate
from tests.conftest import SHARED

SEEDS = SHARED / "seeds"
BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.S)

# resource -> substring of the error that rejects it, and why the example is wrong.
EXPECTED_REJECTIONS = {
    # `dimensions`/`tags` are not Telemetry fields (tag overrides live under metrics[].overrides[].tagOverrides).
    "Telemetry istio-system/custom-metrics": 'unknown field "spec.metrics[0].dimensions"',
    # An excerpt showing serviceAccountName only: Kubernetes rejects a Deployment without selector/containers.
    "Deployment default/frontend": "spec.selector: Required value",
}
# Blocks that are not Kubernetes resources at all (Helm values, CI steps): parse errors are expected.
NOT_RESOURCES = ("apiVersion is missing", "document is a list", "unknown kind")


def test_seed_examples_verdicts():
    if not SEEDS.is_dir():
        pytest.skip("seeds not found")
    verdicts: list[str] = []
    seen_rejections = set()
    checked = 0
    for f in sorted(SEEDS.glob("*.txt")):
        for n, m in enumerate(BLOCK.finditer(f.read_text())):
            r = parse_text(m.group(1), f"{f.name}#{n}")
            for e in r.errors:
                assert any(x in e.message for x in NOT_RESOURCES), str(e)
                verdicts.append(f"SKIP {e}")
            for res in r.resources:
                checked += 1
                errs = [str(i) for i in errors_only(validate(res))]
                key = str(res.key)
                if key in EXPECTED_REJECTIONS:
                    assert any(EXPECTED_REJECTIONS[key] in e for e in errs), errs
                    seen_rejections.add(key)
                    verdicts.append(f"REJECT {f.name}#{n} {key}: {errs[0]}")
                else:
                    assert not errs, errs
                    verdicts.append(f"ACCEPT {f.name}#{n} {key}")
    print("\n" + "\n".join(verdicts))
    assert checked >= 30
    assert seen_rejections == set(EXPECTED_REJECTIONS)


def test_compact_schemas_match_istio_crds(conformance):
    """crds.json is derived from Istio's crd-all.gen.yaml by regen.py; it must not drift."""
    text = (conformance / "crds" / "crd-all.gen.yaml").read_text()
    assert render(text) == SCHEMA_FILE.read_text()
