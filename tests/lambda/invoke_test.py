#!/usr/bin/env python3
"""The Lambda binaries answer API Gateway v2 (HTTP API) events under `cargo lambda watch`.

Every request goes through the raw invoke API of the emulated Lambda control plane,
`POST /2015-03-31/functions/<binary>/invocations`, with a hand-written API Gateway v2 event,
so each binary is run by the real `lambda_runtime` loop against the runtime API that
cargo-lambda serves. State lives in DynamoDB Local, email in moto (read back from
`/moto-api/data.json`). Run by infra/lambda-runtime-test.sh, which sets:

  LAMBDA_INVOKE_URL   e.g. http://127.0.0.1:9001 (cargo lambda watch -A 127.0.0.1 -P 9001)
  MFA_TEST_MOTO_ENDPOINT, MFA_PROJECT_ID

Python standard library only. Prints one line per check and `N passed, M failed`.
"""

import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from checklist import Checklist

INVOKE_URL = os.environ["LAMBDA_INVOKE_URL"].rstrip("/")
MOTO = os.environ["MFA_TEST_MOTO_ENDPOINT"].rstrip("/")
PROJECT = os.environ.get("MFA_PROJECT_ID", "lambda-test")
# The first invoke of a binary makes cargo lambda build and start it: be patient then.
FIRST_INVOKE_TIMEOUT = float(os.environ.get("LAMBDA_FIRST_INVOKE_TIMEOUT", "900"))
INVOKE_TIMEOUT = 60.0

RUN = uuid.uuid4().hex[:10]
EMAIL = f"lambda-{RUN}@example.com"
PASSWORD = "a long lambda password"
SOURCE_IP = "198.51.100.%d" % (int(RUN[:2], 16) % 250 + 1)


class Reply:
    """A function's API Gateway v2 response: statusCode, headers, cookies, JSON body."""

    def __init__(self, function, raw):
        self.function = function
        self.raw = raw
        self.status = raw.get("statusCode")
        self.headers = {k.lower(): v for k, v in (raw.get("headers") or {}).items()}
        for k, vs in (raw.get("multiValueHeaders") or {}).items():
            self.headers.setdefault(k.lower(), ", ".join(vs))
        self.cookies = raw.get("cookies") or []
        body = raw.get("body") or ""
        if raw.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        self.text = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"{self.function} -> {self.status} {self.text[:300]!r}"


def event(method, path, body=None, session=None, query="", route_key=None, extra_headers=None):
    """A hand-written API Gateway v2 HTTP API event, as API Gateway sends it to a function."""
    headers = {
        "accept": "application/json",
        "content-type": "application/json",
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
        "user-agent": "lambda-runtime-test",
        "x-appwrite-project": PROJECT,
        "x-forwarded-for": SOURCE_IP,
        "x-forwarded-proto": "https",
    }
    if session:
        headers["x-fallback-cookies"] = session
    headers.update(extra_headers or {})
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": route_key or f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": "lambda-runtime-test",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route_key or f"{method} {path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": "" if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


_invoked = set()


def invoke(function, method, path, body=None, session=None, query="", route_key=None, extra_headers=None):
    """Raw invoke of one binary; returns its API Gateway v2 response."""
    payload = json.dumps(event(method, path, body, session, query, route_key, extra_headers)).encode()
    req = urllib.request.Request(
        f"{INVOKE_URL}/2015-03-31/functions/{function}/invocations",
        data=payload,
        method="POST",
        headers={"content-type": "application/json"},
    )
    timeout = INVOKE_TIMEOUT if function in _invoked else FIRST_INVOKE_TIMEOUT
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    _invoked.add(function)
    if status != 200:
        raise AssertionError(f"invoke {function}: control plane answered {status}: {text[:500]}")
    raw = json.loads(text)
    if "statusCode" not in raw:
        raise AssertionError(f"invoke {function}: not an API Gateway v2 response: {text[:500]}")
    return Reply(function, raw)


def expect(reply, status, error_type=None):
    assert reply.status == status, f"expected {status}, got {reply!r}"
    if error_type is not None:
        assert reply.json and reply.json.get("type") == error_type, f"expected type {error_type}: {reply!r}"
        assert reply.json.get("code") == status, reply
    return reply.json


def moto_emails(to):
    with urllib.request.urlopen(f"{MOTO}/moto-api/data.json", timeout=10) as resp:
        data = json.load(resp)
    return [m for m in data.get("ses", {}).get("Message", []) if to in (m.get("destinations", {}).get("ToAddresses") or [])]


def last_email(to, count_before):
    """The newest email to `to` once more than `count_before` arrived; as plain text."""
    deadline = time.time() + 10
    while True:
        emails = moto_emails(to)
        if len(emails) > count_before:
            html = emails[-1].get("body") or ""
            text = re.sub(r"<[^>]*>", " ", html.replace("<br>", "\n").replace("</p>", "\n"))
            return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
        assert time.time() < deadline, f"no new email to {to} in moto"
        time.sleep(0.1)


# ---- the checks, in order; each may use what earlier ones left in `state` ---------------

state = {}
check = Checklist("lambda")


@check
def create_account_answers_201_with_the_user():
    r = invoke("create-account", "POST", "/v1/account",
               {"userId": "unique()", "email": EMAIL, "password": PASSWORD, "name": "Lambda Test"})
    user = expect(r, 201)
    assert user["email"] == EMAIL and user["$id"], user
    assert "password" not in user or not user["password"], "password hash leaked"
    state["user_id"] = user["$id"]


@check
def create_email_session_answers_201_and_sets_the_session():
    r = invoke("create-email-session", "POST", "/v1/account/sessions/email", {"email": EMAIL, "password": PASSWORD})
    session = expect(r, 201)
    assert session["userId"] == state["user_id"], session
    assert session["factors"] == ["password"], session
    assert session["secret"] == "", "the secret travels only in cookies"
    fallback = r.headers.get("x-fallback-cookies")
    assert fallback, f"no X-Fallback-Cookies header: {r.raw.get('headers')}"
    assert json.loads(fallback).get(f"a_session_{PROJECT}"), fallback
    # API Gateway v2 responses carry Set-Cookie in `cookies`.
    assert any(c.startswith(f"a_session_{PROJECT}=") for c in r.cookies), f"cookies: {r.cookies}"
    state["session"] = fallback
    state["session_id"] = session["$id"]


@check
def get_account_answers_200_for_the_session():
    user = expect(invoke("get-account", "GET", "/v1/account", session=state["session"]), 200)
    assert user["$id"] == state["user_id"] and user["email"] == EMAIL, user
    assert user["emailVerification"] is False and user["mfa"] is False, user


@check
def get_account_without_a_session_answers_401():
    expect(invoke("get-account", "GET", "/v1/account"), 401, "general_unauthorized_scope")


@check
def the_deployed_bootstrap_serves_the_function_mfa_function_names():
    # mfa-lambda is what every function deploys; lambda-runtime-test.sh runs it with
    # MFA_FUNCTION=get-account (the per-function binaries ignore the variable).
    user = expect(invoke("mfa-lambda", "GET", "/v1/account", session=state["session"]), 200)
    assert user["$id"] == state["user_id"], user
    # Another function's route is not among its routes.
    expect(invoke("mfa-lambda", "POST", "/v1/account", {"userId": "unique()"}), 404, "general_route_not_found")


@check
def an_unknown_route_answers_404_general_route_not_found():
    expect(invoke("get-account", "GET", "/v1/no-such-thing", route_key="$default"), 404, "general_route_not_found")


@check
def every_answer_carries_its_invocations_request_id():
    # The id of the function's log lines (the Lambda request id), whatever the client sent.
    ids = []
    for _ in range(2):
        r = invoke("get-account", "GET", "/v1/account", extra_headers={"x-request-id": "chosen-by-the-client"})
        expect(r, 401, "general_unauthorized_scope")
        ids.append(r.headers.get("x-request-id", ""))
    for rid in ids:
        uuid.UUID(rid)  # Lambda request ids are UUIDs
    assert ids[0] != ids[1], ids


@check
def a_route_of_another_function_answers_404():
    # get-account's binary serves only GET /v1/account, not create-account's POST.
    expect(invoke("get-account", "POST", "/v1/account", {"userId": "unique()"}), 404, "general_route_not_found")


@check
def create_mfa_recovery_codes_answers_201_with_codes():
    codes = expect(invoke("create-mfa-recovery-codes", "POST", "/v1/account/mfa/recovery-codes",
                          {}, session=state["session"]), 201)
    assert isinstance(codes["recoveryCodes"], list) and len(codes["recoveryCodes"]) >= 6, codes
    state["codes"] = codes["recoveryCodes"]


@check
def list_mfa_factors_answers_200():
    factors = expect(invoke("list-mfa-factors", "GET", "/v1/account/mfa/factors", session=state["session"]), 200)
    wanted = {"totp": False, "phone": False, "email": False, "recoveryCode": True}
    assert {k: factors.get(k) for k in wanted} == wanted, factors


@check
def security_key_registration_starts_with_the_configured_relying_party():
    ceremony = expect(invoke("create-mfa-authenticator", "POST", "/v1/account/mfa/authenticators/webauthn",
                             {}, session=state["session"]), 200)
    public_key = ceremony["options"]["publicKey"]
    assert public_key["rp"]["id"] == "app.mfa.example", public_key
    assert public_key["challenge"] and ceremony["$id"].startswith("k"), ceremony
    keys = expect(invoke("list-mfa-authenticators", "GET", "/v1/account/mfa/authenticators/webauthn",
                         session=state["session"]), 200)
    assert keys == {"total": 0, "authenticators": []}, keys


@check
def create_mfa_challenge_recoverycode_answers_201():
    ch = expect(invoke("create-mfa-challenge", "POST", "/v1/account/mfa/challenges",
                       {"factor": "recoverycode"}, session=state["session"]), 201)
    assert ch["$id"] and ch["userId"] == state["user_id"] and ch["expire"], ch
    state["challenge"] = ch["$id"]


@check
def a_wrong_code_answers_401_user_invalid_token():
    expect(invoke("update-mfa-challenge", "PUT", "/v1/account/mfa/challenges",
                  {"challengeId": state["challenge"], "otp": "wrongcode1"}, session=state["session"]),
           401, "user_invalid_token")


@check
def update_mfa_challenge_with_a_recovery_code_answers_200():
    s = expect(invoke("update-mfa-challenge", "PUT", "/v1/account/mfa/challenges",
                      {"challengeId": state["challenge"], "otp": state["codes"][0]}, session=state["session"]), 200)
    assert s["$id"] == state["session_id"], s
    assert "recoveryCode" in s["factors"] and "password" in s["factors"], s


@check
def a_used_recovery_code_is_refused():
    ch = expect(invoke("create-mfa-challenge", "POST", "/v1/account/mfa/challenge",
                       {"factor": "recoverycode"}, session=state["session"]), 201)
    expect(invoke("update-mfa-challenge", "PUT", "/v1/account/mfa/challenge",
                  {"challengeId": ch["$id"], "otp": state["codes"][0]}, session=state["session"]),
           401, "user_invalid_token")


@check
def email_verification_through_the_link_in_the_email():
    before = len(moto_emails(EMAIL))
    token = expect(invoke("create-email-verification", "POST", "/v1/account/verifications/email",
                          {"url": "http://localhost/verify"}, session=state["session"]), 201)
    assert token["userId"] == state["user_id"] and token["secret"] == "", token
    text = last_email(EMAIL, before)
    link = next((w for w in text.split() if w.startswith("http://localhost/verify?")), None)
    assert link, f"no verification link in {text!r}"
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))
    assert q.get("userId") == state["user_id"] and q.get("secret"), q
    expect(invoke("update-email-verification", "PUT", "/v1/account/verifications/email",
                  {"userId": q["userId"], "secret": q["secret"]}), 200)
    user = expect(invoke("get-account", "GET", "/v1/account", session=state["session"]), 200)
    assert user["emailVerification"] is True, user


@check
def email_challenge_with_the_code_from_the_email():
    before = len(moto_emails(EMAIL))
    ch = expect(invoke("create-mfa-challenge", "POST", "/v1/account/mfa/challenges",
                       {"factor": "email"}, session=state["session"]), 201)
    text = last_email(EMAIL, before)
    code = next((w for w in re.split(r"\D+", text) if len(w) == 6), None)
    assert code, f"no 6-digit code in {text!r}"
    s = expect(invoke("update-mfa-challenge", "PUT", "/v1/account/mfa/challenges",
                      {"challengeId": ch["$id"], "otp": code}, session=state["session"]), 200)
    assert "email" in s["factors"], s


@check
def with_mfa_on_a_new_session_owes_a_factor_until_a_challenge():
    u = expect(invoke("update-mfa", "PATCH", "/v1/account/mfa", {"mfa": True}, session=state["session"]), 200)
    assert u["mfa"] is True, u
    r = invoke("create-email-session", "POST", "/v1/account/sessions", {"email": EMAIL, "password": PASSWORD})
    expect(r, 201)
    fresh = r.headers["x-fallback-cookies"]
    expect(invoke("get-account", "GET", "/v1/account", session=fresh), 401, "user_more_factors_required")
    ch = expect(invoke("create-mfa-challenge", "POST", "/v1/account/mfa/challenges",
                       {"factor": "recoverycode"}, session=fresh), 201)
    s = expect(invoke("update-mfa-challenge", "PUT", "/v1/account/mfa/challenges",
                      {"challengeId": ch["$id"], "otp": state["codes"][1]}, session=fresh), 200)
    assert "recoveryCode" in s["factors"], s
    user = expect(invoke("get-account", "GET", "/v1/account", session=fresh), 200)
    assert user["$id"] == state["user_id"], user



if __name__ == "__main__":
    sys.exit(check.run())
