#!/usr/bin/env python3
"""A provider simulator: OpenAI, Azure OpenAI, Anthropic, Bedrock and Gemini upstreams for `make run` and the tests.

Standard library only (PyYAML is needed for cassette replay, botocore for SigV4
checks). One asyncio process serves HTTP/1.1 with keep-alive on one or more
listeners; each listener has a label (the backend name in the tests), so a recorded
request shows which backend Envoy sent it to. The code is in the `sim` package beside
this file; this is its entry point.

Every listener serves every provider, chosen by path (POST only):

    OpenAI          {any prefix}/chat/completions | /completions | /embeddings
                    (/v1/..., /api/v1/..., /v1beta/openai/...; a prefix holding
                    /projects/ is Vertex's OpenAI endpoint: bearer auth)
    Azure OpenAI    /openai/deployments/{deployment}/chat/completions | /completions
                    | /embeddings ?api-version=... (required; the body model is
                    optional, the deployment names it)
    Anthropic       /v1/messages (anthropic-version header; model, max_tokens,
                    messages; SSE when "stream": true)
    Vertex Claude   /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}
                    :rawPredict | :streamRawPredict (anthropic_version
                    "vertex-2023-10-16" or an API version date, no model)
    Bedrock         /model/{modelId}/converse | /converse-stream (modelId one
                    percent-encoded segment); /model/{id}/invoke |
                    /invoke-with-response-stream for Anthropic models
                    (anthropic_version "bedrock-2023-05-31" or an API version
                    date, no model, no stream) and
                    for Titan text embeddings (model ids holding "titan-embed")
    Gemini          /v1beta/models/{m}:generateContent | :streamGenerateContent
                    (?alt=sse: SSE with CRLF line ends; without: a streamed JSON
                    array) | :batchEmbedContents | :embedContent
    Vertex Gemini   /v1/projects/{p}/locations/{r}/publishers/google/models/{m}
                    :generateContent | :streamGenerateContent | :predict (embeddings)

Bedrock streams are application/vnd.amazon.eventstream frames, sent in chunks cut at
odd places (7 bytes into a frame, across frame ends, mid-payload) unless
`x-sim-split: 0`; every event payload carries Bedrock's "p" padding field.

What it answers, decided per request by headers (they pass through Envoy):

    x-sim-cassette: NAME     replay NAME.yaml from the cassette directory: recorded
                             status, content-type and body; SSE bodies are sent one
                             event per chunk, each flushed separately.
    x-sim-status: CODE       answer CODE with x-sim-body, else an error body in the
                             provider's own format (OpenAI/Azure {"error":{...}},
                             Anthropic {"type":"error","error":{type,message}} with
                             529 overloaded_error, Bedrock {"message"} plus
                             x-amzn-errortype, Google {"error":{code,message,status}}).
    x-sim-body: TEXT         the body for x-sim-status.
    x-sim-fail-on: LABEL=CODE[,LABEL=CODE]  as x-sim-status, on those listeners only
                             (fail one backend, let the fallback answer).
    x-sim-error-type: TYPE   the error type of x-sim-status's default body (OpenAI
                             type, Azure code, Anthropic error.type, Bedrock
                             x-amzn-errortype, Google status).
    x-sim-reset-after: N     stream N events (Bedrock: N frames), then reset the
                             connection (TCP RST).
    x-sim-gzip: 1            gzip the response body (per chunk for streams).
    x-sim-delay-ms: MS       pause between streamed chunks (default 5).
    x-sim-tokens: N          text pieces = visible output tokens (default 5, at least
                             1; with x-sim-tool-call, default 0 and 0 allowed).
    x-sim-cached-tokens: N   N prompt tokens read from cache.
    x-sim-cache-write-tokens: N  N prompt tokens written to cache (Anthropic, Bedrock).
    x-sim-reasoning-tokens: N  thinking pieces (Anthropic thinking, Bedrock
                             reasoningContent, Gemini thoughts) when the request asks
                             for thinking (default 3 then); OpenAI and Gemini report N
                             in usage whether asked or not.
    x-sim-tool-call: NAME    the answer calls tool NAME with arguments built from its
                             declared schema ({"city":"Paris"} when none), streamed in
                             3 argument pieces; 400 if the request declares tools and
                             NAME is not one of them.
    x-sim-stream-error: TYPE after x-sim-stream-error-after events (default 3), end
                             the stream with an error event: OpenAI `data: {"error"}`,
                             Anthropic `event: error`, Bedrock an exception frame
                             (:message-type exception, :exception-type TYPE), Gemini a
                             `data: {"error":{code,message,status: TYPE}}` event.
    x-sim-split: 0           Bedrock frames one per chunk, uncut.

Token rule (so tests can predict counts): words = whitespace-separated words of the
text the model reads (message and prompt text, system text, tool-result text; not
tool definitions, tool-call arguments, images or thinking; OpenAI token-array
prompts count one per token). prompt = max(1, words, cached + cache_write): every
prompt token, cached ones included. Output = text pieces + tool-argument pieces (3,
fewer for arguments under 3 characters) + thinking pieces where the provider counts
them in output (Anthropic, Bedrock; Gemini reports them as thoughtsTokenCount,
OpenAI as reasoning_tokens inside completion_tokens_details). Per provider:
  OpenAI/Azure  prompt_tokens = prompt, cached_tokens = cached.
  Anthropic     input_tokens = prompt - cached - cache_write,
                cache_read_input_tokens = cached,
                cache_creation_input_tokens = cache_write.
  Bedrock       inputTokens = prompt - cached - cache_write, totalTokens = all of
                input, output and both cache counts (cache fields only when not 0).
  Gemini        promptTokenCount = prompt, cachedContentTokenCount = cached,
                totalTokenCount = prompt + candidates + thoughts; every streamed
                event carries cumulative usageMetadata.
  Embeddings    max(1, words) per input (Titan inputTextTokenCount, Vertex
                token_count); Gemini batchEmbedContents reports no usage.
A max-tokens field (max_tokens / max_completion_tokens, inferenceConfig.maxTokens,
generationConfig.maxOutputTokens) below the text pieces truncates the text to it,
drops the tool call and stops for length.

Checks on what arrives (a failure answers in the provider's format with its status,
unless x-sim-status or x-sim-cassette asks for something else, and is recorded in
`checks`): POST, content-type application/json, a JSON object body, required query
params and headers (Azure api-version, anthropic-version), the body's shape per
provider (required fields, no foreign ones: e.g. Converse has no `model` and list
contents; Vertex/Bedrock Anthropic bodies carry anthropic_version and no `model`;
Gemini contents non-empty with roles user/model), and auth when expected.

Auth expectations (repeatable; LABEL "*" means every listener):

    --expect-api-key LABEL=KEY  the listener wants the API-key header of the path
                             family: Authorization: Bearer (OpenAI, Mistral and other
                             compatibles, Bedrock API keys), api-key (Azure),
                             x-api-key or Authorization: Bearer (Anthropic: recent
                             SDKs send the key as a bearer), x-goog-api-key or ?key= (AI
                             Studio). 401 in the provider's format otherwise (Bedrock:
                             403).
    --expect-bearer LABEL=TOKEN  Authorization: Bearer TOKEN on Vertex paths (and
                             Azure AD on Azure paths, either this or api-key).
    --aws-credentials LABEL=AKID:SECRET[:SESSION_TOKEN]  Bedrock paths need a valid
                             SigV4 signature (service bedrock, any region), recomputed
                             with botocore over the received method, path, query,
                             SignedHeaders and body; x-amz-content-sha256 must match
                             the body when present, x-amz-security-token the session
                             token; x-amz-date within 15 minutes. 403 with
                             x-amzn-errortype InvalidSignatureException (or
                             MissingAuthenticationTokenException,
                             UnrecognizedClientException) otherwise.

Control endpoints (never recorded):

    GET    /_sim/health            200 "ok"
    GET    /_sim/requests[?id=X]   JSON list of recorded requests (all, or those whose
                                   x-request-id is X), each with: listener, method,
                                   path (with query), query ({name: [values]}),
                                   headers ([[lower-case name, value]]), body (text),
                                   body_json, received_at, provider (openai,
                                   azure-openai, anthropic, vertex-anthropic,
                                   bedrock-converse, bedrock-anthropic, bedrock-titan,
                                   bedrock-invoke, gemini, vertex-gemini; null for an
                                   unknown path), operation, model, checks (failure
                                   messages, [] when fine), sent_text, sent_reasoning,
                                   sent_tool_calls ([{id, name, arguments}]),
                                   sent_usage (the usage object as sent in provider
                                   terms: streams record what was written so far, the
                                   Anthropic stream's message_start usage merged with
                                   message_delta's, Gemini's last usageMetadata, Vertex
                                   predict {predictions: [statistics], metadata}), and
                                   response {status, usage} (usage: the generated
                                   answer's usage on OpenAI paths, as before).
    DELETE /_sim/requests          forget them.

Usage: simulator.py --listen 127.0.0.1:8081[=label] [--listen ...]
                    [--cassettes DIR] [--ready-file PATH]
                    [--expect-api-key LABEL=KEY] [--expect-bearer LABEL=TOKEN]
                    [--aws-credentials LABEL=AKID:SECRET[:SESSION_TOKEN]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim.server import Expectations, Simulator, parse_labeled, parse_listen, serve  # noqa: E402
from sim.sigv4 import AwsCredentials  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# In a CI clone the shared test data lives beside the repository.
DEFAULT_CASSETTES = REPO.parent / "shared" / "conformance" / "openai-cassettes"


def expectations(args: argparse.Namespace) -> Expectations:
    exp = Expectations()
    for spec in args.expect_api_key:
        label, key = parse_labeled(spec, "--expect-api-key")
        exp.api_keys.setdefault(label, []).append(key)
    for spec in args.expect_bearer:
        label, token = parse_labeled(spec, "--expect-bearer")
        exp.bearers.setdefault(label, []).append(token)
    for spec in args.aws_credentials:
        label, creds = parse_labeled(spec, "--aws-credentials")
        exp.aws.setdefault(label, []).append(AwsCredentials.parse(creds))
    return exp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", action="append", default=[], help="HOST:PORT[=label], repeatable")
    ap.add_argument("--cassettes", default=os.environ.get("AIGW_CASSETTES", str(DEFAULT_CASSETTES)))
    ap.add_argument("--ready-file", help="write the bound ports here (JSON) once listening")
    ap.add_argument("--expect-api-key", action="append", default=[], metavar="LABEL=KEY",
                    help="listener LABEL (* = all) requires this API key in the path family's header")
    ap.add_argument("--expect-bearer", action="append", default=[], metavar="LABEL=TOKEN",
                    help="listener LABEL requires Authorization: Bearer TOKEN on Vertex (and Azure AD) paths")
    ap.add_argument("--aws-credentials", action="append", default=[], metavar="LABEL=AKID:SECRET[:TOKEN]",
                    help="listener LABEL requires a valid SigV4 signature (service bedrock) on Bedrock paths")
    args = ap.parse_args()
    try:
        exp = expectations(args)
    except ValueError as e:
        ap.error(str(e))
    listens = [parse_listen(s) for s in (args.listen or ["127.0.0.1:8081"])]
    try:
        asyncio.run(serve(listens, Simulator(Path(args.cassettes), exp), args.ready_file))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
