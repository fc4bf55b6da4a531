"""The policy compiler: ListenerContextExample policies in, Envoy's basic_auth filter out.

A pipeline of small pure steps over typed values, with I/O at the edges:

    parse    (compiler.parse)     Kubernetes objects as JSON -> Policy values
    resolve  (backends)           Policy -> the credentials it names (I/O lives here)
    compile  (compiler.users,     credentials -> one sorted, Envoy-valid htpasswd table
              compiler.htpasswd)
    apply    (compiler.listener)  htpasswd table -> basic_auth filter in every HTTP manager

`compiler.pipeline.compile_listener` runs the four steps for one hook call.
"""
