#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into filter/fuzz/corpus/<target>/.

Seeds come from the repository's fixtures: filter/testdata/**, the recorded
OpenAI cassettes (../shared/conformance/openai-cassettes/*.yaml, request and
response bodies; skipped when that folder is absent), envoy-configs/example/
config.json, envoy-configs/examples/**/*.yaml and cli/tests/golden/**. Each target
takes a few bytes of choices before its payload (see src/lib.rs and the targets'
headers), so a fixture becomes one seed per relevant choice.

Corpora are generated, not committed. Re-running adds (never removes) files;
names are content hashes, so a seed is written once.

Usage: seed.py [--out DIR]
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import sys

FUZZ = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(FUZZ))
CASSETTES = os.path.join(os.path.dirname(REPO), "shared", "conformance", "openai-cassettes")
MAX_SEED = 64 * 1024

# Indexes into src/lib.rs ENDPOINTS and SCHEMAS.
ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/anthropic/v1/messages"]
N_SCHEMAS = 9
SCHEMA = {"openai": 0, "mistral": 1, "azure": 2, "bedrock": 3, "awsanthropic": 4,
          "anthropic": 5, "gcpanthropic": 6, "vertex": 7, "gemini": 8}
# upstream_response TYPES: json, sse, eventstream, sse+charset, text, none.
CT_JSON, CT_SSE, CT_EVENTSTREAM = 0, 1, 2


def read(path):
    with open(path, "rb") as f:
        return f.read()


def files(root, exts):
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(exts):
                yield os.path.join(dirpath, n)


def cassette_bodies(path):
    """(url, request body, response body, response content type) per interaction."""
    text = read(path).decode("utf-8", "replace")
    try:
        import yaml  # PyYAML, where installed
        doc = yaml.safe_load(text) or {}
        for it in doc.get("interactions") or []:
            req, resp = it.get("request") or {}, it.get("response") or {}
            ct = ""
            for k, v in (resp.get("headers") or {}).items():
                if k.lower() == "content-type" and v:
                    ct = v[0]
            yield (req.get("url") or "", (req.get("body") or "").encode(),
                   (resp.get("body") or "").encode(), ct)
        return
    except ImportError:
        pass
    # Without PyYAML: the `body: |-` blocks and `url:` lines, in order.
    lines = text.split("\n")
    bodies, urls, i = [], [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)body: (.*)$", lines[i])
        u = re.match(r"^\s*url: (.*)$", lines[i])
        if u:
            urls.append(u.group(1).strip())
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|-", "|"):
                block, i = [], i + 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i])
                    i += 1
                pad = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
                bodies.append("\n".join(b[pad:] for b in block).strip("\n").encode())
                continue
            bodies.append(rest.strip("'\"").encode())
        i += 1
    for k in range(0, len(bodies) - 1, 2):
        resp = bodies[k + 1]
        ct = "text/event-stream" if resp.startswith(b"data:") or b"\ndata:" in resp else "application/json"
        yield (urls[k // 2] if k // 2 < len(urls) else "", bodies[k], resp, ct)


class Corpus:
    def __init__(self, out):
        self.out = out
        self.count = {}

    def add(self, target, data):
        if len(data) > MAX_SEED + 16:
            return
        d = os.path.join(self.out, target)
        os.makedirs(d, exist_ok=True)
        name = hashlib.sha1(data).hexdigest()
        p = os.path.join(d, name)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
            self.count[target] = self.count.get(target, 0) + 1


SIZES = [bytes([0, 0, 0, 0]), bytes([1, 7, 64, 3]), bytes([200, 13, 0, 1])]


def endpoint_of(url_or_name):
    s = url_or_name.lower()
    if "anthropic" in s and "messages" in s or "/v1/messages" in s:
        return 3
    if "embedding" in s:
        return 2
    if "completions" in s and "chat" not in s or s.startswith("completion"):
        return 1
    return 0


def schemas_of(path):
    p = path.lower()
    if "bedrock" in p:
        return [SCHEMA["bedrock"]]
    if "anthropic" in p:
        return [SCHEMA["anthropic"], SCHEMA["awsanthropic"], SCHEMA["gcpanthropic"]]
    if "gemini" in p or "vertex" in p:
        return [SCHEMA["gemini"], SCHEMA["vertex"]]
    return [SCHEMA["openai"], SCHEMA["mistral"], SCHEMA["azure"]]


def is_stream(data):
    return data.startswith(b"data:") or data.startswith(b"event:") or b"\ndata:" in data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(FUZZ, "corpus"))
    args = ap.parse_args()
    c = Corpus(args.out)
    testdata = os.path.join(REPO, "filter", "testdata")

    requests = []   # (endpoint, body)
    answers = []    # (path-ish, body, content type index, schemas)
    for p in files(testdata, (".json", ".sse", ".bin")):
        data = read(p)
        name = os.path.relpath(p, testdata)
        if os.path.basename(p).startswith("request"):
            # The client's side only: provider-format requests are not client bodies.
            if ".openai." in name or "/" not in name:
                requests.append((0, data))
            elif "anthropic" in name:
                requests.append((3, data))
            continue
        ct = CT_EVENTSTREAM if p.endswith(".bin") else CT_SSE if p.endswith(".sse") else CT_JSON
        if ".openai." in name:
            # Already in the client's schema: what the router level meters.
            answers.append((name, data, ct, [SCHEMA["openai"]]))
        else:
            answers.append((name, data, ct, schemas_of(name)))
    if os.path.isdir(CASSETTES):
        for p in files(CASSETTES, (".yaml",)):
            for url, req, resp, ctype in cassette_bodies(p):
                ep = endpoint_of(url or os.path.basename(p))
                if req:
                    requests.append((ep, req))
                if resp:
                    ct = CT_SSE if "event-stream" in ctype or is_stream(resp) else CT_JSON
                    answers.append((os.path.basename(p), resp, ct, [SCHEMA["openai"], SCHEMA["azure"]]))
    else:
        print(f"seed.py: no cassettes at {CASSETTES}; seeding from the fixtures only", file=sys.stderr)

    # Prompts the fuzz config's guardrails find something in (every detector, escapes,
    # non-ASCII text around the findings), for each client schema.
    pii = ("mail jane.doe@example.com or zo\u00eb@example.fr, card 4111 1111 1111 1111, "
           "iban DE89 3704 0044 0532 0130 00, ssn 123-45-6789, +44 20 7946 0958, 10.0.0.1, "
           "2001:db8::1, AKIAIOSFODNN7EXAMPLE, sk-proj-abcdefghijklmnopqrstuvwx, secret \"hello\" 12345 "
           "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----")
    requests.append((0, ('{"model":"gpt-4o-mini","messages":[{"role":"system","content":"%s"},'
                         '{"role":"user","content":[{"type":"text","text":"%s"}]}]}' % (pii, pii)).encode()))
    requests.append((3, ('{"model":"gpt-4o-mini","max_tokens":5,"system":[{"type":"text","text":"%s"}],'
                         '"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t",'
                         '"content":"%s"}]}]}' % (pii, pii)).encode()))

    # request_body: [selector][4 sizes][body]; selector = endpoint + 4*schema + 36*routerOnly.
    for ep, body in requests:
        for schema in range(N_SCHEMAS):
            for ro in (0, 1):
                sel = ep + 4 * schema + 36 * ro
                c.add("request_body", bytes([sel]) + SIZES[(schema + ro) % len(SIZES)] + body)
        # The same body on the other endpoints.
        for other in range(4):
            c.add("request_body", bytes([other]) + SIZES[1] + body)

    # upstream_response: [selector][status][type][4 sizes][answer];
    # selector = endpoint + 4*schema + 36*stream + 72*routerOnly.
    for name, body, ct, schemas in answers:
        stream = 1 if ct in (CT_SSE, CT_EVENTSTREAM) else 0
        ep = 3 if "messages" in name else endpoint_of(name) if "/" not in name else 0
        for schema in schemas:
            for endpoint in sorted({ep, 0, 3}):
                for ro in (0, 1):
                    sel = endpoint + 4 * schema + 36 * stream + 72 * ro
                    sizes = SIZES[(schema + endpoint + ro) % len(SIZES)]
                    c.add("upstream_response", bytes([sel, 0, ct]) + sizes + body)
            # An error status with the same bytes.
            c.add("upstream_response", bytes([4 * schema, 2, CT_JSON]) + SIZES[0] + body)

    # response_meter / sse_decoder: [seed][body] (see those targets).
    for name, body, ct, _ in answers:
        if ct == CT_EVENTSTREAM:
            continue
        for seed in (0, 1, 5, 0x2b, 0xff) if ct == CT_SSE else (0, 2, 0x10):
            c.add("response_meter", bytes([seed]) + body)
        if ct == CT_SSE:
            for seed in (0, 3, 12, 0xff):
                c.add("sse_decoder", bytes([seed]) + body)

    # eventstream_decoder: [limit][4 sizes][bytes].
    for name, body, ct, _ in answers:
        if ct == CT_EVENTSTREAM:
            for limit in (0, 4, 40):
                for sizes in SIZES:
                    c.add("eventstream_decoder", bytes([limit]) + sizes + body)

    # gzip_response: [selector][4 sizes][payload]; bit 0: payload gzipped by the
    # target (plaintext seeds) or already gzip (compressed seeds); bits 2-3: type.
    gz_type = {CT_JSON: 0, CT_SSE: 1, CT_EVENTSTREAM: 2}
    for name, body, ct, _ in answers:
        t = gz_type[ct] << 2
        stream = 2 if ct != CT_JSON else 0
        for hi in (0, 0x10, 0x30, 0x70):  # OpenAI, routerOnly, other schemas
            c.add("gzip_response", bytes([t | stream | 1 | hi]) + SIZES[1] + body)
            c.add("gzip_response", bytes([t | stream | hi]) + SIZES[2] + gzip.compress(body, mtime=0))

    # config_json: whole documents.
    configs = [os.path.join(REPO, "envoy-configs", "example", "config.json")]
    configs += list(files(os.path.join(REPO, "cli", "tests", "golden"), ("config.json",)))
    docs = [read(p) for p in configs if os.path.exists(p)]
    for d in docs:
        c.add("config_json", d)

    # cel_expression: [selector][expression]; selector bit 0: validation rule.
    exprs = set()
    for d in docs:
        try:
            doc = json.loads(d)
        except ValueError:
            continue
        stack = [doc]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                if isinstance(v.get("cel"), str):
                    exprs.add((0, v["cel"]))
                if isinstance(v.get("expression"), str):
                    exprs.add((1, v["expression"]))
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
    yamls = list(files(os.path.join(REPO, "cli", "tests", "golden"), ("input.yaml",)))
    yamls += list(files(os.path.join(REPO, "envoy-configs", "examples"), (".yaml",)))
    for p in yamls:
        for m in re.finditer(r"^\s*-?\s*(expression|cel|celExpression): *(.+)$", read(p).decode("utf-8", "replace"), re.M):
            e = m.group(2).strip()
            if e[:1] in "'\"" and e[-1:] == e[:1]:
                e = e[1:-1]
            exprs.add((1 if m.group(1) == "expression" else 0, e))
    exprs |= {
        (0, "input_tokens * 3 + output_tokens * 15"),
        (0, "model == 'm' ? total_tokens : 0"),
        (0, "uint(input_tokens) + cached_input_tokens * 2u"),
        (0, "[1, 2, 3].map(x, x * input_tokens).size()"),
        (0, "backend.startsWith('b') && route_name.size() > 0 ? 1.5 * double(output_tokens) : 0.0"),
        (1, "'x-team' in request.headers && request.headers['x-team'] == 'platform'"),
        (1, "request.url_path.startsWith('/v1/') && request.method == 'POST'"),
        (1, "request.query.contains('x=1') || request.useragent.matches('^fuzz')"),
        (1, "request.headers.exists(k, k.endsWith('multi'))"),
        (1, "size(request.headers) > 3 && request.host != 'gateway.local'"),
    }
    for kind, e in sorted(exprs):
        for sel in ((0,) if kind == 0 else (1, 3, 5)):
            c.add("cel_expression", bytes([sel]) + e.encode())

    # cli_yaml: the compiler's inputs as they are.
    for p in yamls:
        c.add("cli_yaml", read(p))

    for t in sorted(c.count):
        print(f"seed.py: {t}: {c.count[t]} new seeds")


if __name__ == "__main__":
    main()
