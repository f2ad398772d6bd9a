"""EnvoyFilter: Istio's patches applied to a proxy's generated Envoy resources (pilot's envoyfilter package)."""

from sailmesh.generate.envoyfilter.apply import patch_resources
from sailmesh.generate.envoyfilter.select import PatchSet, patch_set

__all__ = ["PatchSet", "patch_resources", "patch_set"]
