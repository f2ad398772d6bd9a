"""`sailmesh explain`'s walk: a request through the Envoy config the control plane generated, without sending it.

Pure modules over config dumps (Envoy's JSON form): the control plane runs them for `explain` and `x authz check`
(POST /api/v1/explain, GET /api/v1/authz), so the CLI loads neither the walk nor Envoy's protos; the CLI runs the
same walk itself only against a control plane that does not offer it.
"""
