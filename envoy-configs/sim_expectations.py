#!/usr/bin/env python3
"""The provider simulator's credential checks for a folder `aigw compile -o` wrote.

Reads DIR/config.json and the credentials it names (DIR/secrets/*, written
apart by the compiler) and prints the simulator options that make it check
them as the real providers do, one per line: `--expect-api-key LABEL=KEY` for
API keys, `--expect-bearer LABEL=TOKEN` for bearer tokens, and
`--aws-credentials LABEL=AKID:SECRET[:TOKEN]` for SigV4 (signatures recomputed
with botocore over what arrives, Host included). `make run`
(envoy-configs/run-local.sh) and the tests that serve compiled examples both
start the simulator with these options.

    sim_expectations.py DIR [LABEL]     (LABEL: the simulator listener, default *)
"""

from __future__ import annotations

import configparser
import json
import os
import sys
from pathlib import Path


def _read(source: dict) -> str | None:
    """A credential given as {value | file | env}."""
    if "value" in source:
        return str(source["value"]).strip()
    if "file" in source:
        return Path(source["file"]).read_text().strip()
    if "env" in source:
        return os.environ.get(source["env"], "").strip() or None
    return None


def _aws(block: dict) -> str | None:
    if "accessKeyId" in block:
        parts = [block["accessKeyId"], block["secretAccessKey"]]
        if block.get("sessionToken"):
            parts.append(block["sessionToken"])
        return ":".join(parts)
    text = None
    if "credentialsFile" in block:
        text = Path(block["credentialsFile"]).read_text()
    elif "credentialsEnv" in block:
        text = os.environ.get(block["credentialsEnv"])
    if not text:
        return None
    ini = configparser.ConfigParser()
    ini.read_string(text)
    p = ini[block.get("profile", "default")]
    parts = [p["aws_access_key_id"], p["aws_secret_access_key"]]
    token = p.get("aws_session_token") or p.get("aws_security_token")
    if token:
        parts.append(token)
    return ":".join(parts)


def expectations(compiled: Path, label: str = "*") -> list[str]:
    """Simulator options checking every static credential of the compiled config."""
    config = json.loads((compiled / "config.json").read_text())
    args: list[str] = []

    def add(option: str, value: str | None) -> None:
        if value and [option, f"{label}={value}"] not in [args[i:i + 2] for i in range(0, len(args), 2)]:
            args.extend([option, f"{label}={value}"])

    for b in config.get("backends", []):
        auth = b.get("auth") or {}
        if "apiKey" in auth:
            add("--expect-api-key", _read(auth["apiKey"]))
        if "bearerToken" in auth:
            add("--expect-bearer", _read(auth["bearerToken"]))
        if "awsSigV4" in auth:
            add("--aws-credentials", _aws(auth["awsSigV4"]))
    return args


def unchecked(compiled: Path) -> list[str]:
    """Backends with no credential these options check (none configured, or one the
    gateway exchanges): a simulator listener that checks refuses their requests."""
    config = json.loads((compiled / "config.json").read_text())
    return [b["name"] for b in config.get("backends", [])
            if not {"apiKey", "bearerToken", "awsSigV4"} & set(b.get("auth") or {})]


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    for arg in expectations(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "*"):
        print(arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
