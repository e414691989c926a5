"""ProxylessNAS search over KWS search spaces: spaces, supernet, costs, losses, derivation."""
