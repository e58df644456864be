#!/usr/bin/env python3
"""Renders envoy-configs/bootstrap.yaml.in into a runnable Envoy bootstrap.

The filter config document (JSON) is embedded verbatim as the filter_config of both
filter instances; routes, clusters and the access log's cost fields are derived from
it. Rendering is lenient: a document that does not parse still renders (with no
model routes), so Envoy's own refusal of it can be observed.

Two builds of the filter: `native` (libaigw.so, a dynamic module; the template as
written) and `wasm` (aigw.wasm in envoy.filters.http.wasm). For wasm, both filter
instances become Wasm filters whose root_id picks the role; access-log fields read
filter state `wasm.io.envoy.ai_gateway.KEY` instead of dynamic metadata (proxy-wasm
cannot write metadata); and the listener and backend clusters get a connection buffer
limit of at least limits.maxRequestBodyBytes, since wasm cannot raise the per-stream
limit and Envoy would answer 413 itself past its 1 MiB default.

Limits of what is generated: each backend gets one STATIC cluster pointing at the
given upstream address; a route with several backends of one priority becomes
weighted_clusters. A route whose backends have several priorities gets its own
cluster instead, one endpoint per backend (carrying the backend's name in its
metadata) at the backend's priority, and a retry policy that moves each retry to the
next priority on 5xx, 429, resets and connect failures: fallback across providers.

    render.py --config envoy-configs/example/config.json --out .run/envoy.yaml \
        [--listen 127.0.0.1:1975] [--admin-port 9901] [--upstream 127.0.0.1:8081] \
        [--backend-upstream NAME=HOST:PORT ...] [--access-log PATH] \
        [--build native|wasm] [--wasm target/wasm32-wasip1/release/aigw.wasm] \
        [--xds-dir DIR [--xds-version V] [--xds-prune]]

File-based xDS (optional, `--xds-dir`; `file_xds_bootstrap()` and `write_file_xds()`
from Python): the same listener and clusters are written as Envoy discovery
responses, `DIR/lds/lds.yaml` (the listener) and `DIR/cds/cds.yaml` (every cluster),
and the bootstrap (--out) keeps only `admin` and a `node`, and points
`dynamic_resources` at the two files (`path_config_source`, each with its own
directory as `watched_directory`: Envoy reloads the file when an entry is renamed
into that directory, and one directory for both would make every write reload both).
Each file is written beside its final name and renamed over it (atomic: Envoy never
reads half a file); running render.py again with a changed config document and the
same DIR delivers the change to the running Envoy without a restart. Envoy reports
the `version_info` it applied as the text stats `listener_manager.lds.version_text`
and `cluster_manager.cds.version_text`. Order and lifetimes:

- the clusters go first, the listener second: a listener whose routes name a
  cluster Envoy does not have yet is rejected. From Python, `write_file_xds(...,
  between=...)` runs a callable between the two writes (wait there until Envoy has
  applied the clusters, e.g. its `cluster_manager.cds.update_success` counter);
- a cluster the new document no longer has is kept (the old listener's connections
  drain on the old routes, which still name it) unless `--xds-prune` (`prune=True`)
  says to drop it: do that once the drain time (`envoy --drain-time-s`, 600 s by
  default) has passed;
- Envoy updates a listener whose filter chain alone changed in place: new
  connections get the new chain, connections already open keep the old one (so a
  request or stream already under way finishes on the old filter config) and are
  drained: HTTP/1.1 answers get `connection: close`, more likely as the drain time
  passes, and at its end Envoy closes what is left, a stream still under way
  included: the drain time must exceed the longest stream;
- the clusters' own filter instance (`aigw_upstream`, unless routerOnly) holds the
  config document too: a cluster that changes is replaced at once, and a request of
  the old listener that starts after that (a draining connection) gets the new
  cluster's upstream work.

Invalid documents: Envoy rejects the update (`listener_manager.lds.update_rejected`,
`cluster_manager.cds.update_rejected`) and keeps serving the last good one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent / "bootstrap.yaml.in"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "aigw.wasm"
BUILDS = ("native", "wasm")
_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
_METADATA_FIELD = re.compile(r"%DYNAMIC_METADATA\(io\.envoy\.ai_gateway:([A-Za-z0-9_.-]+)\)%")
# The filter's default limits.maxRequestBodyBytes.
DEFAULT_BODY_LIMIT = 8 * 1024 * 1024
# Envoy's default connection buffer limit: the wasm build needs more for bigger bodies.
ENVOY_DEFAULT_BUFFER = 1024 * 1024
# Above the body limit, so the filter (not Envoy) sees the chunk that crosses it and
# answers its own JSON 413.
BUFFER_HEADROOM = 1024 * 1024


def substitute(node: Any, values: dict[str, Any]) -> Any:
    """Replaces ${NAME} in every string; a string that is only a placeholder takes the
    value's own type (ports stay integers)."""
    if isinstance(node, dict):
        return {substitute(k, values): substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), node)
    return node


def cluster_name(backend: str) -> str:
    return f"backend_{backend}"


def body_limit(doc: dict) -> int:
    limits = doc.get("limits")
    value = limits.get("maxRequestBodyBytes") if isinstance(limits, dict) else None
    return value if isinstance(value, int) and value > 0 else DEFAULT_BODY_LIMIT


def wasm_buffer_limit(doc: dict) -> int:
    """per_connection_buffer_limit_bytes for the wasm build."""
    return max(body_limit(doc), ENVOY_DEFAULT_BUFFER) + BUFFER_HEADROOM


def metadata_field(key: str, build: str) -> str:
    """The access-log command that reads one io.envoy.ai_gateway value."""
    if build == "wasm":
        return f"%FILTER_STATE(wasm.io.envoy.ai_gateway.{key}:PLAIN)%"
    return f"%DYNAMIC_METADATA(io.envoy.ai_gateway:{key})%"


def cost_keys(doc: dict) -> list[str]:
    keys: list[str] = []
    costs = list(doc.get("llmRequestCosts") or [])
    for route in doc.get("routes") or []:
        if isinstance(route, dict):
            costs += route.get("llmRequestCosts") or []
    for cost in costs:
        key = cost.get("metadataKey") if isinstance(cost, dict) else None
        if isinstance(key, str) and key and key not in keys:
            keys.append(key)
    return keys


def render(
    filter_config: str | dict,
    *,
    listen_address: str = "127.0.0.1",
    listen_port: int = 1975,
    admin_port: int = 9901,
    upstream: tuple[str, int] = ("127.0.0.1", 8081),
    backend_upstreams: dict[str, tuple[str, int]] | None = None,
    access_log_path: str = "/dev/stdout",
    build: str = "native",
    wasm_path: str | Path = DEFAULT_WASM,
) -> dict:
    """Returns the bootstrap as a dict (dump it with yaml.safe_dump)."""
    if build not in BUILDS:
        raise ValueError(f"build must be one of {BUILDS}, not {build!r}")
    text = filter_config if isinstance(filter_config, str) else json.dumps(filter_config)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    backend_upstreams = backend_upstreams or {}

    with open(TEMPLATE, encoding="utf-8") as f:
        template = yaml.safe_load(f)
    protos = template.pop("x-aigw-prototypes")
    common = {
        "ADMIN_PORT": admin_port,
        "LISTEN_ADDRESS": listen_address,
        "LISTEN_PORT": listen_port,
        "ACCESS_LOG_PATH": access_log_path,
        "FILTER_CONFIG": text,
        "UPSTREAM_HOST": upstream[0],
        "UPSTREAM_PORT": upstream[1],
        "WASM_PATH": str(Path(wasm_path).resolve()),
    }
    boot = substitute(template, common)

    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    fields = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    for key in cost_keys(doc):
        fields[key] = metadata_field(key, build)
    if build == "wasm":
        for name, value in fields.items():
            fields[name] = _METADATA_FIELD.sub(lambda m: metadata_field(m.group(1), build), value)
        wasm_filters(hcm["http_filters"], protos["wasm_filter"], common, credential_env(doc))

    routes = []
    fallback_clusters = []
    for route in doc.get("routes") or []:
        if not isinstance(route, dict):
            continue
        backends = [b for b in route.get("backends") or [] if isinstance(b, dict) and "name" in b]
        priorities = sorted({int(b.get("priority", 0)) for b in backends})
        fallback = len(priorities) > 1
        if fallback:
            fallback_clusters.append(
                fallback_cluster(protos, common, route, backends, backend_upstreams, upstream, build, doc))
        for model in route.get("models") or []:
            r = substitute(protos["model_route"], {"ROUTE_NAME": route.get("name", ""), "MODEL": model})
            if fallback:
                r["route"]["cluster"] = route_cluster_name(route.get("name", ""))
                r["route"]["retry_policy"] = fallback_retry_policy(len(priorities))
            elif len(backends) == 1:
                r["route"]["cluster"] = cluster_name(backends[0]["name"])
                host = router_only_host(doc, backends[0]["name"])
                if host:
                    r["route"]["host_rewrite_literal"] = host
            elif backends:
                r["route"]["weighted_clusters"] = {
                    "clusters": [
                        {"name": cluster_name(b["name"]), "weight": int(b.get("weight", 1))} for b in backends
                    ]
                }
            else:
                r["route"]["cluster"] = "default"
            routes.append(r)
    routes.append(substitute(protos["catch_all_route"], common))
    hcm["route_config"]["virtual_hosts"][0]["routes"] = routes

    clusters = []
    for backend in doc.get("backends") or []:
        name = backend.get("name") if isinstance(backend, dict) else None
        if not isinstance(name, str):
            continue
        host, port = backend_upstreams.get(name, upstream)
        values = dict(common, CLUSTER=cluster_name(name), BACKEND=name, UPSTREAM_HOST=host, UPSTREAM_PORT=port)
        cluster = substitute(protos["backend_cluster"], values)
        if doc.get("routerOnly") is True:
            drop_upstream_filter(cluster)
        if build == "wasm":
            cluster["per_connection_buffer_limit_bytes"] = wasm_buffer_limit(doc)
            opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            wasm_filters(opts["http_filters"], protos["wasm_filter"], common, credential_env(doc))
        clusters.append(cluster)
    clusters.extend(fallback_clusters)
    for name in exchange_clusters(doc):
        host, port = backend_upstreams.get(name, upstream)
        cluster = substitute(protos["default_cluster"], dict(common, UPSTREAM_HOST=host, UPSTREAM_PORT=port))
        cluster["name"] = cluster["load_assignment"]["cluster_name"] = name
        clusters.append(cluster)
    clusters.append(substitute(protos["default_cluster"], common))
    boot["static_resources"]["clusters"] = clusters
    if build == "wasm":
        boot["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = wasm_buffer_limit(doc)
    return copy.deepcopy(boot)


def router_only_host(doc: dict, backend: str) -> str | None:
    """routerOnly: the router-level instance signs for the backend's `host` (else the
    provider's public host, as filter/src/config/backend.rs defaults it) but leaves
    the Host header alone (the route is picked on the client's): the route rewrites it."""
    if doc.get("routerOnly") is not True:
        return None
    for b in doc.get("backends") or []:
        if isinstance(b, dict) and b.get("name") == backend:
            if isinstance(b.get("host"), str):
                return b["host"]
            return default_host(b)
    return None


def default_host(b: dict) -> str | None:
    """The filter's default `host` for a backend without one (the provider's)."""
    schema = (b.get("schema") or {}).get("name")
    region = b.get("region")
    if isinstance(b.get("lambda"), dict):
        sigv4 = (b.get("auth") or {}).get("awsSigV4") or {}
        region = sigv4.get("region") or region
        return f"lambda.{region}.amazonaws.com" if region else None
    if schema == "Mistral":
        return "api.mistral.ai"
    if schema in ("AWSBedrock", "AWSAnthropic") and region:
        return f"bedrock-runtime.{region}.amazonaws.com"
    if schema == "Anthropic":
        return "api.anthropic.com"
    if schema in ("GCPAnthropic", "GCPVertexAI") and region:
        return "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
    if schema == "Gemini":
        return "generativelanguage.googleapis.com"
    return None


def drop_upstream_filter(cluster: dict) -> None:
    """routerOnly: the router-level instance does the upstream work; a cluster keeps
    only the codec."""
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    opts["http_filters"] = [f for f in opts["http_filters"] if f.get("name") != "aigw_upstream"]


def route_cluster_name(route: str) -> str:
    return f"route_{route}"


def fallback_cluster(protos: dict, common: dict, route: dict, backends: list, backend_upstreams: dict,
                     upstream: tuple[str, int], build: str, doc: dict) -> dict:
    """One cluster for a route with fallback: an endpoint per backend at its priority,
    each naming its backend in metadata for the upstream filter instance."""
    name = route_cluster_name(route.get("name", ""))
    values = dict(common, CLUSTER=name, BACKEND="", UPSTREAM_HOST=upstream[0], UPSTREAM_PORT=upstream[1])
    # With routerOnly too: a route with several backends gets its upstream work
    # from the upstream instance of its cluster, as compiled bootstraps do.
    cluster = substitute(protos["backend_cluster"], values)
    proto_endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    by_priority: dict[int, list] = {}
    for b in backends:
        host, port = backend_upstreams.get(b["name"], upstream)
        ep = copy.deepcopy(proto_endpoint)
        ep["endpoint"]["address"]["socket_address"] = {"address": host, "port_value": port}
        ep["metadata"]["filter_metadata"]["io.envoy.ai_gateway"]["backend"] = b["name"]
        ep["load_balancing_weight"] = max(1, int(b.get("weight", 1)))
        by_priority.setdefault(int(b.get("priority", 0)), []).append(ep)
    cluster["load_assignment"]["endpoints"] = [
        {"priority": i, "lb_endpoints": eps} for i, (_, eps) in enumerate(sorted(by_priority.items()))
    ]
    if build == "wasm":
        cluster["per_connection_buffer_limit_bytes"] = wasm_buffer_limit(doc)
        opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        wasm_filters(opts["http_filters"], protos["wasm_filter"], common, credential_env(doc))
    return cluster


def fallback_retry_policy(levels: int) -> dict:
    """Each retry goes to a priority not tried yet."""
    return {
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": [429],
        "num_retries": levels - 1,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
            },
        }],
        "host_selection_retry_max_attempts": 5,
    }


def wasm_filters(http_filters: list, proto: dict, common: dict, env_keys: list[str]) -> None:
    """Swaps the dynamic-module instances (`aigw`, `aigw_upstream`) for the Wasm
    filter; the root_id carries the role that filter_name carries natively. The VM
    gets the environment variables credentials come from."""
    for f in http_filters:
        if f.get("name") in ("aigw", "aigw_upstream"):
            f["typed_config"] = substitute(proto, dict(common, ROOT_ID=f["name"]))
            if env_keys:
                f["typed_config"]["config"]["vm_config"]["environment_variables"] = {"host_env_keys": env_keys}


def auth_values(doc: dict, keys: tuple[str, ...]) -> list[str]:
    """Every string under one of `keys` anywhere in the backends' auth blocks."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in keys and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for b in doc.get("backends") or []:
        if isinstance(b, dict):
            walk(b.get("auth"))
    return sorted(found)


def credential_env(doc: dict) -> list[str]:
    """The environment variables the config's credentials come from."""
    return auth_values(doc, ("env", "credentialsEnv"))


def exchange_clusters(doc: dict) -> list[str]:
    """The clusters credential exchanges call (token endpoints): a plain cluster each,
    pointing at the upstream given for that name (as backends' are)."""
    return auth_values(doc, ("cluster",))


def dump(boot: dict) -> str:
    return yaml.safe_dump(boot, sort_keys=False, width=1 << 20)


# ---- file-based xDS (optional) -------------------------------------------------------

# Each in a directory of its own, which Envoy watches.
LDS_FILE = "lds/lds.yaml"
CDS_FILE = "cds/cds.yaml"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def file_xds_bootstrap(boot: dict, directory: str | Path, node_id: str = "aigw") -> dict:
    """The bootstrap of `boot` (render()'s) for file-based xDS: its admin, a node, and
    LDS and CDS read from DIR/lds/lds.yaml and DIR/cds/cds.yaml, each reloaded when an
    entry is renamed into its directory. Write the files with write_file_xds() before
    Envoy starts."""
    d = Path(directory).resolve()

    def source(name: str) -> dict:
        path = d / name
        return {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
        }

    out = {k: copy.deepcopy(v) for k, v in boot.items() if k != "static_resources"}
    out["node"] = {"id": node_id, "cluster": node_id}
    out["dynamic_resources"] = {"lds_config": source(LDS_FILE), "cds_config": source(CDS_FILE)}
    return out


def discovery_response(type_url: str, resources: list[dict], version: str) -> dict:
    """A DiscoveryResponse as Envoy reads it from a file."""
    return {"version_info": version, "resources": [dict({"@type": type_url}, **r) for r in resources]}


def write_atomically(path: Path, text: str) -> None:
    """Writes a temporary file beside `path`, then renames it over `path`: a reader
    sees the old file or the new one, never part of one, and Envoy's watch on the
    directory fires on the rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_resources(path: Path) -> list[dict]:
    """The resources of a discovery-response file written before (none if absent)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError:
        return []
    out = []
    for r in doc.get("resources") or []:
        r = dict(r)
        r.pop("@type", None)
        out.append(r)
    return out


def write_file_xds(boot: dict, directory: str | Path, version: str | None = None, *, prune: bool = False,
                   between=None) -> dict:
    """Writes the listeners and clusters of `boot` (render()'s) to DIR/cds/cds.yaml,
    then DIR/lds/lds.yaml, each atomically. Clusters of an earlier cds.yaml that `boot` no
    longer has are kept unless `prune` (old connections drain on routes naming them).
    `between()`, when given, runs after the clusters are written and before the
    listener is (to wait until Envoy has applied them). `version` defaults to a hash
    of the resources. Returns {version, kept_clusters}."""
    d = Path(directory)
    for name in (LDS_FILE, CDS_FILE):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
    listeners = copy.deepcopy(boot["static_resources"]["listeners"])
    clusters = copy.deepcopy(boot["static_resources"]["clusters"])
    names = {c["name"] for c in clusters}
    kept = [] if prune else [c for c in read_resources(d / CDS_FILE) if c.get("name") not in names]
    clusters += kept
    if version is None:
        digest = hashlib.sha256(json.dumps([listeners, clusters], sort_keys=True).encode()).hexdigest()
        version = digest[:12]
    write_atomically(d / CDS_FILE, dump(discovery_response(CLUSTER_TYPE, clusters, version)))
    if between is not None:
        between()
    write_atomically(d / LDS_FILE, dump(discovery_response(LISTENER_TYPE, listeners, version)))
    return {"version": version, "kept_clusters": [c["name"] for c in kept]}


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host or "127.0.0.1", int(port)


def main() -> int:
    ap = argparse.ArgumentParser(description="Render the Envoy bootstrap for the AI gateway filter.")
    ap.add_argument("--config", required=True, help="filter config document (JSON)")
    ap.add_argument("--out", help="output path (default: stdout)")
    ap.add_argument("--listen", default="127.0.0.1:1975")
    ap.add_argument("--admin-port", type=int, default=9901)
    ap.add_argument("--upstream", default="127.0.0.1:8081", help="HOST:PORT every backend points at")
    ap.add_argument("--backend-upstream", action="append", default=[], help="NAME=HOST:PORT for one backend")
    ap.add_argument("--access-log", default="/dev/stdout")
    ap.add_argument("--build", choices=BUILDS, default="native", help="filter build to load")
    ap.add_argument("--wasm", default=str(DEFAULT_WASM), help="path of aigw.wasm (--build wasm)")
    ap.add_argument("--xds-dir", help="file-based xDS: write the listener and clusters to DIR/lds/lds.yaml and "
                    "DIR/cds/cds.yaml (atomically, clusters first) and a bootstrap that watches them")
    ap.add_argument("--xds-version", help="version_info of the xDS files (default: a hash of their resources)")
    ap.add_argument("--xds-prune", action="store_true",
                    help="drop clusters of the previous cds.yaml the config no longer has (after the drain time)")
    args = ap.parse_args()

    text = Path(args.config).read_text(encoding="utf-8")
    listen_host, listen_port = _host_port(args.listen)
    per_backend = {}
    for spec in args.backend_upstream:
        name, _, addr = spec.partition("=")
        per_backend[name] = _host_port(addr)
    boot = render(
        text,
        listen_address=listen_host,
        listen_port=listen_port,
        admin_port=args.admin_port,
        upstream=_host_port(args.upstream),
        backend_upstreams=per_backend,
        access_log_path=args.access_log,
        build=args.build,
        wasm_path=args.wasm,
    )
    if args.xds_dir:
        written = write_file_xds(boot, args.xds_dir, args.xds_version, prune=args.xds_prune)
        print(f"xds: version {written['version']} written to {args.xds_dir}"
              + (f"; kept clusters {', '.join(written['kept_clusters'])}" if written["kept_clusters"] else ""),
              file=sys.stderr)
        boot = file_xds_bootstrap(boot, args.xds_dir)
    out = dump(boot)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
