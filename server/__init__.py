"""The gRPC extension server Envoy Gateway calls, and the `extension-server` command."""
