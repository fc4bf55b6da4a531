"""Local stand-ins for an Envoy Gateway data plane: a real Envoy, an echo backend, listeners.

The ``extension-server demo`` command and the end-to-end tests share these so that what the
demo shows is exactly what the tests prove.
"""
