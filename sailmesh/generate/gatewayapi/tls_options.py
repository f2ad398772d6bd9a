"""The listener `tls.options` Istio reads (its buildTLS), apart so the enforcement notes load no protos."""

from __future__ import annotations

TERMINATE_MODE_KEY = "gateway.istio.io/tls-terminate-mode"
CIPHER_SUITES_KEY = "gateway.istio.io/tls-cipher-suites"
READ_OPTIONS = (TERMINATE_MODE_KEY, CIPHER_SUITES_KEY)  # the only options Istio reads
TERMINATE_MODES = ("MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL", "ISTIO_SIMPLE")  # other values: SIMPLE
