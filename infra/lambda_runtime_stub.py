#!/usr/bin/env python3
"""Cold-init timer for Lambda bootstraps: a tiny stand-in for the Lambda runtime API.

For each run it starts the binary with the environment a Lambda would give it
(AWS_LAMBDA_RUNTIME_API pointing here), and times from just before the exec until the
binary's first `GET /2018-06-01/runtime/invocation/next`: everything a cold start does
before it can take an event (tokio, logging, config, AWS SDK clients). Then it kills the
binary. Never answers an event. Standard library only; not part of any deployed binary.

  lambda_runtime_stub.py [--runs N] [--env-file FILE] [--name-env VAR] NAME=PATH [NAME=PATH ...]

Prints one JSON line per function: {"function", "runs", "median_ms", "min_ms", "max_ms"}
(or "error"). FILE holds KEY=VALUE lines added to every run's environment; with --name-env,
VAR=NAME is added to each function's runs (one bootstrap serving the function VAR names).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

NEXT = b"GET /2018-06-01/runtime/invocation/next"


def read_request_head(conn, deadline):
    """Reads until the end of the HTTP request head (or until the peer closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        conn.settimeout(max(0.01, deadline - time.perf_counter()))
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def one_run(listener, binary, env, timeout):
    """Milliseconds from exec to the first `next` request; raises with the reason otherwise."""
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = started + timeout
    conns = []
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RuntimeError(f"no `next` request within {timeout} s")
            listener.settimeout(min(remaining, 0.05))
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode("utf-8", "replace")[-2000:]
                    raise RuntimeError(f"exited with {proc.returncode} before asking for an event: {err}")
                continue
            conns.append(conn)
            head = read_request_head(conn, deadline)
            if head.startswith(NEXT):
                return (time.perf_counter() - started) * 1000.0
            # Anything else first (e.g. POST /runtime/init/error) means init failed.
            raise RuntimeError(f"unexpected first request: {head[:300]!r}")
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        for c in conns:
            c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for `next` per run")
    ap.add_argument("--env-file", help="KEY=VALUE lines for every run")
    ap.add_argument("--name-env", help="a variable set to the function's NAME in its runs")
    ap.add_argument("functions", nargs="+", metavar="NAME=PATH")
    args = ap.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    api = "127.0.0.1:%d" % listener.getsockname()[1]

    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if args.env_file:
        with open(args.env_file) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    base[k] = v

    failed = False
    for spec in args.functions:
        name, path = spec.split("=", 1)
        env = dict(base)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": api,
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
            "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": os.path.dirname(os.path.abspath(path)),
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "TZ": ":UTC",
        })
        if args.name_env:
            env[args.name_env] = name
        try:
            times = [one_run(listener, path, env, args.timeout) for _ in range(args.runs)]
        except RuntimeError as e:
            failed = True
            print(json.dumps({"function": name, "error": str(e)}), flush=True)
            continue
        print(json.dumps({
            "function": name,
            "runs": len(times),
            "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2),
        }), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
