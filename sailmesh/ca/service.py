"""Istio's certificate gRPC service, `istio.v1.auth.IstioCertificateService/CreateCertificate`, on grpc.aio.

No generated code for Istio's `security/v1alpha1/ca.proto` ships in our dependencies, so its two messages are
built here at import from a FileDescriptorProto (same package, names and field numbers as Istio's, so istio-agent
and sailmesh agents are wire-compatible). The caller proves its identity with a join token in the call metadata
(`authorization: Bearer <token>`) or, where the channel verified one, its client certificate's SPIFFE ID
(a workload renewing). Failures are logged with the peer and the identity, never the token.

A platform may add a `TokenVerifier` (on Kubernetes: a projected service-account token checked with the API
server's TokenReview, platform/kube/tokenreview.py): a bearer token that is not a join token goes to it, and the
identity it returns is the one signed for. Join tokens keep working beside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc
from cryptography import x509
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.message import Message

from sailmesh.api.identity import Identity, parse_spiffe_id
from sailmesh.ca.authority import BACKDATE, CertificateAuthority
from sailmesh.ca.limits import CSR_PER_IDENTITY, FAILED_AUTH_PER_ADDRESS, Limit, RateLimiter, peer_address
from sailmesh.ca.rotation import INSTANCE_KEY, Holders
from sailmesh.ca.tokens import TOKEN_PREFIX, JoinTokens
from sailmesh.errors import AuthenticationError, CertificateError, IdentityError, RateLimitedError, ValidationError
from sailmesh.metrics import CitadelMetrics

log = logging.getLogger("sailmesh.ca")

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = "CreateCertificate"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
BEARER = "bearer "


def _build_messages() -> tuple[type[Message], type[Message]]:
    """IstioCertificateRequest{csr=1, validity_duration=3, metadata=4} and IstioCertificateResponse{cert_chain=1}."""
    f = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.Default()
    name = "security/v1alpha1/ca.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(name=name, package="istio.v1.auth", syntax="proto3",
                                                 dependency=[struct_pb2.DESCRIPTOR.name])
        req = fdp.message_type.add(name="IstioCertificateRequest")
        req.field.add(name="csr", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL, json_name="csr")
        req.field.add(name="validity_duration", number=3, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL,
                      json_name="validityDuration")
        req.field.add(name="metadata", number=4, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Struct", json_name="metadata")
        resp = fdp.message_type.add(name="IstioCertificateResponse")
        resp.field.add(name="cert_chain", number=1, type=f.TYPE_STRING, label=f.LABEL_REPEATED, json_name="certChain")
        svc = fdp.service.add(name="IstioCertificateService")
        svc.method.add(name=METHOD, input_type=".istio.v1.auth.IstioCertificateRequest",
                       output_type=".istio.v1.auth.IstioCertificateResponse")
        pool.Add(fdp)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")))


IstioCertificateRequest, IstioCertificateResponse = _build_messages()

Context = grpc.aio.ServicerContext[Any, Any]


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | Any) -> str:
    """The token of an `authorization: Bearer <token>` call metadata entry, or ""."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if text.lower().startswith(BEARER):
                return text[len(BEARER):].strip()
    return ""


def instance_of(request: Any) -> str:
    """The instance an agent names in the request's metadata (bookkeeping for root rotation, never identity)."""
    value = request.metadata.fields.get(INSTANCE_KEY) if request.HasField("metadata") else None
    return value.string_value[:253] if value is not None else ""


def peer_issued_at(context: Context) -> float:
    """When the caller's verified client certificate was issued (its notBefore plus the CA's backdating); 0 if
    there is none to read."""
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    try:
        cert = x509.load_pem_x509_certificate(pems[0]) if pems else None
    except ValueError:
        cert = None
    return (cert.not_valid_before_utc + BACKDATE).timestamp() if cert is not None else 0.0


def peer_spiffe_ids(context: Context) -> list[str]:
    """The SPIFFE IDs of the caller's verified client certificate (empty without one)."""
    ids = (i.decode(errors="replace") for i in (context.peer_identities() or ()))
    return [i for i in ids if i.startswith("spiffe://")]


class TokenVerifier(Protocol):
    """Checks a platform's credential (not a join token): the (namespace, service account) it proves, or
    AuthenticationError (whose message must not contain the token)."""

    async def verify(self, token: str) -> tuple[str, str]: ...


class CertificateService:
    """Authenticates the caller, then signs its CSR for the identity it proved."""

    def __init__(self, authority: CertificateAuthority, tokens: JoinTokens,
                 metrics: CitadelMetrics | None = None, holders: Holders | None = None,
                 csr_limit: Limit = CSR_PER_IDENTITY, failed_auth_limit: Limit = FAILED_AUTH_PER_ADDRESS) -> None:
        self.authority = authority
        self.tokens = tokens
        self.csr_limiter = RateLimiter(csr_limit)  # per identity
        self.failed_auth = RateLimiter(failed_auth_limit)  # per caller address
        self.holders = holders  # which instance holds which bundle and root (root rotation waits on it)
        self.token_verifier: TokenVerifier | None = None  # a platform's tokens beside the join tokens
        self.requested = 0
        self.signed = 0
        self.refused = 0
        if metrics is not None:  # Istio's citadel_server_csr_count / _success_cert_issuance_count, read at scrape
            metrics.csr_count.set_function(lambda: self.requested)  # time: no lock taken per CSR
            metrics.success_cert_issuance_count.set_function(lambda: self.signed)

    def caller_identity(self, token: str, peer_ids: Sequence[str], peer_issued_at: float = 0.0) -> Identity:
        """The identity a token (or else a verified client certificate, issued at `peer_issued_at`, a renewal)
        proves; AuthenticationError if none, or if the identity was revoked after that certificate was issued."""
        trust_domain = self.authority.options.trust_domain
        if token:
            grant = self.tokens.authenticate(token)
            return Identity(trust_domain, grant.namespace, grant.service_account)
        for uri in peer_ids:
            try:
                identity = parse_spiffe_id(uri)
            except ValidationError:
                continue
            if identity.trust_domain == trust_domain:
                if self.tokens.revoked_at(identity.namespace, identity.service_account) >= peer_issued_at:
                    raise AuthenticationError(f"{uri} was revoked after this certificate was issued")
                return identity
        raise AuthenticationError("no join token (authorization: Bearer) and no client certificate of this mesh")

    async def platform_identity(self, token: str) -> Identity | None:
        """The identity a platform token proves through the verifier (None: no verifier, or a join token);
        AuthenticationError when the verifier refuses it or it names a reserved identity."""
        if not token or self.token_verifier is None or token.startswith(TOKEN_PREFIX):
            return None
        namespace, service_account = await self.token_verifier.verify(token)
        if (namespace, service_account) in self.tokens.reserved:
            raise AuthenticationError(f"ns/{namespace}/sa/{service_account} is reserved (the control plane's admin "
                                      "identity); no platform token proves it")
        return Identity(self.authority.options.trust_domain, namespace, service_account)

    def create(self, csr: str, validity_s: int, token: str, peer_ids: Sequence[str], instance: str = "",
               peer_issued_at: float = 0.0, proved: Identity | None = None) -> list[str]:
        """Sign `csr` for `proved` (a platform token's identity) or what the token / certificate proves; the chain
        leaf first, root last. Raises AuthenticationError, IdentityError, CertificateError, RateLimitedError."""
        self.requested += 1
        identity = proved or self.caller_identity(token, peer_ids, peer_issued_at)
        wait = self.csr_limiter.take(identity.uri)
        if wait:
            raise RateLimitedError(f"too many CSRs for {identity.uri}; retry in {wait:.1f}s", wait)
        ca = self.authority
        bundle, signing = ca.bundle_id, ca.signing_id  # before signing: what this response carries
        issued = ca.sign_csr(csr, identity, float(validity_s))
        if self.holders is not None:
            self.holders.record(instance, bundle, signing, issued.not_after)
        self.signed += 1
        return list(issued.chain)

    async def CreateCertificate(self, request: Any, context: Context) -> Any:
        started = time.perf_counter() if log.isEnabledFor(logging.DEBUG) else 0.0
        token = bearer_token(context.invocation_metadata())
        peer_ids = [] if token else peer_spiffe_ids(context)  # a token decides the identity: no certificate read
        try:
            proved = await self.platform_identity(token) if token and self.token_verifier is not None else None
            chain = self.create(request.csr, int(request.validity_duration), token, peer_ids, instance_of(request),
                                peer_issued_at(context) if peer_ids else 0.0, proved)
        except AuthenticationError as e:
            # Failed authentications per address: beyond the allowance they answer RESOURCE_EXHAUSTED (logged once
            # per hundred). A valid credential is never held back: every local caller shares 127.0.0.1, and one
            # misbehaving process must not lock the others out.
            address = peer_address(context.peer())
            wait = self.failed_auth.take(address)
            if wait:
                if self.failed_auth.refused % 100 == 1:
                    self._refuse(context, "rate limited", e)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many failed authentications from {address}; retry in {wait:.1f}s")
            self._refuse(context, "unauthenticated", e)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"request authenticate failure: {e}")
        except RateLimitedError as e:
            self._refuse(context, "rate limited", e)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except IdentityError as e:
            self._refuse(context, "permission denied", e)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except CertificateError as e:
            self._refuse(context, "invalid request", e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if started:
            log.debug("signed a certificate for %s in %.1f ms", peer_ids or "a token holder",
                      (time.perf_counter() - started) * 1000)
        return IstioCertificateResponse(cert_chain=chain)

    def _refuse(self, context: Context, what: str, error: Exception) -> None:
        # The error texts never contain the token; log the peer so an operator can find the caller.
        self.refused += 1
        log.warning("CSR refused (%s) from %s: %s", what, context.peer(), error)


def handler(service: CertificateService) -> grpc.GenericRpcHandler:
    """The generic gRPC handler for `service` (add it to a grpc.aio.Server)."""
    method = grpc.unary_unary_rpc_method_handler(
        service.CreateCertificate,
        request_deserializer=IstioCertificateRequest.FromString,
        response_serializer=IstioCertificateResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})


def client_call(channel: grpc.aio.Channel) -> Callable[..., Any]:
    """The unary CreateCertificate callable on `channel` (request and response are the messages above)."""
    return channel.unary_unary(FULL_METHOD, request_serializer=IstioCertificateRequest.SerializeToString,
                               response_deserializer=IstioCertificateResponse.FromString)


# The control plane's own serving certificate: Istio's istiod DNS names plus loopback.
CONTROL_PLANE_DNS = ("istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "localhost")


class ServingCredentials:
    """TLS credentials for the control plane's gRPC port, with a certificate the CA issues and renews at half life.

    gRPC asks the fetcher on new handshakes; a renewed certificate serves new connections, open ones keep theirs.
    """

    def __init__(self, authority: CertificateAuthority, ips: Sequence[str] = ("127.0.0.1",),
                 require_client_auth: bool = False) -> None:
        self.authority = authority
        self.ips = list(dict.fromkeys(ips))
        self.require_client_auth = require_client_auth
        self.renew_at = 0.0
        self.chain_pem = ""
        self._initial = self._issue()

    def _issue(self) -> grpc.ServerCertificateConfiguration:
        issued, key = self.authority.issue_server(list(CONTROL_PLANE_DNS), self.ips)
        lifetime = (issued.not_after - issued.not_before).total_seconds()
        self.renew_at = time.time() + lifetime / 2
        self.chain_pem = "".join(issued.chain[:-1])
        log.info("control plane serving certificate issued (valid until %s)", issued.not_after.isoformat())
        return grpc.ssl_server_certificate_configuration([(key, self.chain_pem.encode())],
                                                         self.authority.trust_bundle().encode())

    def renew_now(self) -> None:
        """Issue a new certificate (with the current trust bundle) for the next handshake."""
        self.renew_at = 0.0

    def _fetch(self) -> grpc.ServerCertificateConfiguration:
        # gRPC keeps the current certificate when the fetcher returns None (its stubs do not say so).
        return self._issue() if time.time() >= self.renew_at else None  # type: ignore[return-value]

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials whose certificate renews itself."""
        return grpc.dynamic_ssl_server_credentials(self._initial, self._fetch,
                                                   require_client_authentication=self.require_client_auth)
