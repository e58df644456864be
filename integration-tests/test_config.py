"""The config document: its JSON Schema, and Envoy refusing a bad one at load."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from conftest import EXAMPLE_CONFIG, MODULE, SCHEMA, make_test_config, validate_envoy_config


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_example_config_matches_schema(validator):
    validator.validate(json.loads(EXAMPLE_CONFIG.read_text()))


def test_test_config_matches_schema(validator):
    validator.validate(make_test_config())


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
def test_envoy_refuses_invalid_config(tmp_path, name):
    if not MODULE.exists():
        pytest.fail(f"{MODULE} not found: run `make build` first")
    doc, field_path = ENVOY_REJECTS[name]
    res = validate_envoy_config(json.dumps(doc), tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"Envoy accepted a bad config:\n{out[-3000:]}"
    assert field_path in out, f"log does not name `{field_path}`:\n{out[-3000:]}"


def test_envoy_refuses_unparseable_config(tmp_path):
    if not MODULE.exists():
        pytest.fail(f"{MODULE} not found: run `make build` first")
    res = validate_envoy_config('{"version": "v1", "routes": [', tmp_path)
    assert res.returncode != 0, (res.stdout + res.stderr)[-3000:]


def test_envoy_accepts_the_example_config(tmp_path):
    if not MODULE.exists():
        pytest.fail(f"{MODULE} not found: run `make build` first")
    res = validate_envoy_config(EXAMPLE_CONFIG.read_text(), tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
