#!/usr/bin/env python3
"""What the local HTTP API (infra/start-api.sh) does between a client and the functions, checked
over HTTP: a route no event declares, path parameters, cookies both ways, base64 bodies both
ways, query strings, and the CORS configuration of template.yaml.

  API_URL=http://127.0.0.1:3000 MFA_PROJECT_ID=... API_ALLOWED_ORIGIN=http://localhost:5173 \
    python3 tests/lambda/api_emulator_test.py

API_ALLOWED_ORIGIN must be one of the origins the API allows (MFA_ALLOWED_ORIGINS when it was
started). Python standard library only; prints one line per check and `N passed, M failed`.
"""

import http.client
import json
import os
import sys
import urllib.parse
import uuid

from checklist import Checklist

API = urllib.parse.urlsplit(os.environ["API_URL"])
PROJECT = os.environ["MFA_PROJECT_ID"]
ALLOWED_ORIGIN = os.environ["API_ALLOWED_ORIGIN"]
OTHER_ORIGIN = "https://not-allowed.example"
RUN = uuid.uuid4().hex[:10]
EMAIL = f"gateway-{RUN}@example.com"
PASSWORD = "a long gateway password"
SESSION_COOKIE = f"a_session_{PROJECT}"


class Reply:
    def __init__(self, resp):
        self.status = resp.status
        self.header_list = [(k.lower(), v) for k, v in resp.getheaders()]
        self.body = resp.read()

    def header(self, name):
        values = [v for k, v in self.header_list if k == name]
        return values[0] if values else None

    def all(self, name):
        return [v for k, v in self.header_list if k == name]

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"{self.status} {self.header_list} {self.body[:300]!r}"


def request(method, path, body=None, headers=None, project=True):
    conn = http.client.HTTPConnection(API.hostname, API.port, timeout=120)
    all_headers = {"x-appwrite-project": PROJECT} if project else {}
    all_headers.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        all_headers.setdefault("content-type", "application/json")
    try:
        conn.request(method, path, body=body, headers=all_headers)
        return Reply(conn.getresponse())
    finally:
        conn.close()


def expect_gateway_404(reply):
    assert reply.status == 404, reply
    assert reply.json == {"message": "Not Found"}, f"not API Gateway's 404: {reply!r}"


state = {}
check = Checklist("gateway")


@check
def a_path_no_route_declares_answers_the_gateways_404():
    expect_gateway_404(request("GET", "/v1/no/such/route"))
    expect_gateway_404(request("GET", "/"))


@check
def a_method_the_path_does_not_declare_answers_the_gateways_404():
    # The path is declared for POST and PUT only.
    expect_gateway_404(request("GET", "/v1/account/mfa/challenges"))
    # OPTIONS without CORS preflight headers is routed like any method.
    expect_gateway_404(request("OPTIONS", "/v1/account"))


@check
def a_body_sent_without_a_text_type_reaches_the_function_base64_encoded():
    # No Content-Type: the gateway passes it base64-encoded; lambda_http decodes it.
    body = json.dumps({"userId": "unique()", "email": EMAIL, "password": PASSWORD}).encode()
    r = request("POST", "/v1/account", body=body, headers={"content-type": "application/octet-stream"})
    assert r.status == 201, r
    assert r.json["email"] == EMAIL, r


@check
def the_session_cookies_come_back_as_one_set_cookie_each():
    r = request("POST", "/v1/account/sessions/email", {"email": EMAIL, "password": PASSWORD})
    assert r.status == 201, r
    cookies = r.all("set-cookie")
    assert cookies, f"no Set-Cookie: {r!r}"
    for cookie in cookies:
        # One cookie per header line: a name=value first, attributes after, no second cookie.
        name_value = cookie.split(";")[0]
        assert "=" in name_value and "," not in name_value, cookie
    session = [c.split(";")[0] for c in cookies if c.startswith(f"{SESSION_COOKIE}=")]
    assert session, f"no {SESSION_COOKIE} cookie: {cookies}"
    state["cookie"] = session[0]
    state["session_id"] = r.json["$id"]


@check
def a_cookie_header_reaches_the_function_as_the_cookies_array():
    # Two cookies in one header, the session one second: the gateway splits them.
    r = request("GET", "/v1/account", headers={"cookie": f"unrelated=1; {state['cookie']}"})
    assert r.status == 200, r
    assert r.json["email"] == EMAIL, r
    anonymous = request("GET", "/v1/account")
    assert anonymous.status == 401, anonymous


@check
def a_path_parameter_reaches_the_function():
    # DELETE /v1/account/sessions/{sessionId} with the session's own id ends it.
    r = request("DELETE", f"/v1/account/sessions/{state['session_id']}", headers={"cookie": state["cookie"]})
    assert r.status == 204, r
    after = request("GET", "/v1/account", headers={"cookie": state["cookie"]})
    assert after.status == 401, after


@check
def two_path_parameters_route_to_their_own_event():
    # DELETE .../authenticators/{type}/{authenticatorId}: the function answers (an Appwrite
    # error for a caller without a session), not the gateway.
    r = request("DELETE", "/v1/account/mfa/authenticators/webauthn/some-key-id")
    assert r.status == 401, r
    assert r.json.get("type"), f"not the function's Appwrite error: {r!r}"


@check
def a_binary_answer_comes_back_decoded_with_its_query_string_passed():
    query = urllib.parse.urlencode({"text": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP", "size": "120",
                                    "project": PROJECT})
    r = request("GET", f"/v1/avatars/qr?{query}", project=False)
    assert r.status == 200, r
    assert r.header("content-type") == "image/png", r.header_list
    assert r.body.startswith(b"\x89PNG\r\n\x1a\n"), r.body[:16]
    assert int(r.header("content-length")) == len(r.body)


@check
def a_preflight_from_an_allowed_origin_is_answered_by_the_gateway():
    r = request("OPTIONS", "/v1/account/sessions/email", project=False, headers={
        "origin": ALLOWED_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-appwrite-project,x-fallback-cookies",
    })
    assert r.status == 204, r
    assert r.header("access-control-allow-origin") == ALLOWED_ORIGIN, r.header_list
    assert r.header("access-control-allow-credentials") == "true", r.header_list
    methods = r.header("access-control-allow-methods").split(",")
    assert "POST" in methods, methods
    allowed = r.header("access-control-allow-headers").split(",")
    for h in ("content-type", "x-appwrite-project", "x-fallback-cookies"):
        assert h in allowed, allowed
    assert r.header("access-control-max-age") == "86400", r.header_list
    # Also for a path no route declares: the gateway answers preflights itself.
    r = request("OPTIONS", "/v1/no/such/route", project=False, headers={
        "origin": ALLOWED_ORIGIN, "access-control-request-method": "GET"})
    assert r.status == 204 and r.header("access-control-allow-origin") == ALLOWED_ORIGIN, r


@check
def a_preflight_from_another_origin_gets_no_cors_headers():
    r = request("OPTIONS", "/v1/account", project=False, headers={
        "origin": OTHER_ORIGIN, "access-control-request-method": "POST"})
    assert r.status == 204, r
    assert not [k for k, _ in r.header_list if k.startswith("access-control-")], r.header_list


@check
def answers_to_an_allowed_origin_carry_the_configured_cors_headers():
    r = request("POST", "/v1/account/sessions/email", {"email": EMAIL, "password": PASSWORD},
                headers={"origin": ALLOWED_ORIGIN})
    assert r.status == 201, r
    assert r.header("access-control-allow-origin") == ALLOWED_ORIGIN, r.header_list
    assert r.header("access-control-allow-credentials") == "true", r.header_list
    exposed = r.header("access-control-expose-headers").split(",")
    assert "x-fallback-cookies" in exposed, exposed
    # One value each: the function's own CORS headers were replaced, not added to.
    for name in ("access-control-allow-origin", "access-control-allow-credentials"):
        assert len(r.all(name)) == 1, r.header_list



if __name__ == "__main__":
    sys.exit(check.run())
