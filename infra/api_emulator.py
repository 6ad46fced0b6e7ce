#!/usr/bin/env python3
"""A local API Gateway HTTP API in front of the functions of template.yaml.

Routes each request the way the template's HttpApi events declare (method and path, `{name}`
path parameters; the most specific route wins), turns it into a payload format 2.0 event,
invokes the function through the Lambda invoke API of `cargo lambda watch`, and turns the
function's answer back into HTTP. The HttpApi's CorsConfiguration is applied as API Gateway
applies it: preflight requests are answered here, and CORS headers of the functions are
replaced by the configured ones. A request no route declares answers 404 Not Found.

Template parameters that Globals map into the functions' environment (`MFA_X: {Ref: P}` or a
comma join of a list parameter) take their value from that environment variable here, so the
gateway and the functions see one configuration (AllowedOrigins <- MFA_ALLOWED_ORIGINS).

Started by infra/start-api.sh; needs PyYAML (the template is plain YAML: long-form intrinsic
functions only).

  api_emulator.py --template template.yaml --port 3000 --invoke-url http://127.0.0.1:9000
"""

import argparse
import base64
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

# API Gateway's own integration timeout for HTTP APIs (the maximum).
INTEGRATION_TIMEOUT_SECONDS = 30.0
# Bodies API Gateway passes as text; anything else reaches the function base64-encoded.
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded")
TEXT_SUFFIXES = ("+json", "+xml")


class TemplateError(Exception):
    pass


@dataclass
class Route:
    method: str  # upper case, or ANY
    path: str  # as declared, e.g. /v1/account/sessions/{sessionId}
    function: str  # the name cargo lambda watch invokes (a binary of the workspace)
    logical_id: str

    @property
    def segments(self):
        return self.path.strip("/").split("/") if self.path.strip("/") else []

    def match(self, method, segments):
        """The path parameters if this route takes (method, segments), else None."""
        if self.method not in (method, "ANY"):
            return None
        pattern = self.segments
        params = {}
        for i, part in enumerate(pattern):
            if part.startswith("{") and part.endswith("+}"):
                if i >= len(segments):
                    return None
                params[part[1:-2]] = "/".join(segments[i:])
                return params
            if i >= len(segments):
                return None
            if part.startswith("{") and part.endswith("}"):
                if segments[i] == "":
                    return None
                params[part[1:-1]] = urllib.parse.unquote(segments[i])
            elif part != segments[i]:
                return None
        return params if len(pattern) == len(segments) else None

    def specificity(self):
        """Higher wins: literal segments before parameters before greedy ones, then an
        exact method before ANY."""
        rank = []
        for part in self.segments:
            if part.endswith("+}"):
                rank.append(0)
            elif part.startswith("{"):
                rank.append(1)
            else:
                rank.append(2)
        return (rank, self.method != "ANY")


@dataclass
class Cors:
    allow_origins: list = field(default_factory=list)
    allow_credentials: bool = False
    allow_headers: list = field(default_factory=list)
    expose_headers: list = field(default_factory=list)
    allow_methods: list = field(default_factory=list)
    max_age: int = 0

    def allowed(self, origin):
        origin = origin.lower()
        for allowed in self.allow_origins:
            allowed = allowed.lower()
            if allowed == "*" or allowed == origin:
                return True
            if allowed in ("http://*", "https://*") and origin.startswith(allowed[:-1]):
                return True
        return False

    def allow_origin_value(self, origin):
        if "*" in self.allow_origins and not self.allow_credentials:
            return "*"
        return origin


class Template:
    def __init__(self, path, environ):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        self.environ = environ
        self.parameters = self._parameter_values()
        self.routes, self.api_id = self._routes()
        self.cors = self._cors()

    def _parameter_values(self):
        """Each parameter's value: from the environment variable Globals maps it to, else its
        Default, else unset."""
        declared = self.doc.get("Parameters") or {}
        variables = (((self.doc.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get(
            "Variables"
        ) or {}
        values = {}
        for variable, value in variables.items():
            name, is_list = _parameter_behind(value)
            if name in declared and variable in self.environ:
                raw = self.environ[variable]
                values[name] = [v.strip() for v in raw.split(",") if v.strip()] if is_list else raw
        for name, spec in declared.items():
            if name in values or "Default" not in spec:
                continue
            default = str(spec["Default"])
            if spec.get("Type") == "CommaDelimitedList":
                values[name] = [v.strip() for v in default.split(",") if v.strip()]
            else:
                values[name] = default
        return values

    def resolve(self, value, where):
        if isinstance(value, dict) and list(value) == ["Ref"]:
            name = value["Ref"]
            if name not in self.parameters:
                declared = self.doc.get("Parameters") or {}
                if name in declared:
                    # Unset and no default: an empty list parameter, as for an API without it.
                    return [] if declared[name].get("Type") == "CommaDelimitedList" else ""
                raise TemplateError(f"{where}: Ref {name} is not a parameter this emulator can resolve")
            return self.parameters[name]
        if isinstance(value, dict):
            raise TemplateError(f"{where}: intrinsic function {list(value)} is not supported here")
        if isinstance(value, list):
            out = []
            for item in value:
                resolved = self.resolve(item, where)
                out.extend(resolved if isinstance(resolved, list) else [resolved])
            return out
        return value

    def _routes(self):
        routes, apis = [], set()
        for logical_id, resource in (self.doc.get("Resources") or {}).items():
            if resource.get("Type") != "AWS::Serverless::Function":
                continue
            # Deployed, the functions share one bootstrap and MFA_FUNCTION names each; cargo
            # lambda watch runs one binary per function name, and each function has its own
            # binary of that name for it.
            variables = ((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
            function = variables.get("MFA_FUNCTION") or (
                ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary"))
            events = (resource.get("Properties") or {}).get("Events") or {}
            for event in events.values():
                if event.get("Type") != "HttpApi":
                    continue
                if not function:
                    raise TemplateError(f"{logical_id}: neither MFA_FUNCTION nor a Binary names what to run")
                props = event.get("Properties") or {}
                api = props.get("ApiId", {"Ref": "ServerlessHttpApi"})
                apis.add(api["Ref"] if isinstance(api, dict) and "Ref" in api else str(api))
                routes.append(Route(str(props["Method"]).upper(), props["Path"], function, logical_id))
        if len(apis) > 1:
            raise TemplateError(f"routes are spread over several HTTP APIs ({sorted(apis)}); one is served")
        return routes, (apis.pop() if apis else None)

    def _cors(self):
        api = (self.doc.get("Resources") or {}).get(self.api_id or "") or {}
        config = (api.get("Properties") or {}).get("CorsConfiguration")
        if not config:
            return None
        where = f"{self.api_id}.CorsConfiguration"
        listed = lambda key: [str(v) for v in self.resolve(config.get(key) or [], where)]
        cors = Cors(
            allow_origins=listed("AllowOrigins"),
            allow_credentials=bool(self.resolve(config.get("AllowCredentials", False), where)),
            allow_headers=listed("AllowHeaders"),
            expose_headers=listed("ExposeHeaders"),
            allow_methods=listed("AllowMethods"),
            max_age=int(self.resolve(config.get("MaxAge", 0), where) or 0),
        )
        if cors.allow_credentials and "*" in cors.allow_origins:
            # CloudFormation refuses this configuration: catch it before deploy day.
            raise TemplateError(f"{where}: AllowOrigins '*' with AllowCredentials is refused by API Gateway")
        return cors

    def route(self, method, path):
        segments = path.strip("/").split("/") if path.strip("/") else []
        best = None
        for route in self.routes:
            params = route.match(method, segments)
            if params is not None and (best is None or route.specificity() > best[0].specificity()):
                best = (route, params)
        return best


def _parameter_behind(value):
    """(parameter name, is a list) when a Globals variable is a parameter or its comma join."""
    if isinstance(value, dict) and list(value) == ["Ref"]:
        return value["Ref"], False
    if isinstance(value, dict) and list(value) == ["Fn::Join"]:
        args = value["Fn::Join"]
        if (isinstance(args, list) and len(args) == 2 and args[0] == "," and isinstance(args[1], dict)
                and list(args[1]) == ["Ref"]):
            return args[1]["Ref"], True
    return None, False


def _is_text(content_type):
    ct = (content_type or "").split(";")[0].strip().lower()
    return bool(ct) and (ct.startswith(TEXT_TYPES) or ct.endswith(TEXT_SUFFIXES))


def _request_id():
    # API Gateway's ids look like "ABCdEfGhIAMEbcA="; any unique value serves.
    return base64.b64encode(secrets.token_bytes(10)).decode()


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "api-emulator"
    template: Template = None
    invoke_url = ""
    quiet = False

    # One entry point for every method; API Gateway routes any of them.
    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def log_message(self, fmt, *args):  # the access log below replaces http.server's
        pass

    def dispatch(self):
        started = time.monotonic()
        request_id = _request_id()
        try:
            body = self._read_body()
        except ValueError as err:
            # The rest of the connection cannot be read reliably: answer and close it.
            self._warn(f"unreadable request body: {err}")
            self.close_connection = True
            self._send(400, {"content-type": "application/json"}, [], b'{"message":"Bad Request"}', request_id)
            return
        url = urllib.parse.urlsplit(self.path)
        method = self.command.upper()
        origin = self.headers.get("Origin")
        cors = self.template.cors
        if cors and method == "OPTIONS" and origin and self.headers.get("Access-Control-Request-Method"):
            self._preflight(cors, origin, request_id)
            self._log(method, url.path, "preflight", 204, started)
            return
        found = self.template.route(method, url.path)
        if not found:
            self._send(404, {"content-type": "application/json"}, [], b'{"message":"Not Found"}', request_id)
            self._log(method, url.path, "-", 404, started)
            return
        route, params = found
        event = self._event(route, params, url, body, request_id)
        status, headers, cookies, payload = self._invoke(route, event)
        self._send(status, self._with_cors(headers, origin), cookies, payload, request_id)
        self._log(method, url.path, route.function, status, started)

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline().split(b";")[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit():
            raise ValueError("invalid Content-Length")
        return self.rfile.read(int(length))

    def _event(self, route, params, url, body, request_id):
        headers, cookies = {}, []
        for name, value in self.headers.items():
            name = name.lower()
            if name == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        client_ip = self.client_address[0]
        # API Gateway appends the caller's address to what proxies before it said.
        forwarded = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded}, {client_ip}" if forwarded else client_ip
        headers["x-forwarded-proto"] = "http"
        headers["x-forwarded-port"] = str(self.server.server_address[1])
        headers.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}")
        query = {}
        for key, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        host = headers.get("host", "localhost")
        now = time.time()
        route_key = f"{route.method} {route.path}"
        event = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": url.path,
            "rawQueryString": url.query,
            "headers": headers,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "local",
                "domainName": host,
                "domainPrefix": host.split(".")[0],
                "http": {
                    "method": self.command.upper(),
                    "path": url.path,
                    "protocol": self.request_version,
                    "sourceIp": client_ip,
                    "userAgent": self.headers.get("User-Agent", ""),
                },
                "requestId": request_id,
                "routeKey": route_key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        if body:
            text = None
            if _is_text(self.headers.get("Content-Type")):
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
            if text is None:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
            else:
                event["body"] = text
        return event

    def _invoke(self, route, event):
        """(status, headers, cookies, body) of the function's answer, as API Gateway makes it."""
        request = urllib.request.Request(
            f"{self.invoke_url}/2015-03-31/functions/{route.function}/invocations",
            data=json.dumps(event).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        failure = (500, {"content-type": "application/json"}, [], b'{"message":"Internal Server Error"}')
        try:
            with urllib.request.urlopen(request, timeout=INTEGRATION_TIMEOUT_SECONDS) as reply:
                raw = reply.read()
                function_error = reply.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as err:
            self._warn(f"{route.function}: invoke answered {err.code}: {err.read()[:500]!r}")
            return failure
        except (TimeoutError, OSError) as err:
            if "timed out" in str(err):
                self._warn(f"{route.function}: no answer within {INTEGRATION_TIMEOUT_SECONDS:.0f} s")
                return 503, {"content-type": "application/json"}, [], b'{"message":"Service Unavailable"}'
            self._warn(f"{route.function}: invoke failed: {err}")
            return failure
        if function_error:
            self._warn(f"{route.function}: function error {function_error}: {raw[:500]!r}")
            return failure
        try:
            answer = json.loads(raw)
        except ValueError:
            self._warn(f"{route.function}: answer is not JSON: {raw[:200]!r}")
            return failure
        if not (isinstance(answer, dict) and "statusCode" in answer):
            # Payload 2.0: an answer without statusCode is taken as a JSON body of a 200.
            return 200, {"content-type": "application/json"}, [], raw
        try:
            status = int(answer["statusCode"])
        except (TypeError, ValueError):
            self._warn(f"{route.function}: invalid statusCode {answer['statusCode']!r}")
            return failure
        headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
        multi = answer.get("multiValueHeaders") or {}
        if multi:
            self._warn(f"{route.function}: multiValueHeaders is not part of payload format 2.0 (API Gateway "
                       "ignores it there); applied here, taking precedence over headers")
            for name, values in multi.items():
                headers[str(name).lower()] = [str(v) for v in values]
        body = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            try:
                payload = base64.b64decode(body, validate=True)
            except ValueError:
                self._warn(f"{route.function}: isBase64Encoded body is not base64")
                return failure
        else:
            payload = body.encode("utf-8")
        return status, headers, [str(c) for c in answer.get("cookies") or []], payload

    def _preflight(self, cors, origin, request_id):
        headers = {}
        if cors.allowed(origin):
            headers["access-control-allow-origin"] = cors.allow_origin_value(origin)
            if cors.allow_credentials:
                headers["access-control-allow-credentials"] = "true"
            if cors.allow_methods:
                headers["access-control-allow-methods"] = ",".join(m.upper() for m in cors.allow_methods)
            if cors.allow_headers:
                headers["access-control-allow-headers"] = ",".join(h.lower() for h in cors.allow_headers)
            if cors.max_age:
                headers["access-control-max-age"] = str(cors.max_age)
        self._send(204, headers, [], b"", request_id)

    def _with_cors(self, headers, origin):
        """A function's answer headers as API Gateway sends them with a CORS configuration."""
        cors = self.template.cors
        if cors is None:
            return headers
        # API Gateway replaces whatever CORS headers the integration sent.
        headers = {k: v for k, v in headers.items() if not k.startswith("access-control-")}
        if origin and cors.allowed(origin):
            headers["access-control-allow-origin"] = cors.allow_origin_value(origin)
            if cors.allow_credentials:
                headers["access-control-allow-credentials"] = "true"
            if cors.expose_headers:
                headers["access-control-expose-headers"] = ",".join(h.lower() for h in cors.expose_headers)
        return headers

    def _send(self, status, headers, cookies, payload, request_id):
        self.send_response(status)
        for name, value in headers.items():
            if name in ("content-length", "transfer-encoding", "connection", "date", "server"):
                continue
            for v in value if isinstance(value, list) else [value]:
                self.send_header(name, v)
        for cookie in cookies:
            self.send_header("set-cookie", cookie)
        self.send_header("apigw-requestid", request_id)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _warn(self, message):
        print(f"api-emulator: {message}", file=sys.stderr, flush=True)

    def _log(self, method, path, target, status, started):
        if not self.quiet:
            ms = (time.monotonic() - started) * 1000
            print(f"{method} {path} -> {target} {status} {ms:.0f} ms", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--invoke-url", required=True, help="cargo lambda watch, e.g. http://127.0.0.1:9000")
    parser.add_argument("--routes", action="store_true", help="print the routes and CORS configuration, then exit")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args()
    try:
        template = Template(args.template, dict(os.environ))
    except (OSError, yaml.YAMLError, TemplateError, KeyError) as err:
        sys.exit(f"api-emulator: {args.template}: {err}")
    if args.routes:
        for route in sorted(template.routes, key=lambda r: (r.path, r.method)):
            print(f"{route.method:7} {route.path:55} {route.function}")
        print(f"CORS: {template.cors}")
        return
    Gateway.template = template
    Gateway.invoke_url = args.invoke_url.rstrip("/")
    Gateway.quiet = args.quiet
    server = ThreadingHTTPServer((args.host, args.port), Gateway)
    server.daemon_threads = True
    print(f"api-emulator: {len(template.routes)} routes of {args.template} on http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
