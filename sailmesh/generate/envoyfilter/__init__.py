"""EnvoyFilter: Istio's patches applied to a proxy's generated Envoy resources (pilot's envoyfilter package)."""

from sailmesh.generate.envoyfilter.apply import patch_resources
from sailmesh.generate.envoyfilter.select import PatchSet, extension_configs, patch_set

__all__ = ["PatchSet", "extension_configs", "patch_resources", "patch_set"]
