"""The exception tree: every error sailmesh raises on purpose derives from SailmeshError."""

from __future__ import annotations


class SailmeshError(Exception):
    """Base of every error sailmesh raises on purpose."""


class ParseError(SailmeshError):
    """A file could not be read or parsed into resources (bad YAML, binary, too large, ...)."""

    def __init__(self, message: str, *, file: str = "", line: int = 0) -> None:
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")
        self.message = message


class ValidationError(SailmeshError):
    """A resource violates Istio's rules; `issues` holds every problem found."""

    def __init__(self, issues: list[object]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class ModelError(SailmeshError):
    """A resource's spec does not fit its typed model (api.models); `path` is the field (`spec.http[0].timeout`)."""

    def __init__(self, resource: str, path: str, reason: str) -> None:
        self.resource = resource
        self.path = path
        self.reason = reason
        super().__init__(f"{resource}: {path}: {reason}" if path else f"{resource}: {reason}")


class PatchError(SailmeshError):
    """An EnvoyFilter patch value is not the Envoy message its applyTo patches (unknown field or type)."""


class ConfigError(SailmeshError):
    """The config store cannot accept or serve a request (unknown resource, conflict, ...)."""


class RegistryError(SailmeshError):
    """Service or workload registration failed."""


class GenerationError(SailmeshError):
    """Translating mesh config into Envoy resources failed."""


class UnservedTypeError(GenerationError):
    """A proxy asked for a resource type the control plane does not serve (the server then does not answer)."""


class XdsError(SailmeshError):
    """The xDS server or client hit a protocol error."""


class AgentError(SailmeshError):
    """The per-workload agent could not start, configure or stop Envoy."""


class PlatformError(SailmeshError):
    """The local platform could not start or stop workloads."""


class CertificateError(SailmeshError):
    """The CA cannot load its keys or sign a request (a bad CSR, an unsupported key, plug-in files that do not fit)."""


class AuthenticationError(SailmeshError):
    """A caller proved no identity: its credential is missing, unknown or malformed (gRPC UNAUTHENTICATED, HTTP 401)."""


class IdentityError(SailmeshError):
    """A caller proved one identity and asked for another (a CSR or an xDS node for someone else: PERMISSION_DENIED)."""


class RateLimitedError(SailmeshError):
    """A caller exceeded a rate limit (gRPC RESOURCE_EXHAUSTED, HTTP 429); `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class CaptureError(SailmeshError):
    """istio-iptables: the capture arguments are invalid, or `iptables-restore` refused the rules."""
