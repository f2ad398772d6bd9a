"""xDS vocabulary shared by the generators, the ADS server and the agent: type URLs, push requests, wire helpers."""
