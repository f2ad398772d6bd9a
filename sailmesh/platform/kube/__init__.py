"""The Kubernetes platform: config and registry from a real API server (list + watch), the only user of lightkube.

`KubePlatform` (platform.py) owns one connection and the informers: every Istio kind the API server's CRDs
define, Services, ConfigMap `istio` in the root namespace and Secrets feed a `KubeStore` (a config store layer);
Pods, EndpointSlices, Nodes and Namespaces feed a `KubeRegistry` (a member of the aggregate registry).
"""

from sailmesh.platform.kube.client import KubeConnection, connect
from sailmesh.platform.kube.informer import Informer, KubeResource
from sailmesh.platform.kube.platform import KubePlatform
from sailmesh.platform.kube.registry import KubeRegistry
from sailmesh.platform.kube.store import KubeStore
from sailmesh.platform.kube.tokenreview import TokenReviewer

__all__ = ["Informer", "KubeConnection", "KubePlatform", "KubeRegistry", "KubeResource", "KubeStore", "TokenReviewer",
           "connect"]
