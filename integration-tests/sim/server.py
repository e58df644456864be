"""Routing by path to a provider family, auth expectations, error injection,
recording, cassette replay and the HTTP/1.1 plumbing."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

from . import anthropic, awslambda, bedrock, cohere, faults, gemini, openai
from .core import BadRequest, Ctx, Knobs, Reject, Request, Response, is_json_content_type, json_response, opt_int
from .issued import ENTRA, GOOGLE, Issued, IssuedStore
from .sigv4 import AwsCredentials, SigError, verify
from .tokens import TokenServices

MAX_BODY = 64 * 1024 * 1024
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    421: "Misdirected Request",
    424: "Failed Dependency", 429: "Too Many Requests", 499: "Client Closed Request",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    529: "Site Overloaded",
}


# ---- routes -----------------------------------------------------------------------

@dataclass
class Route:
    provider: str         # recorded as `provider`
    family: str           # error format and auth: openai azure anthropic bedrock google lambda
    operation: str
    model: str | None = None
    vertex: bool = False  # Google auth (bearer) for the google and anthropic families
    params: dict = field(default_factory=dict)


MEDIA = "images/generations|images/edits|audio/speech|audio/transcriptions|audio/translations"
_AZURE = re.compile(rf"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings|{MEDIA})$")
_VERTEX = re.compile(r"^/v1(?:beta1)?/projects/([^/]+)/locations/([^/]+)/publishers/(anthropic|google)/models/"
                     r"([^/:]+):([A-Za-z]+)$")
_STUDIO = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):([A-Za-z]+)$")
_BEDROCK = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)$")
_OPENAI = re.compile(rf"^(.*?)/(chat/completions|completions|embeddings|responses|rerank|fim/completions|{MEDIA})$")
_FILES = re.compile(r"^(.*?)/files(?:/([^/]+))?$")
OPS = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings",
       "responses": "responses", "rerank": "rerank", "fim/completions": "fim",
       **{m: m for m in MEDIA.split("|")}}
# Operations that are not a JSON POST.
ANY_METHOD = {"files"}


def route(path: str) -> Route | None:
    function = awslambda.function_name(path)
    if function is not None:
        return Route("lambda", "lambda", "invoke", function)
    m = _AZURE.match(path)
    if m:
        return Route("azure-openai", "azure", OPS[m.group(2)], unquote(m.group(1)))
    if path == "/openai/v1/responses":
        # Azure's v1 API: no deployment in the path, no api-version.
        return Route("azure-openai", "azure", "responses")
    m = _VERTEX.match(path)
    if m:
        project, region, publisher, model, verb = m.groups()
        params = {"project": project, "location": region}
        if publisher == "anthropic" and model == "count-tokens" and verb == "rawPredict":
            return Route("vertex-anthropic", "anthropic", "count_tokens", vertex=True, params=params)
        if publisher == "anthropic":
            return Route("vertex-anthropic", "anthropic", verb, unquote(model), vertex=True, params=params)
        return Route("vertex-gemini", "google", verb, unquote(model), vertex=True, params=params)
    m = _STUDIO.match(path)
    if m:
        return Route("gemini", "google", m.group(2), unquote(m.group(1)))
    m = _BEDROCK.match(path)
    if m:
        verb, model = m.group(2), unquote(m.group(1))
        if verb == "count-tokens":
            provider = "bedrock-count-tokens"
        elif verb.startswith("converse"):
            provider = "bedrock-converse"
        elif "titan-embed" in model:
            provider = "bedrock-titan"
        else:
            # InvokeModel of a model that is not named Anthropic: the body decides.
            provider = "bedrock-anthropic" if "anthropic" in model else "bedrock-invoke"
        return Route(provider, "bedrock", verb, model)
    if path == "/v1/messages":
        return Route("anthropic", "anthropic", "messages")
    if path == "/v1/messages/count_tokens":
        return Route("anthropic", "anthropic", "count_tokens")
    if path == "/v2/rerank":
        return Route("cohere", "cohere", "rerank")
    m = _FILES.match(path)
    if m:
        return Route("openai", "openai", "files", params={"prefix": m.group(1), "id": m.group(2)})
    m = _OPENAI.match(path)
    if m:
        # An OpenAI-compatible endpoint on Vertex takes Google bearer tokens.
        return Route("openai", "openai", OPS[m.group(2)], vertex="/projects/" in m.group(1),
                     params={"prefix": m.group(1)})
    return None


def provider_error(rt: Route | None, status: int, message: str, etype: str | None = None) -> Response:
    family = rt.family if rt else "openai"
    if rt is not None and rt.provider == "vertex-anthropic" and status in (401, 403, 429):
        # Google's front end answers auth and quota failures before Claude sees them.
        return gemini.error(status, message, etype if etype in gemini.CODES else None)
    if family == "azure":
        return openai.azure_error(status, message, etype)
    if family == "cohere":
        return cohere.error(status, message)
    if family == "anthropic":
        return anthropic.error(status, message, etype)
    if family == "bedrock":
        return bedrock.error(status, message, etype)
    if family == "lambda":
        return awslambda.error(status, message, etype)
    if family == "google":
        return gemini.error(status, message, etype)
    if etype == "invalid_api_key":
        return openai.error(status, message, "invalid_request_error", code="invalid_api_key")
    return openai.error(status, message, etype)


# ---- auth expectations ------------------------------------------------------------

@dataclass
class Expectations:
    """Per listener label ("*": every listener)."""
    api_keys: dict[str, list[str]] = field(default_factory=dict)
    bearers: dict[str, list[str]] = field(default_factory=dict)
    aws: dict[str, list[AwsCredentials]] = field(default_factory=dict)
    # Listeners whose provider paths want a credential the token services issued.
    issued: set[str] = field(default_factory=set)

    @staticmethod
    def _for(table: dict, label: str) -> list | None:
        got = table.get(label, []) + table.get("*", [])
        return got or None

    def api_key(self, label: str) -> list[str] | None:
        return self._for(self.api_keys, label)

    def bearer(self, label: str) -> list[str] | None:
        return self._for(self.bearers, label)

    def aws_creds(self, label: str) -> list[AwsCredentials] | None:
        return self._for(self.aws, label)

    def requires_issued(self, label: str) -> bool:
        return label in self.issued or "*" in self.issued


def _bearer(req: Request) -> str | None:
    v = req.header("authorization")
    if v and v[:7].lower() == "bearer ":
        return v[7:].strip()
    return None


# Resources whose Entra tokens Azure OpenAI takes.
AZURE_RESOURCES = {"https://cognitiveservices.azure.com", "https://ai.azure.com"}
AZURE_TOKEN_INVALID = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
                       "(https://cognitiveservices.azure.com), or have expired.")
AZURE_KEY_INVALID = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                     "valid key for an active subscription and use a correct regional API endpoint for your resource.")
GOOGLE_UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                          "or other valid authentication credential. See https://developers.google.com/identity/"
                          "sign-in/web/devconsole-project.")
_SIGV4_AKID = re.compile(r"Credential=([^/,\s]+)/")


def _issued_google(req: Request, store: IssuedStore, openai_format: bool) -> Issued | None:
    """A bearer the Google token services issued: accepted while unexpired; a token
    of another kind or an expired one is refused (Vertex's 401)."""
    tok = store.bearer(_bearer(req))
    if tok is None:
        return None
    if tok.kind == GOOGLE and not tok.expired():
        return tok
    if openai_format:
        raise Reject(401, f"Incorrect API key provided: {_redact(_bearer(req))}.", "invalid_api_key")
    raise Reject(401, GOOGLE_UNAUTHENTICATED, "UNAUTHENTICATED")


def check_auth(req: Request, rt: Route, exp: Expectations, store: IssuedStore | None = None) -> Issued | None:
    """Raises Reject when the request's credentials do not satisfy the listener;
    returns the issued credential (token services) it presented, if any. Issued
    credentials are checked on every listener (an expired one is refused); other
    credentials only where expected (--expect-*, --aws-credentials, or issued ones
    required by --expect-issued)."""
    label = req.listener
    store = store if store is not None else IssuedStore()
    keys, bearers = exp.api_key(label), exp.bearer(label)
    require = exp.requires_issued(label)
    if rt.family == "openai":
        if rt.vertex:
            tok = _issued_google(req, store, openai_format=True)
            if tok is not None:
                return tok
        want = bearers if rt.vertex else keys
        if want is None and not (rt.vertex and require):
            return None
        got = _bearer(req)
        if got is None:
            raise Reject(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                              "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                         "invalid_request_error")
        if got not in (want or []):
            raise Reject(401, f"Incorrect API key provided: {_redact(got)}.", "invalid_api_key")
        return None
    if rt.family == "azure":
        bearer = _bearer(req)
        tok = store.bearer(bearer)
        if tok is not None:
            if tok.kind == ENTRA and not tok.expired() and (tok.audience or "").rstrip("/") in AZURE_RESOURCES:
                return tok
            raise Reject(401, AZURE_TOKEN_INVALID, "401")
        if keys is None and bearers is None and not require:
            return None
        api_key = req.header("api-key")
        if (keys and api_key in keys) or (bearers and bearer in bearers):
            return None
        raise Reject(401, AZURE_TOKEN_INVALID if bearer is not None and require else AZURE_KEY_INVALID, "401")
    if rt.family == "cohere":
        if keys is None:
            return None
        if _bearer(req) not in keys:
            raise Reject(401, "invalid api token")
        return None
    if rt.family == "anthropic" and not rt.vertex:
        if keys is None:
            return None
        # x-api-key, or (as recent SDKs send the API key) Authorization: Bearer.
        got = req.header("x-api-key") or _bearer(req)
        if got is None:
            raise Reject(401, "x-api-key header is required", "authentication_error")
        if got not in keys:
            raise Reject(401, "invalid x-api-key", "authentication_error")
        return None
    if rt.vertex:  # Vertex: Gemini and Anthropic
        tok = _issued_google(req, store, openai_format=False)
        if tok is not None:
            return tok
        if bearers is None and not require:
            return None
        if _bearer(req) not in (bearers or []):
            raise Reject(401, GOOGLE_UNAUTHENTICATED, "UNAUTHENTICATED")
        return None
    if rt.family == "google":  # AI Studio
        if keys is None:
            return None
        got = req.header("x-goog-api-key") or req.query1("key")
        if got not in keys:
            raise Reject(401, "API key not valid. Please pass a valid API key." if got else
                         "Method doesn't allow unregistered callers (callers without established identity). "
                         "Please use API Key or other form of API consumer identity to call this API.",
                         "UNAUTHENTICATED")
        return None
    if rt.family in ("bedrock", "lambda"):
        service = rt.family
        m = _SIGV4_AKID.search(req.header("authorization") or "")
        tok = store.aws_key(m.group(1) if m else None)
        if tok is not None:
            if tok.expired():
                raise SigError("ExpiredTokenException", "The security token included in the request is expired")
            verify(req, [tok.aws_credentials()], service)
            return tok
        creds = exp.aws_creds(label)
        if creds is None and keys is None and not require:
            return None
        bearer = _bearer(req)
        if bearer is not None and keys is not None:
            if bearer in keys:
                return None  # a Bedrock API key
            raise SigError("UnrecognizedClientException", "Invalid API Key format: the key is not known.")
        if creds is None and not require:
            raise SigError("MissingAuthenticationTokenException", "Missing Authentication Token")
        verify(req, creds or [], service)
    return None


def _redact(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "****"


def shape_check(ctx: Ctx, rt: Route) -> None:
    """Records the provider's body checks of a request answered otherwise (x-sim-status)."""
    doc = ctx.req.json()
    if not isinstance(doc, dict):
        return
    if rt.family in ("openai", "azure") and rt.operation in openai.MEDIA_OPS:
        openai.media_fields(ctx, rt.operation, rt.model)
    elif rt.family in ("openai", "azure") and rt.operation == "responses":
        openai.check_responses(ctx, doc, rt.family == "azure")
    elif rt.family in ("openai", "azure"):
        openai.check(ctx, rt.operation, doc, rt.family == "azure")
    elif rt.family == "anthropic":
        anthropic.check(ctx, doc, "vertex" if rt.vertex else "anthropic")
    elif rt.family == "bedrock" and rt.operation.startswith("converse"):
        bedrock.check_converse(ctx, doc)
    elif rt.family == "bedrock" and bedrock.invoke_kind(rt.model, doc) == "anthropic":
        anthropic.check(ctx, doc, "bedrock")
    elif rt.family == "google" and rt.operation in ("generateContent", "streamGenerateContent"):
        gemini.check(ctx, doc)
    elif rt.family == "lambda":
        openai.check(ctx, "chat", doc, False)


# ---- the simulator ------------------------------------------------------------------

class Simulator:
    def __init__(self, cassette_dir: Path, expectations: Expectations | None = None,
                 tokens: TokenServices | None = None):
        self.cassette_dir = cassette_dir
        self.cassettes: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.counter = 0
        self.expect = expectations or Expectations()
        self.tokens = tokens or TokenServices()
        # The Files API's uploads (a passthrough the tests drive).
        self.files: dict[str, dict] = {}

    # ---- cassettes -------------------------------------------------------

    def cassette(self, name: str) -> dict | None:
        if name in self.cassettes:
            return self.cassettes[name]
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            return None
        path = self.cassette_dir / f"{name}.yaml"
        if not path.is_file():
            return None
        import yaml  # only needed for replay

        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        self.cassettes[name] = doc["interactions"][0]
        return self.cassettes[name]

    def replay(self, req: Request, name: str) -> Response:
        inter = self.cassette(name)
        if inter is None:
            return openai.error(599, f"simulator: no cassette named {name!r} in {self.cassette_dir}")
        resp = inter["response"]
        headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
        ctype = (headers.get("content-type") or ["application/json"])[0]
        body = resp.get("body") or ""
        delay = req.int_header("x-sim-delay-ms", 2) / 1000.0
        gz = req.header("x-sim-gzip") == "1"
        if ctype.startswith("text/event-stream"):
            events = [e.encode() for e in re.split(r"(?<=\n\n)", body) if e]
            return Response(resp["code"], ctype, chunks=events, delay=delay,
                            reset_after=opt_int(req.header("x-sim-reset-after")), gzip_body=gz)
        return Response(resp["code"], ctype, body.encode(), gzip_body=gz)

    # ---- dispatch -------------------------------------------------------

    def control(self, req: Request) -> Response:
        if req.path == "/_sim/health":
            return Response(200, "text/plain", b"ok")
        if req.path == "/_sim/requests":
            if req.method == "DELETE":
                self.requests.clear()
                return json_response(200, {"cleared": True})
            want = req.query1("id")
            out = [r for r in self.requests
                   if want is None or any(k == "x-request-id" and v == want for k, v in r["headers"])]
            return json_response(200, out)
        if req.path == "/_sim/expect-issued":
            return self.expect_issued(req)
        resp = self.tokens.control(req)
        if resp is not None:
            return resp
        return openai.error(404, f"simulator: unknown control path {req.path}")

    def expect_issued(self, req: Request) -> Response:
        """Listeners whose provider paths want credentials the token services issued."""
        if req.method == "POST":
            doc = req.json()
            labels = doc.get("listeners") if isinstance(doc, dict) else None
            if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
                return json_response(400, {"error": 'the body must be {"listeners": [LABEL, ...]}'})
            self.expect.issued.update(labels)
        elif req.method == "DELETE":
            self.expect.issued.clear()
        elif req.method != "GET":
            return json_response(405, {"error": f"{req.method} is not allowed on {req.path}"})
        return json_response(200, {"listeners": sorted(self.expect.issued)})

    def record_reset(self, req: Request) -> None:
        """Records a request the provider reset while it arrived (x-sim-reset-mid-request)."""
        record = req.record()
        rt = route(req.path)
        if rt is not None:
            record.update(provider=rt.provider, operation=rt.operation, model=rt.model)
        record["fault"] = f"reset after {len(req.body)} body bytes"
        record["response"] = {"status": None, "usage": None}
        self.requests.append(record)

    def handle(self, req: Request) -> tuple[Response, dict | None]:
        if req.path.startswith("/_sim/"):
            return self.control(req), None
        service = self.tokens.route(req)
        if service is not None:  # a token endpoint: logged in /_sim/exchanges, not /_sim/requests
            return self.tokens.handle(req, service), None
        record = req.record()
        self.requests.append(record)
        rt = route(req.path)
        if rt is not None:
            record.update(provider=rt.provider, operation=rt.operation, model=rt.model)
        knobs = Knobs.of(req)
        self.counter += 1
        ctx = Ctx(req=req, knobs=knobs, record=record, counter=self.counter)
        try:
            resp = self.answer(ctx, rt)
            resp = faults.apply(ctx, rt.family if rt else None, record.get("provider"), resp)
        except Reject as e:
            if not ctx.checks:  # a failure not recorded yet (auth, tool name...)
                record["checks"].append(e.message)
            resp = provider_error(rt, e.status, e.message, e.etype)
        if rt is not None and rt.family == "bedrock":
            if not any(k == "x-amzn-requestid" for k, _ in resp.extra_headers):
                resp.extra_headers.append(bedrock.request_id(self.counter))
            if resp.status >= 400 and not any(k == "x-amzn-errortype" for k, _ in resp.extra_headers):
                resp.extra_headers.append(bedrock.errortype_header(knobs.error_type or
                                                                  bedrock.error_type(resp.status)))
        if rt is not None and rt.family == "lambda":
            if not any(k == "x-amzn-requestid" for k, _ in resp.extra_headers):
                resp.extra_headers.append(bedrock.request_id(self.counter))
        if resp.sent is not None:
            record.update(resp.sent)
        record["response"] = {"status": resp.status, "usage": resp.usage}
        return resp, record

    def answer(self, ctx: Ctx, rt: Route | None) -> Response:
        req, knobs = ctx.req, ctx.knobs
        if rt is None:
            if req.method != "POST":
                return openai.error(405, f"simulator: {req.method} not allowed on {req.path}")
            # The generic answer of old: an OpenAI 404 for a path it does not serve.
            if knobs.status is None and not req.header("x-sim-cassette"):
                raise Reject(404, f"simulator: unknown path {req.path}")
        if rt is not None:
            if req.method != "POST" and rt.operation not in ANY_METHOD:
                raise Reject(405, f"simulator: {req.method} not allowed on {req.path}")
            cred = check_auth(req, rt, self.expect, self.tokens.store)
            if cred is not None:
                ctx.record["credential"] = cred.public()
            self.check_request(ctx, rt)
        # Error injection and cassettes win over the body checks (which stay recorded).
        if knobs.status is not None:
            if rt is not None:
                shape_check(ctx, rt)
            return self.injected_error(rt, knobs)
        name = req.header("x-sim-cassette")
        if name:
            return self.replay(req, name)
        ctx.reject_if_failed()
        return self.generate(ctx, rt)

    def check_request(self, ctx: Ctx, rt: Route) -> None:
        """Checks shared by every family: JSON content type and body, query params."""
        req = ctx.req
        if rt.operation in openai.FORM_OPS and (req.header("content-type") or "").startswith("multipart/"):
            pass  # a form upload: sim/openai.py reads and checks it
        elif rt.operation in ANY_METHOD:
            pass  # not a JSON API: its handler checks what it takes
        elif not req.header("x-sim-cassette"):
            # InvokeModel's contentType defaults to application/json: it may be absent.
            absent_ok = rt.family == "bedrock" and rt.operation.startswith("invoke")
            if not is_json_content_type(req) and not (absent_ok and req.header("content-type") is None):
                msg = f"simulator: content-type must be application/json, got {req.header('content-type')!r}"
                if rt.family == "bedrock":
                    ctx.fail(msg, 415, "UnsupportedMediaTypeException")
                else:
                    ctx.fail(msg)
            if req.json() is None or not isinstance(req.json(), dict):
                ctx.fail("simulator: the body is not a JSON object")
        if rt.family == "azure" and rt.operation != "responses" and not req.query1("api-version"):
            ctx.fail("The api-version query parameter (?api-version=) is required for all requests.", 400,
                     "MissingApiVersionParameter")
        if rt.family == "anthropic" and not rt.vertex and not req.header("anthropic-version"):
            ctx.fail("anthropic-version: header is required", 400)
        if rt.family == "google" and rt.operation == "streamGenerateContent" and req.query1("alt") not in (None, "sse"):
            ctx.fail(f"alt: unsupported value {req.query1('alt')!r} (sse, or absent for a JSON array)")
        if rt.family == "bedrock" and "/" in rt.model and not rt.model.startswith("arn:"):
            ctx.fail(f"simulator: model id {rt.model!r} has a '/' but is not an ARN")

    def injected_error(self, rt: Route | None, knobs: Knobs) -> Response:
        code = knobs.status
        if knobs.body is not None:
            return Response(code, "application/json", knobs.body.encode())
        return provider_error(rt, code, f"simulated error {code}", knobs.error_type)

    def generate(self, ctx: Ctx, rt: Route) -> Response:
        n = self.counter
        if rt.family == "cohere" or rt.operation == "rerank":
            return cohere.rerank(ctx, openai_compatible=rt.family != "cohere")
        if rt.operation == "files":
            return openai.handle_files(ctx, self.files, rt.params.get("id"))
        if rt.operation == "fim":
            return openai.handle_fim(ctx, n)
        if rt.operation == "count_tokens":
            return anthropic.count_tokens(ctx, "vertex" if rt.vertex else "anthropic", ctx.req.json())
        if rt.operation == "count-tokens":
            return bedrock.count_tokens(ctx, rt.model)
        if rt.family in ("openai", "azure") and rt.operation == "responses":
            return openai.handle_responses(ctx, rt.family == "azure", n)
        if rt.family in ("openai", "azure") and rt.operation in openai.MEDIA_OPS:
            return openai.handle_media(ctx, rt.operation, rt.model, n)
        if rt.family in ("openai", "azure"):
            return openai.handle(ctx, rt.operation, rt.model, rt.family == "azure", n)
        if rt.family == "anthropic":
            if rt.vertex:
                if rt.operation not in ("rawPredict", "streamRawPredict"):
                    raise Reject(404, f"simulator: unsupported Vertex Anthropic method {rt.operation}")
                doc = ctx.req.json()
                stream = rt.operation == "streamRawPredict" or doc.get("stream") is True
                return anthropic.handle(ctx, "vertex", rt.model, stream, n)
            doc = ctx.req.json()
            return anthropic.handle(ctx, "anthropic", doc.get("model") or "", doc.get("stream") is True, n)
        if rt.family == "bedrock":
            if rt.operation.startswith("converse"):
                return bedrock.converse(ctx, rt.model, rt.operation == "converse-stream", n)
            return bedrock.invoke(ctx, rt.model, rt.operation == "invoke-with-response-stream", n)
        if rt.family == "lambda":
            return awslambda.invoke(ctx, n)
        if rt.family == "google":
            if rt.operation in ("generateContent", "streamGenerateContent"):
                return gemini.generate(ctx, rt.model, rt.operation == "streamGenerateContent", rt.vertex, n)
            if rt.operation == "predict" and rt.vertex:
                return gemini.predict(ctx, rt.model)
            if rt.operation in ("batchEmbedContents", "embedContent") and not rt.vertex:
                return gemini.embed(ctx, rt.model, rt.operation)
            raise Reject(404, f"simulator: unsupported method {rt.operation} on {ctx.req.path}")
        raise Reject(404, f"simulator: unknown path {ctx.req.path}")


# ---- HTTP/1.1 plumbing ------------------------------------------------------------

class ResetMidRequest(Exception):
    """x-sim-reset-mid-request: reset the connection now; `request` is what arrived."""

    def __init__(self, request: Request):
        super().__init__("reset mid-request")
        self.request = request


async def read_request(reader: asyncio.StreamReader, listener: str) -> Request | None:
    try:
        line = await reader.readline()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        return None
    if not line:
        return None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3:
        raise BadRequest(f"bad request line {line!r}")
    method, target, _version = parts
    headers: list[tuple[str, str]] = []
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    hmap = dict(headers)
    reset_at = faults.reset_mid_request(hmap)
    if reset_at is not None:
        # The provider goes away while the request is still arriving: read that much
        # of the body (as announced by content-length), then reset.
        n = min(max(0, reset_at), int(hmap.get("content-length") or 0))
        try:
            partial = await reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            partial = e.partial
        raise ResetMidRequest(Request(method, target, headers, partial, listener))
    body = b""
    if "chunked" in hmap.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if sum(map(len, chunks)) > MAX_BODY:
                raise BadRequest("body too large")
        body = b"".join(chunks)
    elif "content-length" in hmap:
        n = int(hmap["content-length"])
        if n > MAX_BODY:
            raise BadRequest("body too large")
        body = await reader.readexactly(n)
    return Request(method, target, headers, body, listener)


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Closes the socket with RST instead of FIN: a crashed upstream."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def write_response(writer: asyncio.StreamWriter, resp: Response, head_only: bool,
                         on_sent: Callable[[int], None] | None = None,
                         reader: asyncio.StreamReader | None = None) -> bool:
    """Sends `resp`; returns False when the connection must not be reused. `on_sent(i)`
    runs once chunk i of a stream has been written. A stall (`resp.stall_after`)
    lasts until the peer closes the connection (seen on `reader`)."""
    status_line = f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}\r\n"
    headers = [("content-type", resp.content_type), ("server", "aigw-simulator")] + resp.extra_headers
    if resp.gzip:
        headers.append(("content-encoding", "gzip"))
    if resp.chunks is None:
        body = gzip.compress(resp.body) if resp.gzip else resp.body
        headers.append(("content-length", str(len(body))))
        writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1"))
        if resp.stall_after is not None:
            await writer.drain()
            await stall(reader, resp)
            return False
        if not head_only:
            writer.write(body)
        await writer.drain()
        return not resp.close_after

    headers.append(("transfer-encoding", "chunked"))
    headers.append(("cache-control", "no-cache"))
    writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1"))
    await writer.drain()
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if resp.gzip else None
    for i, ev in enumerate(resp.chunks):
        if resp.reset_after is not None and i >= resp.reset_after:
            reset_connection(writer)
            return False
        if resp.stall_after is not None and i >= resp.stall_after:
            await stall(reader, resp)
            return False
        data = comp.compress(ev) + comp.flush(zlib.Z_SYNC_FLUSH) if comp else ev
        if data:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        if on_sent:
            on_sent(i)
        if resp.delay:
            await asyncio.sleep(resp.delay)
    if comp:
        tail = comp.flush(zlib.Z_FINISH)
        writer.write(b"%x\r\n%s\r\n" % (len(tail), tail))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return not resp.close_after


async def stall(reader: asyncio.StreamReader | None, resp: Response) -> None:
    """Sends nothing until the peer closes the connection (or MAX_STALL_S)."""
    if reader is None:
        await asyncio.sleep(faults.MAX_STALL_S)
    elif not await wait_unless_gone(reader, faults.MAX_STALL_S):
        if resp.on_stall_end is not None:
            resp.on_stall_end()


async def wait_unless_gone(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Sleeps `seconds` (other connections go on being served); False as soon as the
    client has closed the connection meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return True
        if reader.at_eof():
            return False
        await asyncio.sleep(min(0.02, left))


def make_handler(sim: Simulator, listener: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    req = await read_request(reader, listener)
                except ResetMidRequest as e:
                    sim.record_reset(e.request)
                    reset_connection(writer)
                    return
                except (BadRequest, ValueError, asyncio.IncompleteReadError) as e:
                    await write_response(writer, openai.error(400, f"simulator: {e}"), False)
                    break
                if req is None:
                    break
                resp, record = sim.handle(req)
                if resp.wait and not await wait_unless_gone(reader, resp.wait):
                    if resp.on_abandon is not None:
                        resp.on_abandon()
                    break
                on_sent = None
                if record is not None and resp.snapshots is not None:
                    snaps = resp.snapshots

                    def on_sent(i: int, record=record, snaps=snaps) -> None:
                        if i < len(snaps) and snaps[i] is not None:
                            record.update(snaps[i])
                try:
                    sent = await write_response(writer, resp, req.method == "HEAD", on_sent, reader)
                except (ConnectionError, OSError):
                    if record is not None:
                        record["client_disconnected"] = True  # gone mid-answer
                    raise
                if not sent:
                    return
                if (req.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, OSError):
            return  # the peer went away mid-answer: nothing to clean up
        finally:
            if not writer.transport.is_closing():
                writer.close()
    return handle


async def serve(listens: list[tuple[str, int, str]], sim: Simulator, ready_file: str | None) -> None:
    servers = []
    for host, port, label in listens:
        servers.append(await asyncio.start_server(make_handler(sim, label), host, port, limit=1 << 20,
                                                  reuse_address=True))
    bound = [s.sockets[0].getsockname()[1] for s in servers]
    msg = "simulator listening on " + ", ".join(f"{h}:{p} ({label})" for (h, _, label), p in zip(listens, bound))
    print(msg, flush=True)
    if ready_file:
        Path(ready_file).write_text(json.dumps(bound))
    await asyncio.gather(*(s.serve_forever() for s in servers))


def parse_listen(spec: str) -> tuple[str, int, str]:
    addr, _, label = spec.partition("=")
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port), label or "default"


def parse_labeled(spec: str, what: str) -> tuple[str, str]:
    label, sep, value = spec.partition("=")
    if not sep or not label or not value:
        raise ValueError(f"{what} must be LABEL=VALUE, got {spec!r}")
    return label, value
