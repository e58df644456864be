#!/usr/bin/env python3
"""A provider simulator: OpenAI, Azure OpenAI, Anthropic, Bedrock, Gemini and AWS Lambda upstreams for `make run` and the tests.

Standard library only (PyYAML is needed for cassette replay, botocore for SigV4
checks, cryptography for the token services' RSA keys and JWTs). One asyncio process serves HTTP/1.1 with keep-alive on one or more
listeners; each listener has a label (the backend name in the tests), so a recorded
request shows which backend Envoy sent it to. The code is in the `sim` package beside
this file; this is its entry point.

Every listener serves every provider, chosen by path (POST only):

    OpenAI          {any prefix}/chat/completions | /completions | /embeddings
                    | /responses | /images/generations | /images/edits | /audio/speech
                    | /audio/transcriptions | /audio/translations (uploads as
                    multipart/form-data) (/v1/..., /api/v1/..., /v1beta/openai/...; a
                    prefix holding /projects/ is Vertex's OpenAI endpoint: bearer auth)
    Azure OpenAI    /openai/deployments/{deployment}/chat/completions | /completions
                    | /embeddings | /images/... | /audio/... ?api-version=... (required;
                    the body model is optional, the deployment names it); /openai/v1/responses (the
                    v1 API: the body's model names the deployment, no api-version)
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
    AWS Lambda      /2015-03-31/functions/{name or ARN}/invocations[?Qualifier=] on
                    Host lambda.{region}.amazonaws.com (sim/awslambda.py): a function
                    implementing an OpenAI chat model; X-Amz-Invocation-Type
                    RequestResponse, Event (202) or DryRun (204);
                    x-sim-function-error: TYPE makes the function raise

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

Faults of a broken provider (sim/faults.py); the stall mid-answer, the endless stream
and the broken framing and encoding apply to answers that would be a 200:

    x-sim-reset-mid-request: N  read the request's headers and N bytes of its body
                             (all of it when shorter), then reset the connection
                             (TCP RST) before any byte of an answer. Recorded with
                             the bytes read, `fault`, and response status null.
    x-sim-headers-delay-ms: MS  send nothing for MS, then answer; a client that
                             closes the connection meanwhile gets nothing (the
                             record shows client_disconnected: true).
    x-sim-stall-after: N     send the headers and N chunks of a stream (N = 0 for a
                             whole body: the headers only), then nothing until the
                             client closes the connection (client_disconnected:
                             true), at most 600 s.
    x-sim-endless: BYTES     a stream without end: its first events, then text
                             pieces of BYTES characters (default 1024) forever, one
                             per chunk, with no pause unless x-sim-delay-ms is
                             given, until the client goes (client_disconnected:
                             true). OpenAI and Azure chat, Anthropic (direct and
                             Vertex) and Bedrock ConverseStream; the record shows
                             endless: true.
    x-sim-frame-length: N    Bedrock: after x-sim-frame-after whole frames (default
                             1), a prelude (its CRC valid) announcing an N-byte
                             frame (at most 2^32-1), then 64 KiB of zeros, then the
                             end of the body. A non-streamed answer becomes that
                             prelude and filler alone, as an event stream.
    x-sim-truncate-frame: N  Bedrock streams: N whole frames, then the first half of
                             the next one, then the end of the body; the connection
                             is closed after it.
    x-sim-broken-gzip: 1     content-encoding: gzip, a valid gzip header, then bytes
                             that are not deflate data (a whole body, or a stream's
                             three chunks).

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
    --aws-credentials LABEL=AKID:SECRET[:SESSION_TOKEN]  Bedrock and Lambda paths need a valid
                             SigV4 signature (service bedrock or lambda, any region), recomputed
                             with botocore over the received method, path, query,
                             SignedHeaders and body; x-amz-content-sha256 must match
                             the body when present, x-amz-security-token the session
                             token; x-amz-date within 15 minutes. 403 with
                             x-amzn-errortype InvalidSignatureException (or
                             MissingAuthenticationTokenException,
                             UnrecognizedClientException) otherwise.
    --expect-issued LABEL    the listener's provider paths want a credential: one the
                             token services below issued, or a static one expected
                             there by the options above (also POST /_sim/expect-issued).
                             Without it, a listener expecting nothing takes anything but
                             an expired or foreign issued credential.

Issued credentials are accepted on every listener, whatever it expects, and refused
once expired (also where nothing is expected):
    Azure paths    Authorization: Bearer <Entra token> whose resource is
                   https://cognitiveservices.azure.com (or https://ai.azure.com); else
                   401 {"error":{"code":"401","message":"Unauthorized. Access token is
                   missing, invalid, audience is incorrect (...), or have expired."}}.
    Vertex paths   Authorization: Bearer <Google token> from google-oauth, google-sts or
                   iamcredentials; else 401 UNAUTHENTICATED (the OpenAI-compatible
                   Vertex endpoint: OpenAI's invalid_api_key).
    Bedrock paths  SigV4 with credentials from aws-sts (the session token must be the
                   issued one); once expired 403 x-amzn-errortype ExpiredTokenException.
The request's record then carries `credential` (the issued credential, without its
secret: service, kind, principal, audience, scopes, expires_at, expired, fingerprint
or access_key_id); null otherwise.

Token services (cloud credential exchanges; the gateway reaches them through Envoy
clusters pointing at any listener). Routed by path; the Host header must be the real
service's host (port ignored), else 421 in the service's error format. They are
logged in /_sim/exchanges, never in /_sim/requests. Every JWT they take is RS256,
verified with its issuer's key (the simulated IdP's, or a registered trusted issuer's),
exp in the future, iat/nbf at most 60 s ahead.

    entra           POST /{tenant}/oauth2/v2.0/token, Host login.microsoftonline.com
                    (.us, partner .cn, chinacloudapi.cn too). Form: grant_type=
                    client_credentials, client_id, scope = <resource>/.default (one
                    resource; openid offline_access profile ignored), and client_secret
                    (or Authorization: Basic id:secret) or client_assertion_type=
                    urn:ietf:params:oauth:client-assertion-type:jwt-bearer +
                    client_assertion (a JWT whose iss, sub and aud match one of the
                    app's federated credentials). 200 {"token_type":"Bearer",
                    "expires_in":3599,"ext_expires_in":3599,"access_token":<JWT, aud =
                    resource>}. Errors {"error","error_description":"AADSTSn: ...CRLF
                    Trace ID: ...","error_codes":[n],"timestamp","trace_id",
                    "correlation_id","error_uri"}: unknown tenant 400 AADSTS90002,
                    missing parameter 400 AADSTS900144, grant 400 unsupported_grant_type
                    AADSTS70003, unknown client 400 unauthorized_client AADSTS700016,
                    scope 400 invalid_scope AADSTS1002012/70011, bad secret 401
                    invalid_client AADSTS7000215, neither credential 401 AADSTS7000218,
                    both 400 AADSTS9002313, assertion issuer unknown 401 AADSTS700211,
                    signature 401 AADSTS50013, expired 401 AADSTS700024, malformed 400
                    AADSTS50027, subject/audience mismatch 400 invalid_request
                    AADSTS70021.
    google-oauth    POST /token, Host oauth2.googleapis.com. Form: grant_type=
                    urn:ietf:params:oauth:grant-type:jwt-bearer, assertion = JWT with
                    header alg RS256, kid = a registered private_key_id; claims iss =
                    client_email, aud = its token_uri or https://oauth2.googleapis.com/
                    token, scope, exp - iat <= 3600, iat <= now + 60, exp > now; `sub`
                    only if the account allows delegation. 200 {"access_token":"ya29...",
                    "expires_in":3599,"token_type":"Bearer"}. Errors {"error",
                    "error_description"}: 400 invalid_grant "Invalid JWT Signature." (alg,
                    kid, signature), 400 invalid_grant "Invalid JWT: Token must be a
                    short-lived token (60 minutes)..." (times), "Invalid JWT: Failed
                    audience check..." (aud), 401 invalid_client "The OAuth client was
                    not found." (iss), 400 invalid_scope, 401 unauthorized_client (sub),
                    400 unsupported_grant_type / invalid_request.
    google-sts      POST /v1/token[?alt=json&prettyPrint=false], Host sts.googleapis.com,
                    no Authorization header (400 invalid_request). Form (snake_case) or
                    JSON (camelCase; snake_case names too; unknown names 400):
                    grant_type=urn:ietf:params:oauth:grant-type:token-exchange,
                    requested_token_type=urn:ietf:params:oauth:token-type:access_token,
                    audience=//iam.googleapis.com/projects/<number>/locations/global/
                    workloadIdentityPools/<pool>/providers/<provider> (malformed: 400
                    invalid_request 'Invalid value for "audience"...'; not registered:
                    400 invalid_target), subject_token_type ...:jwt or ...:id_token,
                    scope (non-empty), subject_token: a JWT of the pool's issuer whose
                    aud is one of the pool's allowed audiences (400 invalid_grant
                    otherwise). 200 {"access_token":"ya29.d...","issued_token_type",
                    "token_type":"Bearer","expires_in":3599} (snake_case either way).
    iamcredentials  POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken,
                    Host iamcredentials.googleapis.com, Authorization: Bearer <an
                    unexpired token from google-sts> (none: 401 UNAUTHENTICATED
                    CREDENTIALS_MISSING; unknown or expired: 401 UNAUTHENTICATED), JSON
                    {"scope":[non-empty], "lifetime":"^[0-9]+s$" <= 3600s (default 3600s),
                    "delegates": absent, null or []} (400 INVALID_ARGUMENT otherwise); the
                    project must be "-". The STS token's pool must list the account in
                    service_accounts, else 403 PERMISSION_DENIED with ErrorInfo
                    IAM_PERMISSION_DENIED. 200 {"accessToken":"ya29.c...","expireTime":
                    "YYYY-MM-DDTHH:MM:SSZ"}. Errors: {"error":{"code","message","status",
                    "details"}}.
    aws-sts         POST / (form) or GET /?..., Host sts.amazonaws.com (signing region
                    us-east-1) or sts.<region>.amazonaws.com; path / with an Action
                    parameter is also routed here whatever the Host (then 421).
                    Version=2011-06-15 (absent: 400 MissingParameter; other: 400
                    InvalidAction), Action:
                    AssumeRoleWithWebIdentity (unsigned): RoleArn (20-2048),
                    RoleSessionName (2-64, [A-Za-z0-9_+=,.@-]*), WebIdentityToken (4-20000; a
                    JWT), DurationSeconds (900-43200, and at most the role's
                    max_session_duration), no ProviderId. Shape errors: 400
                    ValidationError "n validation error(s) detected: Value ... at
                    'roleSessionName' failed to satisfy constraint: ...". Token: issuer
                    no role trusts 400 InvalidIdentityToken "No OpenIDConnect provider
                    found in your account for ISS"; bad signature/alg 400
                    InvalidIdentityToken; expired 400 ExpiredTokenException; aud not a
                    trusted audience of that issuer 400 InvalidIdentityToken "Incorrect
                    token audience"; role unknown or not trusting iss/aud/sub 403
                    AccessDenied "Not authorized to perform
                    sts:AssumeRoleWithWebIdentity".
                    AssumeRole: SigV4 (service sts, the host's region) by one of the
                    role's base credentials, checked with sim/sigv4.py: 403
                    MissingAuthenticationToken, 400 IncompleteSignature, 403
                    InvalidClientTokenId (unknown key), 403 SignatureDoesNotMatch
                    (signature, wrong region), 403 ExpiredToken (an expired issued key),
                    403 AccessDenied (the signer may not assume the role, or
                    ExternalId differs from the role's external_id).
                    200: XML (text/xml) <ActionResponse xmlns="https://sts.amazonaws.com/
                    doc/2011-06-15/"><ActionResult>[<SubjectFromWebIdentityToken>
                    <Audience>]<AssumedRoleUser><Arn>arn:aws:sts::ACCT:assumed-role/ROLE/
                    SESSION</Arn><AssumedRoleId></AssumedRoleUser><Credentials>
                    <SessionToken><SecretAccessKey><Expiration>YYYY-MM-DDTHH:MM:SSZ
                    <AccessKeyId>ASIA...</Credentials>[<Provider>]</ActionResult>
                    <ResponseMetadata><RequestId>...; with Accept: application/json the
                    same as JSON {"<Action>Response":{"<Action>Result":{...,
                    "Credentials":{...,"Expiration":1.7650368E9}},"ResponseMetadata":
                    {"RequestId"}}} (Expiration an epoch-seconds number in Java's
                    scientific notation). Errors: <ErrorResponse><Error><Type>Sender
                    </Type><Code/><Message/></Error><RequestId/></ErrorResponse>, or
                    JSON {"Error":{"Code","Message","Type"},"RequestId"}.
    oidc-discovery  GET {issuer path}/.well-known/openid-configuration (issuer,
                    token_endpoint = ISSUER/oauth2/token, jwks_uri = ISSUER/jwks,
                    scopes_supported, ...) and GET {issuer path}/jwks, Host = the
                    issuer's host (with its port when the issuer names one).
    oidc            POST {issuer path}/oauth2/token, same Host. Form grant_type=
                    client_credentials, scope (optional, space-separated; a client with
                    `scopes` may ask only for those or scopes_supported), client_id +
                    client_secret in the form or Authorization: Basic (form-encoded id
                    and secret; not both). 200 {"access_token": <RS256 JWT: iss, sub,
                    aud, iat, nbf, exp, jti, client_id, scope>, "token_type":"Bearer",
                    "expires_in":3600[, "scope"]}. Errors {"error","error_description"}:
                    401 invalid_client (+ WWW-Authenticate), 400 unsupported_grant_type,
                    invalid_scope, invalid_request.
    The IdP's issuer is https://oidc.sim.test unless --oidc-issuer or idp.issuer says
    otherwise; its RSA key (kid sim-idp-1) is generated at start.

Token control endpoints (JSON; never logged):

    POST   /_sim/identities        register (adds, or replaces by key; all or nothing,
                                   400 {"error"} on a bad document); answers
                                   {"registered": counts, "idp": {issuer, kid,
                                   public_key_pem, jwks}}. The document (every key
                                   optional):
        {"idp": {"issuer": URL, "scopes_supported": [..]},
         "trusted_issuers": [{"issuer", "public_key_pem"}],   other JWT issuers (e.g. a
                                   test-side key standing for Kubernetes)
         "oidc_clients": [{"client_id", "client_secret", "subject" (default client_id),
                           "audience" (string or list; default client_id),
                           "scopes" (allowed; default any), "claims" {extra}}],
         "entra_apps": [{"tenant", "tenant_aliases" [..], "client_id",
                         "client_secret" | "client_secrets" [..],
                         "federated": [{"issuer", "subject",
                                        "audience" (default api://AzureADTokenExchange)}]}],
         "google_service_accounts": [{"client_email", "private_key_id", "public_key_pem"
                         (SPKI/PKCS#1 PEM or certificate), or "keys": [{"private_key_id",
                         "public_key_pem"}], "token_uri" (default https://oauth2.
                         googleapis.com/token), "allow_subject" (default false)}],
         "workload_pools": [{"audience": "//iam.googleapis.com/projects/N/locations/
                         global/workloadIdentityPools/P/providers/Q", "issuer",
                         "allowed_audiences" (default https://iam.googleapis.com/... and
                         //iam.googleapis.com/... of the provider), "service_accounts"
                         [emails its principals may impersonate]}],
         "aws_roles": [{"role_arn", "web_identity": [{"issuer", "audience",
                         "subject" (optional)}], "base_credentials": ["AKID:SECRET[:TOKEN]"
                         or {"access_key_id", "secret_access_key", "session_token"}],
                         "max_session_duration" (3600..43200, default 3600),
                         "external_id" (optional)}]}
    GET    /_sim/identities        the registrations, secrets shown as "<present>", and
                                   the IdP (issuer, kid, public_key_pem, jwks).
    DELETE /_sim/identities        forget every registration; the issuer returns to its
                                   start-up value (keys are kept).
    POST   /_sim/token-faults      {"service": entra | google-oauth | google-sts |
                                   iamcredentials | aws-sts | oidc | oidc-discovery,
                                   "status": CODE, "error": the service's error code
                                   (default per status), "error_description": TEXT,
                                   "aadsts": N (Entra), "body": TEXT + "content_type"
                                   (sent verbatim instead), "delay_ms": MS (wait before
                                   answering; asyncio, other connections go on; a client
                                   that disconnects meanwhile gets nothing and its
                                   exchange shows client_disconnected: true), "count": N
                                   (status and delay apply to the next N requests only),
                                   "expires_in": S (lifetime of every token the service
                                   issues, also AWS credentials and iamcredentials, 0 =
                                   already expired)}, or a list of them; each replaces
                                   that service's fault. Answers the faults in force.
    GET    /_sim/token-faults      the faults in force (count: what is left).
    DELETE /_sim/token-faults[?service=S]  remove them (all, or one service's).
    GET    /_sim/exchanges[?service=S]  every token-service request, oldest first: id,
                                   service, listener, method, host, path, query and
                                   fields (form or JSON body; credentials replaced by
                                   "<redacted>"), secrets_present (names), content_type,
                                   accept, body_bytes, auth (null, {"scheme":"basic",
                                   "client_id"}, {"scheme":"bearer","fingerprint"},
                                   {"scheme":"sigv4","access_key_id","region","service",
                                   "signed_headers","session_token_present"}), jwt
                                   ({field: {"header","claims"}} of the JWTs sent, not
                                   verified), time, status, outcome ("ok", the error
                                   code, or "fault" for a verbatim body), message,
                                   notes (what matched: client, tenant, pool, role...),
                                   issued (as in /_sim/tokens), fault (an injected
                                   error), delay_ms, client_disconnected.
    DELETE /_sim/exchanges         forget them.
    GET    /_sim/tokens[?service=S]  the issued tokens and credentials without their
                                   values: service, kind (entra, google, aws, oidc),
                                   principal, audience, scopes, details, issued_at,
                                   expires_at, expired, fingerprint (first 16 hex
                                   digits of SHA-256 of the token) or access_key_id.
    DELETE /_sim/tokens            forget them (provider paths then ignore them).
    POST   /_sim/tokens/expire     {"service": S} or {}: every unexpired token (of S)
                                   expires now; answers {"expired": n}.
    GET|POST|DELETE /_sim/expect-issued  {"listeners": [LABEL, ...]}: listeners that
                                   require issued credentials (POST adds, DELETE clears).

Control endpoints (never recorded):

    GET    /_sim/health            200 "ok"
    GET    /_sim/requests[?id=X]   JSON list of recorded requests (all, or those whose
                                   x-request-id is X), each with: listener, method,
                                   path (with query), query ({name: [values]}),
                                   headers ([[lower-case name, value]]), body (text,
                                   invalid UTF-8 replaced), body_bytes and body_sha256
                                   (of the bytes as received), body_json (null when
                                   not JSON, not UTF-8 or nested too deep for
                                   Python's parser: the provider answers 400),
                                   received_at, provider (openai,
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
                                   answer's usage on OpenAI paths, as before); the
                                   faults above add fault (what was broken),
                                   client_disconnected (true: the client went away
                                   before the answer was whole) and endless.
    DELETE /_sim/requests          forget them.

Usage: simulator.py --listen 127.0.0.1:8081[=label] [--listen ...]
                    [--cassettes DIR] [--ready-file PATH]
                    [--expect-api-key LABEL=KEY] [--expect-bearer LABEL=TOKEN]
                    [--aws-credentials LABEL=AKID:SECRET[:SESSION_TOKEN]]
                    [--expect-issued LABEL] [--oidc-issuer URL]
                    [--identities FILE]   (a JSON document as POST /_sim/identities
                                           takes; repeatable, loaded in order)
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
    exp.issued.update(args.expect_issued)
    return exp


def token_services(args: argparse.Namespace):
    """The token services with --oidc-issuer and the --identities documents loaded."""
    import json

    from sim.identity import Registry
    from sim.tokens import TokenServices

    reg = Registry()
    if args.oidc_issuer:
        reg.load({"idp": {"issuer": args.oidc_issuer}})
        reg.default_issuer = reg.issuer
    for path in args.identities:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--identities {path}: {e}") from None
        reg.load(doc)
    return TokenServices(reg)


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
    ap.add_argument("--expect-issued", action="append", default=[], metavar="LABEL",
                    help="listener LABEL (* = all) requires credentials issued by the token services")
    ap.add_argument("--oidc-issuer", metavar="URL", help="the simulated IdP's issuer (default https://oidc.sim.test)")
    ap.add_argument("--identities", action="append", default=[], metavar="FILE",
                    help="register identities from this JSON file (as POST /_sim/identities), repeatable")
    args = ap.parse_args()
    try:
        exp = expectations(args)
        tokens = token_services(args)
    except ValueError as e:
        ap.error(str(e))
    listens = [parse_listen(s) for s in (args.listen or ["127.0.0.1:8081"])]
    try:
        asyncio.run(serve(listens, Simulator(Path(args.cassettes), exp, tokens), args.ready_file))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
