"""Istio's analysis message catalogue (the subset sailmesh emits): code, name, level, Go-style template."""

from __future__ import annotations

from dataclasses import dataclass

DOC_URL = "https://istio.io/latest/docs/reference/config/analysis/{code}/"


@dataclass(frozen=True)
class MessageType:
    """One message kind: IST code, name, level (Error/Warning/Info) and Go fmt template."""

    code: str
    name: str
    level: str
    template: str

    @property
    def documentation_url(self) -> str:
        return DOC_URL.format(code=self.code.lower())


InternalError = MessageType(
    "IST0001",
    "InternalError",
    "Error",
    "Internal error: %v",
)

Deprecated = MessageType("IST0002", "Deprecated", "Warning", "Deprecated: %s")

ReferencedResourceNotFound = MessageType(
    "IST0101", "ReferencedResourceNotFound", "Error", "Referenced %s not found: %q"
)

NamespaceNotInjected = MessageType(
    "IST0102",
    "NamespaceNotInjected",
    "Info",
    "The namespace is not enabled for Istio injection. Run 'kubectl label namespace %s istio-in"
    "jection=enabled' to enable it, or 'kubectl label namespace %s istio-injection=disabled' to"
    " explicitly mark it as not needing injection.",
)

PodMissingProxy = MessageType(
    "IST0103",
    "PodMissingProxy",
    "Warning",
    "The pod %s is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
)

SchemaValidationError = MessageType("IST0106", "SchemaValidationError", "Error", "Schema validation error: %v")

MisplacedAnnotation = MessageType(
    "IST0107", "MisplacedAnnotation", "Warning", "Misplaced annotation: %s can only be applied to %s"
)

UnknownAnnotation = MessageType("IST0108", "UnknownAnnotation", "Warning", "Unknown annotation: %s")

ConflictingMeshGatewayVirtualServiceHosts = MessageType(
    "IST0109",
    "ConflictingMeshGatewayVirtualServiceHosts",
    "Error",
    "The VirtualServices %s associated with mesh gateway define the same host %s which can lead"
    " to undefined behavior. This can be fixed by merging the conflicting VirtualServices into "
    "a single resource.",
)

ConflictingSidecarWorkloadSelectors = MessageType(
    "IST0110",
    "ConflictingSidecarWorkloadSelectors",
    "Error",
    "The Sidecars %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
)

MultipleSidecarsWithoutWorkloadSelectors = MessageType(
    "IST0111",
    "MultipleSidecarsWithoutWorkloadSelectors",
    "Error",
    "The Sidecars %v in namespace %q have no workload selector, which can lead to undefined behavior.",
)

VirtualServiceDestinationPortSelectorRequired = MessageType(
    "IST0112",
    "VirtualServiceDestinationPortSelectorRequired",
    "Error",
    "This VirtualService routes to a service %q that exposes multiple ports %v. Specifying a po"
    "rt in the destination is required to disambiguate.",
)

DeploymentAssociatedToMultipleServices = MessageType(
    "IST0116",
    "DeploymentAssociatedToMultipleServices",
    "Warning",
    "This deployment %s is associated with multiple services using port %d but different protocols: %v",
)

PortNameIsNotUnderNamingConvention = MessageType(
    "IST0118",
    "PortNameIsNotUnderNamingConvention",
    "Info",
    "Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.",
)

NamespaceMultipleInjectionLabels = MessageType(
    "IST0123",
    "NamespaceMultipleInjectionLabels",
    "Warning",
    "The namespace has more than one type of injection labels %v, which may lead to undefined b"
    "ehavior. Make sure only one injection label exists.",
)

InvalidAnnotation = MessageType("IST0125", "InvalidAnnotation", "Warning", "Invalid annotation %s: %s")

UnknownMeshNetworksServiceRegistry = MessageType(
    "IST0126", "UnknownMeshNetworksServiceRegistry", "Error", "Unknown service registry %s in network %s"
)

NoMatchingWorkloadsFound = MessageType(
    "IST0127",
    "NoMatchingWorkloadsFound",
    "Warning",
    "No matching workloads for this resource with the following labels: %s",
)

NoServerCertificateVerificationDestinationLevel = MessageType(
    "IST0128",
    "NoServerCertificateVerificationDestinationLevel",
    "Warning",
    "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to"
    " validate server identity for host: %s",
)

NoServerCertificateVerificationPortLevel = MessageType(
    "IST0129",
    "NoServerCertificateVerificationPortLevel",
    "Warning",
    "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to"
    " validate server identity for host: %s at port %s",
)

VirtualServiceUnreachableRule = MessageType(
    "IST0130", "VirtualServiceUnreachableRule", "Warning", "VirtualService rule %v not used (%s)."
)

VirtualServiceIneffectiveMatch = MessageType(
    "IST0131",
    "VirtualServiceIneffectiveMatch",
    "Info",
    "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).",
)

VirtualServiceHostNotFoundInGateway = MessageType(
    "IST0132",
    "VirtualServiceHostNotFoundInGateway",
    "Warning",
    "one or more host %v defined in VirtualService %s not found in Gateway %s.",
)

SchemaWarning = MessageType("IST0133", "SchemaWarning", "Warning", "Schema validation warning: %v")

ServiceEntryAddressesRequired = MessageType(
    "IST0134", "ServiceEntryAddressesRequired", "Warning", "ServiceEntry addresses are required for this protocol."
)

DeprecatedAnnotation = MessageType(
    "IST0135",
    "DeprecatedAnnotation",
    "Info",
    "Annotation %q has been deprecated%s and may not work in future Istio versions.",
)

AlphaAnnotation = MessageType(
    "IST0136",
    "AlphaAnnotation",
    "Info",
    "Annotation %q is part of an alpha-phase feature and may be incompletely supported.",
)

DeploymentConflictingPorts = MessageType(
    "IST0137",
    "DeploymentConflictingPorts",
    "Warning",
    "This deployment %s is associated with multiple services %v using targetPort %q but different ports: %v.",
)

GatewayDuplicateCertificate = MessageType(
    "IST0138",
    "GatewayDuplicateCertificate",
    "Warning",
    "Duplicate certificate in multiple gateways %v may cause 404s if clients re-use HTTP2 connections.",
)

IngressRouteRulesNotAffected = MessageType(
    "IST0140",
    "IngressRouteRulesNotAffected",
    "Warning",
    "Subset in virtual service %s has no effect on ingress gateway %s requests",
)

InvalidApplicationUID = MessageType(
    "IST0144", "InvalidApplicationUID", "Warning", "User ID (UID) 1337 is reserved for the sidecar proxy."
)

ConflictingGateways = MessageType(
    "IST0145", "ConflictingGateways", "Error", "Conflict with gateways %s (workload selector %s, port %s, hosts %v)."
)

NamespaceInjectionEnabledByDefault = MessageType(
    "IST0148",
    "NamespaceInjectionEnabledByDefault",
    "Info",
    "is enabled for Istio injection, as Istio is installed with enableNamespacesByDefault as true.",
)

JwtClaimBasedRoutingWithoutRequestAuthN = MessageType(
    "IST0149",
    "JwtClaimBasedRoutingWithoutRequestAuthN",
    "Error",
    "The virtual service uses the JWT claim based routing (key: %s) but found no request authen"
    "tication for the gateway (%s) pod (%s). The request authentication must first be applied f"
    "or the gateway pods to validate the JWT token and make the claims available for routing.",
)

ExternalNameServiceTypeInvalidPortName = MessageType(
    "IST0150",
    "ExternalNameServiceTypeInvalidPortName",
    "Warning",
    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmat"
    "ched traffic for ports serving TCP protocol from being forwarded correctly",
)

EnvoyFilterUsesRelativeOperation = MessageType(
    "IST0151",
    "EnvoyFilterUsesRelativeOperation",
    "Warning",
    "This EnvoyFilter does not have a priority and has a relative patch operation set which can"
    " cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting "
    "the priority may help in ensuring the EnvoyFilter is applied correctly.",
)

EnvoyFilterUsesReplaceOperationIncorrectly = MessageType(
    "IST0152",
    "EnvoyFilterUsesReplaceOperationIncorrectly",
    "Error",
    "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
)

EnvoyFilterUsesAddOperationIncorrectly = MessageType(
    "IST0153",
    "EnvoyFilterUsesAddOperationIncorrectly",
    "Error",
    "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
)

EnvoyFilterUsesRemoveOperationIncorrectly = MessageType(
    "IST0154",
    "EnvoyFilterUsesRemoveOperationIncorrectly",
    "Error",
    "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
)

EnvoyFilterUsesRelativeOperationWithProxyVersion = MessageType(
    "IST0155",
    "EnvoyFilterUsesRelativeOperationWithProxyVersion",
    "Warning",
    "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFOR"
    "E/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not "
    "to be applied during an upgrade. Using the INSERT_FIRST or ADD option or setting the prior"
    "ity may help in ensuring the EnvoyFilter is applied correctly.",
)

InvalidTelemetryProvider = MessageType(
    "IST0157",
    "InvalidTelemetryProvider",
    "Warning",
    "The Telemetry %v in namespace %q with empty providers will be ignored.",
)

PodsIstioProxyImageMismatchInNamespace = MessageType(
    "IST0158",
    "PodsIstioProxyImageMismatchInNamespace",
    "Warning",
    "The Istio proxy images of the pods running in the namespace do not match the image defined"
    " in the injection configuration (pod names: %v). This often happens after upgrading the Is"
    "tio control-plane and can be fixed by redeploying the pods.",
)

ConflictingTelemetryWorkloadSelectors = MessageType(
    "IST0159",
    "ConflictingTelemetryWorkloadSelectors",
    "Error",
    "The Telemetries %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
)

MultipleTelemetriesWithoutWorkloadSelectors = MessageType(
    "IST0160",
    "MultipleTelemetriesWithoutWorkloadSelectors",
    "Error",
    "The Telemetries %v in namespace %q have no workload selector, which can lead to undefined behavior.",
)

InvalidGatewayCredential = MessageType(
    "IST0161",
    "InvalidGatewayCredential",
    "Error",
    "The credential referenced by the Gateway %s in namespace %s is invalid, which can cause th"
    "e traffic not to work as expected.",
)

GatewayPortNotDefinedOnService = MessageType(
    "IST0162",
    "GatewayPortNotDefinedOnService",
    "Warning",
    "The gateway is listening on a target port (port %d) that is not defined in the Service ass"
    "ociated with its workload instances (Pod selector %s). If you need to access the gateway p"
    "ort through the gateway Service, it will not be available.",
)

ReferencedInternalGateway = MessageType(
    "IST0165",
    "ReferencedInternalGateway",
    "Warning",
    "Gateway reference in VirtualService %s is to an implementation-generated internal Gateway: %s.",
)

IneffectiveSelector = MessageType(
    "IST0166",
    "IneffectiveSelector",
    "Warning",
    "Ineffective selector on Kubernetes Gateway %s. Use the TargetRef field instead.",
)

IneffectivePolicy = MessageType("IST0167", "IneffectivePolicy", "Warning", "The policy has no impact: %s.")

MultiClusterInconsistentService = MessageType(
    "IST0170",
    "MultiClusterInconsistentService",
    "Warning",
    "The service %v in namespace %q is inconsistent across clusters %q, which can lead to undef"
    "ined behaviors. The inconsistent behaviors are: %v.",
)

DestinationRuleSubsetNotSelectPods = MessageType(
    "IST0173",
    "DestinationRuleSubsetNotSelectPods",
    "Error",
    "The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 5"
    "03 UH (NoHealthyUpstream).",
)

UnknownDestinationRuleHost = MessageType(
    "IST0174",
    "UnknownDestinationRuleHost",
    "Warning",
    "The host %s defined in the DestinationRule does not match any services in the mesh.",
)

JwksUriFetchUnrestricted = MessageType(
    "IST0175",
    "JwksUriFetchUnrestricted",
    "Warning",
    "BLOCKED_CIDRS_IN_JWKS_URIS is not configured but %d RequestAuthentication resource(s) exis"
    "t (%s). Consider configuring it to restrict JWKS URI fetches to trusted networks.",
)

ConflictingServiceEntryProtocol = MessageType(
    "IST0177",
    "ConflictingServiceEntryProtocol",
    "Warning",
    "Multiple ServiceEntries (%s) define the same host %q and port %d with conflicting protocols (%s).",
)

ALL: dict[str, MessageType] = {m.code: m for m in list(globals().values()) if isinstance(m, MessageType)}
