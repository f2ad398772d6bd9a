"""A rate-limit service speaking Envoy's RLS protocol, configured as envoyproxy/ratelimit is (Istio's sample)."""
