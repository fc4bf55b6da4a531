"""Ask a real Envoy whether it accepts listeners, quickly enough for hundreds of them.

``envoy --mode validate`` checks a whole bootstrap without serving (tens of ms a run). The
listeners go in as ``static_resources.listeners`` of a bootstrap whose
``dynamic_resources.ads_config`` points at a static HTTP/2 cluster ``xds_cluster``, so
listeners that fetch routes or secrets over ``rds``/``ads``/SDS validate as they would behind
Envoy Gateway.

Batching: one run validates many listeners, each copied under a unique name and with unique
ports (socket addresses only: pipe and internal addresses are left alone). Both matter: two
listeners on one address are rejected ("has duplicate address"), and of two static listeners
with one name Envoy silently validates only the first, so a bad second one would pass. Envoy
stops at the first bad listener and rejects the whole bootstrap; when its error names one of our
listeners we settle that one and re-run the rest, otherwise we bisect. Every listener that ends
up rejected is re-validated alone and unrenamed, so the error returned is what Envoy says about
that listener by itself (minus the proto dump Envoy puts before constraint violations).

Missing clusters: validate mode does not care about most cluster references (routes via RDS,
``tcp_proxy``, ext_authz/ALS/OTel ``envoy_grpc``), but some do fail at config time, e.g.
``envoy.tracers.datadog: unknown cluster 'tracing-0'`` or an inline route table's
``route: unknown cluster 'x'``. Behind Envoy Gateway those clusters arrive over CDS, so by
default every cluster Envoy reports as unknown gets an empty static stand-in and the run is
repeated; pass ``stub_missing_clusters=False`` to treat them as errors instead.

Types: parsing proto3 JSON with ``Any`` fields needs every message type registered, so
``register_all_types`` imports all of xds-protos' ``*_pb2`` modules (about half a second, once).

Which Envoy: the venv's (``find_envoy``) unless ``envoy=`` names another binary, such as one
of the releases tests/support/envoys.py fetches for the version matrix.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from server.demo.envoy import find_envoy
from server.envoy_json import register_envoy_types

Listener = Any  # envoy.config.listener.v3.Listener; xds-protos ships no type information

XDS_CLUSTER = "xds_cluster"
BATCH_NAME = "validate-listener-"
FIRST_PORT = 20000  # validate mode binds nothing, so these need not be free
_NAMED = re.compile(re.escape(BATCH_NAME) + r"(\d+)")
_PORT = re.compile(r":(\d+)\b")  # "listener '[::]:20007'", "0.0.0.0:20007", ...
_UNKNOWN_CLUSTER = re.compile(r"unknown cluster '([^']+)'")
_CONFIG_ERROR = re.compile(r"error initializing configuration '[^']*': (.*)", re.DOTALL)
# Envoy prefixes proto validation errors with a text dump of the offending message (marked
# "goo.gle/debug..."); the reason follows the dump's last "\n: ".
_PROTO_DUMP = re.compile(r"goo\.gle/debug\w*\s.*\n: ", re.DOTALL)


def parse_listener(data: dict[str, Any]) -> Listener:
    """Parse one listener in proto3 JSON form, rejecting unknown fields and types."""
    register_envoy_types()
    listener = listener_pb2.Listener()
    json_format.ParseDict(data, listener, ignore_unknown_fields=False)
    return listener


def load_corpus_listeners(directory: Path) -> list[tuple[str, Listener | str]]:
    """Read every ``*.yaml`` listener list in ``directory``: ``(<file stem>#<index>, listener)``.

    Where xds-protos cannot parse a listener (a type or field newer than it knows), the second
    element is the parse error text instead of a listener.
    """
    loaded: list[tuple[str, Listener | str]] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        documents = yaml.safe_load(path.read_text()) or []
        for index, data in enumerate(documents):
            ident = f"{path.stem}#{index}"
            try:
                loaded.append((ident, parse_listener(data)))
            except json_format.ParseError as error:
                loaded.append((ident, str(error)))
    return loaded


def validation_bootstrap(
    listeners: Iterable[dict[str, Any]], stub_clusters: Iterable[str] = ()
) -> dict[str, Any]:
    """A bootstrap with ADS over a static HTTP/2 ``xds_cluster`` and the given listeners."""
    clusters = [_cluster(XDS_CLUSTER, http2=True)]
    clusters += [_cluster(name) for name in sorted(set(stub_clusters) - {XDS_CLUSTER})]
    return {
        "node": {"id": "listener-validation", "cluster": "listener-validation"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            }
        },
        "static_resources": {"clusters": clusters, "listeners": list(listeners)},
    }


def validate_listeners(
    listeners: Sequence[Listener],
    workdir: Path,
    *,
    stub_missing_clusters: bool = True,
    envoy: Path | None = None,
) -> list[str | None]:
    """Validate each listener with the real Envoy: ``None`` if accepted, else Envoy's error.

    ``envoy``: the binary to ask (default: the venv's).
    """
    binary = envoy if envoy is not None else find_envoy()
    validator = _Validator(list(listeners), Path(workdir), stub_missing_clusters, binary)
    validator.settle(list(range(len(validator.listeners))))
    return [validator.results[index] for index in range(len(validator.listeners))]


def _cluster(name: str, *, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": []},
    }
    if http2:
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {
            options: {
                "@type": f"type.googleapis.com/{options}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
        cluster["load_assignment"]["endpoints"] = [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": "127.0.0.1", "port_value": 18000}
                            }
                        }
                    }
                ]
            }
        ]
    return cluster


@dataclass
class _Validator:
    """State of one ``validate_listeners`` call: results so far and clusters stubbed so far."""

    listeners: list[Listener]
    workdir: Path
    stub_missing_clusters: bool
    envoy: Path
    results: dict[int, str | None] = field(default_factory=dict)
    stubs: set[str] = field(default_factory=set)
    runs: int = 0
    _ports: dict[int, int] = field(default_factory=dict)  # batch port -> listener index

    def settle(self, batch: list[int]) -> None:
        """Fill in ``results`` for every index in ``batch``."""
        while batch:
            error = self._run(batch)
            if error is None:
                self.results.update(dict.fromkeys(batch, None))
                return
            culprit = self._attribute(error, batch)
            if culprit is not None:
                self.results[culprit] = self._run([culprit])
                batch = [index for index in batch if index != culprit]
            elif len(batch) == 1:
                self.results[batch[0]] = error
                return
            else:
                middle = len(batch) // 2
                self.settle(batch[:middle])
                self.settle(batch[middle:])
                return

    def _attribute(self, error: str, batch: list[int]) -> int | None:
        """The listener of ``batch`` that Envoy's error names (by batch name or port), if any.

        Only a heuristic: the culprit is re-validated alone, so a wrong guess costs one run.
        """
        if len(batch) == 1:
            return None
        for pattern, lookup in ((_NAMED, None), (_PORT, self._ports)):
            for match in pattern.finditer(error):
                number = int(match.group(1))
                index = number if lookup is None else lookup.get(number)
                if index in batch:
                    return index
        return None

    def _run(self, batch: list[int]) -> str | None:
        """One ``envoy --mode validate`` over ``batch``, stubbing unknown clusters as needed.

        A lone listener runs unchanged; in a batch each is renamed and re-ported.
        """
        if len(batch) == 1:
            configs = [json_format.MessageToDict(self.listeners[batch[0]])]
        else:
            self._ports.clear()
            configs = [self._batch_copy(index) for index in batch]
        while True:
            error = self._envoy(configs)
            missing = set(_UNKNOWN_CLUSTER.findall(error or "")) - self.stubs
            if not (error and missing and self.stub_missing_clusters):
                return error
            self.stubs |= missing

    def _batch_copy(self, index: int) -> dict[str, Any]:
        listener = listener_pb2.Listener()
        listener.CopyFrom(self.listeners[index])
        listener.name = f"{BATCH_NAME}{index}"
        addresses = [listener.address] + [extra.address for extra in listener.additional_addresses]
        for address in addresses:
            if address.WhichOneof("address") == "socket_address":
                port = FIRST_PORT + len(self._ports)
                self._ports[port] = index
                address.socket_address.port_value = port
        config: dict[str, Any] = json_format.MessageToDict(listener)
        return config

    def _envoy(self, listeners: list[dict[str, Any]]) -> str | None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "validate-bootstrap.json"
        path.write_text(json.dumps(validation_bootstrap(listeners, self.stubs)))
        self.runs += 1
        error = envoy_validate(path, envoy=self.envoy)
        return None if error is None else _PROTO_DUMP.sub("<message elided>: ", error).strip()


def envoy_validate(path: Path, *flags: str, envoy: Path | None = None) -> str | None:
    """`envoy --mode validate` on the bootstrap at `path`: None if Envoy accepts it, else
    its configuration error (or, without one, all it said, or its exit status).

    `envoy`: the binary to run (default: the venv's)."""
    binary = envoy if envoy is not None else find_envoy()
    command = [str(binary), "--mode", "validate", "-c", str(path)]
    command += ["--log-level", "error", "--disable-hot-restart", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode == 0:
        return None
    output = (done.stderr + done.stdout).strip()
    found = _CONFIG_ERROR.search(output)
    return (found.group(1) if found else output) or f"envoy exited with status {done.returncode}"
