"""`python -m bench` (`make bench`): the speed of the extension server, each figure beside a
baseline measured in the same run. See docs/performance.md, which the run rewrites.

Sections, each its own module:

1. `bench.hook`: PostHTTPListenerModify over real gRPC on loopback against a pass-through
   server (`bench.passthrough`) in the same process layout.
2. `bench.scaling`: compile time and output size for 10 to 100 000 users, cold and warm,
   against hashing the passwords with hashlib alone.
3. and 4. `bench.stores`: fan-in on one cold Vault secret, and the server's resident memory.
5. `bench.wire`: decode, modify and encode a listener with xds-protos and envoy-data-plane.
6. `bench.capacity`: how many users fit in an answer of Envoy Gateway's default 4 MiB
   message, from the bytes each user adds per HTTP connection manager.

The page opens with what a user decides on ("What to plan for"): the sections add those
lines to `Context.decisions`.
"""
