"""Istio's httpbin and sleep samples (the set-up of Istio's security tasks) as small asyncio programs."""
