"""Generated Envoy Gateway manifests, run by a real Envoy the way Envoy Gateway runs them.

First part: the EnvoyExtensionPolicy's config of cli/tests/golden/envoy-gateway-router-only
(`routerOnly`, no upstream instance). Native: credentials read from the files the
generated EnvoyProxy mounts from Secrets (laid out as the kubelet lays out a Secret
volume: keys are symlinks through `..data`), and a Secret update picked up. Wasm (the
envoy-gateway-wasm.yaml variant): credentials from the environment variables its
EnvoyProxy sets from the Secrets, passed to the VM as its wasm entry says. The route
table is the test renderer's: model-header routes on the virtual host Envoy Gateway
makes for a listener with a hostname.

Second part: the EnvoyPatchPolicy of cli/tests/golden/envoy-gateway-patch, which gives
rules with several backends the upstream filter. Envoy Gateway itself is not run: the
test builds the xDS Envoy Gateway would make for the golden's HTTPRoute, Backends and
BackendTrafficPolicy (`eg_xds`, each shape with the Envoy Gateway source it follows),
applies the policy's JSON patches to it as Envoy Gateway does (RFC 6902 `add` with
Envoy Gateway's EnsurePathExistsOnAdd, `json_patch`) and runs the result. The module
path and the mount directory are moved to the test's; TLS is left out (the simulator
speaks plain HTTP), so the endpoints keep Envoy Gateway's transport-socket-match
metadata but the sockets are plain, and the HTTP/2-capable auto protocol Envoy Gateway
picks for TLS Backends is plain HTTP/1.1 here; an EDS cluster's ClusterLoadAssignment,
patched on its own, is put inline (there is no ADS server)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import MODULE, REPO, environment, metadata_string, render, running_gateway, virtual_host_for

GOLDEN = REPO / "cli" / "tests" / "golden" / "envoy-gateway-router-only" / "envoy-gateway.yaml"
GOLDEN_WASM = GOLDEN.with_name("envoy-gateway-wasm.yaml")
MOUNT_DIR = "/etc/aigw/credentials"

OPENAI = "openai.ai#1"
OPENAI_FALLBACK_RULE = "openai.ai"
BEDROCK = "bedrock.ai@amazon.nova-pro-v1:0"
BYOK = "openai-byok.ai@gpt-4o"
OPENAI_KEYS = ("sk-openai-mounted-1", "sk-openai-mounted-2")
USER_KEY = "sk-user-own-key"
AWS = ("AKIDMOUNTED0001", "secret-from-mounted-file", "session-from-mounted-file")
# The Gateway listener's hostname: routes are picked on the client's Host, which the
# filter must leave for the route's host rewrite.
LISTENER_HOSTNAME = "llm.example.com"


class KubeLoader(yaml.SafeLoader):
    """Kubernetes' YAML reading keeps timestamp-like scalars as strings."""


KubeLoader.yaml_implicit_resolvers = {
    k: [(tag, r) for tag, r in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def manifests() -> list[dict]:
    return [d for d in yaml.load_all(GOLDEN.read_text(), Loader=KubeLoader) if d]


def policy_config() -> dict:
    (policy,) = [d for d in manifests() if d["kind"] == "EnvoyExtensionPolicy"]
    return policy["spec"]["dynamicModule"][0]["config"]


def mounts() -> dict[str, list[str]]:
    """Mount path → the Secret keys mounted there, from the generated EnvoyProxy."""
    (proxy,) = [d for d in manifests() if d["kind"] == "EnvoyProxy"]
    deployment = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    volumes = {v["name"]: v for v in deployment["pod"]["volumes"]}
    return {m["mountPath"]: [i["path"] for i in volumes[m["name"]]["secret"]["items"]]
            for m in deployment["container"]["volumeMounts"]}


def write_secret_volume(directory: Path, files: dict[str, str], version: int) -> None:
    """Writes (or updates) `directory` as the kubelet does a Secret volume: the data in
    a fresh timestamped directory, `..data` switched to it by a rename, each key a
    symlink to `..data/<key>`."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"..v{version}"
    data.mkdir()
    for key, text in files.items():
        (data / key).write_text(text)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, directory / "..data")
    for key in files:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(Path("..data") / key)


SECRETS = {
    "openai-key": {"apiKey": OPENAI_KEYS[0] + "\n"},
    "aws-credentials": {"credentials": "[default]\naws_access_key_id = AKIDWRONG\n"
                                       "aws_secret_access_key = wrong\n\n[bedrock]\n"
                                       f"aws_access_key_id = {AWS[0]}\naws_secret_access_key = {AWS[1]}\n"
                                       f"aws_session_token = {AWS[2]}\n"},
}


def wasm_credentials() -> tuple[dict, dict[str, str]]:
    """The wasm variant's filter config and the environment its EnvoyProxy gives the
    envoy container from the Secrets; the wasm entry passes exactly the variables the
    config names to the VM (env.hostKeys, checked against what the renderer passes)."""
    docs = [d for d in yaml.load_all(GOLDEN_WASM.read_text(), Loader=KubeLoader) if d]
    (proxy,) = [d for d in docs if d["kind"] == "EnvoyProxy"]
    container = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]
    env = {}
    for e in container["env"]:
        ref = e["valueFrom"]["secretKeyRef"]
        env[e["name"]] = SECRETS[ref["name"]][ref["key"]]
    (policy,) = [d for d in docs if d["kind"] == "EnvoyExtensionPolicy"]
    (entry,) = policy["spec"]["wasm"]
    assert sorted(entry["env"]["hostKeys"]) == sorted(env) == render.credential_env(entry["config"])
    return entry["config"], env


@pytest.fixture(scope="module")
def eg_gateway(workdir, build):
    """The EnvoyExtensionPolicy's config of the variant for `build`: credentials in
    mounted Secret files (native) or in environment variables set from the Secrets
    (wasm)."""
    root = workdir / "eg-credentials"
    env = {}
    if build == "native":
        for path, keys in mounts().items():
            assert path.startswith(MOUNT_DIR + "/ai/"), path
            name = path.rsplit("/", 1)[1]
            assert sorted(keys) == sorted(SECRETS[name]), (path, keys)
            write_secret_volume(root / "ai" / name, SECRETS[name], 1)
        config = json.loads(json.dumps(policy_config()).replace(MOUNT_DIR, str(root)))
    else:
        config, env = wasm_credentials()
    assert config["routerOnly"] is True
    sim_args = ["--expect-api-key", f"{OPENAI}={OPENAI_KEYS[0]}", "--expect-api-key", f"{OPENAI}={OPENAI_KEYS[1]}",
                "--expect-api-key", f"{BYOK}={USER_KEY}", "--aws-credentials", f"{BEDROCK}={':'.join(AWS)}"]
    vhost = virtual_host_for(LISTENER_HOSTNAME)

    def as_on_envoy_gateway(rendered: dict, ports: dict[str, int]) -> dict:
        # Envoy Gateway's EnvoyExtensionPolicy attaches the router-level instance
        # only: without its EnvoyPatchPolicy no cluster has the upstream instance
        # (render.py keeps it on fallback clusters, as compiled bootstraps do).
        for cluster in rendered["static_resources"]["clusters"]:
            opts = cluster.get("typed_extension_protocol_options", {}).get(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
            if opts and "http_filters" in opts:
                render.drop_upstream_filter(cluster)
        return vhost(rendered, ports)

    with environment(env), running_gateway(config, [OPENAI, BEDROCK, BYOK, OPENAI_FALLBACK_RULE],
                                           workdir / f"eg-{build}", build, sim_args,
                                           bootstrap=as_on_envoy_gateway) as gw:
        gw.credentials = root
        yield gw


def chat(gw, model: str, headers: dict | None = None):
    return gw.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]},
                   headers={"host": LISTENER_HOSTNAME, **(headers or {})})


def header(rec: dict, name: str) -> list[str]:
    return [v for k, v in rec["headers"] if k.lower() == name]


def test_bootstrap_has_no_upstream_filter(eg_gateway):
    assert "aigw_upstream" not in (eg_gateway.envoy_log.parent / "envoy.yaml").read_text()


def test_mounted_key_and_mutations(eg_gateway):
    r, rid = chat(eg_gateway, "gpt-4o", {"authorization": "Bearer sk-client"})
    assert r.status_code == 200, r.text
    rec = eg_gateway.one_upstream(rid)
    assert (rec["listener"], rec["checks"]) == (OPENAI, [])
    assert header(rec, "host") == ["api.openai.com"]
    assert header(rec, "authorization") == [f"Bearer {OPENAI_KEYS[0]}"]
    assert header(rec, "x-team") == ["platform"]
    assert rec["body_json"]["service_tier"] == "flex"


def test_mounted_aws_credentials_file_profile_and_model_override(eg_gateway):
    r, rid = chat(eg_gateway, "nova-pro")
    assert r.status_code == 200, r.text
    rec = eg_gateway.one_upstream(rid)
    assert (rec["listener"], rec["provider"], rec["checks"]) == (BEDROCK, "bedrock-converse", [])
    assert "amazon.nova-pro-v1" in rec["path"]
    # Signed for the host the route rewrites to (the simulator checks the signature).
    assert header(rec, "host") == ["bedrock-runtime.us-east-1.amazonaws.com"]


def test_per_request_key_without_a_configured_one(eg_gateway):
    r, rid = chat(eg_gateway, "gpt-4o-byok", {"x-user-openai-key": USER_KEY})
    assert r.status_code == 200, r.text
    rec = eg_gateway.one_upstream(rid)
    assert rec["checks"] == [] and header(rec, "x-user-openai-key") == []
    assert rec["body_json"]["model"] == "gpt-4o"
    r, rid = chat(eg_gateway, "gpt-4o-byok")
    assert r.status_code == 401 and eg_gateway.upstream(rid) == []


def test_secret_update_is_picked_up(eg_gateway):
    if eg_gateway.build != "native":
        pytest.skip("the wasm variant reads its credential variables once, at load")
    write_secret_volume(eg_gateway.credentials / "ai" / "openai-key", {"apiKey": OPENAI_KEYS[1]}, 2)
    deadline = time.monotonic() + 10
    while True:
        r, rid = chat(eg_gateway, "gpt-4o")
        assert r.status_code == 200, r.text
        if header(eg_gateway.one_upstream(rid), "authorization") == [f"Bearer {OPENAI_KEYS[1]}"]:
            break
        assert time.monotonic() < deadline, "the updated Secret was not picked up"
        time.sleep(0.5)


def test_rule_with_several_backends_is_routed_untouched(eg_gateway):
    """Without its EnvoyPatchPolicy (Envoy Gateway with EnvoyPatchPolicy off, as the
    compiler's note says) a fallback rule gets no upstream work: the request reaches
    the primary untranslated and with no configured credential; the client's own
    Authorization header is still removed (no backend of the rule forwards client
    credentials)."""
    r, rid = chat(eg_gateway, "gpt-4o-mini", {"authorization": "Bearer sk-client"})
    assert r.status_code == 200, r.text
    rec = eg_gateway.one_upstream(rid)
    assert rec["listener"] == OPENAI_FALLBACK_RULE
    assert header(rec, "authorization") == []


# ---- EnvoyPatchPolicy: the upstream filter of rules with several backends ----------

PATCH_GOLDEN = REPO / "cli" / "tests" / "golden" / "envoy-gateway-patch" / "envoy-gateway.yaml"
PATCH_KEYS = {"openai-key": "sk-openai-eg-patch", "anthropic-key": "sk-ant-eg-patch",
              "vllm-a-key": "vllm-a-eg-patch", "vllm-b-key": "vllm-b-eg-patch"}
# Simulator listeners: one per Envoy Gateway Backend (name), with the key it expects.
PATCH_LABELS = {"openai": "openai-key", "anthropic": "anthropic-key", "vllm-old": None,
                "vllm-a": "vllm-a-key", "vllm-b": "vllm-b-key"}
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTER_FILTER = "envoy.filters.http.dynamic_modules/envoyextensionpolicy/ai/llm-aigw/dynamicmodule/0"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=KubeLoader) if d]


# -- RFC 6902, as Envoy Gateway applies it (internal/xds/translator/jsonpatch.go: each
# operation on its own, evanphx/json-patch v5 with EnsurePathExistsOnAdd) -------------

def pointer(path: str) -> list[str]:
    if path == "":
        return []
    assert path.startswith("/"), path
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def json_patch(doc, op: dict):
    """Applies one operation in place and returns the document. `add` creates missing
    parent objects (Envoy Gateway's EnsurePathExistsOnAdd); a missing array element is
    an error, as is any other operation's missing target."""
    tokens = pointer(op["path"])
    if not tokens:
        raise ValueError("whole-document operations are not generated")
    parent = doc
    for t in tokens[:-1]:
        if isinstance(parent, list):
            parent = parent[int(t)]
        elif t in parent:
            parent = parent[t]
        elif op["op"] == "add":
            parent = parent.setdefault(t, {})
        else:
            raise KeyError(op["path"])
    last = tokens[-1]
    kind = op["op"]
    if isinstance(parent, list):
        i = len(parent) if last == "-" else int(last)
        if kind == "add":
            if i > len(parent):
                raise IndexError(op["path"])
            parent.insert(i, op["value"])
        elif kind == "replace":
            parent[i] = op["value"]
        elif kind == "remove":
            del parent[i]
        elif kind == "test":
            assert parent[i] == op["value"], op
        else:
            raise ValueError(kind)
        return doc
    if kind == "add":
        parent[last] = op["value"]
    elif kind == "replace":
        if last not in parent:
            raise KeyError(op["path"])
        parent[last] = op["value"]
    elif kind == "remove":
        del parent[last]
    elif kind == "test":
        assert parent[last] == op["value"], op
    else:
        raise ValueError(kind)
    return doc


def test_json_patch():
    doc = {"a": [{"b": 1}], "k/~": {}}
    json_patch(doc, {"op": "add", "path": "/a/0/m/n", "value": {"x": 1}})
    json_patch(doc, {"op": "add", "path": "/a/-", "value": 2})
    json_patch(doc, {"op": "add", "path": "/k~1~0/z", "value": 3})
    json_patch(doc, {"op": "replace", "path": "/a/0/b", "value": 5})
    assert doc == {"a": [{"b": 5, "m": {"n": {"x": 1}}}, 2], "k/~": {"z": 3}}
    with pytest.raises(IndexError):
        json_patch(doc, {"op": "add", "path": "/a/7/m", "value": 1})
    with pytest.raises(KeyError):
        json_patch(doc, {"op": "replace", "path": "/nope/x", "value": 1})


# -- the xDS Envoy Gateway makes for the golden's HTTPRoute -----------------------------

def seconds(duration: str) -> str:
    """A Gateway API duration (1h, 30s, 500ms) as a protobuf JSON duration."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    i = 0
    while i < len(duration):
        c = duration[i]
        if c.isdigit() or c == ".":
            number += c
            i += 1
            continue
        unit = "ms" if duration[i:i + 2] == "ms" else c
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return f"{total:g}s"


def eg_xds(docs: list[dict], ports: dict[str, int]) -> tuple[dict, dict, list[dict]]:
    """(clusters by name, ClusterLoadAssignments by name, routes) as Envoy Gateway
    translates the golden's HTTPRoute `ai/llm` (with the Backends and
    BackendTLSPolicies of its input):

    - names: internal/gatewayapi/helpers.go (irRouteDestinationName, irRouteName);
    - one cluster per rule, zero-weight backendRefs left out, one locality per
      backendRef with `locality.region` = the destination setting's name, its weight,
      priority 1 for a `fallback: true` Backend, one lb_endpoint per Backend endpoint,
      `envoy.transport_socket_match` metadata for TLS Backends
      (internal/gatewayapi/route.go processHTTPRouteRules, processDestination;
      internal/xds/translator/cluster.go buildXdsClusterLoadAssignment,
      buildWeightedLocalities);
    - host names: STRICT_DNS with the endpoints inline; IP addresses: EDS, the
      ClusterLoadAssignment named after the cluster (translator.go addXdsCluster);
    - cluster defaults (cluster.go buildXdsCluster): 10 s connect timeout, 32 KiB
      connection buffer, least-request LB over weighted localities, 1024 retries in the
      circuit breaker; the BackendTrafficPolicy's passive health check as outlier
      detection; its HTTP timeouts as HttpProtocolOptions, which Envoy Gateway writes
      only when something needs them (buildTypedExtensionProtocolOptions);
    - a virtual host for the listener's hostname, ports ignored (LISTENER_HOSTNAME);
    - routes: PathPrefix and header matches, the rule's request timeout, the
      HTTPRouteFilter's rewrite to the Backend's hostname as auto_host_rewrite, the
      BackendTrafficPolicy's retry with the previous-hosts predicate and 5 host
      selection attempts, no previous-priorities (route.go buildRetryPolicy).

    Endpoints point at the simulator listener named after the Backend."""
    (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
    ns, name = route["metadata"]["namespace"], route["metadata"]["name"]
    backends = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Backend"}
    backends.update({(d["metadata"]["namespace"], d["metadata"]["name"]): d
                     for d in documents(PATCH_GOLDEN.parent / "input.yaml") if d["kind"] == "Backend"})
    inputs = documents(PATCH_GOLDEN.parent / "input.yaml")
    tls_targets = {t["name"] for d in docs + inputs if d["kind"] == "BackendTLSPolicy"
                   for t in d["spec"]["targetRefs"]}
    (btp,) = [d for d in docs if d["kind"] == "BackendTrafficPolicy"]
    passive = btp["spec"].get("healthCheck", {}).get("passive")
    http_timeouts = btp["spec"].get("timeout", {}).get("http", {})
    retry = btp["spec"].get("retry")

    backend_host_rewrites = {d["metadata"]["name"] for d in docs if d["kind"] == "HTTPRouteFilter"
                             and d["spec"].get("urlRewrite", {}).get("hostname", {}).get("type") == "Backend"}
    clusters, clas, routes = {}, {}, []
    for i, rule in enumerate(route["spec"]["rules"]):
        cluster = f"httproute/{ns}/{name}/rule/{i}"
        localities, types = [], []
        for j, ref in enumerate(rule.get("backendRefs", [])):
            if ref.get("weight", 1) == 0:
                continue
            backend = backends[(ref.get("namespace", ns), ref["name"])]
            metadata = None
            if ref["name"] in tls_targets or backend["spec"].get("tls"):
                metadata = {"filter_metadata": {"envoy.transport_socket_match": {
                    "name": f"{cluster}/tls/{len(localities)}"}}}
            endpoints = []
            kinds = {"fqdn" if "fqdn" in e else "ip" for e in backend["spec"]["endpoints"]}
            assert len(kinds) == 1, f"{ref['name']}: Envoy Gateway refuses a Backend of mixed address types"
            types.append(kinds.pop())
            for e in backend["spec"]["endpoints"]:
                host = "localhost" if "fqdn" in e else "127.0.0.1"
                ep = {"endpoint": {"address": {"socket_address": {
                    "protocol": "TCP", "address": host, "port_value": ports[ref["name"]]}}},
                    "load_balancing_weight": 1}
                if "fqdn" in e:
                    # The name Envoy resolves, which is what a host rewrite sends.
                    ep["endpoint"]["hostname"] = e["fqdn"]["hostname"]
                if metadata:
                    ep["metadata"] = json.loads(json.dumps(metadata))
                endpoints.append(ep)
            locality = {"locality": {"region": f"{cluster}/backend/{j}"}, "lb_endpoints": endpoints,
                        "load_balancing_weight": ref.get("weight", 1)}
            if backend["spec"].get("fallback"):
                locality["priority"] = 1
            localities.append(locality)
        def make_cluster(cname: str, locs: list[dict], kind: str) -> None:
            c = {
                "name": cname,
                "connect_timeout": "10s",
                "per_connection_buffer_limit_bytes": 32768,
                "ignore_health_on_host_removal": True,
                "dns_lookup_family": "V4_PREFERRED",
                "common_lb_config": {},
                "load_balancing_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.least_request",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                        "locality_lb_config": {"locality_weighted_lb_config": {}}}}}]},
                "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
            }
            cla = {"cluster_name": cname, "endpoints": locs}
            if kind == "fqdn":
                c.update(type="STRICT_DNS", dns_refresh_rate="30s", respect_dns_ttl=True, load_assignment=cla)
            else:
                c.update(type="EDS", eds_cluster_config={"service_name": cname,
                                                         "eds_config": {"ads": {}, "resource_api_version": "V3"}})
                clas[cname] = cla
            if passive:
                c["outlier_detection"] = {
                    "consecutive_5xx": passive["consecutive5XxErrors"],
                    "interval": seconds(passive["interval"]),
                    "base_ejection_time": seconds(passive["baseEjectionTime"]),
                    "max_ejection_percent": passive["maxEjectionPercent"],
                }
            if http_timeouts.get("connectionIdleTimeout"):
                c["typed_extension_protocol_options"] = {HTTP_OPTIONS: {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"idle_timeout": seconds(http_timeouts["connectionIdleTimeout"])},
                    "explicit_http_config": {"http_protocol_options": {}},
                }}
            clusters[cname] = c

        destination = None
        if localities and len(set(types)) == 1:
            make_cluster(cluster, localities, types[0])
            destination = {"cluster": cluster}
        elif localities:
            # Backends of different address types: a cluster per destination setting,
            # weighted at the route (NeedsClusterPerSetting).
            for loc, kind in zip(localities, types):
                make_cluster(loc["locality"]["region"], [loc], kind)
            destination = {"weighted_clusters": {"clusters": [
                {"name": loc["locality"]["region"], "weight": loc["load_balancing_weight"]} for loc in localities]}}
        for k, match in enumerate(rule.get("matches", [{}])):
            r = {"name": f"httproute/{ns}/{name}/rule/{i}/match/{k}",
                 "match": {"prefix": match.get("path", {}).get("value", "/"),
                           "headers": [{"name": h["name"], "string_match": {"exact": h["value"]}}
                                       for h in match.get("headers", [])]},
                 "typed_per_filter_config": {ROUTER_FILTER: {
                     "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}}
            if not r["match"]["headers"]:
                del r["match"]["headers"]
            if destination:
                action = dict(destination, timeout=seconds(rule.get("timeouts", {}).get("request", "15s")))
                if any(f.get("extensionRef", {}).get("name") in backend_host_rewrites for f in rule.get("filters", [])):
                    # route.go: a URLRewrite to the Backend's hostname.
                    action["auto_host_rewrite"] = True
                for f in rule.get("filters", []):
                    if f["type"] == "URLRewrite" and "hostname" in f.get("urlRewrite", {}):
                        # route.go: Gateway API's URLRewrite to a literal host name.
                        action["host_rewrite_literal"] = f["urlRewrite"]["hostname"]
                if retry:
                    action["retry_policy"] = {
                        "retry_on": ",".join(retry["retryOn"]["triggers"]),
                        "retriable_status_codes": retry["retryOn"]["httpStatusCodes"],
                        "num_retries": retry["numRetries"],
                        "retry_host_predicate": [{
                            "name": "envoy.retry_host_predicates.previous_hosts",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                                      "previous_hosts.v3.PreviousHostsPredicate"}}],
                        "host_selection_retry_max_attempts": 5,
                    }
                r["route"] = action
            else:
                r["direct_response"] = {"status": 404, "body": {"inline_string": "route_not_found"}}
            routes.append(r)
    return clusters, clas, routes


def patched_bootstrap(rendered: dict, ports: dict[str, int], credentials: Path) -> dict:
    """The rendered bootstrap (listener, router-level filter on the EnvoyExtensionPolicy's
    config, access log) with Envoy Gateway's route table and clusters for the golden,
    patched by its EnvoyPatchPolicy for Gateway ai/gw."""
    docs = documents(PATCH_GOLDEN)
    clusters, clas, routes = eg_xds(docs, ports)
    (policy,) = [d for d in docs if d["kind"] == "EnvoyPatchPolicy" and d["metadata"]["namespace"] == "ai"]
    assert policy["spec"]["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    text = json.dumps(policy["spec"]["jsonPatches"])
    (proxy,) = [d for d in docs if d["kind"] == "EnvoyProxy"]
    module_path = proxy["spec"]["dynamicModules"][0]["source"]["local"]["path"]
    text = text.replace(MOUNT_DIR, str(credentials)).replace(module_path, str(MODULE))
    for op in json.loads(text):
        table = {CLUSTER_TYPE: clusters, CLA_TYPE: clas}[op["type"]]
        assert op["name"] in table, f"Envoy Gateway has no {op['type']} named {op['name']}"
        json_patch(table[op["name"]], op["operation"])
    for name, cla in clas.items():
        c = clusters[name]
        c.pop("eds_cluster_config")
        c.update(type="STATIC", load_assignment=cla)

    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (router,) = [f for f in hcm["http_filters"] if f["name"] == "aigw"]
    # internal/xds/translator/dynamicmodule.go: one filter per policy module, disabled
    # in the HCM and enabled per route.
    router["name"], router["disabled"] = ROUTER_FILTER, True
    hcm["route_config"] = {"name": "ai/gw/http", "ignore_port_in_host_matching": True,
                           "virtual_hosts": [{"name": f"ai/gw/http/{LISTENER_HOSTNAME}",
                                              "domains": [LISTENER_HOSTNAME], "routes": routes}]}
    rendered["static_resources"]["clusters"] = list(clusters.values())
    return rendered


class Patched:
    """The gateway and the clusters it runs."""

    def __init__(self, gw, clusters):
        self.gw, self.clusters = gw, clusters


@pytest.fixture(scope="module")
def eg_patched(workdir, build):
    if build != "native":
        pytest.skip("the EnvoyPatchPolicy loads the native module (envoy-gateway-wasm.yaml has none)")
    root = workdir / "eg-patch-credentials"
    docs = documents(PATCH_GOLDEN)
    (proxy,) = [d for d in docs if d["kind"] == "EnvoyProxy"]
    deployment = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    volumes = {v["name"]: v for v in deployment["pod"]["volumes"]}
    for m in deployment["container"]["volumeMounts"]:
        secret = volumes[m["name"]]["secret"]
        assert m["mountPath"] == f"{MOUNT_DIR}/ai/{secret['secretName']}"
        keys = {i["path"]: PATCH_KEYS[secret["secretName"]] + "\n" for i in secret["items"]}
        write_secret_volume(root / "ai" / secret["secretName"], keys, 1)
    (eep,) = [d for d in docs if d["kind"] == "EnvoyExtensionPolicy"]
    config = json.loads(json.dumps(eep["spec"]["dynamicModule"][0]["config"]).replace(MOUNT_DIR, str(root)))
    sim_args = []
    for label, secret in PATCH_LABELS.items():
        if secret:
            sim_args += ["--expect-api-key", f"{label}={PATCH_KEYS[secret]}"]
    built = {}

    def bootstrap(rendered, ports):
        built["boot"] = patched_bootstrap(rendered, ports, root)
        return built["boot"]

    with running_gateway(config, list(PATCH_LABELS), workdir / f"eg-patch-{build}", build, sim_args,
                         bootstrap=bootstrap) as gw:
        clusters = {c["name"]: c for c in built["boot"]["static_resources"]["clusters"]}
        yield Patched(gw, clusters)


def client(gw):
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-own", max_retries=0, timeout=30,
                         default_headers={"host": LISTENER_HOSTNAME})


def attempts(gw, rid: str) -> list[dict]:
    return gw.upstream(rid)


def test_the_patch_gives_multi_backend_clusters_the_upstream_filter(eg_patched):
    c = eg_patched.clusters
    fallback, weighted, single = (c["httproute/ai/llm/rule/1"], c["httproute/ai/llm/rule/2"],
                                  c["httproute/ai/llm/rule/0"])
    for cl in (fallback, weighted):
        filters = cl["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"]
        assert [f["name"] for f in filters] == ["aigw_upstream", "envoy.filters.http.upstream_codec"]
        # Envoy Gateway's own protocol options are kept around the added filters.
        assert cl["typed_extension_protocol_options"][HTTP_OPTIONS]["common_http_protocol_options"]
    assert "http_filters" not in single["typed_extension_protocol_options"][HTTP_OPTIONS]
    # Inline (STRICT_DNS) endpoints: the TLS match metadata stays beside the backend name.
    ep = fallback["load_assignment"]["endpoints"]
    assert [loc["priority"] for loc in ep] == [0, 1]
    md = ep[0]["lb_endpoints"][0]["metadata"]["filter_metadata"]
    assert md["io.envoy.ai_gateway"] == {"backend": "openai.ai"}
    assert md["envoy.transport_socket_match"] == {"name": "httproute/ai/llm/rule/1/tls/0"}
    # EDS endpoints (patched as a ClusterLoadAssignment): the zero-weight backendRef
    # has no locality, so vllm-a is locality 0.
    regions = [(loc["locality"]["region"], [e["metadata"]["filter_metadata"]["io.envoy.ai_gateway"]["backend"]
                                             for e in loc["lb_endpoints"]])
               for loc in weighted["load_assignment"]["endpoints"]]
    assert regions == [("httproute/ai/llm/rule/2/backend/1", ["vllm-a.ai"]),
                       ("httproute/ai/llm/rule/2/backend/2", ["vllm-b.ai@llama-3-70b"] * 2)]


def test_fallback_across_providers(eg_patched):
    """The OpenAI primary answers 500; the request is retried as Envoy Gateway's retry
    policy says (previous hosts only: the same priority), so the primary is tried again
    until passive health checks eject it after 5 consecutive 5xx; then the Anthropic
    fallback answers, translated for it per attempt (path, key, body with the model
    override) and translated back, and the client gets an OpenAI answer. Every
    attempt on the primary went out as OpenAI with its own key, and the client's key
    reached neither provider."""
    gw = eg_patched.gw
    c = client(gw)
    import openai

    failures, answered = 0, None
    for _ in range(8):
        rid = str(uuid.uuid4())
        try:
            resp = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}],
                                             extra_headers={"x-request-id": rid, "x-sim-fail-on": "openai=500"})
        except openai.InternalServerError:
            failures += 1
            tries = attempts(gw, rid)
            assert [a["listener"] for a in tries] == ["openai", "openai"], tries
            continue
        answered = (rid, resp)
        break
    assert answered, "the fallback never answered"
    assert failures >= 1
    rid, resp = answered
    tries = attempts(gw, rid)
    assert tries[-1]["listener"] == "anthropic"
    assert all(a["listener"] == "openai" for a in tries[:-1])
    for a in tries:
        assert a["checks"] == [], a
        assert header(a, "authorization") != ["Bearer sk-client-own"]
    fb = tries[-1]
    assert fb["path"] == "/v1/messages" and fb["provider"] == "anthropic"
    assert header(fb, "x-api-key") == [PATCH_KEYS["anthropic-key"]]
    assert header(fb, "host") == ["api.anthropic.com"]
    assert fb["body_json"]["model"] == "claude-3-5-haiku-latest"
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == fb["sent_text"]
    entry = gw.log_entry(rid)
    assert metadata_string(entry, "backend_name") == "anthropic.ai@claude-3-5-haiku-latest"
    assert metadata_string(entry, "route_name") == "ai/llm/rule/1"

    # The primary is ejected now: the next request goes straight to the fallback.
    rid = str(uuid.uuid4())
    resp = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}],
                                     extra_headers={"x-request-id": rid, "x-sim-fail-on": "openai=500"})
    assert [a["listener"] for a in attempts(gw, rid)] == ["anthropic"]
    assert resp.choices[0].message.content


def test_weighted_rule_over_eds_endpoints(eg_patched):
    """Both weighted backends (IP addresses: the patched ClusterLoadAssignment) take
    requests, each with its own key and, for vllm-b, its model override: the metadata
    names the right backend on each endpoint, past the zero-weight backendRef Envoy
    Gateway leaves out."""
    gw = eg_patched.gw
    c = client(gw)
    seen = {}
    for _ in range(40):
        rid = str(uuid.uuid4())
        resp = c.chat.completions.create(model="llama-3", messages=[{"role": "user", "content": "hi"}],
                                         extra_headers={"x-request-id": rid})
        (a,) = attempts(gw, rid)
        assert a["checks"] == [], a
        assert resp.choices[0].message.content == a["sent_text"]
        seen[a["listener"]] = (a, metadata_string(gw.log_entry(rid), "backend_name"))
        if len(seen) == 2:
            break
    assert set(seen) == {"vllm-a", "vllm-b"}
    a, backend = seen["vllm-a"]
    assert header(a, "authorization") == [f"Bearer {PATCH_KEYS['vllm-a-key']}"]
    assert a["body_json"]["model"] == "llama-3" and backend == "vllm-a.ai"
    b, backend = seen["vllm-b"]
    assert header(b, "authorization") == [f"Bearer {PATCH_KEYS['vllm-b-key']}"]
    assert b["body_json"]["model"] == "llama-3-70b" and backend == "vllm-b.ai@llama-3-70b"


def test_single_backend_rule_stays_router_level(eg_patched):
    gw = eg_patched.gw
    rid = str(uuid.uuid4())
    resp = client(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                              extra_headers={"x-request-id": rid})
    (a,) = attempts(gw, rid)
    assert a["listener"] == "openai" and a["checks"] == []
    assert header(a, "host") == ["api.openai.com"]
    assert header(a, "authorization") == [f"Bearer {PATCH_KEYS['openai-key']}"]
    assert resp.choices[0].message.content == a["sent_text"]
