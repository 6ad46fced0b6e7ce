#!/usr/bin/env python3
"""Load client for infra/bench-load.sh (Python 3 stdlib only): prepares users on a running
mfa-local and measures the password sign-in (the TOTP challenge is measured by the Rust
client bench/, which takes less of the shared CPU); `cpu` adds the
server's CPU time to a scenario's result; `report` prints the servers side by side.

Each user gets its own loopback source address (127.1.x.y; Linux routes all of 127/8 to
`lo`), so the per-IP limits (10 accounts an hour, 60 sign-ins and 60 code checks per 10
minutes) count per user, as they would for users on their own devices; the per-user and
per-email limits are respected by using each user at most once per scenario (sign-ins: a
few times, each a success, which resets the per-email count).

    bench_load.py prepare   BASE PROJECT USERS_JSON N CONCURRENCY
    bench_load.py login     BASE PROJECT USERS_JSON RESULTS CONCURRENCY ROUNDS [N]
    bench_load.py cpu       RESULTS TICKS TICKS_PER_S
    bench_load.py report    RESULTS
"""

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import sys
import time
from urllib.parse import urlparse

PASSWORD = "correct horse battery"


def totp(secret_b32, at):
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(secret, struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    o = digest[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def user_ip(i):
    return "127.1.%d.%d" % (i // 250, i % 250 + 1)


class Conn:
    """One keep-alive HTTP/1.1 connection from a given loopback source address."""

    def __init__(self, base, project, ip):
        u = urlparse(base)
        self.host, self.port, self.project, self.ip = u.hostname, u.port, project, ip
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, local_addr=(self.ip, 0))

    async def call(self, method, path, body=None, session=None):
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"X-Appwrite-Project: {self.project}",
                f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        if session:
            head.append(f"X-Fallback-Cookies: {session}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        return status, headers, parsed

    def close(self):
        if self.writer:
            self.writer.close()


def check(what, status, want, body):
    if status != want:
        raise RuntimeError(f"{what}: {status} {body}")


async def prepare_one(base, project, i):
    c = Conn(base, project, user_ip(i))
    await c.open()
    try:
        email = f"load{i}@example.com"
        st, _, b = await c.call("POST", "/v1/account", {"userId": "unique()", "email": email, "password": PASSWORD})
        check("sign up", st, 201, b)
        st, h, b = await c.call("POST", "/v1/account/sessions/email", {"email": email, "password": PASSWORD})
        check("sign in", st, 201, b)
        session = h["x-fallback-cookies"]
        st, _, b = await c.call("POST", "/v1/account/mfa/authenticators/totp", {}, session)
        check("add authenticator", st, 200, b)
        secret = b["secret"]
        st, _, b = await c.call("PUT", "/v1/account/mfa/authenticators/totp", {"otp": totp(secret, time.time())}, session)
        check("verify authenticator", st, 200, b)
        st, _, b = await c.call("PATCH", "/v1/account/mfa", {"mfa": True}, session)
        check("mfa on", st, 200, b)
        return {"i": i, "email": email, "ip": user_ip(i), "secret": secret, "session": session}
    finally:
        c.close()


async def bounded(concurrency, jobs):
    """Runs the coroutine factories in `jobs` at most `concurrency` at a time, in order."""
    queue = list(enumerate(jobs))[::-1]
    results = [None] * len(jobs)

    async def worker():
        while queue:
            k, job = queue.pop()
            results[k] = await job()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def prepare(base, project, users_json, n, concurrency):
    t0 = time.perf_counter()
    users = await bounded(concurrency, [lambda i=i: prepare_one(base, project, i) for i in range(n)])
    with open(users_json, "w") as f:
        json.dump(users, f)
    print(f"prepared {n} users (sign up, sign in, TOTP enrolment, MFA on) in {time.perf_counter() - t0:.1f} s")


def summary(name, latencies, statuses, wall, note):
    ok = sum(1 for s in statuses if 200 <= s < 300)
    lat = sorted(latencies)

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] * 1000 if lat else 0.0

    return {"scenario": name, "ops": len(statuses), "ok": ok, "limited": statuses.count(429),
            "other": len(statuses) - ok - statuses.count(429), "ops_per_s": len(statuses) / wall,
            "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": lat[-1] * 1000 if lat else 0.0, "note": note}


async def login(base, project, users_json, results, concurrency, rounds, n=None):
    users = json.load(open(users_json))[:n]
    latencies, statuses = [], []

    async def one(u):
        c = Conn(base, project, u["ip"])
        await c.open()
        try:
            t = time.perf_counter()
            st, _, _ = await c.call("POST", "/v1/account/sessions/email", {"email": u["email"], "password": PASSWORD})
            latencies.append(time.perf_counter() - t)
            statuses.append(st)
        finally:
            c.close()

    jobs = [lambda u=u: one(u) for _ in range(rounds) for u in users]
    t0 = time.perf_counter()
    await bounded(concurrency, jobs)
    wall = time.perf_counter() - t0
    r = summary("(c) password sign-in: POST /v1/account/sessions/email", latencies, statuses, wall,
                f"{len(jobs)} sign-ins over {len(users)} users ({rounds} each), concurrency {concurrency}")
    with open(results, "a") as f:
        f.write(json.dumps(r) + "\n")


def cpu(results, ticks, per_s):
    """Adds the server's CPU time over a scenario to its result (the file's last line)."""
    lines = open(results).read().splitlines()
    r = json.loads(lines[-1])
    r["cpu_s"] = ticks / per_s
    r["cpu_ms_per_op"] = r["cpu_s"] * 1000 / max(r["ops"], 1)
    lines[-1] = json.dumps(r)
    with open(results, "w") as f:
        f.write("\n".join(lines) + "\n")


def report(results):
    rows = [json.loads(line) for line in open(results) if line.strip()]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    runs = [r for r in rows if "scenario" in r]
    print("| scenario | server | ops | 2xx | other | ops/s | p50 ms | p99 ms | server CPU ms/op | how |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        mine = {r["server"]: r for r in runs if r["scenario"] == scenario}
        for server in servers:
            r = mine.get(server)
            if r:
                print(f"| {scenario} | {server} | {r['ops']} | {r['ok']} | {r['ops'] - r['ok']} | {r['ops_per_s']:.0f} | "
                      f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r.get('cpu_ms_per_op', 0):.3f} | {r['note']} |")
        if len(mine) == 2 and len(servers) == 2:
            a, b = (mine[s] for s in servers)
            print(f"| {scenario} | {servers[1]} / {servers[0]} | | | | {b['ops_per_s'] / a['ops_per_s']:.2f}x | | | "
                  f"{b.get('cpu_ms_per_op', 0) / max(a.get('cpu_ms_per_op', 0), 1e-9):.2f}x | |")
    print()
    print("| mfa-local VmRSS (MiB) | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for when in dict.fromkeys(r["when"] for r in rows if "rss_kb" in r):
        got = {r["server"]: r["rss_kb"] for r in rows if r.get("when") == when}
        print(f"| {when} | " + " | ".join(f"{got[s] / 1024:.1f}" if s in got else "" for s in servers) + " |")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prepare":
        asyncio.run(prepare(args[0], args[1], args[2], int(args[3]), int(args[4])))
    elif cmd == "login":
        n = int(args[6]) if len(args) > 6 else None
        asyncio.run(login(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]), n))
    elif cmd == "cpu":
        cpu(args[0], int(args[1]), int(args[2]))
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
