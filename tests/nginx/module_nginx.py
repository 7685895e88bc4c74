#!/usr/bin/env python3
"""ngx_http_gray_module in Debian's nginx, through real HTTP (label "nginx").

    module_nginx.py NGINX MODULE_SO RULES_DIR [TEST ...]

Each test starts nginx (its own prefix, configuration and ports on
127.0.0.1, `load_module` of the module) and echo backends, asserts through
real requests, and stops everything by PID. Prints one line per test and
`N passed, M failed`. Standard library only.
"""
import json
import os
import re
import signal
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (NAME_RE, Backend, Fail, Nginx, check, free_port, request,  # noqa: E402
                     safe_name, status, wait_until, write_atomic)
import testkit  # noqa: E402  (harness put tests/pylib on the path)

NGINX = sys.argv[1]
MODULE = os.path.abspath(sys.argv[2])
RULES = os.path.abspath(sys.argv[3])
ONLY = set(sys.argv[4:])
TESTS, test = testkit.collector()


ROUTE_HEADERS = """
        add_header X-Gray-Version $gray_version always;
        add_header X-Gray-Tag $gray_tag always;
        add_header X-Gray-Rule $gray_rule always;
        add_header X-Gray-Upstream $gray_upstream always;
        proxy_set_header X-Gray-Tag $gray_tag;
"""

ORDER = {
    "service": "order", "default": "v1",
    "rules": [
        {"name": "testers", "route": "v2", "tag": "beta",
         "when": {"attr": "header:x-gray", "op": "eq", "value": "1"}},
        {"name": "office", "route": "v2",
         "when": {"attr": "ip", "op": "cidr", "value": ["10.0.0.0/8", "2001:db8::/32"]}},
        {"name": "lane", "route": "v2", "when": {"attr": "tag", "op": "eq", "value": "blue"}},
    ],
}


def policy_doc(revision, *policies):
    return json.dumps({"revision": revision, "policies": list(policies)})


def counters(st):
    """gray_status counters by "SERVICE.VERSION"."""
    return {"%s.%s" % (x["service"], x["version"]): x for x in st["counters"]}


def one(hdrs, name):
    """A response header's single value, or None."""
    v = hdrs.get(name.lower())
    check(v is None or len(v) == 1, ("header %s repeated" % name, v))
    return v[0] if v else None


class Site:
    """nginx + backends for most tests: upstreams SERVICE.VERSION each on
    its own echo backend, one server with a gray_route location."""

    def __init__(self, tmp, policy_text, upstreams=(("order", "v1"), ("order", "v2")), workers=1,
                 extra_http="", extra_server="", route="order", interval="20ms", upstreams_revision=None):
        self.tmp = tmp
        self.backends = {}
        self.ng = Nginx(NGINX, tmp)
        self.policy = os.path.join(self.ng.prefix, "policies.json")
        write_atomic(self.policy, policy_text)
        self.port = free_port()
        ups = ""
        for svc, ver in upstreams:
            b = Backend("%s.%s" % (svc, ver))
            self.backends[(svc, ver)] = b
            ups += "    upstream %s.%s { server 127.0.0.1:%d; }\n" % (safe_name(svc), safe_name(ver), b.port)
        self.conf = (self.ng.main_context(MODULE, workers) + "http {\n" + self.ng.http_common() +
                     "    gray_policies %s;\n" % self.policy +
                     "    gray_policies_check_interval %s;\n" % interval +
                     ("    gray_upstreams_revision %d;\n" % upstreams_revision
                      if upstreams_revision is not None else "") +
                     "    gray_trusted_proxies 127.0.0.1/32 ::1/128;\n" + ups + extra_http +
                     "    server {\n        listen 127.0.0.1:%d;\n" % self.port +
                     "        location = /gray_status { gray_status; }\n" + extra_server +
                     "        location / {\n            gray_route %s;\n" % safe_name(route) + ROUTE_HEADERS +
                     "            proxy_pass http://$gray_upstream;\n        }\n    }\n}\n")
        self.ng.write_conf(self.conf)

    def start(self):
        self.ng.start(self.port)
        return self

    def get(self, target="/", headers=(), method="GET"):
        st, h, body = request(self.port, method, target, headers)
        doc = None
        if body[:1] == b"{":
            doc = json.loads(body)
        return st, h, doc

    def route(self, headers=(), target="/"):
        """(status, $gray_version, $gray_tag, $gray_rule, $gray_upstream,
        backend that answered, tags the backend received)."""
        st, h, doc = self.get(target, headers)
        return (st, one(h, "X-Gray-Version"), one(h, "X-Gray-Tag"), one(h, "X-Gray-Rule"),
                one(h, "X-Gray-Upstream"), doc and doc["backend"], doc and doc["tags"])

    def status(self, fmt=None):
        return status(self.port, fmt=fmt)

    def stop(self):
        try:
            self.ng.stop()
        finally:
            for b in self.backends.values():
                b.stop()


class site:
    """with site(tmp, ...) as s: started, and stopped whatever happens."""

    def __init__(self, *a, **kw):
        self.s = Site(*a, **kw)

    def __enter__(self):
        try:
            return self.s.start()
        except BaseException:
            self.s.stop()
            raise

    def __exit__(self, *exc):
        self.s.stop()


# ---- the data-driven rule cases -------------------------------------------------

class Skip(Exception):
    pass


HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
PATH = re.compile(r"^/[A-Za-z0-9/._~-]*$")
QUERY = re.compile(r"^[\x21-\x7e]*$")
HOST = re.compile(r"^[a-z0-9.-]+$")


def pairs(x):
    if x is None:
        return None
    return list(x.items()) if isinstance(x, dict) else [tuple(p) for p in x]


def plain_value(v, what):
    if any(c in v for c in "\r\n\0") or v != v.strip(" \t"):
        raise Skip("%s %r cannot travel unchanged in an HTTP header (nginx trims and refuses)" % (what, v))
    return v.encode()


def case_request(rq):
    """The HTTP request that carries a rule case's request.json. Raises
    Skip when HTTP through nginx cannot say the same thing."""
    method = rq.get("method", "GET")
    if not re.match(r"^[A-Z]+$", method):
        raise Skip("method %r: nginx answers 400 to a method that is not upper-case letters" % method)
    path = rq.get("path", "/")
    if not PATH.match(path):
        raise Skip("path %r is not a plain path nginx keeps unchanged in $uri" % path)
    query = None
    if "params" in rq:
        ps = pairs(rq["params"])
        if ps:
            query = "&".join(urllib.parse.quote(k, safe="") + "=" + urllib.parse.quote(v, safe="")
                             for k, v in ps)
    elif "query" in rq:
        query = rq["query"]
        if not QUERY.match(query) or "#" in query:
            raise Skip("query %r cannot be sent raw" % query)
    target = path + ("?" + query if query is not None else "")

    headers = []
    for k, v in pairs(rq.get("headers")) or []:
        if not HEADER_NAME.match(k):
            raise Skip("header name %r: nginx ignores it (ignore_invalid_headers)" % k)
        if k.lower() in ("host", "x-forwarded-for", "x-gray-tag", "content-length", "transfer-encoding",
                         "connection"):
            raise Skip("header %s is set by the harness" % k)
        if k.lower() == "cookie" and "cookies" in rq:
            continue  # a cookies array replaces the Cookie header as the source
        headers.append((k, plain_value(v, "header value")))
    if "cookies" in rq:
        cs = pairs(rq["cookies"])
        for k, v in cs:
            if re.search(r"[;,= \t\"\r\n]", k) or re.search(r"[; \t\r\n]", v):
                raise Skip("cookie %r=%r does not survive a Cookie header" % (k, v))
        if cs:
            headers.append(("Cookie", "; ".join("%s=%s" % kv for kv in cs).encode()))
    if "tag" in rq:
        headers.append(("X-Gray-Tag", plain_value(rq["tag"], "tag")))
    # 127.0.0.1 is a trusted proxy: X-Forwarded-For gives `ip`; an empty one
    # leaves it absent, as a request without "ip" has it.
    ip = rq.get("ip", "")
    if "," in ip:
        raise Skip("ip %r would be read as a list" % ip)
    headers.append(("X-Forwarded-For", plain_value(ip, "ip") if ip else b""))
    host = rq.get("host")
    if host is not None and not HOST.match(host):
        raise Skip("host %r: nginx lower-cases or refuses it" % host)
    headers.insert(0, ("Host", host or "gray.test"))
    return method, target, headers


def load_case(d):
    with open(os.path.join(d, "policy.json"), "rb") as f:
        policy_bytes = f.read()
    with open(os.path.join(d, "request.json")) as f:
        req = json.load(f)
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
    doc = json.loads(policy_bytes)
    policies = doc["policies"] if "policies" in doc else [doc]
    service = req.get("service") or (policies[0]["service"] if len(policies) == 1 else None)
    return policy_bytes, policies, service, req.get("request", {}), exp


@test
def t_rule_cases(tmp):
    """Every tests/data/rules case routes in nginx exactly as expected.json
    says: $gray_version/$gray_tag/$gray_rule, the upstream that served, the
    tag the backend received. One nginx; each case's policy file is swapped
    in without a reload."""
    cases = []
    services = set()
    upstreams = {}
    for name in sorted(os.listdir(RULES)):
        d = os.path.join(RULES, name)
        if not os.path.isdir(d):
            continue
        policy_bytes, policies, service, rq, exp = load_case(d)
        cases.append((name, policy_bytes, service, rq, exp))
        services.add(safe_name(service))
        for p in policies:
            for v in [p["default"]] + [r["route"] for r in p.get("rules", [])]:
                key = "%s.%s" % (safe_name(p["service"]), safe_name(v))
                upstreams.setdefault(key.lower(), key)
    check(len(cases) >= 100, "only %d rule cases found in %s" % (len(cases), RULES))

    backend = Backend("echo")
    ng = Nginx(NGINX, tmp)
    policy = os.path.join(ng.prefix, "policies.json")
    write_atomic(policy, policy_doc(0, {"service": "placeholder", "default": "v1"}))
    ports = {s: free_port() for s in sorted(services)}
    conf = ng.main_context(MODULE, 1) + "http {\n" + ng.http_common()
    conf += "gray_policies %s;\ngray_policies_check_interval 5ms;\n" % policy
    conf += "gray_trusted_proxies 127.0.0.1/32;\n"
    conf += "".join("upstream %s { server 127.0.0.1:%d; }\n" % (u, backend.port) for u in upstreams.values())
    for svc, port in ports.items():
        conf += ("server {\n listen 127.0.0.1:%d;\n location = /gray_status { gray_status; }\n"
                 " location / {\n  gray_route %s;\n%s  proxy_pass http://$gray_upstream;\n }\n}\n"
                 % (port, svc, ROUTE_HEADERS))
    conf += "}\n"
    ng.write_conf(conf)
    any_port = next(iter(ports.values()))
    failures, skipped, passed = [], [], 0
    last_bytes = None
    try:
        ng.start(any_port)
        gen = status(any_port)["policy_generation"]
        for name, policy_bytes, service, rq, exp in cases:
            try:
                method, target, headers = case_request(rq)
            except Skip as e:
                skipped.append("%s: %s" % (name, e))
                continue
            if policy_bytes != last_bytes:
                # (the same bytes again are not even parsed again)
                write_atomic(policy, policy_bytes)
                last_bytes = policy_bytes
                st, _ = wait_until("%s: the policy to be swapped in" % name, lambda: (
                    lambda s: s if s["policy_generation"] > gen or s["policy_error"] else None)(
                        status(any_port)), timeout=5, every=0.002)
                if st["policy_error"]:
                    failures.append("%s: policy refused: %s" % (name, st["policy_error"]))
                    continue
                gen = st["policy_generation"]
            code, h, body = request(ports[service], method, target, headers)
            got = {"version": one(h, "X-Gray-Version"), "tag": one(h, "X-Gray-Tag"),
                   "rule": one(h, "X-Gray-Rule"), "upstream": one(h, "X-Gray-Upstream")}
            if "error" in exp:
                # no policy: 503 from gray_route; only a valid incoming tag
                # passes through
                tag = rq.get("tag")
                want = {"status": 503, "version": None, "rule": None, "upstream": None,
                        "tag": tag if tag and NAME_RE.match(tag) else None}
                have = dict(got, status=code)
            else:
                up = "%s.%s" % (service, exp["version"])
                want = {"status": 200, "version": exp["version"], "tag": exp["tag"], "rule": exp["rule"],
                        "upstream": up, "backend_host": up, "backend_tags": [exp["tag"]] if exp["tag"] else []}
                doc = json.loads(body) if code == 200 else {}
                have = dict(got, status=code, backend_host=doc.get("host"), backend_tags=doc.get("tags"))
            if have != want:
                failures.append("%s: %s %s\n    want %s\n    got  %s" % (name, method, target, want, have))
            else:
                passed += 1
    finally:
        ng.stop()
        backend.stop()
    print("    rule cases: %d passed, %d skipped, %d failed" % (passed, len(skipped), len(failures)))
    for s in skipped:
        print("    skipped %s" % s)
    check(not failures, "\n".join(failures))
    check(passed >= len(cases) - 5, "too many cases skipped: %d of %d" % (len(skipped), len(cases)))


# ---- routing, tags, variables ---------------------------------------------------------

@test
def t_tags_forwarded(tmp):
    with site(tmp, policy_doc(1, ORDER)) as s:
        # the rule's tag
        check(s.route([("X-Gray", "1")]) == (200, "v2", "beta", "testers", "order.v2", "order.v2", ["beta"]),
              s.route([("X-Gray", "1")]))
        # the rule's tag wins over an incoming one
        r = s.route([("X-Gray", "1"), ("X-Gray-Tag", "blue")])
        check(r[2] == "beta" and r[6] == ["beta"], r)
        # an incoming valid tag passes through (and routes by the lane rule)
        r = s.route([("X-Gray-Tag", "blue")])
        check(r == (200, "v2", "blue", "lane", "order.v2", "order.v2", ["blue"]), r)
        r = s.route([("X-Gray-Tag", "green")])
        check(r == (200, "v1", "green", None, "order.v1", "order.v1", ["green"]), r)
        # an invalid incoming tag is dropped, never forwarded
        for bad in ("bad tag!", ".dot", "x" * 64, ""):
            r = s.route([("X-Gray-Tag", bad)])
            check(r[:2] == (200, "v1") and r[2] is None and r[6] == [], (bad, r))


COOKIES = {
    "service": "order", "default": "v1",
    "rules": [
        {"name": "early", "route": "v2", "tag": "early",
         "when": {"attr": "cookie:c2", "op": "eq", "value": "yes"}},
        {"name": "late", "route": "v2", "tag": "late",
         "when": {"attr": "cookie:c11", "op": "eq", "value": "yes"}},
        {"name": "dup", "route": "v3", "tag": "dup",
         "when": {"attr": "cookie:d", "op": "eq", "value": "first"}},
        # as long as c2's name: the length alone does not tell them apart
        {"name": "same-length", "route": "v3", "tag": "same-length",
         "when": {"attr": "cookie:c3", "op": "eq", "value": "yes"}},
    ],
}


@test
def t_cookies_many(tmp):
    """The module finds every cookie the policy reads in one pass over the
    first Cookie header: a cookie early or late in a long header, the first
    of a repeated name wherever the two are, and a second Cookie header
    (not read, as in every executor) all decide as the core does."""
    def jar(pairs):
        return ("Cookie", "; ".join("%s=%s" % kv for kv in pairs))
    filler = [("c%d" % i, "no") for i in range(1, 16)]
    with site(tmp, policy_doc(1, COOKIES)) as s:
        def decide(headers):
            return s.route(headers)[1:4]
        check(decide([jar(filler)]) == ("v1", None, None), decide([jar(filler)]))
        early = [(k, "yes" if k == "c2" else v) for k, v in filler]
        check(decide([jar(early)]) == ("v2", "early", "early"), decide([jar(early)]))
        late = [(k, "yes" if k == "c11" else v) for k, v in filler]
        check(decide([jar(late)]) == ("v2", "late", "late"), decide([jar(late)]))
        # a repeated name: the first one counts, inside or past the array
        for at in (3, 12):
            pairs = filler[:at] + [("d", "first")] + filler[at:] + [("d", "second")]
            check(decide([jar(pairs)]) == ("v3", "dup", "dup"), (at, decide([jar(pairs)])))
            pairs = filler[:at] + [("d", "second")] + filler[at:] + [("d", "first")]
            check(decide([jar(pairs)]) == ("v1", None, None), (at, decide([jar(pairs)])))
        # names of one length
        r = decide([jar([("c3", "yes"), ("c2", "no")])])
        check(r == ("v3", "same-length", "same-length"), r)
        r = decide([jar([("c3", "yes"), ("c2", "yes")])])
        check(r == ("v2", "early", "early"), r)
        # only the first Cookie header is read
        r = decide([jar(filler[:2]), ("Cookie", "c11=yes")])
        check(r == ("v1", None, None), r)
        # pairs without '=' and quoted values, as in the core
        r = decide([("Cookie", 'junk; ;c1=no; c2="yes"')])
        check(r == ("v2", "early", "early"), r)


PARAMS = {
    "service": "order", "default": "v1",
    "rules": [
        {"name": "listed", "route": "v2", "tag": "listed",
         "when": {"attr": "param:uid", "op": "in", "value": ["7", "x y", "L" * 200]}},
        {"name": "modulo", "route": "v3", "tag": "modulo",
         "when": {"attr": "param:uid", "op": "mod", "divisor": 10, "lt": 3}},
        {"name": "other", "route": "v2", "tag": "other",
         "when": {"all": [{"attr": "param:u", "op": "eq", "value": "1"},
                          {"not": {"attr": "param:uid", "op": "exists"}}]}},
    ],
}


@test
def t_params_tested_twice(tmp):
    """A parameter tested by two rules is looked up once per decision
    (unless its value had to be decoded): both rules, a missing parameter,
    another name, encoded values and long ones all decide as the core
    does."""
    with site(tmp, policy_doc(1, PARAMS)) as s:
        cases = [
            ("/?uid=7", ("v2", "listed", "listed")),
            ("/?uid=12", ("v3", "modulo", "modulo")),   # not listed; 12 mod 10 = 2
            ("/?uid=15", ("v1", None, None)),
            ("/?a=1&uid=x+y", ("v2", "listed", "listed")),
            ("/?uid=x%20y&uid=7", ("v2", "listed", "listed")),  # the first one counts
            ("/?u=1", ("v2", "other", "other")),
            ("/?u=1&uid=5", ("v1", None, None)),
            ("/?uid=" + "L" * 200, ("v2", "listed", "listed")),  # longer than the memo
            ("/?uid=" + "1" * 150 + "1", ("v3", "modulo", "modulo")),
            ("/", ("v1", None, None)),
        ]
        for target, want in cases:
            got = s.route([], target)[1:4]
            check(got == want, (target[:40], got, want))


# 16 header attributes first: the module finds the first 16 header or
# cookie attributes of a policy in one pass, the later ones one by one.
MANY = {
    "service": "order", "default": "v1",
    "rules": [
        {"name": "early", "route": "v2", "tag": "early",
         "when": {"any": [{"attr": "header:x-h%d" % i, "op": "eq", "value": "yes"}
                          for i in range(16)]}},
        {"name": "late-header", "route": "v3", "tag": "late-header",
         "when": {"attr": "header:x-late", "op": "eq", "value": "yes"}},
        {"name": "late-cookie", "route": "v3", "tag": "late-cookie",
         "when": {"attr": "cookie:late", "op": "eq", "value": "yes"}},
        {"name": "odd-late", "route": "v2", "tag": "odd-late",
         "when": {"all": [{"attr": "header:x_odd", "op": "exists"},
                          {"attr": "header:x-h3", "op": "eq", "value": "again"}]}},
    ],
}


@test
def t_many_attributes(tmp):
    """A policy reading more header and cookie attributes than the module
    finds in one pass: the early ones, the later ones (looked for one by
    one), the first of a repeated header, a name nginx does not hash, and
    one attribute tested by two rules all decide as the core does."""
    extra = "    ignore_invalid_headers off;\n"
    with site(tmp, policy_doc(1, MANY), extra_http=extra) as s:
        cases = [
            ([], ("v1", None, None)),
            ([("X-H0", "yes")], ("v2", "early", "early")),
            ([("X-H15", "yes")], ("v2", "early", "early")),
            ([("X-H15", "no"), ("X-H15", "yes")], ("v1", None, None)),  # the first counts
            ([("X-Late", "yes")], ("v3", "late-header", "late-header")),
            ([("X-Late", "no"), ("X-Late", "yes")], ("v1", None, None)),
            ([("Cookie", "a=1; late=yes")], ("v3", "late-cookie", "late-cookie")),
            ([("Cookie", "late=no; late=yes")], ("v1", None, None)),
            ([("X_Odd", "1"), ("X-H3", "again")], ("v2", "odd-late", "odd-late")),
            ([("X-H3", "again")], ("v1", None, None)),
        ]
        for headers, want in cases:
            got = s.route(headers)[1:4]
            check(got == want, (headers, got, want))


ODD_HEADERS = {
    "service": "order", "default": "v1",
    "rules": [
        {"name": "underscore", "route": "v2", "tag": "underscore",
         "when": {"attr": "header:x_user", "op": "eq", "value": "1"}},
        {"name": "dotted", "route": "v2", "tag": "dotted",
         "when": {"attr": "header:X.Dot", "op": "eq", "value": "1"}},
        {"name": "plain", "route": "v2", "tag": "plain",
         "when": {"attr": "header:x-plain", "op": "eq", "value": "1"}},
    ],
}


@test
def t_header_names_nginx_does_not_hash(tmp):
    """nginx's hash of a header name covers a-z, 0-9 and '-' only (and '_'
    with underscores_in_headers on); with ignore_invalid_headers off a
    header such as X_User or X.Dot still reaches the request, and the
    module finds it by name. With nginx's defaults such headers are
    dropped: the rules do not match."""
    for extra, found in (("    ignore_invalid_headers off;\n", True),
                         ("    ignore_invalid_headers off;\n    underscores_in_headers on;\n", True),
                         ("", False)):
        sub = os.path.join(tmp, "c%d" % len(extra))
        os.makedirs(sub)
        with site(sub, policy_doc(1, ODD_HEADERS), extra_http=extra) as s:
            for hdr, tag in (("X_User", "underscore"), ("X.Dot", "dotted"), ("X-Plain", "plain")):
                r = s.route([(hdr, "1")])[1:4]
                want = ("v2", tag, tag) if found or tag == "plain" else ("v1", None, None)
                check(r == want, (extra, hdr, r, want))


@test
def t_variables_without_route(tmp):
    """Outside gray_route the decision variables are empty; $gray_tag still
    passes a valid incoming tag through."""
    extra = ("        location /plain/ {" + ROUTE_HEADERS.replace("\n", "\n    ") +
             "            proxy_pass http://order.v1;\n        }\n")
    with site(tmp, policy_doc(1, ORDER), extra_server=extra) as s:
        r = s.route([("X-Gray", "1"), ("X-Gray-Tag", "blue")], "/plain/x")
        check(r == (200, None, "blue", None, None, "order.v1", ["blue"]), r)
        r = s.route([("X-Gray", "1"), ("X-Gray-Tag", "no good")], "/plain/x")
        check(r == (200, None, None, None, None, "order.v1", []), r)
        # and such requests are not counted
        check(s.status()["counters"] == [], s.status())


@test
def t_trusted_proxies(tmp):
    """`ip` is the peer's address unless the peer is a trusted proxy; then
    the rightmost X-Forwarded-For address that is not a trusted proxy."""
    extra = ("        location /untrusted/ {\n            gray_route order;\n"
             "            gray_trusted_proxies 192.0.2.0/24;\n" + ROUTE_HEADERS +
             "            proxy_pass http://$gray_upstream;\n        }\n"
             "        location /proxies/ {\n            gray_route order;\n"
             "            gray_trusted_proxies 127.0.0.1 10.9.0.0/16 2001:db8:ff::/48;\n" + ROUTE_HEADERS +
             "            proxy_pass http://$gray_upstream;\n        }\n")
    with site(tmp, policy_doc(1, ORDER), extra_server=extra) as s:
        def ver(xff, path="/"):
            hs = [("X-Forwarded-For", x) for x in xff]
            return s.route(hs, path)[1]
        check(ver([]) == "v1", "127.0.0.1 itself is not in the office nets")
        check(ver(["10.1.2.3"]) == "v2", "trusted peer: XFF counts")
        check(ver(["2001:db8::7"]) == "v2", "IPv6 from XFF")
        check(ver(["::ffff:10.1.2.3"]) == "v2", "IPv4-mapped IPv6 matches an IPv4 net")
        check(ver(["192.0.2.1"]) == "v1", "outside")
        check(ver(["10.1.2.3, 192.0.2.1"]) == "v1", "the rightmost address counts")
        check(ver(["192.0.2.1, 10.1.2.3"]) == "v2", "the rightmost address counts")
        check(ver(["192.0.2.1", "10.1.2.3"]) == "v2", "the last header holds the rightmost address")
        check(ver(["10.1.2.3,  , "]) == "v2", "empty elements are skipped")
        check(ver(["not-an-ip"]) == "v1" and ver(["10.1.2.3:80"]) == "v1", "not an address: no match")
        # an untrusted peer's X-Forwarded-For is ignored
        check(ver(["10.1.2.3"], "/untrusted/") == "v1", "XFF from an untrusted peer")
        # trusted proxies inside the list are skipped, right to left
        check(ver(["10.1.2.3, 10.9.0.5"], "/proxies/") == "v2", "skip a trusted hop")
        check(ver(["192.0.2.9, 10.9.0.5, 2001:db8:ff::1"], "/proxies/") == "v1", "skip two trusted hops")
        check(ver(["10.9.0.1, 10.9.0.2"], "/proxies/") == "v2", "all trusted: the leftmost (10.9.0.1)")


@test
def t_fallback_missing_upstream(tmp):
    """The decided version has no upstream block: the default version's
    upstream serves. "fallback": "fail", or no upstream at all, or no policy:
    503 from gray_route. gray_upstream_check off leaves the name as is."""
    pay = {"service": "pay", "default": "p1", "fallback": "fail",
           "rules": [{"name": "p", "route": "p2", "when": {"attr": "header:x-gray", "op": "eq", "value": "1"}}]}
    ship = {"service": "ship", "default": "s1"}
    extra = ""
    for svc in ("pay", "ship", "cart"):
        extra += ("        location /%s/ {\n            gray_route %s;\n" % (svc, svc) + ROUTE_HEADERS +
                  "            proxy_pass http://$gray_upstream;\n        }\n")
    extra += ("        location /nocheck/ {\n            gray_route pay;\n            gray_upstream_check off;\n" +
              ROUTE_HEADERS + "            proxy_pass http://$gray_upstream;\n        }\n")
    with site(tmp, policy_doc(3, ORDER, pay, ship), upstreams=[("order", "v1"), ("pay", "p1")],
              extra_server=extra) as s:
        # decided v2, no upstream order.v2: order.v1 serves; the variables say v2
        r = s.route([("X-Gray", "1")])
        check(r == (200, "v2", "beta", "testers", "order.v1", "order.v1", ["beta"]), r)
        r = s.route()
        check(r == (200, "v1", None, None, "order.v1", "order.v1", []), r)
        # fallback fail: the decided version's upstream is missing -> 503
        r = s.route([("X-Gray", "1")], "/pay/")
        check(r[:5] == (503, "p2", None, "p", "pay.p2"), r)
        r = s.route([], "/pay/")
        check(r[:5] == (200, "p1", None, None, "pay.p1"), r)
        # neither the decided nor the default version has an upstream -> 503
        r = s.route([], "/ship/")
        check(r[:5] == (503, "s1", None, None, "ship.s1"), r)
        # no policy for the service -> 503, variables empty
        r = s.route([], "/cart/")
        check(r[:5] == (503, None, None, None, None), r)
        # without the check, proxy_pass gets the missing name and fails
        r = s.route([("X-Gray", "1")], "/nocheck/")
        check(r[0] == 502 and r[4] == "pay.p2", r)
        st = s.status()
        c = counters(st)
        check(c["order.v1"]["fallbacks"] == 1 and c["order.v1"]["requests"] == 2, c)
        check(c["pay.p2"]["unavailable"] == 1, c)
        check(c["ship.s1"]["unavailable"] == 1, c)
        check(st["requests_without_policy"] == 1, st)
        log = open(s.ng.error_log).read()
        check('gray_route "pay": no upstream "pay.p2" and the policy says "fallback": "fail", answering 503'
              in log, log[-2000:])
        check('gray_route "ship": no upstream "ship.s1", answering 503' in log, log[-2000:])
        check('gray_route "cart": no policy for this service, answering 503' in log, log[-2000:])


# ---- policy changes without reload ------------------------------------------------------

@test
def t_policy_change_without_reload(tmp):
    """A policy file replaced on disk is picked up by every worker within a
    second, by the same worker processes (no reload)."""
    with site(tmp, policy_doc(1, ORDER), workers=2, interval="200ms") as s:
        master = s.ng.proc.pid
        workers, _ = wait_until("both workers forked", lambda: (lambda w: len(w) == 2 and sorted(w))(
            s.ng.workers()), timeout=3)
        # A worker enters the status list once it has started (init_process);
        # right after nginx starts one of them may not have yet.
        st, _ = wait_until("both workers in gray_status", lambda: (lambda st: sorted(
            w["pid"] for w in st["workers"]) == workers and st)(s.status()), timeout=3)
        check(st["policy_revision"] == 1 and st["policy_error"] is None, st)
        check(s.route([("X-Gray", "1")])[1] == "v2", "before")
        changed = json.loads(json.dumps(ORDER))
        changed["rules"][0]["when"]["value"] = "2"
        for rev, via in ((2, "rename"), (3, "in place")):
            changed["rules"][0]["tag"] = "beta%d" % rev
            text = policy_doc(rev, changed)
            t0 = time.time()
            if via == "rename":
                write_atomic(s.policy, text)
            else:
                with open(s.policy, "w") as f:  # the same inode, rewritten
                    f.write(text)
            _, took = wait_until("every worker on revision %d" % rev, lambda: all(
                w["policy_revision"] == rev for w in s.status()["workers"]), timeout=3)
            check(time.time() - t0 < 1.0, "revision %d took %.2fs" % (rev, time.time() - t0))
            # every connection (either worker) routes by the new policy
            for _ in range(10):
                r = s.route([("X-Gray", "2")])
                check(r[1:3] == ("v2", "beta%d" % rev), r)
                check(s.route([("X-Gray", "1")])[1] == "v1", "old rule still active")
        check(s.ng.proc.pid == master and sorted(s.ng.workers()) == workers,
              ("workers changed", workers, s.ng.workers()))
        log = open(s.ng.error_log).read()
        check("reconfiguring" not in log, "nginx was reloaded")
        check(log.count("revision 3 loaded") == 2, log[-1500:])


def regex_policies(limit):
    """ORDER and as many 20-regex policies as fit a document of `limit`
    bytes (a compile of ~0.2 ms per KiB here: every regex is JIT-compiled)."""
    pols = [ORDER]
    size = len(policy_doc(2, *pols))
    i = 0
    while True:
        p = {"service": "big%d" % i, "default": "v1",
             "rules": [{"name": "r%d" % j, "route": "v2",
                        "when": {"attr": "header:user-agent", "op": "regex",
                                 "value": "A%dB/%d\\.x" % (i, j)}} for j in range(20)]}
        size += len(json.dumps(p)) + 2
        if size > limit:
            return pols
        pols.append(p)
        i += 1


def subdir(tmp, name):
    path = os.path.join(tmp, name)
    os.makedirs(path)
    return path


def threads(pid):
    """How many threads the process has."""
    return len(os.listdir("/proc/%d/task" % pid))


def loaded_lines(log, revision):
    """(policies, ms, where) of each "revision N loaded" line of the log."""
    return re.findall(r"revision %d loaded \((\d+) policies, compiled in (\d+) ms ([^)]*)\)" % revision, log)


def swap_policy(s, revision, text):
    """Write the policy file, wait until gray_status runs `revision`, and
    return where each "revision N loaded" line says it was compiled."""
    write_atomic(s.policy, text)
    wait_until("revision %d" % revision, lambda: s.status()["policy_revision"] == revision, timeout=10)
    return [where for _, _, where in loaded_lines(open(s.ng.error_log).read(), revision)]


@test
def t_big_policy_compiles_off_the_event_loop(tmp):
    """A big policy file (1 MiB, ~10,000 regexes: a compile of hundreds of
    ms here) is compiled by a compiler thread: the worker keeps
    answering meanwhile. With one worker, requests sent one after another
    while the file is compiled must keep coming back quickly: the longest
    under half the compile time the worker logs, where a compile in the
    event loop would hold one of them for about the whole compile. The
    thread lives for that compile only (none before, none after: a worker
    with a second thread pays for it on every request), and a small file
    afterwards is compiled in the event loop."""
    with site(tmp, policy_doc(1, ORDER), interval="20ms",
              extra_server="        location = /ping { return 204; }\n") as s:
        (worker,) = s.ng.workers()
        check(threads(worker) == 1, ("a thread before any big file", threads(worker)))
        pols = regex_policies(1000000)
        text = policy_doc(2, *pols)
        check(len(text) <= 1024 * 1024, len(text))
        done = []  # seconds each request took
        t_write = time.monotonic()
        write_atomic(s.policy, text)
        seen = None
        while time.monotonic() - t_write < 20:
            t0 = time.monotonic()
            st, _, _ = request(s.port, "GET", "/ping")
            t1 = time.monotonic()
            check(st == 204, st)
            done.append(t1 - t0)
            if len(done) % 10 == 0:
                rev = s.status()["policy_revision"]  # the same worker: timed too
                t2 = time.monotonic()
                done.append(t2 - t1)
                if rev == 2:
                    seen = t2
                    break
        check(seen is not None, "revision 2 never became live")
        log = open(s.ng.error_log).read()
        got = loaded_lines(log, 2)
        check(len(got) == 1, log[-1500:])
        npol, took_ms, where = int(got[0][0]), int(got[0][1]), got[0][2]
        longest = max(done) * 1000
        print("    compile %d ms (%s); %d requests until the revision was live, the longest %.1f ms" %
              (took_ms, where, len(done), longest))
        # requests follow one another: a worker busy compiling would hold
        # one of them for about the whole compile
        check(took_ms >= 20, "the compile took %d ms: too fast to tell a blocked worker" % took_ms)
        check(longest < took_ms / 2, ("a request waited for the compile", longest, took_ms))
        check(npol == len(pols), (npol, len(pols)))
        check(where == "in a compiler thread", got)
        check(s.route([("X-Gray", "1")])[1:3] == ("v2", "beta"), "routing after the swap")
        # the thread was joined before its set was put in place
        check(s.ng.workers() == [worker] and threads(worker) == 1, threads(worker))
        got = swap_policy(s, 3, policy_doc(3, ORDER))
        check(got == ["in the event loop"], got)
        check(threads(worker) == 1, threads(worker))


@test
def t_small_policies_compile_in_the_event_loop(tmp):
    """Files under gray_policies_compile_thread (64k by default) are compiled
    in the event loop, and a worker that only ever meets such files never
    has a second thread (a thread makes glibc lock its malloc and wrap every
    recv and writev for good: docs/benchmarks.md). `off` keeps even a bigger
    file in the event loop; 0 sends every file to a compiler thread, which
    ends with its compile."""
    with site(tmp, policy_doc(1, ORDER), interval="20ms") as s:
        (worker,) = s.ng.workers()
        for rev in (2, 3, 4):
            got = swap_policy(s, rev, policy_doc(rev, ORDER))
            check(got == ["in the event loop"], (rev, got))
        log = open(s.ng.error_log).read()
        check("compiler thread" not in log, log[-1500:])
        check(s.ng.workers() == [worker] and threads(worker) == 1, threads(worker))
    big = policy_doc(2, *regex_policies(100000))
    check(len(big) > 65536, len(big))
    # (each nginx in its own directory: its own error log)
    with site(subdir(tmp, "off"), policy_doc(1, ORDER), interval="20ms",
              extra_http="    gray_policies_compile_thread off;\n") as s:
        (worker,) = s.ng.workers()
        got = swap_policy(s, 2, big)
        check(got == ["in the event loop"], got)
        check(threads(worker) == 1, threads(worker))
    with site(subdir(tmp, "zero"), policy_doc(1, ORDER), interval="20ms",
              extra_http="    gray_policies_compile_thread 0;\n") as s:
        (worker,) = s.ng.workers()
        check(threads(worker) == 1, threads(worker))
        got = swap_policy(s, 2, policy_doc(2, ORDER))
        check(got == ["in a compiler thread"], got)
        check(threads(worker) == 1, threads(worker))


@test
def t_invalid_policy_keeps_serving(tmp):
    """A bad file on disk leaves the old policy serving; gray_status says
    why (path-qualified), the error is logged once per worker; a good file
    afterwards clears it."""
    with site(tmp, policy_doc(5, ORDER), workers=2) as s:
        bad = json.loads(json.dumps(ORDER))
        bad["rules"][2]["when"]["op"] = "equals"
        cases = [
            (policy_doc(6, bad), 'policies[0].rules[2].when.op: unknown operator "equals"'),
            ('{"revision": 7, "policies": [', "invalid JSON"),
            (b"x" * (1024 * 1024 + 1), "over the limit of 1048576"),
            (None, "cannot stat the file: No such file or directory"),
        ]
        def logged():
            return open(s.ng.error_log).read().count("still serving revision 5")
        for k, (text, msg) in enumerate(cases):
            if text is None:
                os.unlink(s.policy)
            else:
                write_atomic(s.policy, text)
            # each worker logs each failure once: wait for both before the
            # next file, so a slower worker cannot skip one
            wait_until("the error in gray_status and both workers' logs", lambda: all(
                w["policy_error"] for w in s.status()["workers"]) and msg in (s.status()["policy_error"] or "")
                and logged() >= 2 * (k + 1), timeout=3)
            st = s.status()
            check(st["policy_revision"] == 5 and msg in st["policy_error"], st)
            check(all(w["policy_revision"] == 5 for w in st["workers"]), st)
            check(s.route([("X-Gray", "1")])[1:3] == ("v2", "beta"), "the old policy serves")
            prom = s.status("prometheus")
            check("gray_policy_reload_error 1" in prom and "gray_policy_revision 5" in prom, prom[:600])
        time.sleep(0.3)  # several more checks: still logged once per worker
        log = open(s.ng.error_log).read()
        check(log.count('unknown operator "equals"') == 2, log[-3000:])
        check(log.count("still serving revision 5") == 2 * len(cases), log[-3000:])
        write_atomic(s.policy, policy_doc(8, ORDER))
        wait_until("recovery", lambda: all(w["policy_revision"] == 8 and not w["policy_error"]
                                           for w in s.status()["workers"]), timeout=3)
        st = s.status()
        check(st["policy_error"] is None and st["policy_revision"] == 8, st)


@test
def t_inflight_keeps_decision(tmp):
    """A request decided before a policy swap keeps its decision (and its
    policy set) to the end, while new requests follow the new policy."""
    import threading
    with site(tmp, policy_doc(1, ORDER)) as s:
        out = {}

        def slow():
            out["r"] = s.route([("X-Gray", "1"), ("X-Backend-Sleep", "1.0")])
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        changed = json.loads(json.dumps(ORDER))
        changed["rules"][0]["route"] = "v1"
        changed["rules"][0]["tag"] = "gamma"
        write_atomic(s.policy, policy_doc(2, changed))
        wait_until("revision 2", lambda: s.status()["policy_revision"] == 2, timeout=3)
        check(s.route([("X-Gray", "1")])[:3] == (200, "v1", "gamma"), "new requests")
        t.join(10)
        check(out.get("r") == (200, "v2", "beta", "testers", "order.v2", "order.v2", ["beta"]), out)


@test
def t_nginx_t_refuses_bad_policy(tmp):
    """nginx -t fails with the core's path-qualified message; so do other
    configuration mistakes."""
    bad = json.loads(json.dumps(ORDER))
    bad["rules"][2]["when"]["op"] = "equals"
    s = Site(tmp, policy_doc(1, bad))
    try:
        rc, out = s.ng.test_conf()
        check(rc != 0, out)
        check('[emerg] gray_policies "%s": policies[0].rules[2].when.op: unknown operator "equals"' % s.policy
              in out, out)
        # and nginx does not start with it
        write_atomic(s.policy, policy_doc(1, ORDER))
        rc, out = s.ng.test_conf()
        check(rc == 0, out)
        good = s.conf
        for broken, msg in [
            (good.replace("gray_route order;", "gray_route 'or der';"), 'gray_route: invalid service name "or der"'),
            (good.replace("gray_policies %s;" % s.policy, ""), 'gray_route "order" needs gray_policies'),
            (good.replace("127.0.0.1/32 ::1/128", "127.0.0.300"), 'invalid address or network "127.0.0.300"'),
            (good.replace("gray_policies_check_interval 20ms;", "gray_policies_check_interval 0;"),
             "value must be between 1 and 3600000"),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s;" % s.policy + "\n" +
                          "gray_upstreams_revision -3;"), "needs a non-negative integer"),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s;" % s.policy + "\n" +
                          "gray_status_pairs 8;"), "value must be between 16 and 1048576"),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s;" % s.policy + "\n" +
                          "gray_status_pairs many;"), '"gray_status_pairs" directive invalid number'),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s;" % s.policy + "\n" +
                          "gray_policies_compile_thread many;"),
             'gray_policies_compile_thread: "many" is neither a size (such as 64k) nor "off"'),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s;" % s.policy + "\n" +
                          "gray_policies_compile_thread -1;"),
             'gray_policies_compile_thread: "-1" is neither a size'),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s;" % s.policy + "\n" +
                          "gray_policies_compile_thread 1m; gray_policies_compile_thread off;"),
             '"gray_policies_compile_thread" directive is duplicate'),
            (good.replace("gray_policies %s;" % s.policy, "gray_policies %s.missing;" % s.policy),
             "cannot stat the file: No such file or directory"),
        ]:
            s.ng.write_conf(broken)
            rc, out = s.ng.test_conf()
            check(rc != 0 and msg in out, (msg, out))
    finally:
        s.stop()


# ---- counters, status, reloads -------------------------------------------------------------

@test
def t_counters_and_prometheus(tmp):
    """Per service and version counters in shared memory, summed over two
    workers; gray_status JSON and Prometheus text."""
    with site(tmp, policy_doc(4, ORDER), workers=2, upstreams_revision=17) as s:
        for _ in range(6):
            check(s.route()[0] == 200, "v1")
        for _ in range(3):
            check(s.route([("X-Gray", "1")])[0] == 200, "v2")
        check(s.get("/", [("X-Gray", "1"), ("X-Backend-Status", "404")])[0] == 404, "404")
        check(s.get("/", [("X-Backend-Status", "503")])[0] == 503, "503")
        check(s.get("/", [("X-Backend-Sleep", "0.06")])[0] == 200, "slow")
        # a worker counts a request in its log phase, just after the answer
        # went out: the other worker may show the status a moment earlier
        wait_until("all 12 requests counted",
                   lambda: sum(x["requests"] for x in counters(s.status()).values()) >= 12, timeout=5)
        st = s.status()
        for key in ("policy_revision", "policy_file", "policy_error", "upstreams_revision", "pid"):
            check(key in st, ("missing", key, st))
        check(st["policy_revision"] == 4 and st["upstreams_revision"] == 17 and st["policy_file"] == s.policy, st)
        check(st["pid"] in [w["pid"] for w in st["workers"]] and len(st["workers"]) == 2, st)
        check(st["counter_pairs"] == 2048 and st["counters_overflow"] == 0, st)  # the default
        c = counters(st)
        v1, v2 = c["order.v1"], c["order.v2"]
        check(v1["requests"] == 8 and v1["responses"]["2xx"] == 7 and v1["responses"]["5xx"] == 1, v1)
        check(v2["requests"] == 4 and v2["responses"]["2xx"] == 3 and v2["responses"]["4xx"] == 1, v2)
        check(v1["upstream_response_ms"]["count"] == 8 and v1["upstream_response_ms"]["sum"] >= 60, v1)
        le = v1["upstream_response_ms"]["le"]
        check(le["+Inf"] == 8 and le["50"] <= 7 and le["100"] >= 1 and le["5"] <= le["50"], le)
        prom = s.status("prometheus")
        for line in ['gray_policy_revision 4', 'gray_upstreams_revision 17', 'gray_policy_reload_error 0',
                     'gray_requests_total{service="order",version="v1"} 8',
                     'gray_requests_total{service="order",version="v2"} 4',
                     'gray_responses_total{service="order",version="v2",class="4xx"} 1',
                     'gray_responses_total{service="order",version="v1",class="5xx"} 1',
                     'gray_upstream_response_seconds_bucket{service="order",version="v1",le="+Inf"} 8',
                     'gray_upstream_response_seconds_count{service="order",version="v1"} 8',
                     '# TYPE gray_upstream_response_seconds histogram']:
            check(line in prom.splitlines(), (line, prom[:3000]))
        # the text format: every sample line is NAME{LABELS} VALUE
        for line in prom.splitlines():
            check(line.startswith("#") or re.match(r'^[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? [0-9.]+$',
                                                   line), line)
        check(s.get("/gray_status?format=xml")[0] == 400, "unknown format")
        check(request(s.port, "POST", "/gray_status")[0] == 405, "POST")


@test
def t_status_pairs_bound(tmp):
    """gray_status_pairs sizes the counter table: with 16 slots, requests of
    24 service/version pairs fill it, and the requests of the pairs left
    over are counted as overflow (never into another pair's slot)."""
    versions = ["v%d" % i for i in range(1, 25)]
    pol = {"service": "order", "default": "v1",
           "rules": [{"name": "to-" + v, "route": v,
                      "when": {"attr": "header:x-v", "op": "eq", "value": v}} for v in versions]}
    with site(tmp, policy_doc(1, pol), upstreams=[("order", v) for v in versions],
              extra_http="    gray_status_pairs 16;\n") as s:
        for v in versions:
            r = s.route([("X-V", v)])
            check(r[0] == 200 and r[1] == v and r[5] == "order." + v, (v, r))
        wait_until("24 requests counted or overflowed", lambda: (lambda st: sum(
            x["requests"] for x in counters(st).values()) + st["counters_overflow"] >= 24)(s.status()),
            timeout=5)
        st = s.status()
        c = counters(st)
        check(st["counter_pairs"] == 16 and len(c) == 16 and st["counters_overflow"] == 8, st)
        check(all(x["requests"] == 1 for x in c.values()), c)
        check(set(c) <= {"order." + v for v in versions}, sorted(c))
        prom = s.status("prometheus").splitlines()
        check("gray_counter_pairs 16" in prom and "gray_counters_overflow_total 8" in prom, prom[:40])


@test
def t_workers_beyond_64_listed(tmp):
    """gray_status lists every worker, also beyond 64 (nginx allows 1,024;
    hosts with more cores run more with `worker_processes auto`), so that
    gray-agent can tell that all of them run a new policy revision."""
    n = 66
    with site(tmp, policy_doc(1, ORDER), workers=n, interval="50ms") as s:
        wait_until("%d workers in gray_status" % n, lambda: len(s.status()["workers"]) == n, timeout=30)
        write_atomic(s.policy, policy_doc(2, ORDER))
        st, _ = wait_until("every worker on revision 2", lambda: (lambda st: all(
            w["policy_revision"] == 2 for w in st["workers"]) and st)(s.status()), timeout=30)
        check(len(st["workers"]) == n, len(st["workers"]))
        check(sorted(w["pid"] for w in st["workers"]) == sorted(s.ng.workers()), "pids")


@test
def t_reload_new_upstreams(tmp):
    """nginx -s reload with a new gray_upstreams_revision and a new upstream
    block: the new workers report the revision, route to the new upstream,
    and the counters survive the reload."""
    with site(tmp, policy_doc(1, ORDER), upstreams=[("order", "v1")], workers=2, upstreams_revision=1) as s:
        check(s.route([("X-Gray", "1")])[4] == "order.v1", "fallback before the reload")
        v2 = Backend("order.v2")
        s.backends[("order", "v2")] = v2
        conf = s.conf.replace("gray_upstreams_revision 1;", "gray_upstreams_revision 2;")
        conf = conf.replace("    server {", "    upstream order.v2 { server 127.0.0.1:%d; }\n    server {" % v2.port, 1)
        s.ng.write_conf(conf)
        rc, out = s.ng.test_conf()
        check(rc == 0, out)
        s.ng.reload()
        wait_until("upstreams revision 2", lambda: s.status()["upstreams_revision"] == 2, timeout=10)
        # For a moment after a reload the old workers still accept next to
        # the new ones, so a request may yet meet the old configuration.
        wait_until("the new upstream to serve", lambda: s.route([("X-Gray", "1")])[4:6] == ("order.v2", "order.v2"),
                   timeout=10)
        # counted in the log phase, just after the answer went out
        def both():
            c = counters(s.status())
            done = all(c.get(k, {}).get("requests", 0) >= 1 for k in ("order.v1", "order.v2"))
            return c if done else None
        c, _ = wait_until("both versions counted", both, timeout=5)
        check(c["order.v1"]["requests"] >= 1 and c["order.v2"]["requests"] >= 1, c)


def main():
    return testkit.run(TESTS, ONLY, "gray-nginx-")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sys.exit(main())
