"""AWS Lambda's Invoke API (`POST /2015-03-31/functions/{FunctionName}/invocations`),
with behind it a function that implements an OpenAI chat model: its event is an
OpenAI chat request body and its payload the chat completion (with usage), as
sim/openai.py would answer.

Checked as Lambda does: SigV4 for service `lambda` (server.check_auth, recomputed with
botocore), the Host (`lambda.{region}.amazonaws.com`, the signature's region), the
function name (a name, a partial or a full ARN, whose region must be the endpoint's),
`Qualifier` (a version, an alias or $LATEST) and `X-Amz-Invocation-Type`
(RequestResponse, Event, DryRun). What arrived is recorded in the request's `lambda`.

Answers: RequestResponse 200 with the payload and `X-Amz-Executed-Version`; Event 202
and DryRun 204 with no body. `x-sim-function-error: TYPE` makes the function raise:
200 with `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType",
"stackTrace"}`, the message holding FUNCTION_SECRET so a test can check it never
reaches the client. Lambda's own errors: `x-amzn-ErrorType` and `{"Type", "Message"}`."""

from __future__ import annotations

import re
from urllib.parse import unquote

from . import openai
from .core import Ctx, Response, json_response

PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
NAME = re.compile(r"^(?:arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):(\d{12}):function:|(\d{12}):function:)?"
                  r"([A-Za-z0-9_-]{1,64})(?::(\$LATEST|[A-Za-z0-9_-]{1,128}))?$")
QUALIFIER = re.compile(r"^(\$LATEST|[A-Za-z0-9_-]{1,128})$")
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
FUNCTION_SECRET = "connection string postgres://fn:hunter2@db"
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")

ERROR_TYPES = {400: "InvalidRequestContentException", 403: "AccessDeniedException",
               404: "ResourceNotFoundException", 409: "ResourceConflictException",
               413: "RequestTooLargeException", 429: "TooManyRequestsException", 500: "ServiceException",
               502: "EC2UnexpectedException", 503: "ServiceException"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "ServiceException" if status >= 500 else "InvalidParameterValueException")


def error(status: int, message: str, etype: str | None = None) -> Response:
    etype = etype or error_type(status)
    kind = "Service" if status >= 500 else "User"
    return json_response(status, {"Type": kind, "Message": message}, extra_headers=[("x-amzn-errortype", etype)])


def function_name(path: str) -> str | None:
    m = PATH.match(path)
    return unquote(m.group(1)) if m else None


def invoke(ctx: Ctx, counter: int) -> Response:
    req = ctx.req
    name = function_name(req.path) or ""
    m = _SCOPE.search(req.header("authorization") or "")
    region = m.group(1) if m else None
    host = req.header("host") or ""
    if region is not None and host != f"lambda.{region}.amazonaws.com":
        ctx.fail(f"simulator: Host {host!r} is not Lambda's endpoint for the signature's region {region!r}", 400,
                 "InvalidParameterValueException")
    nm = NAME.match(name)
    if nm is None:
        ctx.fail(f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: "
                 f"Member must satisfy regular expression pattern", 400, "ValidationException")
    elif nm.group(1) and region and nm.group(1) != region:
        ctx.fail(f"simulator: the function's ARN is in {nm.group(1)}, the endpoint in {region}", 400,
                 "InvalidParameterValueException")
    qualifier = req.query1("Qualifier")
    if qualifier is not None and not QUALIFIER.match(qualifier):
        ctx.fail(f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint",
                 400, "ValidationException")
    if qualifier is not None and nm is not None and nm.group(5) and nm.group(5) != qualifier:
        ctx.fail("The derived qualifier from the function name does not match the specified qualifier.", 400,
                 "InvalidParameterValueException")
    itype = req.header("x-amz-invocation-type")
    if itype is not None and itype not in INVOCATION_TYPES:
        ctx.fail(f"1 validation error detected: Value '{itype}' at 'invocationType' failed to satisfy constraint: "
                 f"Member must satisfy enum value set: [Event, RequestResponse, DryRun]", 400, "ValidationException")
    for h in ("x-amz-log-type", "x-amz-client-context"):
        if req.header(h) is not None:
            ctx.fail(f"simulator: the gateway let the client's {h} through")
    version = qualifier if qualifier and qualifier.isdigit() else "$LATEST" if not qualifier else "7"
    ctx.record["lambda"] = {"function": name, "qualifier": qualifier, "invocation_type": itype,
                            "region": region, "host": host}
    ctx.reject_if_failed()
    headers = [("x-amz-executed-version", version)]
    if itype == "Event":
        return Response(202, "application/json", b"", extra_headers=headers)
    if itype == "DryRun":
        return Response(204, "application/json", b"", extra_headers=headers)
    fails = req.header("x-sim-function-error")
    if fails:
        payload = {"errorMessage": f"could not open {FUNCTION_SECRET}", "errorType": fails,
                   "requestId": f"00000000-0000-4000-8000-{counter:012d}",
                   "stackTrace": ['  File "/var/task/handler.py", line 12, in handler\n    db.connect()\n']}
        return json_response(200, payload, extra_headers=headers + [("x-amz-function-error", "Unhandled")])
    # The function: an OpenAI chat model.
    resp = openai.handle(ctx, "chat", None, False, counter)
    resp.extra_headers.extend(headers)
    return resp
