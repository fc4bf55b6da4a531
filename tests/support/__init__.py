"""Helpers shared by the tests: validating listeners with a real Envoy, loading the corpus."""
