"""Rate-limit rules in envoyproxy/ratelimit's YAML format, and how a descriptor finds one.

    domain: aigw
    descriptors:
      - key: tenant                # no value: any value, a counter per value
        rate_limit: {unit: hour, requests_per_unit: 1000}
      - key: tenant
        value: vip                 # a specific value wins over the key-only rule
        rate_limit: {unit: hour, requests_per_unit: 5000}
        shadow_mode: true          # counted and logged, never refused
      - key: route
        value: chat-*              # `*`: any characters (zero or more)
        descriptors:               # nested: matches ("route", ...), ("model", ...)
          - key: model
            rate_limit: {unit: minute, requests_per_unit: 60}

Matching follows envoyproxy/ratelimit (src/config/config_impl.go): a request
descriptor's entries are walked one level of the tree each; at each level the entry
matches `key` + exact `value` first, then a `value` with `*` (in file order), then the
key-only rule. The rule found at the level of the descriptor's last entry is its limit;
a descriptor with more or fewer entries than the matched path has no limit (it is
allowed, and nothing is counted). Each request descriptor is matched on its own.

Units: second, minute, hour, day, week, month, year (any case); `unlimited: true`
instead of a unit. Keys that only shape envoyproxy/ratelimit's metrics (`name`,
`detailed_metric`, `value_to_metric`, `metadata`) are accepted and ignored; `replaces`,
`quota_mode` and `share_threshold` are refused rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

UNITS = ("second", "minute", "hour", "day", "week", "month", "year")
ROOT_KEYS = {"domain", "descriptors"}
DESCRIPTOR_KEYS = {"key", "value", "rate_limit", "descriptors", "shadow_mode",
                   "detailed_metric", "value_to_metric", "metadata"}
RATE_LIMIT_KEYS = {"unit", "requests_per_unit", "unlimited", "name"}
UNSUPPORTED = {"replaces", "quota_mode", "share_threshold"}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Limit:
    requests_per_unit: int
    unit: str  # one of UNITS; "" when unlimited
    unlimited: bool = False
    shadow_mode: bool = False
    name: str = ""


@dataclass
class Node:
    limit: Limit | None = None
    exact: dict[tuple[str, str | None], Node] = field(default_factory=dict)  # (key, value or None)
    wildcards: list[tuple[str, re.Pattern, Node]] = field(default_factory=list)  # (key, value pattern, node)

    def child(self, key: str, value: str) -> Node | None:
        if (key, value) in self.exact:
            return self.exact[(key, value)]
        for wkey, pattern, node in self.wildcards:
            if wkey == key and pattern.fullmatch(value):
                return node
        return self.exact.get((key, None))


class Config:
    """The rules of every loaded domain."""

    def __init__(self, documents: list[dict], origin: str = "config"):
        self.domains: dict[str, Node] = {}
        for doc in documents:
            self._load_domain(doc, origin)

    @classmethod
    def from_files(cls, paths: list[str | Path]) -> Config:
        docs = []
        for path in paths:
            docs.extend(d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None)
        return cls(docs, origin=", ".join(str(p) for p in paths))

    @classmethod
    def from_yaml(cls, text: str) -> Config:
        return cls([d for d in yaml.safe_load_all(text) if d is not None])

    def limit_for(self, domain: str, entries: list[tuple[str, str]]) -> Limit | None:
        node = self.domains.get(domain)
        if node is None or not entries:
            return None
        for key, value in entries:
            node = node.child(key, value)
            if node is None:
                return None
        return node.limit

    # ---- loading ----------------------------------------------------------------

    def _load_domain(self, doc: dict, origin: str) -> None:
        if not isinstance(doc, dict):
            raise ConfigError(f"{origin}: a document must be a mapping with `domain` and `descriptors`")
        _check_keys(doc, ROOT_KEYS, f"{origin}: top level")
        domain = doc.get("domain")
        if not isinstance(domain, str) or not domain:
            raise ConfigError(f"{origin}: `domain` must be a non-empty string")
        if domain in self.domains:
            raise ConfigError(f"{origin}: duplicate domain {domain!r}")
        root = Node()
        _load_descriptors(root, doc.get("descriptors") or [], f"{origin}: {domain}")
        self.domains[domain] = root


def _check_keys(mapping: dict, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key in UNSUPPORTED:
            raise ConfigError(f"{where}: `{key}` is not supported by this rate-limit service")
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key `{key}`")


def _load_descriptors(parent: Node, descriptors: list, where: str) -> None:
    if not isinstance(descriptors, list):
        raise ConfigError(f"{where}: `descriptors` must be a list")
    seen = set()
    for d in descriptors:
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: a descriptor must be a mapping")
        _check_keys(d, DESCRIPTOR_KEYS, where)
        key = d.get("key")
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: descriptor has an empty key")
        value = d.get("value")
        value = None if value in (None, "") else str(value)
        path = f"{where}.{key}" + (f"_{value}" if value is not None else "")
        if (key, value) in seen:
            raise ConfigError(f"{path}: duplicate descriptor")
        seen.add((key, value))
        node = Node(limit=_load_limit(d, path))
        _load_descriptors(node, d.get("descriptors") or [], path)
        if value is not None and "*" in value:
            parent.wildcards.append((key, _pattern(value), node))
        else:
            parent.exact[(key, value)] = node


def _pattern(value: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


def _load_limit(d: dict, path: str) -> Limit | None:
    rl = d.get("rate_limit")
    if rl is None:
        return None
    if not isinstance(rl, dict):
        raise ConfigError(f"{path}: `rate_limit` must be a mapping")
    _check_keys(rl, RATE_LIMIT_KEYS, f"{path}.rate_limit")
    shadow = bool(d.get("shadow_mode", False))
    name = str(rl.get("name") or "")
    unit = str(rl.get("unit") or "").lower()
    if rl.get("unlimited"):
        if unit:
            raise ConfigError(f"{path}: should not specify rate limit unit when unlimited")
        return Limit(0, "", unlimited=True, shadow_mode=shadow, name=name)
    if unit not in UNITS:
        raise ConfigError(f"{path}: invalid rate limit unit {rl.get('unit')!r} (one of {', '.join(UNITS)})")
    rpu = rl.get("requests_per_unit")
    if not isinstance(rpu, int) or isinstance(rpu, bool) or not 0 <= rpu < 2**32:
        raise ConfigError(f"{path}: `requests_per_unit` must be an integer from 0 to 2^32-1, not {rpu!r}")
    return Limit(rpu, unit, shadow_mode=shadow, name=name)
