"""A config store layer fed by informers: Istio kinds, Services, the mesh ConfigMap and Secrets from the API server.

Objects are validated as every store validates (`Validator`); one the validator refuses stays out of the mesh and
is listed by `rejected()` (the validating webhook keeps such objects out of the API server in the first place).
Creation times come from the API server (`metadata.creationTimestamp`), so "the oldest wins" is Istio's order.
"""

from __future__ import annotations

import logging

from sailmesh.api.kinds import internal_kind
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, ResourceKey, Source
from sailmesh.errors import ParseError
from sailmesh.platform.kube.informer import KubeResource, Obj
from sailmesh.store.base import Rejection, Rejections, Validator, no_validation
from sailmesh.store.memory import MemoryStore

log = logging.getLogger(__name__)
REPORT_LABEL = "internal.istio.io/distribution-report"  # a replica's distribution report (distreport.py)


def _source(obj: Obj) -> Source:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return Source(file=f"kube:{obj.get('kind', '')}/{ns + '/' if ns else ''}{meta.get('name', '')}")


class KubeStore(MemoryStore):
    """Config from the API server; written only by its informers (the handler methods below)."""

    def __init__(self, validator: Validator = no_validation) -> None:
        super().__init__(validator)
        self._rejected: dict[ResourceKey, Rejection] = {}
        self._generations: dict[ResourceKey, int] = {}  # the API server's generation (the store counts its own)

    def api_generation(self, key: ResourceKey) -> int | None:
        """The object's generation on the API server (it changes with the spec, never with the status); None when the
        store does not hold the object."""
        return self._generations.get(key) if self.get(key.kind, key.namespace, key.name) is not None else None

    def rejected(self) -> Rejections:
        return list(self._rejected.values())

    # -- informer handler -------------------------------------------------------------------------
    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        """The complete set of one kind: upsert what is there, delete the rest (one change set)."""
        keep: list[Resource] = []
        for obj in objs:
            r = self._accepted(obj)
            if r is not None:
                keep.append(r)
        kind = internal_kind(resource.api_version, resource.kind)  # the Gateway API's Gateway: KubernetesGateway
        present = {r.key for r in keep}
        gone = [k for k in self.keys() if k.kind == kind and k not in present]
        for k in [k for k in self._rejected if k.kind == kind]:
            if not any(self._key(o) == k for o in objs):
                del self._rejected[k]
        self.commit(keep, gone)

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        r = self._accepted(obj)
        if r is not None:
            self.commit([r], ())
        else:  # refused now: the previous version does not stay in force (the API server no longer has it)
            self.commit((), [self._key(obj)])

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        key = self._key(obj)
        self._rejected.pop(key, None)
        self.commit((), [key])

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _key(obj: Obj) -> ResourceKey:
        meta = obj.get("metadata") or {}
        kind = internal_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        return ResourceKey(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def _accepted(self, obj: Obj) -> Resource | None:
        """The object as a Resource when it parses and validates; else recorded in rejected(). A replica's
        distribution report (a ConfigMap, distreport.py) is no config: None, and not a rejection."""
        if obj.get("kind") == "ConfigMap" and ((obj.get("metadata") or {}).get("labels") or {}).get(REPORT_LABEL):
            return None
        obj.get("metadata", {}).pop("managedFields", None)  # bulky and never read
        src = _source(obj)
        try:
            r = resource_from_dict(obj, src)
        except ParseError as e:
            self._rejected[self._key(obj)] = Rejection(src.file, self._key(obj), (str(e),))
            return None
        issues = self.check([r])
        if issues:
            self._rejected[r.key] = Rejection(src.file, r.key, tuple(issues))
            log.warning("%s", self._rejected[r.key])
            return None
        self._rejected.pop(r.key, None)
        generation = obj.get("metadata", {}).get("generation")
        self._generations[r.key] = generation if isinstance(generation, int) else 0
        return r
