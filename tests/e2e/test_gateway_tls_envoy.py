"""Every gateway TLS shape the generator makes is accepted by real Envoy (`--mode validate`): certificate files,
credentialName over ADS (SIMPLE and MUTUAL), ISTIO_MUTUAL from the agent's SDS, TLS parameters, PASSTHROUGH and
TLS-terminated TCP servers sharing port 443 by SNI, and Istio's own gateway test data."""

from __future__ import annotations

import datetime as dt
import pathlib
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from sailmesh.processes import envoy_binary, free_port
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
from tests.unit.test_generate_support import gateway_proxy, make_snapshot, resources, service

pytestmark = pytest.mark.e2e

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-files, protocol: HTTPS}
    hosts: [files.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: CERT
      privateKey: KEY
      caCertificates: CERT
      caCrl: CRL
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384, TLS_AES_256_GCM_SHA384]
      subjectAltNames: [client.example.com]
  - port: {number: 443, name: https-cred, protocol: HTTPS}
    hosts: [cred.example.com]
    tls: {mode: MUTUAL, credentialName: cred}
  - port: {number: 443, name: https-mesh, protocol: HTTPS}
    hosts: [mesh.example.com]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: [pass.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9443, name: tls-term, protocol: TLS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cred}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: web}}]}]
  tls:
  - match: [{sniHosts: [pass.example.com]}]
    route: [{destination: {host: db}, weight: 50}, {destination: {host: web, port: {number: 80}}, weight: 50}]
  tcp: [{route: [{destination: {host: db}}]}]
"""


def with_xds_clusters(b: bootstrap_pb2.Bootstrap) -> bootstrap_pb2.Bootstrap:
    """What a gateway's real bootstrap holds for these: ADS (credentialName secrets) and `sds-grpc`."""
    for name in ("xds-grpc", "sds-grpc"):
        c = b.static_resources.clusters.add(name=name, type=cluster_pb2.Cluster.STATIC)
        c.load_assignment.cluster_name = name
        c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.MergeFrom(
            address_pb2.SocketAddress(address="127.0.0.1", port_value=free_port()))
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        opts.explicit_http_config.http2_protocol_options.SetInParent()
        c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Pack(opts)
    ads = b.dynamic_resources.ads_config
    ads.api_type = config_source_pb2.ApiConfigSource.GRPC
    ads.transport_api_version = config_source_pb2.V3
    ads.grpc_services.append(grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="xds-grpc")))
    return b


def validate(tmp_path: pathlib.Path, snap: MeshSnapshot, proxy: ProxyView) -> None:
    path = write_bootstrap(tmp_path, with_xds_clusters(static_bootstrap(snap, proxy, free_port())))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])


def write_crl(tmp_path: pathlib.Path, cert_path: str, key_path: str) -> str:
    """An empty CRL signed by the self-signed certificate (a MUTUAL server's caCrl), as a PEM file."""
    cert = x509.load_pem_x509_certificate(pathlib.Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(pathlib.Path(key_path).read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(now)
           .next_update(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return str(tmp_path / "crl.pem")


def write_cert(tmp_path: pathlib.Path) -> tuple[str, str]:
    """A self-signed certificate and its key as PEM files (what Envoy loads for file-based servers)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "files.example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


def test_envoy_accepts_every_gateway_tls_shape(tmp_path: pathlib.Path) -> None:
    cert, key = write_cert(tmp_path)
    text = GATEWAY.replace("CERT", cert).replace("KEY", key).replace("CRL", write_crl(tmp_path, cert, key))
    snap = make_snapshot(resources(text), [service("web", ports=[(80, "HTTP")]), service("db", ports=[(7070, "TCP")])])
    b = static_bootstrap(snap, gateway_proxy("127.0.0.1"), free_port())
    by_name = {li.name: li for li in b.static_resources.listeners}
    assert set(by_name) == {"0.0.0.0_80", "0.0.0.0_443", "0.0.0.0_9443"}
    assert len(by_name["0.0.0.0_443"].filter_chains) == 4  # files, credential, ISTIO_MUTUAL, passthrough
    validate(tmp_path, snap, gateway_proxy("127.0.0.1"))


@pytest.mark.parametrize(("file", "labels"), [
    ("ingressgateway.yaml", {"istio": "ingressgateway"}), ("egressgateway.yaml", {"istio": "egressgateway"}),
    ("gateway-all.yaml", {"app": "my-gateway-controller"})])
def test_envoy_accepts_istio_gateway_test_data(conformance: pathlib.Path, tmp_path: pathlib.Path, file: str,
                                               labels: dict[str, str]) -> None:
    """Istio's gateway test data, its certificate paths pointed at files that exist (Envoy reads them)."""
    cert, key = write_cert(tmp_path)
    text = (conformance / "validation" / "tests-testdata-config" / file).read_text()
    text = re.sub(r"/etc/certs/[\w.-]*key[\w.-]*\.pem", key, text)
    text = re.sub(r"/etc/certs/[\w.-]+\.pem", cert, text)
    snap = make_snapshot(resources(text), [service("productpage", ports=[(9080, "HTTP")])])
    base = gateway_proxy("127.0.0.1")
    proxy = ProxyView(id=base.id, type="router", ip=base.ip, namespace=base.namespace,
                      workload_name=base.workload_name, labels=labels)
    b = static_bootstrap(snap, proxy, free_port())
    assert any(c.transport_socket.name for li in b.static_resources.listeners for c in li.filter_chains)
    validate(tmp_path, snap, proxy)


# GATEWAY's header and its VirtualService's HTTP route, with one MUTUAL server whose files DIR holds
CRL_GATEWAY = (GATEWAY[:GATEWAY.index("  - port: {number: 80,")] + """\
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [files.example.com]
    tls: {mode: MUTUAL, serverCertificate: DIR/server.pem, privateKey: DIR/server.key, caCertificates: DIR/ca.pem,
          caCrl: DIR/crl.pem}
""" + GATEWAY[GATEWAY.index("---"):GATEWAY.index("  tls:\n  - match")])


def test_a_mutual_servers_ca_crl_refuses_a_revoked_client_certificate(tmp_path: pathlib.Path) -> None:
    """Gateway `tls.caCrl` (Istio: "the certificate revocation list (CRL) to use in verifying a presented client side
    certificate"; ApplyToCommonTLSContext puts it in the validation context): in a private network namespace (root),
    a client certificate the CRL lists is refused, another one of the same CA gets an HTTP answer (503: `web` has no
    endpoint here)."""
    import json
    import os
    import sys

    from tests.conftest import ROOT
    from tests.e2e.test_mesh_gateway_tls import issue, make_ca

    if os.geteuid() != 0:
        pytest.skip("needs root: a private network namespace for the gateway's port 443")
    ca = make_ca("crl-ca")
    files = {"ca": (ca[0].public_bytes(serialization.Encoding.PEM), b""), "server": issue(ca, "files.example.com"),
             "good": issue(ca, "good.example.com", client=True),
             "revoked": issue(ca, "revoked.example.com", client=True)}
    for name, (cert, key) in files.items():
        (tmp_path / f"{name}.pem").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
    now = dt.datetime.now(dt.UTC)
    revoked = x509.load_pem_x509_certificate(files["revoked"][0])
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca[0].subject).last_update(now)
           .next_update(now + dt.timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(revoked.serial_number)
                                    .revocation_date(now).build())
           .sign(ca[1], hashes.SHA256()))
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    snap = make_snapshot(resources(CRL_GATEWAY.replace("DIR", str(tmp_path))), [service("web", ports=[(80, "HTTP")])])
    path = write_bootstrap(tmp_path, static_bootstrap(snap, gateway_proxy("127.0.0.1"), 15000))  # in its namespace
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.gateway_crl_netns", str(path), "15000",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = done.stdout.strip().splitlines()
    assert lines, (done.returncode, done.stderr[-3000:])
    got = json.loads(lines[-1])
    assert got.get("good", "").startswith("HTTP/1.1 "), got
    assert got.get("revoked", "").startswith("error: "), got
