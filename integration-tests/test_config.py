"""The config document: its JSON Schema, and Envoy refusing a bad one at load."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from conftest import BODY_LIMIT, EXAMPLE_CONFIG, REPO, SCHEMA, make_test_config, render, validate_envoy_config


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_example_config_matches_schema(validator):
    validator.validate(json.loads(EXAMPLE_CONFIG.read_text()))


def test_test_config_matches_schema(validator):
    validator.validate(make_test_config())


def test_compiled_golden_configs_match_schema(validator):
    """What the CRD compiler writes (cli/tests/golden/*/config.json) is what the
    schema describes: every backend field, credentials included."""
    configs = sorted((REPO / "cli" / "tests" / "golden").glob("*/config.json"))
    assert configs
    for path in configs:
        errors = [e.message for e in validator.iter_errors(json.loads(path.read_text()))]
        assert not errors, f"{path}: {errors}"


def test_compiled_envoy_gateway_configs_match_schema(validator):
    """The configs the Envoy Gateway manifests carry (routerOnly, credentials as
    mounted files) match the schema too, in both variants; so do the upstream filter
    configs of the EnvoyPatchPolicies (not routerOnly)."""
    import yaml

    class KubeLoader(yaml.SafeLoader):
        """Kubernetes' YAML reading keeps timestamp-like scalars (an Azure
        api-version such as 2024-10-21) as strings."""

    KubeLoader.yaml_implicit_resolvers = {
        k: [(tag, r) for tag, r in v if tag != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    files = sorted((REPO / "cli" / "tests" / "golden").glob("*/envoy-gateway*.yaml"))
    assert files
    seen = 0
    patched = 0
    for path in files:
        for doc in yaml.load_all(path.read_text(), Loader=KubeLoader):
            if doc and doc.get("kind") == "EnvoyPatchPolicy":
                for op in doc["spec"]["jsonPatches"]:
                    value = op["operation"]["value"]
                    if not op["operation"]["path"].endswith("/http_filters"):
                        continue
                    config = json.loads(value[0]["typed_config"]["filter_config"]["value"])
                    assert "routerOnly" not in config, path
                    errors = [e.message for e in validator.iter_errors(config)]
                    assert not errors, f"{path}: {errors}"
                    patched += 1
            if not doc or doc.get("kind") != "EnvoyExtensionPolicy":
                continue
            for ext in doc["spec"].get("dynamicModule", []) + doc["spec"].get("wasm", []):
                config = ext["config"]
                assert config.get("routerOnly") is True, path
                errors = [e.message for e in validator.iter_errors(config)]
                assert not errors, f"{path}: {errors}"
                seen += 1
    assert seen and patched


def with_backend(**fields) -> dict:
    """The test config with backend 0 given extra fields."""
    doc = copy.deepcopy(make_test_config())
    doc["backends"][0].update(fields)
    return doc


BACKENDS_ACCEPTED = {
    "api-key-value": with_backend(auth={"apiKey": {"value": "k", "header": "x-api-key"}}),
    "api-key-file": with_backend(auth={"apiKey": {"file": "/run/key"}, "bearerToken": None}),
    "bearer-file": with_backend(auth={"bearerToken": {"file": "/run/token"}}),
    "sigv4-keys": with_backend(schema={"name": "AWSBedrock"}, region="us-east-1",
                               auth={"awsSigV4": {"accessKeyId": "a", "secretAccessKey": "s", "sessionToken": "t"}}),
    "sigv4-file": with_backend(schema={"name": "AWSAnthropic"}, host="bedrock.example.com",
                               auth={"awsSigV4": {"credentialsFile": "/run/aws", "profile": "p", "region": "eu-west-1"}}),
    "vertex": with_backend(schema={"name": "GCPVertexAI", "version": "v1"}, project="p", region="global",
                           forwardClientCredentials=True),
    "mutations": with_backend(credentialOverride={"header": "x-tenant-key"},
                              headerMutation={"set": [{"name": "x-a", "value": "1"}], "remove": ["x-b"]},
                              bodyMutation={"set": [{"field": "service_tier", "value": None}], "remove": ["user"]}),
}


@pytest.mark.parametrize("name", BACKENDS_ACCEPTED)
def test_schema_accepts_backend_fields(validator, name):
    validator.validate(BACKENDS_ACCEPTED[name])


@pytest.mark.parametrize("name", BACKENDS_ACCEPTED)
def test_envoy_loads_backend_fields(tmp_path, build, name):
    """The filter loads what the schema accepts; the wasm build refuses credential
    files, which it cannot read."""
    doc = BACKENDS_ACCEPTED[name]
    files = any("file" in m or "credentialsFile" in m
                for b in doc["backends"] for m in (b.get("auth") or {}).values() if m)
    res = validate_envoy_config(json.dumps(doc), tmp_path, build)
    out = (res.stdout + res.stderr)[-3000:]
    if build == "wasm" and files:
        assert res.returncode != 0 and "credential files" in out, out
    else:
        assert res.returncode == 0, out


def mutate(path: list, value, delete: bool = False) -> dict:
    doc = copy.deepcopy(make_test_config())
    node = doc
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


SCHEMA_REJECTS = {
    "unknown-top-level-field": mutate(["extra"], 1),
    "unknown-route-field": mutate(["routes", 0, "weight"], 1),
    "snake-case-field": mutate(["routes", 0, "llm_request_costs"], []),
    "bad-version": mutate(["version"], "v2"),
    "bad-schema-name": mutate(["backends", 0, "schema", "name"], "Carrier-Pigeon"),
    "bad-cost-type": mutate(["llmRequestCosts", 0, "type"], "Banana"),
    "cel-without-expression": mutate(["routes", 0, "llmRequestCosts", 0], {"metadataKey": "c", "type": "CEL"}),
    "expression-without-cel": mutate(["llmRequestCosts", 0, "cel"], "input_tokens"),
    "route-without-models": mutate(["routes", 0, "models"], []),
    "zero-body-limit": mutate(["limits", "maxRequestBodyBytes"], 0),
    "negative-weight": mutate(["routes", 2, "backends", 0, "weight"], -1),
    "missing-version": mutate(["version"], None, delete=True),
    "empty-override": mutate(["backends", 2, "modelNameOverride"], ""),
    "two-auth-mechanisms": with_backend(auth={"apiKey": {"value": "k"}, "bearerToken": {"value": "t"}}),
    "no-auth-mechanism": with_backend(auth={}),
    "key-value-and-file": with_backend(auth={"apiKey": {"value": "k", "file": "/k"}}),
    "empty-key": with_backend(auth={"apiKey": {"value": ""}}),
    "token-without-source": with_backend(auth={"bearerToken": {}}),
    "sigv4-keys-and-file": with_backend(schema={"name": "AWSBedrock"}, region="r", auth={"awsSigV4": {
        "accessKeyId": "a", "secretAccessKey": "s", "credentialsFile": "/f"}}),
    "sigv4-file-with-token": with_backend(schema={"name": "AWSBedrock"}, region="r", auth={"awsSigV4": {
        "credentialsFile": "/f", "sessionToken": "t"}}),
    "sigv4-id-only": with_backend(schema={"name": "AWSBedrock"}, region="r", auth={"awsSigV4": {"accessKeyId": "a"}}),
    "unknown-auth-field": with_backend(auth={"apiKey": {"value": "k"}, "oauth": {}}),
    "gcp-without-project": with_backend(schema={"name": "GCPAnthropic"}, region="us-east5"),
    "gcp-blank-region": with_backend(schema={"name": "GCPVertexAI"}, project="p", region=" "),
    "aws-without-region-or-host": with_backend(schema={"name": "AWSBedrock"}),
    "host-with-path": with_backend(host="api.example.com/v1"),
    "null-forward-flag": with_backend(forwardClientCredentials=None),
    "override-without-header": with_backend(credentialOverride={}),
    "bad-header-name": with_backend(headerMutation={"set": [{"name": "bad header", "value": "v"}]}),
    "header-value-newline": with_backend(headerMutation={"set": [{"name": "x-a", "value": "a\r\nb: c"}]}),
    "body-set-without-value": with_backend(bodyMutation={"set": [{"field": "f"}]}),
    "body-remove-empty": with_backend(bodyMutation={"remove": [""]}),
    "null-mutation-list": with_backend(headerMutation={"set": None}),
}


@pytest.mark.parametrize("name", SCHEMA_REJECTS)
def test_schema_rejects(validator, name):
    assert list(validator.iter_errors(SCHEMA_REJECTS[name])), f"schema accepted {name}"


# Each case: a bad document and the field path the refusal must name.
ENVOY_REJECTS = {
    "unknown-backend": (mutate(["routes", 1, "backends", 0, "name"], "nope"), "routes[1].backends[0].name"),
    "bad-cel": (mutate(["routes", 0, "llmRequestCosts", 0, "cel"], "input_tokens +"),
                "routes[0].llmRequestCosts[0].cel"),
    "bad-schema-name": (mutate(["backends", 1, "schema", "name"], "Carrier-Pigeon"), "backends[1].schema.name"),
}


@pytest.mark.parametrize("name", ENVOY_REJECTS)
def test_envoy_refuses_invalid_config(tmp_path, build, name):
    doc, field_path = ENVOY_REJECTS[name]
    res = validate_envoy_config(json.dumps(doc), tmp_path, build)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"Envoy accepted a bad config:\n{out[-3000:]}"
    assert field_path in out, f"log does not name `{field_path}`:\n{out[-3000:]}"


def test_envoy_refuses_unparseable_config(tmp_path, build):
    res = validate_envoy_config('{"version": "v1", "routes": [', tmp_path, build)
    assert res.returncode != 0, (res.stdout + res.stderr)[-3000:]


def test_envoy_accepts_the_example_config(tmp_path, build):
    res = validate_envoy_config(EXAMPLE_CONFIG.read_text(), tmp_path, build)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


# ---- the rendered bootstrap per build (no Envoy) ------------------------------------

def rendered(build: str) -> dict:
    return render.render(json.dumps(make_test_config()), build=build, wasm_path="/x/aigw.wasm")


def http_filters(boot: dict) -> tuple[list, list[list]]:
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    # A cluster per backend, and one per route with fallback priorities.
    backends = [c for c in boot["static_resources"]["clusters"] if c["name"].startswith(("backend_", "route_"))]
    opts = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    return hcm["http_filters"], [c["typed_extension_protocol_options"][opts]["http_filters"] for c in backends]


def test_native_bootstrap_loads_the_dynamic_module():
    boot = rendered("native")
    router, upstreams = http_filters(boot)
    for f, name in [(router[0], "aigw")] + [(u[0], "aigw_upstream") for u in upstreams]:
        assert f["typed_config"]["@type"].endswith("DynamicModuleFilter")
        assert f["typed_config"]["filter_name"] == name
    assert "per_connection_buffer_limit_bytes" not in boot["static_resources"]["listeners"][0]


def test_wasm_bootstrap_roles_buffers_and_log_fields():
    boot = rendered("wasm")
    router, upstreams = http_filters(boot)
    cfg = make_test_config()
    fallback_routes = [r for r in cfg["routes"] if len({b.get("priority", 0) for b in r["backends"]}) > 1]
    assert len(upstreams) == len(cfg["backends"]) + len(fallback_routes)
    for f, role in [(router[0], "aigw")] + [(u[0], "aigw_upstream") for u in upstreams]:
        cfg = f["typed_config"]["config"]
        assert f["typed_config"]["@type"].endswith("filters.http.wasm.v3.Wasm")
        assert cfg["root_id"] == role
        assert cfg["allow_on_headers_stop_iteration"] is True
        assert cfg["vm_config"]["code"]["local"]["filename"] == "/x/aigw.wasm"
        assert json.loads(cfg["configuration"]["value"]) == make_test_config()
    # No per-stream limit in proxy-wasm: the connection limit must hold a whole body,
    # with room for the chunk that crosses the filter's own limit.
    buffers = [boot["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"]]
    buffers += [c["per_connection_buffer_limit_bytes"] for c in boot["static_resources"]["clusters"]
                if c["name"].startswith("backend_")]
    assert all(b > BODY_LIMIT for b in buffers), buffers
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    fields = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fields["llm_cel_cost"] == "%FILTER_STATE(wasm.io.envoy.ai_gateway.llm_cel_cost:PLAIN)%"
    assert fields["route_name"] == "%FILTER_STATE(wasm.io.envoy.ai_gateway.route_name:PLAIN)%"
    assert not [v for v in fields.values() if "DYNAMIC_METADATA" in v]
