"""The xDS (ADS) server: connections, ACK/NACK, versions, push queues. Knows resources, not Istio."""
