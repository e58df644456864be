"""A rate-limit service speaking Envoy's RLS v3 gRPC API, counting in Redis.

    python -m rls --config limits.yaml --redis redis://127.0.0.1:6379 --port 0 \\
        --ready-file /tmp/rls.port [--request-log /tmp/rls-requests.jsonl]

(from integration-tests/, or `python integration-tests/rls/server.py ...`). `--port 0`
binds a free port; the ready file receives the bound port once the server serves.

Per request descriptor: its limit is found in the config (rls/config.py); its cost is
the descriptor's `hits_addend` when set (0 included), else the request's `hits_addend`,
else 1. Cost 0 checks the counter without counting; cost N counts N, also when that
crosses the limit (rls/counters.py). A descriptor whose counter exceeds its limit is
OVER_LIMIT, unless its rule has `shadow_mode` (then OK, and a log line says so);
`overall_code` is OVER_LIMIT when any descriptor is. A descriptor without a limit is OK
and counts nothing. Redis unreachable: the call fails with UNAVAILABLE (Envoy's
`failure_mode_deny` decides), and the next calls succeed once Redis is back.

`--request-log` appends one JSON line per call: when (`time`, Unix seconds), what Envoy
sent (domain, the request's hits_addend, each descriptor's entries and hits_addend, null
when unset) and the answer (or the error).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

if __package__ in (None, ""):  # run as a script: make `rls` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rls import protos  # noqa: E402
from rls.config import Config, Limit  # noqa: E402
from rls.counters import Counters, StorageError  # noqa: E402

log = logging.getLogger("rls")
pb = protos.load()
Response = pb.rls.RateLimitResponse
MAX_UINT32 = 2**32 - 1
# RateLimitDescriptor.RateLimitOverride units (envoy.type.v3.RateLimitUnit) -> config units.
OVERRIDE_UNITS = {1: "second", 2: "minute", 3: "hour", 4: "day", 5: "month", 6: "year"}


class InvalidRequest(ValueError):
    pass


class RateLimitService(pb.grpc.RateLimitServiceServicer):
    def __init__(self, config: Config, counters: Counters, request_log: Path | None = None):
        self.config = config
        self.counters = counters
        self.request_log = request_log
        self.log_lock = threading.Lock()

    def ShouldRateLimit(self, request, context):
        try:
            response = self.decide(request)
        except InvalidRequest as e:
            self.record(request, error=f"INVALID_ARGUMENT: {e}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except StorageError as e:
            log.warning("storage unavailable: %s", e)
            self.record(request, error=f"UNAVAILABLE: {e}")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"rate-limit storage unavailable: {e}")
        self.record(request, response=response)
        return response

    def decide(self, request):
        if not request.domain:
            raise InvalidRequest("rate limit domain must not be empty")
        if not request.descriptors:
            raise InvalidRequest("rate limit descriptor list must not be empty")
        statuses = [self.descriptor_status(request, d) for d in request.descriptors]
        over = any(s.code == Response.OVER_LIMIT for s in statuses)
        return Response(overall_code=Response.OVER_LIMIT if over else Response.OK, statuses=statuses)

    def descriptor_status(self, request, descriptor):
        entries = [(e.key, e.value) for e in descriptor.entries]
        if descriptor.is_negative_hits:
            raise InvalidRequest("is_negative_hits (refunds) is not supported")
        limit = override_limit(descriptor) or self.config.limit_for(request.domain, entries)
        if limit is None:
            return Response.DescriptorStatus(code=Response.OK)
        if limit.unlimited:
            return Response.DescriptorStatus(code=Response.OK, limit_remaining=MAX_UINT32)
        cost = descriptor_cost(request, descriptor)
        outcome = self.counters.apply(limit, request.domain, entries, cost)
        code = Response.OVER_LIMIT if outcome.over else Response.OK
        if outcome.over and limit.shadow_mode:
            log.info("shadow mode: %s %s over its limit of %d per %s (cost %d); answering OK",
                     request.domain, entries, limit.requests_per_unit, limit.unit, cost)
            code = Response.OK
        status = Response.DescriptorStatus(
            code=code, limit_remaining=min(outcome.remaining, MAX_UINT32),
            current_limit=Response.RateLimit(name=limit.name, requests_per_unit=limit.requests_per_unit,
                                             unit=Response.RateLimit.Unit.Value(limit.unit.upper())))
        status.duration_until_reset.seconds = outcome.reset_in
        return status

    def record(self, request, response=None, error: str | None = None) -> None:
        if self.request_log is None:
            return
        line = {
            "time": time.time(),
            "domain": request.domain,
            "hits_addend": request.hits_addend,
            "descriptors": [{"entries": [[e.key, e.value] for e in d.entries],
                             "hits_addend": d.hits_addend.value if d.HasField("hits_addend") else None}
                            for d in request.descriptors],
        }
        if response is not None:
            line["overall_code"] = Response.Code.Name(response.overall_code)
            line["statuses"] = [{"code": Response.Code.Name(s.code), "limit_remaining": s.limit_remaining}
                                for s in response.statuses]
        if error is not None:
            line["error"] = error
        with self.log_lock, open(self.request_log, "a") as f:
            f.write(json.dumps(line) + "\n")


def descriptor_cost(request, descriptor) -> int:
    if descriptor.HasField("hits_addend"):
        return descriptor.hits_addend.value
    return max(1, request.hits_addend)


def override_limit(descriptor) -> Limit | None:
    """The limit Envoy sent with the descriptor (`RateLimit.limit`), as envoyproxy/ratelimit
    uses it: instead of the configured one, never in shadow mode."""
    if not descriptor.HasField("limit"):
        return None
    unit = OVERRIDE_UNITS.get(descriptor.limit.unit)
    if unit is None:
        raise InvalidRequest(f"limit override with unknown unit {descriptor.limit.unit}")
    return Limit(descriptor.limit.requests_per_unit, unit)


def serve(config: Config, redis_url: str, host: str, port: int, request_log: Path | None,
          workers: int = 8) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb.grpc.add_RateLimitServiceServicer_to_server(
        RateLimitService(config, Counters(redis_url), request_log), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rls", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", required=True,
                    help="envoyproxy/ratelimit YAML file (repeatable; one domain per document)")
    ap.add_argument("--redis", required=True, help="redis://host:port[/db]")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081, help="gRPC port; 0 picks a free one")
    ap.add_argument("--ready-file", type=Path, help="written with the bound port once serving")
    ap.add_argument("--request-log", type=Path, help="appends one JSON line per call")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = Config.from_files(args.config)
    server, port = serve(config, args.redis, args.host, args.port, args.request_log, args.workers)
    log.info("serving %s on %s:%d (redis %s)", ", ".join(config.domains), args.host, port, args.redis)
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.ready_file)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
