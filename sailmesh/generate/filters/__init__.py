"""HTTP filters: the filter chain of a proxy's HTTP connection managers, assembled from one ordered table.

`chain.py` holds the table and the assembly (`http_filters`); each filter's builder lives in its own
module (`basic.py`: fault, CORS, dynamic forward proxy, router). A new filter (JWT authn, RBAC,
telemetry, rate limit) is a builder module plus one slot in `chain.HTTP_FILTERS`.
"""

from sailmesh.generate.filters.chain import HTTP_FILTERS, FilterSlot, http_filters
from sailmesh.generate.filters.context import Direction, FilterContext

__all__ = ["HTTP_FILTERS", "Direction", "FilterContext", "FilterSlot", "http_filters"]
