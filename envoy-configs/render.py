#!/usr/bin/env python3
"""Renders envoy-configs/bootstrap.yaml.in into a runnable Envoy bootstrap.

The filter config document (JSON) is embedded verbatim as the filter_config of both
filter instances; routes, clusters and the access log's cost fields are derived from
it. Rendering is lenient: a document that does not parse still renders (with no
model routes), so Envoy's own refusal of it can be observed.

Limits of what is generated: each backend gets one STATIC cluster pointing at the
given upstream address; a route with several backends becomes weighted_clusters
(backend `priority` is not rendered: per-backend clusters cannot express it).

    render.py --config envoy-configs/example/config.json --out .run/envoy.yaml \
        [--listen 127.0.0.1:1975] [--admin-port 9901] [--upstream 127.0.0.1:8081] \
        [--backend-upstream NAME=HOST:PORT ...] [--access-log PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent / "bootstrap.yaml.in"
_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


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
) -> dict:
    """Returns the bootstrap as a dict (dump it with yaml.safe_dump)."""
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
    }
    boot = substitute(template, common)

    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    fields = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    for key in cost_keys(doc):
        fields[key] = f"%DYNAMIC_METADATA(io.envoy.ai_gateway:{key})%"

    routes = []
    for route in doc.get("routes") or []:
        if not isinstance(route, dict):
            continue
        backends = [b for b in route.get("backends") or [] if isinstance(b, dict) and "name" in b]
        for model in route.get("models") or []:
            r = substitute(protos["model_route"], {"ROUTE_NAME": route.get("name", ""), "MODEL": model})
            if len(backends) == 1:
                r["route"]["cluster"] = cluster_name(backends[0]["name"])
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
        clusters.append(substitute(protos["backend_cluster"], values))
    clusters.append(substitute(protos["default_cluster"], common))
    boot["static_resources"]["clusters"] = clusters
    return copy.deepcopy(boot)


def dump(boot: dict) -> str:
    return yaml.safe_dump(boot, sort_keys=False, width=1 << 20)


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
    args = ap.parse_args()

    text = Path(args.config).read_text(encoding="utf-8")
    listen_host, listen_port = _host_port(args.listen)
    per_backend = {}
    for spec in args.backend_upstream:
        name, _, addr = spec.partition("=")
        per_backend[name] = _host_port(addr)
    out = dump(
        render(
            text,
            listen_address=listen_host,
            listen_port=listen_port,
            admin_port=args.admin_port,
            upstream=_host_port(args.upstream),
            backend_upstreams=per_backend,
            access_log_path=args.access_log,
        )
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
