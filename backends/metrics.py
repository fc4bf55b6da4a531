"""Prometheus metrics of the credential backends (served by the server on --metrics-port).

Labels are the store ("vault", "aws") and the outcome of a request: never a path, a
secret name or anything else a credential could hide in.
"""

from __future__ import annotations

from prometheus_client import Counter

BACKEND_REQUESTS = Counter(
    "extension_server_backend_requests",
    "Requests to secret stores, by store and outcome.",
    ["store", "outcome"],
)
CACHE_HITS = Counter(
    "extension_server_secret_cache_hits", "Secrets served fresh from the cache.", ["store"]
)
CACHE_MISSES = Counter(
    "extension_server_secret_cache_misses",
    "Secrets not fresh in the cache (a backend request was made or joined).",
    ["store"],
)
STALE_SERVES = Counter(
    "extension_server_secret_stale_serves",
    "Secrets served past their TTL because the store failed (within --secret-max-stale).",
    ["store"],
)
UNRESOLVED_DENIALS = Counter(
    "extension_server_unresolved_denials",
    "Policies whose users were denied because their credentials could not be resolved.",
    ["store"],
)
