-- wrk script for infra/bench-load.sh: GET /v1/account/mfa/factors with a valid session
-- (MFA_SESSION: the X-Fallback-Cookies value), one JSON line of results at the end.
wrk.method = "GET"
wrk.path = "/v1/account/mfa/factors"
wrk.headers["X-Appwrite-Project"] = os.getenv("MFA_PROJECT")
wrk.headers["X-Fallback-Cookies"] = os.getenv("MFA_SESSION")

function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local non2xx = summary.errors.status
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.stderr:write(string.format(
    '{"scenario": "(a) session check: GET /v1/account/mfa/factors", "ops": %d, "ok": %d, "limited": 0, "other": %d, '
      .. '"ops_per_s": %f, "p50_ms": %f, "p99_ms": %f, "max_ms": %f, "note": "wrk %s, one session"}\n',
    summary.requests, summary.requests - non2xx - errors, non2xx + errors, summary.requests / s,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, os.getenv("WRK_SHAPE")))
end
