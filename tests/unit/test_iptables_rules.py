"""istio-iptables' rule text: Istio's chain names and rule order (its tools/istio-iptables golden files, REDIRECT
mode, IPv4, no DNS capture), from the flags the injector writes; DNS capture, IPv6 and TPROXY are in
test_iptables_dns_ipv6_tproxy.py."""

from __future__ import annotations

import re

import pytest

from sailmesh.cli.main import main
from sailmesh.errors import CaptureError
from sailmesh.iptables.rules import CaptureConfig, build
from sailmesh.webhook.inject import InjectionConfig, iptables_args

HEAD = """* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
"""
OWNER = """-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
"""


def dry_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`sailmesh <args> --dry-run` through the real entry point; its stdout."""
    assert main([*args, "--dry-run"]) == 0
    return capsys.readouterr().out


def test_the_injected_istio_init_args_give_istios_default_sidecar_rules(capsys: pytest.CaptureFixture[str]) -> None:
    # Istio's golden inbound-wildcard-exclude shape: every inbound port but the excluded ones, everything outbound
    args = iptables_args({}, InjectionConfig())
    assert args[0] == "istio-iptables"  # the image's entrypoint is `sailmesh`: the container runs this verb
    assert dry_run(args, capsys) == HEAD + """-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m multiport --dports 15090,15021,15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
""" + OWNER + """-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""


def test_excluded_outbound_ports_return_first_for_tcp_and_udp_as_istios_golden(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Istio's outbound-ports-exclude.golden: -o 22,80,443, no -i, no -b
    assert dry_run(["iptables", "-o", "22,80,443"], capsys) == HEAD + """-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp -m multiport --dports 22,80,443 -j RETURN
-A ISTIO_OUTPUT -p udp -m multiport --dports 22,80,443 -j RETURN
""" + OWNER + "COMMIT\n"
    # outbound-ports-exclude-single.golden: one port is --dport, not multiport
    out = dry_run(["istio-iptables", "-o", "22"], capsys)
    assert "-A ISTIO_OUTPUT -p tcp --dport 22 -j RETURN\n-A ISTIO_OUTPUT -p udp --dport 22 -j RETURN\n" in out


def test_included_ports_are_redirected_one_rule_each(capsys: pytest.CaptureFixture[str]) -> None:
    # outbound-ports-include.golden: after the owner rules, one ISTIO_REDIRECT per port, nothing else captured
    redirects = "-A ISTIO_OUTPUT -p tcp --dport 32000 -j ISTIO_REDIRECT\n" \
                "-A ISTIO_OUTPUT -p tcp --dport 31000 -j ISTIO_REDIRECT\n"
    assert dry_run(["iptables", "-q", "32000,31000"], capsys).endswith(OWNER + redirects + "COMMIT\n")
    # inbound-ports-include.golden: only the named inbound ports go to ISTIO_IN_REDIRECT
    out = dry_run(["iptables", "-b", "32000,31000"], capsys)
    assert """-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 32000 -j ISTIO_IN_REDIRECT
-A ISTIO_INBOUND -p tcp --dport 31000 -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
""" in out


def test_ip_ranges_exclusions_before_inclusions_then_return() -> None:
    # ip-range.golden's order (without its DNS rules): 127.0.0.1, excluded ranges, included ranges (Istio's current
    # golden has no trailing `-j RETURN`: falling off the chain's end returns anyway)
    rules = build(CaptureConfig(outbound_ip_ranges_include="9.9.0.0/16", outbound_ip_ranges_exclude="1.1.0.0/16"))
    assert rules.rules[-3:] == ["-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
                                "-A ISTIO_OUTPUT -d 1.1.0.0/16 -j RETURN",
                                "-A ISTIO_OUTPUT -d 9.9.0.0/16 -j ISTIO_REDIRECT"]
    # no -i: nothing outbound is captured (no ISTIO_REDIRECT jump at all)
    assert not any(r.endswith("-j ISTIO_REDIRECT") for r in build(CaptureConfig()).rules)


def test_a_loopback_include_range_keeps_app_to_self_traffic_captured() -> None:
    # loopback-outbound-iprange.golden: with 127.1.2.3/32 included, the `-o lo ! --uid-owner` RETURN rules go
    rules = build(CaptureConfig(outbound_ip_ranges_include="127.1.2.3/32")).rules
    assert not [r for r in rules if "! --uid-owner" in r or "! --gid-owner" in r]
    assert "-A ISTIO_OUTPUT -d 127.1.2.3/32 -j ISTIO_REDIRECT" in rules


def test_several_uids_and_gids_each_get_their_three_rules_and_gid_defaults_to_uid() -> None:
    rules = build(CaptureConfig(proxy_uid="3,4", proxy_gid="1,2")).rules
    owners = [m.group(0) for r in rules for m in [re.search(r"(uid|gid)-owner \d+", r)] if m]
    assert owners == [*["uid-owner 3"] * 3, *["uid-owner 4"] * 3, *["gid-owner 1"] * 3, *["gid-owner 2"] * 3]
    assert "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN" in build(CaptureConfig()).rules


def test_long_port_lists_are_split_at_multiports_15() -> None:
    ports = ",".join(str(p) for p in range(1000, 1020))
    rules = [r for r in build(CaptureConfig(outbound_ports_exclude=ports)).rules if "multiport" in r]
    assert [r.split("--dports ")[1].count(",") + 1 for r in rules] == [15, 5, 15, 5]  # tcp, then udp


def test_kubevirt_and_excluded_interfaces() -> None:
    rules = build(CaptureConfig(outbound_ip_ranges_include="*", kube_virt_interfaces="eth1",
                                exclude_interfaces="eth9")).rules
    assert rules[:3] == ["-A PREROUTING -i eth9 -j RETURN", "-A OUTPUT -o eth9 -j RETURN",
                         "-I PREROUTING 1 -i eth1 -j RETURN"]
    assert rules[-1] == "-I PREROUTING 1 -i eth1 -j ISTIO_REDIRECT"


def test_ipv6_and_unparsable_ranges_are_reported_not_silently_dropped() -> None:
    rules = build(CaptureConfig(outbound_ip_ranges_include="10.0.0.0/8,fd00::/8,bogus"))
    assert rules.notes == ["-i: IPv6 range fd00::/8 unused: IPv6 capture is off (the pod has no IPv6 address; "
                           "--dual-stack)", "-i: ignoring 'bogus': not a CIDR"]
    assert "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT" in rules.rules


@pytest.mark.parametrize("cfg, message", [
    (CaptureConfig(interception_mode="tproxy"), "expected REDIRECT or TPROXY"),
    (CaptureConfig(interception_mode="TPROXY", inbound_ports_include="*", tproxy_mark="0x539"), "-t: '0x539'"),
    (CaptureConfig(proxy_port="15001x"), "-p: '15001x' is not a port"),
    (CaptureConfig(outbound_ports_exclude="70000"), "-o: '70000' is not a port"),
    (CaptureConfig(outbound_ip_ranges_exclude="*"), "-x: '*'"),
    (CaptureConfig(proxy_uid="istio"), "-u: expected numeric IDs"),
])
def test_invalid_settings_are_refused(cfg: CaptureConfig, message: str) -> None:
    with pytest.raises(CaptureError, match=message.replace("*", r"\*")):
        build(cfg)


def test_flags_that_would_change_the_rules_but_are_not_implemented_are_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["istio-iptables", "--drop-invalid", "--dry-run"]) == 2
    assert "--drop-invalid: not implemented" in capsys.readouterr().err
    # Istio's TPROXY annotation reaches istio-init as `-m TPROXY`: installed as TPROXY (mangle), not as REDIRECT
    args = iptables_args({"sidecar.istio.io/interceptionMode": "TPROXY"}, InjectionConfig())
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY" in out and "# ip -4 rule add fwmark 1337 lookup 133" in out
