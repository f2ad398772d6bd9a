"""Access logs: Istio's default TEXT and JSON formats, from mesh config `accessLogFile`/`accessLogEncoding`/
`accessLogFormat` (legacy) or the Telemetry API's `accessLogging` (envoyFileAccessLog providers, `disabled`,
`filter.expression` as Envoy's CEL access-log filter), for every HCM and tcp_proxy (pilot/pkg/model/
telemetry_logging.go and pilot/pkg/networking/core/accesslog.go are the rules matched here)."""

from __future__ import annotations

import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from google.protobuf import any_pb2, message, struct_pb2

from sailmesh.api.meshconfig import EnvoyFileAccessLog, FileAccessLogFormat, MeshConfig
from sailmesh.telemetry.resolve import EffectiveTelemetry, LogSink

FILE_ACCESS_LOG = "envoy.access_loggers.file"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
BUILTIN_ENVOY = "envoy"
DEV_STDOUT = "/dev/stdout"

# Istio's EnvoyTextLogFormat (Istio 1.9 onwards), byte for byte.
TEXT_FORMAT = (
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% "
    "%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% "
    "%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" "
    "\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" "
    "%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% "
    "%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

# Istio's EnvoyJSONLogFormatIstio: label -> command operator.
JSON_LABELS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def _pack(m: message.Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(m)
    return a


def _text(fmt: str) -> sfs_pb2.SubstitutionFormatString:
    # "Istio will insert a newline ('\n') on all formats (if missing)" (fileAccessLogFormat)
    text = fmt if fmt.endswith("\n") else fmt + "\n"
    return sfs_pb2.SubstitutionFormatString(text_format_source=base_pb2.DataSource(inline_string=text))


def _json(labels: dict[str, str]) -> sfs_pb2.SubstitutionFormatString:
    s = struct_pb2.Struct()
    s.update(labels)
    return sfs_pb2.SubstitutionFormatString(json_format=s, json_format_options=sfs_pb2.JsonFormatOptions())


def _file_log(path: str, fmt: sfs_pb2.SubstitutionFormatString) -> accesslog_pb2.AccessLog:
    return accesslog_pb2.AccessLog(name=FILE_ACCESS_LOG, typed_config=_pack(file_pb2.FileAccessLog(path=path,
                                                                                                 log_format=fmt)))


def from_mesh_config(path: str, mesh: MeshConfig) -> accesslog_pb2.AccessLog:
    """Istio's FileAccessLogFromMeshConfig: TEXT (accessLogFormat or the default) or JSON (accessLogFormat as a
    JSON object of labels, else Istio's labels; an unparsable one falls back to the default, as in Istio)."""
    if mesh.access_log_encoding == "JSON":
        labels = JSON_LABELS
        if mesh.access_log_format:
            try:
                parsed = json.loads(mesh.access_log_format)
                if isinstance(parsed, dict) and parsed:
                    labels = {str(k): str(v) for k, v in parsed.items()}
            except ValueError:
                pass
        return _file_log(path, _json(labels))
    return _file_log(path, _text(mesh.access_log_format or TEXT_FORMAT))


def from_provider(name: str, prov: EnvoyFileAccessLog, mesh: MeshConfig) -> accesslog_pb2.AccessLog:
    """Istio's telemetryAccessLog for envoyFileAccessLog (the built-in `envoy` without a logFormat follows the
    mesh config's encoding and format)."""
    path = prov.path or DEV_STDOUT
    fmt: FileAccessLogFormat | None = prov.log_format
    if fmt is None:
        if name == BUILTIN_ENVOY:
            return from_mesh_config(path, mesh)
        return _file_log(path, _text(TEXT_FORMAT))
    if fmt.labels is not None:
        return _file_log(path, _json(dict(fmt.labels) or JSON_LABELS))
    return _file_log(path, _text(fmt.text or TEXT_FORMAT))


def cel_filter(expression: str) -> accesslog_pb2.AccessLogFilter:
    """Telemetry `filter.expression` as Envoy's CEL extension filter (the same attribute vocabulary)."""
    return accesslog_pb2.AccessLogFilter(extension_filter=accesslog_pb2.ExtensionFilter(
        name=CEL_FILTER, typed_config=_pack(cel_pb2.ExpressionFilter(expression=expression))))


def _sink(sink: LogSink, mesh: MeshConfig) -> accesslog_pb2.AccessLog | None:
    prov = sink.provider.envoy_file_access_log
    if prov is None:
        return None  # other kinds are reported as accepted, not enforced (resolve.unenforced)
    al = from_provider(sink.provider.name, prov, mesh)
    if sink.filter_expression:
        al.filter.CopyFrom(cel_filter(sink.filter_expression))
    return al


def access_logs(eff: EffectiveTelemetry, mesh: MeshConfig, mode: str) -> list[accesslog_pb2.AccessLog]:
    """The access loggers of a listener on the `mode` side (CLIENT: outbound/gateway, SERVER: inbound)."""
    sinks = eff.logging_for(mode)
    if sinks is None:  # no Telemetry access logging: the mesh config's accessLogFile, if any
        return [from_mesh_config(mesh.access_log_file, mesh)] if mesh.access_log_file else []
    return [al for al in (_sink(s, mesh) for s in sinks) if al is not None]
