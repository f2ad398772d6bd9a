"""The message catalogue equals Istio's messages.yaml, and templates render with Go fmt semantics."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from sailmesh.analysis import messages
from sailmesh.analysis.diagnostic import Diagnostic, at_least, go_format
from sailmesh.api.parse import parse_text
from tests.unit.analysis_conformance import conformance_dir


def test_catalogue_matches_istio_messages_yaml():
    """Every code sailmesh ships has Istio's name, level and template (messages.yaml)."""
    base = conformance_dir()
    if base is None:
        pytest.skip("Istio conformance data not found")
    istio = {m["code"]: m for m in yaml.safe_load(pathlib.Path(base, "messages.yaml").read_text())["messages"]}
    assert len(messages.ALL) >= 40
    for code, mt in messages.ALL.items():
        assert code in istio, code
        assert (mt.name, mt.level, mt.template) == (istio[code]["name"], istio[code]["level"], istio[code]["template"])


def test_documentation_url_is_istios():
    assert messages.ReferencedResourceNotFound.documentation_url == (
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    )


@pytest.mark.parametrize(
    ("template", "args", "out"),
    [
        ("Referenced %s not found: %q", ("host+subset in destinationrule", "reviews+v3"),
         'Referenced host+subset in destinationrule not found: "reviews+v3"'),
        ("The Sidecars %v in namespace %q", (["a", "b"], "default"), 'The Sidecars [a b] in namespace "default"'),
        ("port %d", (8080,), "port 8080"),
        ("100%% %s", ("done",), "100% done"),
        ("%s and %s", ("one",), "one and %!s(MISSING)"),
        ("%q", ('say "hi"',), '"say \\"hi\\""'),
    ],
)
def test_go_format(template, args, out):
    """Go's fmt rules: %v lists as [a b], %q quotes with escapes, %% literal, missing args flagged."""
    assert go_format(template, args) == out


def test_render_includes_origin_and_file_line():
    """istioctl's line form: `Level [CODE] (Kind ns/name file:line) message`."""
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n"
    res = parse_text(text, "svc.yaml").resources[0]
    d = Diagnostic(messages.PortNameIsNotUnderNamingConvention, ("", 80, "0"), res, "spec.ports[0]")
    assert d.render() == (
        "Info [IST0118] (Service default/s svc.yaml:7) Port name  (port: 80, targetPort: 0) doesn't follow "
        "the naming convention of Istio port."
    )
    assert d.as_dict()["origin"] == "Service default/s"


def test_threshold_order():
    assert at_least("Error", "Warning") and at_least("Warning", "Warning") and not at_least("Info", "Warning")
