"""Root rotation of the self-signed CA, in three steps that each wait for the mesh to follow the one before.

1. `add`: a new root (key 0600) joins the trust bundle; nothing is signed with it yet. Agents see the published
   bundle change, renew at once and serve the new bundle to Envoy as ROOTCA.
2. `switch`: once every live workload holds the new bundle, the CA signs with the new root (the old one stays
   trusted, so certificates it signed still verify); agents renew again onto the new root.
3. `drop`: once no live workload holds a certificate of the old root, the old root leaves the bundle.

Which workload holds what is known from the CSRs themselves: each response carries the bundle, and each agent
names its instance in the request's metadata (bookkeeping only; the identity still comes from the token or
certificate). A step that would break a live workload is refused unless forced. The state is kept in the CA's
directory (`next-root-cert.pem`, `next-ca-key.pem` 0600, `trust-bundle.pem`), so a restart resumes where it was.

A CA shared by several control planes (Kubernetes replicas reading `istio-ca-secret`) does not choose its next root:
it `follow`s the one found in the shared Secret (step 1 with that root, kept in memory: the Secret holds it),
`promote`s it (step 2) and `drop_old` roots (step 3) when its driver (platform/kube/carotation.py) decides.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sailmesh.ca.authority import (
    CA_KEY,
    ROOT_CERT,
    TRUST_BUNDLE,
    CertificateAuthority,
    check_signer,
    key_pem,
    load_certs,
    load_private_key,
    new_root_key,
    pem,
    root_certificate,
    write_private,
)
from sailmesh.ca.template import SigningKey
from sailmesh.errors import CertificateError

log = logging.getLogger("sailmesh.ca")

NEXT_ROOT, NEXT_KEY = "next-root-cert.pem", "next-ca-key.pem"
PHASES = ("add", "switch", "drop")
INSTANCE_KEY = "sailmesh.io/instance"  # the CSR metadata entry naming the agent's instance (ns/name)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, hex (how roots are named in status and logs)."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Holder:
    """What one instance received with its latest certificate."""

    bundle: str  # the CA's bundle_id of the ROOTCA it was given
    issuer: str  # the CA's signing_id when it signed (the root the certificate chains to)
    not_after: float


@dataclass
class Holders:
    """The latest certificate of each instance that named itself in its CSR, as long as it is valid."""

    by_instance: dict[str, Holder] = field(default_factory=dict)

    def record(self, instance: str, bundle: str, issuer: str, not_after: datetime.datetime) -> None:
        if instance:
            self.by_instance[instance] = Holder(bundle, issuer, not_after.timestamp())

    def live(self) -> dict[str, Holder]:
        now = time.time()
        for name in [n for n, h in self.by_instance.items() if h.not_after <= now]:
            del self.by_instance[name]
        return dict(self.by_instance)


class RootRotation:
    """The three steps over a self-signed CA (a plug-in CA's roots are the operator's: rotate its files)."""

    def __init__(self, authority: CertificateAuthority) -> None:
        self.authority = authority
        self.holders = Holders()
        folder = authority.folder
        self._next: tuple[x509.Certificate, Any] | None = None
        if folder is not None and (folder / NEXT_ROOT).exists() and (folder / NEXT_KEY).exists():
            self._next = load_certs(folder / NEXT_ROOT)[0], load_private_key(folder / NEXT_KEY)

    def _folder(self) -> Path:
        if self.authority.folder is None:
            raise CertificateError("root rotation works on the self-signed CA only; a plug-in CA (cacerts) is "
                                   "rotated by replacing its files, and Kubernetes replicas' shared root by "
                                   "changing the Secret istio-ca-secret (every replica follows it)")
        return self.authority.folder

    def status(self) -> dict[str, Any]:
        """The roots, which signs, the step that comes next, and the live instances that would block it."""
        bundle, signing = self.authority.bundle_id, self.authority.signing_id
        live = self.holders.live()
        return {
            "roots": [fingerprint(r) for r in self.authority.roots],
            "signing": signing,
            "next": fingerprint(self._next[0]) if self._next else "",
            "phase": self.next_phase(),
            "bundle": bundle,
            "instances": len(live),
            "withoutBundle": sorted(n for n, h in live.items() if h.bundle != bundle),
            "onOldRoot": sorted(n for n, h in live.items() if h.issuer != signing),
        }

    def next_phase(self) -> str:
        if self._next is not None:
            return "switch"
        return "drop" if len(self.authority.roots) > 1 else "add"

    def step(self, phase: str, force: bool = False) -> dict[str, Any]:
        """Run one step; CertificateError names what blocks it (or why it is not the step due now)."""
        folder = self._folder()
        if phase not in PHASES:
            raise CertificateError(f"unknown step {phase!r} (add, switch, drop)")
        due = self.next_phase()
        if phase != due:
            raise CertificateError(f"the next step of the root rotation is {due!r}, not {phase!r}")
        status = self.status()
        ca = self.authority
        if phase == "add":
            key = new_root_key()
            root = root_certificate(key, ca.options.trust_domain)
            write_private(folder / NEXT_KEY, key_pem(key))
            (folder / NEXT_ROOT).write_text(pem(root))
            self._next = root, key
            self._write_bundle(folder, [*ca.roots, root])
            ca.trust([*ca.roots, root])
            log.info("root rotation: new root %s added to the trust bundle (not signing yet)", fingerprint(root))
        elif phase == "switch":
            if status["withoutBundle"] and not force:
                raise CertificateError(f"{len(status['withoutBundle'])} live workload(s) do not hold the new trust "
                                       f"bundle yet: {', '.join(status['withoutBundle'][:10])}")
            assert self._next is not None
            root, key = self._next
            old = [r for r in ca.roots if r != root]
            roots = [root, *old]  # the signing root first: the published bundle changes, agents renew onto it
            self._write_bundle(folder, roots)
            write_private(folder / CA_KEY, key_pem(key))
            (folder / ROOT_CERT).write_text(pem(root))
            for name in (NEXT_ROOT, NEXT_KEY):
                (folder / name).unlink()
            self._next = None
            ca.use(root, key, [], roots)
            log.info("root rotation: signing with the new root %s; the old root stays trusted", fingerprint(root))
        else:
            if status["onOldRoot"] and not force:
                raise CertificateError(f"{len(status['onOldRoot'])} live workload(s) still hold a certificate of "
                                       f"an old root: {', '.join(status['onOldRoot'][:10])}")
            dropped = ca.roots[1:]
            with contextlib.suppress(FileNotFoundError):
                (folder / TRUST_BUNDLE).unlink()
            ca.trust(ca.roots[:1])
            log.info("root rotation: old root(s) %s dropped from the trust bundle",
                     ", ".join(fingerprint(r) for r in dropped))
        return self.status()

    # -- a root chosen elsewhere (a shared CA) --------------------------------------------------------------------
    @property
    def pending(self) -> x509.Certificate | None:
        """The root trusted but not signing yet (between steps 1 and 2), if any."""
        return self._next[0] if self._next else None

    def follow(self, root: x509.Certificate, key: SigningKey, also: list[x509.Certificate] | None = None) -> None:
        """Step 1 with a root chosen elsewhere: `root` (and the roots in `also`) join the trust bundle; signing stays
        with the current root until `promote`. CertificateError when the key does not match or it is no CA."""
        ca = self.authority
        check_signer(root, key)
        self._next = root, key
        ca.trust(_unique([*ca.roots, root, *(also or [])]))
        log.info("root rotation: new root %s from the shared CA added to the trust bundle (not signing yet)",
                 fingerprint(root))

    def promote(self) -> None:
        """Step 2 for a followed root: sign with it; every root trusted so far stays trusted."""
        if self._next is None:
            raise CertificateError("no followed root to sign with")
        root, key = self._next
        self._next = None
        self.authority.use(root, key, [], [root, *(r for r in self.authority.roots if r != root)])
        log.info("root rotation: signing with the shared CA's new root %s; the old root stays trusted",
                 fingerprint(root))

    def drop_old(self, keep: list[x509.Certificate] | None = None) -> list[x509.Certificate]:
        """Step 3 for a followed root: trust the signing root (and `keep`) only; the roots dropped."""
        ca = self.authority
        roots = _unique([ca.signing_cert, *(keep or [])]) if ca.signing_cert in ca.roots else [*ca.roots]
        dropped = [r for r in ca.roots if r not in roots]
        if dropped:
            ca.trust(roots)
            log.info("root rotation: old root(s) %s dropped from the trust bundle",
                     ", ".join(fingerprint(r) for r in dropped))
        return dropped

    @staticmethod
    def _write_bundle(folder: Path, roots: list[x509.Certificate]) -> None:
        tmp = folder / (TRUST_BUNDLE + ".tmp")
        tmp.write_text("".join(pem(r) for r in roots))
        tmp.replace(folder / TRUST_BUNDLE)


def _unique(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for c in certs:
        if c not in out:
            out.append(c)
    return out
