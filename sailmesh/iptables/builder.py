"""Istio's iptables rule builder (tools/istio-iptables/pkg/builder): rules kept per IP family in the order they
were added, each naming its table and chain; turned into one `iptables-restore` input per family.

As Istio's builder: a rule added "for both" goes to the IPv6 list only when IPv6 is enabled; the restore text has
one block per non-empty table in name order (filter, mangle, nat, raw); each block first creates (`-N`) the
non-built-in chains that own rules, in order of their first rule, then the chains only jumped to, then the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Istio's BuiltInChainsAndTargetsMap: never created with -N
BUILT_IN = frozenset({"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING", "ACCEPT", "RETURN", "DROP"})
# Istio's IPVersionSpecific placeholder: replaced by the family's address in a "versioned" rule
VERSIONED = "\0ip-version-specific"


@dataclass(frozen=True)
class Rule:
    """One rule: its table, its chain and its full argument list (`-A CHAIN ...` or `-I CHAIN N ...`)."""

    table: str
    chain: str
    params: tuple[str, ...]

    def text(self) -> str:
        return " ".join(self.params)


@dataclass
class RuleBuilder:
    """The IPv4 and IPv6 rule lists (IPv6 only filled when `ipv6` is set, as Istio's EnableIPv6)."""

    ipv6: bool = False
    v4: list[Rule] = field(default_factory=list)
    v6: list[Rule] = field(default_factory=list)

    def append_v4(self, chain: str, table: str, *params: str) -> None:
        self.v4.append(Rule(table, chain, ("-A", chain, *params)))

    def append_v6(self, chain: str, table: str, *params: str) -> None:
        if self.ipv6:
            self.v6.append(Rule(table, chain, ("-A", chain, *params)))

    def append(self, chain: str, table: str, *params: str) -> None:
        """AppendRule: the same rule for both families."""
        self.append_v4(chain, table, *params)
        self.append_v6(chain, table, *params)

    def insert_v4(self, chain: str, table: str, position: int, *params: str) -> None:
        self.v4.append(Rule(table, chain, ("-I", chain, str(position), *params)))

    def insert_v6(self, chain: str, table: str, position: int, *params: str) -> None:
        if self.ipv6:
            self.v6.append(Rule(table, chain, ("-I", chain, str(position), *params)))

    def insert(self, chain: str, table: str, position: int, *params: str) -> None:
        self.insert_v4(chain, table, position, *params)
        self.insert_v6(chain, table, position, *params)

    def append_versioned(self, v4: str, v6: str, chain: str, table: str, *params: str) -> None:
        """AppendVersionedRule: `VERSIONED` in params becomes `v4` in the IPv4 rule and `v6` in the IPv6 one."""
        self.append_v4(chain, table, *(v4 if p == VERSIONED else p for p in params))
        self.append_v6(chain, table, *(v6 if p == VERSIONED else p for p in params))


def restore_text(rules: list[Rule]) -> str:
    """Istio's buildRestore: the `iptables-restore --noflush` input for one family ("" when there are no rules)."""
    tables: dict[str, list[str]] = {"filter": [], "nat": [], "mangle": []}
    declared: set[tuple[str, str]] = set()
    for r in rules:
        if (r.chain, r.table) not in declared:
            declared.add((r.chain, r.table))
            if r.chain not in BUILT_IN:
                tables.setdefault(r.table, []).append(f"-N {r.chain}")
    for r in rules:  # chains only jumped to (`... -j CHAIN` as the last two words)
        if len(r.params) >= 2 and r.params[-2] == "-j":
            target = r.params[-1]
            if (target, r.table) not in declared:
                declared.add((target, r.table))
                if target not in BUILT_IN:
                    tables.setdefault(r.table, []).append(f"-N {target}")
    for r in rules:
        tables.setdefault(r.table, []).append(r.text())
    out: list[str] = []
    for table in sorted(tables):
        if tables[table]:
            out += [f"* {table}", *tables[table], "COMMIT"]
    return "\n".join(out) + "\n" if out else ""
