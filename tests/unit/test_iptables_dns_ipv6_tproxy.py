"""istio-iptables' DNS capture, IPv6 and TPROXY rules, rule by rule against what Istio's golden files under
tools/istio-iptables/pkg/capture/testdata hold for the same settings (each test names its golden case and uses
that case's config from run_test.go); the texts below are written out here, not copied from those files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sailmesh.cli.main import main
from sailmesh.iptables import dns, local
from sailmesh.iptables.rules import CaptureConfig, build

NAT_HEAD = """* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
"""
DNS_NAT_HEAD = NAT_HEAD + "-N ISTIO_OUTPUT_DNS\n"
BASE = """-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
"""


def owners_dns(lo: str, uids: list[str], gids: list[str]) -> str:
    """ISTIO_OUTPUT's owner rules with DNS capture: UIDs skip 53 and 15008 going inbound, GIDs only 15008; the
    app's lo traffic returns except TCP 53."""
    out = ""
    for uid in uids:
        out += (f"-A ISTIO_OUTPUT -o lo ! -d {lo} -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner {uid}"
                " -j ISTIO_IN_REDIRECT\n"
                f"-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner {uid} -j RETURN\n"
                f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN\n")
    for gid in gids:
        out += (f"-A ISTIO_OUTPUT -o lo ! -d {lo} -p tcp ! --dport 15008 -m owner --gid-owner {gid}"
                " -j ISTIO_IN_REDIRECT\n"
                f"-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner {gid} -j RETURN\n"
                f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN\n")
    return out


def zones(ids: list[tuple[str, str]]) -> str:
    return "".join(f"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --{kind}-owner {i} -j CT --zone 1\n"
                   f"-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --{kind}-owner {i} -j CT --zone 2\n"
                   for kind, i in ids)


IDS = [("uid", "3"), ("uid", "4"), ("gid", "1"), ("gid", "2")]


def test_dns_capture_for_the_resolvers_of_both_families_as_istios_dns_uid_gid_golden() -> None:
    # dns-uid-gid: RedirectDNS, DNSServersV4 127.0.0.53, DNSServersV6 ::127.0.0.53, GID 1,2, UID 3,4, IPv6
    rules = build(CaptureConfig(redirect_dns=True, dns_servers_v4=("127.0.0.53",), dns_servers_v6=("::127.0.0.53",),
                                proxy_uid="3,4", proxy_gid="1,2", enable_ipv6=True))
    for family, lo, passthrough, server, bits in ((4, "127.0.0.1/32", "127.0.0.6/32", "127.0.0.53", 32),
                                                  (6, "::1/128", "::6/128", "::127.0.0.53", 128)):
        assert rules.restore_text(family) == DNS_NAT_HEAD + BASE + f"""-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s {passthrough} -j RETURN
""" + owners_dns(lo, ["3", "4"], ["1", "2"]) + f"""-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d {server}/{bits} -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d {server}/{bits} -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -d {lo} -j RETURN
COMMIT
* raw
-N ISTIO_OUTPUT_DNS
-N ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT_DNS
""" + zones(IDS) + f"""-A PREROUTING -j ISTIO_INBOUND
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d {server}/{bits} -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -s {server}/{bits} -j CT --zone 1
COMMIT
"""


def test_dns_capture_with_ranges_as_istios_ip_range_golden() -> None:
    # ip-range: excluded 1.1.0.0/16, included 9.9.0.0/16, DNS to 127.0.0.53, GID 1,2, UID 3,4, IPv4 only
    rules = build(CaptureConfig(outbound_ip_ranges_exclude="1.1.0.0/16", outbound_ip_ranges_include="9.9.0.0/16",
                                redirect_dns=True, proxy_gid="1,2", proxy_uid="3,4", dns_servers_v4=("127.0.0.53",)))
    assert rules.table("nat")[-6:] == [
        "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS",
        "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-port 15053",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -d 1.1.0.0/16 -j RETURN",
        "-A ISTIO_OUTPUT -d 9.9.0.0/16 -j ISTIO_REDIRECT"]  # no trailing RETURN in Istio's current golden
    assert not rules.ipv6 and "# ip6tables" not in rules.dry_run_text()


def test_dns_capture_without_resolvers_is_disabled_with_istios_warning_as_ipv6_dns_uid_gid_golden() -> None:
    # ipv6-dns-uid-gid: RedirectDNS but no servers and no capture-all: the plain IPv4 + IPv6 rules, no DNS chains
    rules = build(CaptureConfig(redirect_dns=True, proxy_gid="1,2", proxy_uid="3,4", enable_ipv6=True))
    assert rules.notes == ["REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. "
                           "DNS capture disabled."]
    assert "DNS" not in rules.restore_text(4) + rules.restore_text(6)
    assert rules.table("nat", 6)[-2:] == ["-A ISTIO_OUTPUT -m owner --gid-owner 2 -j RETURN",
                                          "-A ISTIO_OUTPUT -d ::1/128 -j RETURN"]


def test_capture_all_dns_redirects_every_port_53_destination() -> None:
    # run.go SetupDNSRedir with CaptureAllDNS (no golden case): no -d on the redirects and zones, one raw jump
    rules = build(CaptureConfig(redirect_dns=True, capture_all_dns=True))
    assert rules.table("nat")[-4:] == [
        "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS",
        "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"]
    assert rules.table("raw")[-3:] == ["-A PREROUTING -j ISTIO_INBOUND",
                                       "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2",
                                       "-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1"]


def test_ipv6_rules_mirror_ipv4_with_the_ipv6_ranges_as_istios_ipv6_uid_gid_golden() -> None:
    # ipv6-uid-gid: inbound 4000,5000 (6000,7000 excluded: unused without '*'), kubevirt eth0,eth1, GID 1,2,
    # UID 3,4, 2001:db8::/32 both excluded and included: IPv4 gets none of the IPv6 ranges
    rules = build(CaptureConfig(inbound_ports_include="4000,5000", inbound_ports_exclude="6000,7000",
                                kube_virt_interfaces="eth0,eth1", proxy_gid="1,2", proxy_uid="3,4", enable_ipv6=True,
                                outbound_ip_ranges_exclude="2001:db8::/32", outbound_ip_ranges_include="2001:db8::/32"))
    v4, v6 = rules.table("nat", 4), rules.table("nat", 6)
    assert v4[:2] == v6[:2] == ["-I PREROUTING 1 -i eth0 -j RETURN", "-I PREROUTING 1 -i eth1 -j RETURN"]
    assert v4[-1] == "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"
    assert "-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN" in v6
    assert ("-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 3 -j ISTIO_IN_REDIRECT"
            in v6)
    assert v6[-5:] == ["-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
                       "-A ISTIO_OUTPUT -d 2001:db8::/32 -j RETURN",
                       "-I PREROUTING 1 -i eth0 -d 2001:db8::/32 -j ISTIO_REDIRECT",
                       "-I PREROUTING 1 -i eth1 -d 2001:db8::/32 -j ISTIO_REDIRECT",
                       "-A ISTIO_OUTPUT -d 2001:db8::/32 -j ISTIO_REDIRECT"]
    # ConfigureRoutes: ::6 on lo, the inbound passthrough's IPv6 source
    assert rules.routes == [["-6", "addr", "add", "::6/128", "dev", "lo"]]


def test_without_ipv6_the_ipv6_ranges_are_reported_unused() -> None:
    rules = build(CaptureConfig(outbound_ip_ranges_include="10.0.0.0/8,fd00::/8"))
    assert rules.notes == ["-i: IPv6 range fd00::/8 unused: IPv6 capture is off (the pod has no IPv6 address; "
                           "--dual-stack)"]
    assert rules.restore_text(6) == "" and rules.routes == []


MANGLE_V4 = """* mangle
-N ISTIO_DIVERT
-N ISTIO_TPROXY
-N ISTIO_INBOUND
-A PREROUTING -i not-istio-nic -j RETURN
-A OUTPUT -o not-istio-nic -j RETURN
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
-I ISTIO_INBOUND 1 -p tcp -m mark --mark 1337 -j RETURN
-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN
-I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark 1338 -j RETURN
COMMIT
"""


def test_tproxy_mangle_rules_and_routes_as_istios_tproxy_golden() -> None:
    # tproxy: TPROXY, inbound '*', excluded 1.1.0.0/16, included 9.9.0.0/16, DNS to 127.0.0.53, excluded NIC
    # not-istio-nic, IPv6 on
    rules = build(CaptureConfig(interception_mode="TPROXY", inbound_ports_include="*",
                                outbound_ip_ranges_exclude="1.1.0.0/16", outbound_ip_ranges_include="9.9.0.0/16",
                                redirect_dns=True, dns_servers_v4=("127.0.0.53",), exclude_interfaces="not-istio-nic",
                                enable_ipv6=True))
    v4 = rules.restore_text(4)
    assert v4.startswith(MANGLE_V4 + DNS_NAT_HEAD + "-A PREROUTING -i not-istio-nic -j RETURN\n"
                         "-A OUTPUT -o not-istio-nic -j RETURN\n" + BASE + "-A OUTPUT -j ISTIO_OUTPUT\n")
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" not in rules.table("nat")  # inbound is the mangle table's
    assert rules.table("nat")[-3:] == ["-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
                                       "-A ISTIO_OUTPUT -d 1.1.0.0/16 -j RETURN",
                                       "-A ISTIO_OUTPUT -d 9.9.0.0/16 -j ISTIO_REDIRECT"]
    # IPv6: the same mangle rules with ::1 and ::6; no IPv6 resolver, so no nat DNS jump and only the owner zones
    assert rules.table("mangle", 6) == [line.replace("127.0.0.1/32", "::1/128").replace("127.0.0.6/32", "::6/128")
                                        for line in MANGLE_V4.splitlines()[4:-1]]
    assert "ISTIO_OUTPUT_DNS" not in "\n".join(rules.table("nat", 6))
    assert rules.table("raw", 6) == ["-A OUTPUT -j ISTIO_OUTPUT_DNS", *zones([("uid", "1337"), ("gid", "1337")])
                                     .splitlines()]
    # tools/common/tproxy ConfigureRoutes: ::6 on lo, then per family `ip rule` for the mark, then the local route
    assert rules.routes == [["-6", "addr", "add", "::6/128", "dev", "lo"],
                            ["-4", "rule", "add", "fwmark", "1337", "lookup", "133"],
                            ["-6", "rule", "add", "fwmark", "1337", "lookup", "133"],
                            ["-4", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "133"],
                            ["-6", "route", "add", "local", "::/0", "dev", "lo", "table", "133"]]


def test_tproxy_named_inbound_ports_as_istios_inbound_ports_tproxy_golden() -> None:
    # inbound-ports-tproxy: ports 32000,31000, each diverted when established and TPROXYed when new
    rules = build(CaptureConfig(inbound_ports_include="32000,31000", interception_mode="TPROXY"))
    assert rules.table("mangle")[3:8] == [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp --dport 32000 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
        "-A ISTIO_INBOUND -p tcp --dport 32000 -j ISTIO_TPROXY",
        "-A ISTIO_INBOUND -p tcp --dport 31000 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
        "-A ISTIO_INBOUND -p tcp --dport 31000 -j ISTIO_TPROXY"]
    # inbound-ports-wildcard-tproxy: with '*' the same mangle rules as the tproxy case, without the NIC exclusion
    wildcard = build(CaptureConfig(inbound_ports_include="*", interception_mode="TPROXY"))
    assert wildcard.restore_text().startswith(MANGLE_V4.replace("-A PREROUTING -i not-istio-nic -j RETURN\n", "")
                                              .replace("-A OUTPUT -o not-istio-nic -j RETURN\n", ""))
    assert wildcard.routes[:1] == [["-4", "rule", "add", "fwmark", "1337", "lookup", "133"]]
    # no inbound capture: no divert chains and no routes, but the mark rules stay (run.go adds them in TPROXY mode)
    none = build(CaptureConfig(interception_mode="TPROXY"))
    assert none.routes == [] and "ISTIO_DIVERT" not in none.restore_text()
    assert "-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark" in none.table("mangle")


def test_pod_addresses_decide_ipv6_as_istios_get_local_ip() -> None:
    # the first usable address decides, and the kernel lists IPv4 first: a dual-stack pod is IPv4 unless --dual-stack
    assert local.PodAddresses(("10.0.0.1",), ("fd00::1",)).ipv6(dual_stack=False) is False
    assert local.PodAddresses(("10.0.0.1",), ("fd00::1",)).ipv6(dual_stack=True) is True
    assert local.PodAddresses((), ("fd00::1",)).ipv6(dual_stack=False) is True
    assert local.PodAddresses(("10.0.0.1",), ()).ipv6(dual_stack=True) is False
    found = local.pod_addresses()
    assert all(not a.startswith(("127.", "fe80:")) and a != "::1" for a in found.v4 + found.v6)


def test_resolvers_are_the_nameservers_of_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\n"
                    "nameserver not-an-ip\noptions ndots:5\n")
    assert dns.resolvers(str(conf)) == (("10.96.0.10",), ("fd00::a",))


def test_redirect_dns_from_istios_environment_variable(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # ISTIO_META_DNS_CAPTURE=true turns it on as --redirect-dns does; --capture-all-dns needs no resolv.conf
    monkeypatch.setenv("ISTIO_META_DNS_CAPTURE", "true")
    assert main(["istio-iptables", "--capture-all-dns", "--dry-run"]) == 0
    assert "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053" in capsys.readouterr().out
    # the flag wins over the environment
    assert main(["istio-iptables", "--capture-all-dns", "--redirect-dns=false", "--dry-run"]) == 0
    assert "ISTIO_OUTPUT_DNS" not in capsys.readouterr().out
    monkeypatch.setenv("ISTIO_META_DNS_CAPTURE", "yes")
    assert main(["istio-iptables", "--dry-run"]) == 2
    assert "not a boolean" in capsys.readouterr().err


def test_owner_group_filters_are_refused_not_ignored(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202")
    assert main(["istio-iptables", "--dry-run"]) == 2
    assert "owner-group filters are not implemented" in capsys.readouterr().err
