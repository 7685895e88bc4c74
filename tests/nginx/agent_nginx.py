#!/usr/bin/env python3
"""gray-agent against a real Nginx (issue 5), all on 127.0.0.1.

    agent_nginx.py GRAYD GRAY_AGENT MODULE_SO NGINX [TEST ...]

Each test starts grayd (--dev, a temporary data directory), backends per
version (small Python HTTP servers registered in grayd through its API),
Debian's nginx with its own prefix and config in the test's temporary
directory loading the gray module, and gray-agent; then asserts through real
HTTP. Processes are started and stopped by PID; every wait is bounded.
Exits 77 (ctest: skipped) when the module or nginx is missing. Prints one
line per test and `N passed, M failed`. Standard library only.
"""
import hashlib
import http.client
import http.server
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import testkit  # noqa: E402
from testkit import Fail, check, free_port, nginx_env, sanitizer_report  # noqa: E402,F401

GRAYD = os.path.abspath(sys.argv[1])
AGENT = os.path.abspath(sys.argv[2])
MODULE = os.path.abspath(sys.argv[3])
NGINX = sys.argv[4]
ONLY = set(sys.argv[5:])
TESTS, test = testkit.collector()
SKIP = 77


def wait_until(what, fn, timeout=10.0, every=0.05):
    """testkit.wait_until's value alone; a status answer still missing a key
    counts as "not yet" too."""
    return testkit.wait_until(what, fn, timeout, every, tolerate=(KeyError,))[0]


def http_get(port, path="/", headers=None, timeout=5):
    """(status, body bytes) over a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Proc:
    """A child process with stdout+stderr in a log file, stopped by PID."""

    def __init__(self, tmp, name, cmd, env=None):
        self.name = name
        self.log = os.path.join(tmp, "%s.%d.log" % (name, int(time.time() * 1000) % 100000))
        self.errf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf, env=env)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Fail("%s did not stop within %ds" % (self.name, timeout))
        self.errf.close()
        return self.proc.returncode


class Grayd(Proc):
    """grayd --dev plus an agent token that survives a restart."""

    def __init__(self, tmp, port=0, agent_token=None):
        self.agent_token = agent_token or secrets.token_hex(16)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("edge agent sha256:%s\n" % hashlib.sha256(self.agent_token.encode()).hexdigest())
        Proc.__init__(self, tmp, "grayd", [GRAYD, "--dev", "--listen", "127.0.0.1:%d" % port,
                                           "--data", os.path.join(tmp, "grayd.db"), "--tokens", tokens])
        m = wait_until("grayd to listen",
                       lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.text())
                       or (not self.alive() and Fail("grayd exited: " + self.text()[-800:])))
        if isinstance(m, Fail):
            raise m
        self.port = int(m.group(1))
        self.token = re.findall(r"dev admin token: (\w+)", self.text())[-1]
        self.url = "http://127.0.0.1:%d" % self.port

    def req(self, method, path, body=None, raw=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            c.request(method, path, body=data, headers={"Authorization": "Bearer " + self.token})
            r = c.getresponse()
            out = r.read()
            try:
                return r.status, json.loads(out) if out else None
            except ValueError:
                return r.status, out
        finally:
            c.close()

    def put_policy(self, service, default, rules=None):
        st, ans = self.req("PUT", "/v1/policies/" + service,
                           {"service": service, "default": default, "rules": rules or []})
        check(st == 200, ("PUT policy", st, ans))
        return ans["revision"]

    def register(self, service, iid, port, version, address="127.0.0.1"):
        st, ans = self.req("PUT", "/v1/services/%s/instances/%s" % (service, iid),
                           {"address": address, "port": port, "version": version, "ttl_s": 600})
        check(st == 200, ("register", st, ans))
        return ans["revision"]

    def deregister(self, service, iid):
        st, ans = self.req("DELETE", "/v1/services/%s/instances/%s" % (service, iid))
        check(st == 200, ("deregister", st, ans))
        return ans["revision"]

    def agent(self, aid="edge-1"):
        st, ans = self.req("GET", "/v1/agents/" + aid)
        return ans if st == 200 else None


class Backend:
    """An HTTP server answering {"version", "port", "tag"} for any GET."""

    def __init__(self, version):
        ver = version

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = json.dumps({"version": ver, "port": self.server.server_address[1],
                                   "tag": self.headers.get("X-Gray-Tag", "")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.version = version
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class Nginx:
    """Debian's nginx with its own prefix, config and ports; the gray files
    in DIR (the agent's --nginx-dir)."""

    def __init__(self, tmp):
        self.prefix = os.path.join(tmp, "nginx")
        self.dir = os.path.join(self.prefix, "gray")
        for d in (self.prefix, self.dir, os.path.join(self.prefix, "tmp"), os.path.join(self.prefix, "logs")):
            os.makedirs(d, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.pidfile = os.path.join(self.prefix, "nginx.pid")
        self.errlog = os.path.join(self.prefix, "logs", "error.log")
        t = os.path.join(self.prefix, "tmp")
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the temp dir
        with open(self.conf, "w") as f:
            f.write("""load_module %(module)s;
%(user)sdaemon off;
worker_processes 1;
pid %(pid)s;
lock_file %(prefix)s/nginx.lock;
error_log %(errlog)s notice;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path %(t)s/body;
    proxy_temp_path %(t)s/proxy;
    fastcgi_temp_path %(t)s/fastcgi;
    uwsgi_temp_path %(t)s/uwsgi;
    scgi_temp_path %(t)s/scgi;
    include %(dir)s/gray-upstreams.conf;
    gray_policies %(dir)s/gray-policies.json;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            gray_route order;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Gray-Tag $gray_tag;
            proxy_connect_timeout 2s;
            proxy_pass http://$gray_upstream;
        }
        location = /gray_status { gray_status; }
        location = /worker_pid { return 200 "$pid\\n"; }
    }
}
""" % dict(module=MODULE, user=user, pid=self.pidfile, prefix=self.prefix, errlog=self.errlog, t=t,
           dir=self.dir, port=self.port))
        self.proc = None

    def start(self, tmp):
        self.proc = self.p = Proc(tmp, "nginx", [NGINX, "-p", self.prefix, "-c", self.conf], nginx_env())
        wait_until("nginx to serve", lambda: http_get(self.port, "/worker_pid")[0] == 200
                   or (not self.p.alive() and Fail("nginx exited: " + self.p.text()[-800:]
                                                   + open(self.errlog).read()[-800:]))
                   or None)
        check(self.p.alive(), "nginx exited: " + open(self.errlog).read()[-1500:])

    def worker_pid(self):
        st, body = http_get(self.port, "/worker_pid")
        check(st == 200, "worker_pid: %d" % st)
        return int(body)

    def status(self):
        st, body = http_get(self.port, "/gray_status")
        check(st == 200, "gray_status: %d %r" % (st, body[:200]))
        return json.loads(body)

    def routed(self, path="/", headers=None):
        """The backend's answer for one request through Nginx, or None."""
        st, body = http_get(self.port, path, headers)
        if st != 200:
            return None
        return json.loads(body)

    def reloads(self):
        """SIGHUPs the master has received so far."""
        with open(self.errlog, errors="replace") as f:
            return f.read().count("(SIGHUP) received")

    def dump(self):
        p = subprocess.run([NGINX, "-T", "-p", self.prefix, "-c", self.conf], capture_output=True, timeout=30,
                           env=nginx_env())
        check(p.returncode == 0, "nginx -T: " + p.stderr.decode(errors="replace")[-1000:])
        return p.stdout.decode(errors="replace")

    def stop(self):
        if self.proc is None:
            return
        if self.p.alive():
            self.p.stop(signal.SIGQUIT, 20)
        else:
            self.p.errf.close()
        # nginx points its stderr at the error log once it runs: a report
        # of the sanitizer build's module lands in one of the two
        report = sanitizer_report(self.p.log, self.errlog)
        if report:
            raise Fail("sanitizer report from nginx: " + report)

    def file(self, name):
        with open(os.path.join(self.dir, name)) as f:
            return f.read()


def agent_nginx(tmp):
    """The nginx the agent runs its `nginx -t` with: Debian's, or in the ASan
    build a wrapper that gives that nginx alone the sanitizer runtimes the
    module needs (the agent keeps its own ASAN_OPTIONS, leak checks
    included)."""
    env = nginx_env()
    if env is None:
        return NGINX
    path = os.path.join(tmp, "nginx-san")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("#!/bin/sh\nLD_PRELOAD=%s ASAN_OPTIONS=%s exec %s \"$@\"\n"
                    % (shlex.quote(env["LD_PRELOAD"]), shlex.quote(env.get("ASAN_OPTIONS", "")),
                       shlex.quote(NGINX)))
        os.chmod(path, 0o755)
    return path


class Agent(Proc):
    def __init__(self, tmp, g, ngx, extra=(), nginx_bin=None, aid="edge-1", server=None):
        cmd = [AGENT, "--server", server or g.url, "--nginx-dir", ngx.dir, "--nginx-conf", ngx.conf,
               "--nginx-prefix", ngx.prefix, "--nginx", nginx_bin or agent_nginx(tmp),
               "--nginx-status", "http://127.0.0.1:%d/gray_status" % ngx.port, "--id", aid,
               "--cache", os.path.join(tmp, "agent.cache"), "--report-interval", "2s"] + list(extra)
        env = dict(os.environ, GRAYLANE_TOKEN=g.agent_token)
        env.pop("GRAYLANE_SERVER", None)
        Proc.__init__(self, tmp, "agent", cmd, env)
        self.aid = aid

    def stop(self, sig=signal.SIGTERM, timeout=20):
        rc = Proc.stop(self, sig, timeout)
        check(rc == 0, "gray-agent exited %s: %s" % (rc, self.text()[-1500:]))


class Stack:
    """grayd, backends order v1 and v2, nginx with the module, the agent."""

    def __init__(self, tmp, agent_extra=(), nginx_bin=None, v1=1, v2=1, default="v1"):
        self.tmp = tmp
        self.backends = []
        self.g = Grayd(tmp)
        self.ngx = None
        self.agent = None
        try:
            self.rev = self.g.put_policy("order", default)
            for version, n in (("v1", v1), ("v2", v2)):
                for i in range(n):
                    self.add("order", version, "%s-%d" % (version, i))
            # The empty files first, so Nginx can start before the agent.
            self.ngx = Nginx(tmp)
            p = subprocess.run([AGENT, "--init", "--nginx-dir", self.ngx.dir], capture_output=True, text=True,
                               timeout=10)
            check(p.returncode == 0, "gray-agent --init: " + p.stderr)
            self.ngx.start(tmp)
            self.agent = Agent(tmp, self.g, self.ngx, agent_extra, nginx_bin)
            self.wait_applied(self.rev)
        except BaseException:
            self.stop()
            raise

    def add(self, service, version, iid):
        b = Backend(version)
        b.iid = iid
        self.backends.append(b)
        self.rev = self.g.register(service, iid, b.port, version)
        return b

    def wait_applied(self, rev, timeout=10):
        """Until the agent reports rev applied, without an error."""
        return wait_until("agent to report revision %d" % rev,
                          lambda: (lambda a: a if a and a["revision"] >= rev and a["last_error"] is None else None)(
                              self.g.agent(self.agent.aid)), timeout)

    def stop(self):
        for what in (self.agent, self.ngx):
            try:
                if what:
                    what.stop()
            except Fail as e:
                print("stop: %s" % e)
        for b in self.backends:
            b.stop()
        if self.g.alive():
            self.g.stop()


def versions_seen(ngx, n=6):
    out = set()
    for _ in range(n):
        r = ngx.routed()
        out.add(r and r["version"])
    return out


def ports_seen(ngx, n=12):
    out = set()
    for _ in range(n):
        r = ngx.routed()
        out.add(r and r["port"])
    return out


# ---------------------------------------------------------------- tests

@test
def t_policy_put_without_reload(tmp):
    """A policy PUT reaches Nginx with no manual step and no reload: the same
    worker keeps serving, and gray_status shows the new policy revision."""
    s = Stack(tmp)
    try:
        ngx, g = s.ngx, s.g
        check(versions_seen(ngx) == {"v1"}, versions_seen(ngx))
        st = ngx.status()
        check(st["policy_revision"] == s.rev and st["upstreams_revision"] == s.rev, (st, s.rev))
        worker, reloads = ngx.worker_pid(), ngx.reloads()
        rev = g.put_policy("order", "v2")
        t0 = time.time()
        wait_until("Nginx to route to v2", lambda: ngx.routed() and ngx.routed()["version"] == "v2", 5)
        took = time.time() - t0
        check(versions_seen(ngx) == {"v2"}, versions_seen(ngx))
        check(ngx.worker_pid() == worker, "the worker changed: a policy change must not reload")
        check(ngx.reloads() == reloads, "Nginx was reloaded for a policy change")
        a = s.wait_applied(rev)
        check(a["policy_revision"] == rev and a["upstreams_revision"] == s.rev and a["nginx_pid"] == s.ngx.p.proc.pid,
              a)
        check(ngx.status()["policy_revision"] == rev, ngx.status())
        doc = json.loads(ngx.file("gray-policies.json"))
        check(doc["revision"] == rev and doc["policies"][0]["default"] == "v2", doc)
        # A rule and its tag: the module evaluates the file the agent wrote,
        # and the tag reaches the backend in X-Gray-Tag; still no reload.
        rev = g.put_policy("order", "v1", [{"name": "testers", "route": "v2", "tag": "beta",
                                            "when": {"attr": "header:x-gray", "op": "eq", "value": "1"}}])
        wait_until("the rule to route and tag", lambda: (ngx.routed(headers={"X-Gray": "1"}) or {}).get("tag") == "beta",
                   5)
        check(ngx.routed(headers={"X-Gray": "1"}) == {"version": "v2", "port": s.backends[1].port, "tag": "beta"},
              ngx.routed(headers={"X-Gray": "1"}))
        check(versions_seen(ngx) == {"v1"}, versions_seen(ngx))
        check(ngx.worker_pid() == worker and ngx.reloads() == reloads, "Nginx was reloaded for a policy change")
        s.wait_applied(rev)
        print("     policy PUT -> Nginx serving it: %.0f ms" % (took * 1000))
    finally:
        s.stop()


@test
def t_registry_changes_reload_upstreams(tmp):
    """An instance gone or added changes the upstream block: the agent
    reloads (a new worker) and the answers follow. Reloads go through
    --reload-cmd here (`nginx -s reload`, no shell); the other tests use
    SIGHUP."""
    prefix = os.path.join(tmp, "nginx")
    s = Stack(tmp, v1=2, agent_extra=["--reload-cmd", "%s -p %s -c %s -s reload" % (
        agent_nginx(tmp), prefix, os.path.join(prefix, "nginx.conf"))])
    try:
        ngx, g = s.ngx, s.g
        a, b = [x for x in s.backends if x.version == "v1"]
        check(ports_seen(ngx) == {a.port, b.port}, (ports_seen(ngx), a.port, b.port))
        worker = ngx.worker_pid()
        rev = g.deregister("order", b.iid)
        s.wait_applied(rev)
        check(ports_seen(ngx) == {a.port}, ports_seen(ngx))
        check(ngx.worker_pid() != worker, "no reload after an upstream change")
        check(ngx.status()["upstreams_revision"] == rev, ngx.status())
        up = ngx.file("gray-upstreams.conf")
        check(up.startswith("gray_upstreams_revision %d;\n" % rev), up)
        check("127.0.0.1:%d;" % b.port not in up and "127.0.0.1:%d;" % a.port in up, up)
        worker = ngx.worker_pid()
        c = s.add("order", "v1", "v1-new")
        s.wait_applied(s.rev)
        check(ports_seen(ngx) == {a.port, c.port}, ports_seen(ngx))
        check(ngx.worker_pid() != worker, "no reload after an instance was added")
        # v2's last instance gone: v2 has no upstream block left.
        v2 = [x for x in s.backends if x.version == "v2"][0]
        rev = g.deregister("order", v2.iid)
        s.wait_applied(rev)
        check("upstream order.v2 " not in ngx.file("gray-upstreams.conf"), ngx.file("gray-upstreams.conf"))
        # The default's last instance gone: a placeholder that answers 502
        # at once (never a DNS lookup of "order.v1").
        g.deregister("order", a.iid)
        rev = g.deregister("order", c.iid)
        s.wait_applied(rev)
        up = ngx.file("gray-upstreams.conf")
        check("upstream order.v1 {\n    server 127.0.0.1:1 down;\n}" in up, up)
        st, body = http_get(ngx.port)
        check(st == 502, ("no live instance: want 502", st, body[:300]))
    finally:
        s.stop()


@test
def t_invalid_config_never_replaces_running(tmp):
    """nginx -t fails (a wrapper makes it fail while a flag file exists): the
    running config and the live files stay, Nginx keeps serving, and grayd's
    GET /v1/agents shows the error; the next try after the fault is fixed
    applies."""
    flag = os.path.join(tmp, "fail-nginx-t")
    wrapper = os.path.join(tmp, "nginx-wrapper")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n"
                "for a in \"$@\"; do\n"
                "  if [ \"$a\" = -t ] && [ -e '%s' ]; then\n"
                "    echo 'nginx: [emerg] injected failure of the test in %s' >&2; exit 1\n"
                "  fi\n"
                "done\n"
                "exec '%s' \"$@\"\n" % (flag, "gray-upstreams.conf", agent_nginx(tmp)))
    os.chmod(wrapper, 0o755)
    s = Stack(tmp, nginx_bin=wrapper)
    try:
        ngx, g = s.ngx, s.g
        good_up, good_pol = ngx.file("gray-upstreams.conf"), ngx.file("gray-policies.json")
        worker, reloads = ngx.worker_pid(), ngx.reloads()
        open(flag, "w").close()
        b = s.add("order", "v1", "v1-extra")
        bad_rev = s.rev
        a = wait_until("the agent to report the failure",
                       lambda: (lambda x: x if x and x["last_error"] else None)(g.agent("edge-1")))
        check("injected failure" in a["last_error"] and a["error_revision"] == bad_rev and a["revision"] < bad_rev, a)
        rev_pol = g.put_policy("order", "v2")
        a = wait_until("the failed policy change", lambda: (lambda x: x if x and x["error_revision"] == rev_pol else None)(
            g.agent("edge-1")))
        check(a["revision"] < bad_rev, a)
        check(ngx.file("gray-upstreams.conf") == good_up and ngx.file("gray-policies.json") == good_pol,
              "a file that failed nginx -t was swapped in")
        check(not os.path.exists(ngx.conf + ".gray-agent-test"), "the test copy of the config was left behind")
        check(ngx.worker_pid() == worker and ngx.reloads() == reloads, "Nginx was reloaded")
        check(versions_seen(ngx) == {"v1"}, "Nginx does not serve the last good state")
        check(b.port not in ports_seen(ngx), "the refused instance is served")
        st, agents = g.req("GET", "/v1/agents")
        check(st == 200 and agents["agents"][0]["id"] == "edge-1" and agents["agents"][0]["last_error"], agents)
        # Fixed: the retry (backoff 2 s, then 4 s, or SIGHUP for at once) applies the latest state.
        os.unlink(flag)
        s.agent.proc.send_signal(signal.SIGHUP)
        s.wait_applied(rev_pol)
        check(versions_seen(ngx) == {"v2"}, versions_seen(ngx))
        up = ngx.file("gray-upstreams.conf")
        check("127.0.0.1:%d;" % b.port in up, up)
    finally:
        s.stop()


INJECT = [";", "{", "}", "\"", "'", "\n", "$", "\\", " ", "\t", "#"]
MARK = "gray_evil_directive"


@test
def t_injection_catalogue(tmp):
    """Registry and policy values with directive syntax are refused at grayd
    or rendered inert: nginx -T shows no foreign directive."""
    s = Stack(tmp)
    try:
        ngx, g = s.ngx, s.g
        payloads = [c + " %s on; " % MARK for c in INJECT] + ["a\u0000b", "x" * 65536, "}\nserver { listen 1; }"]
        refused = accepted = 0
        port = s.backends[0].port
        for p in payloads:
            for field in ("address", "version"):
                body = {"address": "127.0.0.1", "port": port, "version": "v1", "ttl_s": 600}
                body[field] = p
                st, ans = g.req("PUT", "/v1/services/order/instances/inj", body)
                check(st in (400, 413), ("%s %r accepted" % (field, p[:40]), st, ans))
                refused += 1
            # port as text / out of range
            for bad_port in ["80; %s" % MARK, 0, 70000, 80.5, "80"]:
                st, ans = g.req("PUT", "/v1/services/order/instances/inj",
                                {"address": "127.0.0.1", "port": bad_port, "version": "v1"})
                check(st == 400, ("port %r accepted" % (bad_port,), st, ans))
            # id and service in the URL
            from urllib.parse import quote
            q = quote(p, safe="")
            for path in ("/v1/services/order/instances/" + q, "/v1/services/%s/instances/i1" % q):
                st, ans = g.req("PUT", path, {"address": "127.0.0.1", "port": port, "version": "v1"})
                check(st in (400, 404, 413, 431), ("URL %r accepted" % p[:40], st, ans))
                refused += 1
            # metadata is free text: accepted, and never rendered.
            st, ans = g.req("PUT", "/v1/services/order/instances/meta-%d" % accepted,
                            {"address": "127.0.0.1", "port": port, "version": "v1", "ttl_s": 600,
                             "metadata": {"note": p[:4000]}})
            if st == 200:
                accepted += 1
            # policy values: names refused, rule values accepted (they only
            # ever reach the JSON policy file).
            for pol in ({"service": "order", "default": p, "rules": []},
                        {"service": p, "default": "v1"},
                        {"service": "order", "default": "v1", "rules": [{"name": p, "route": "v2"}]},
                        {"service": "order", "default": "v1", "rules": [{"name": "r", "route": p}]},
                        {"service": "order", "default": "v1", "rules": [{"name": "r", "route": "v2", "tag": p}]}):
                st, ans = g.req("PUT", "/v1/policies/order", pol)
                check(st in (400, 413), ("policy name field %r accepted" % p[:40], st, ans))
                refused += 1
            st, ans = g.req("PUT", "/v1/policies/" + q, {"service": p, "default": "v1"})
            check(st in (400, 404, 413, 431), ("policy URL %r accepted" % p[:40], st, ans))
            st, ans = g.req("PUT", "/v1/services/order/instances/metakey-%d" % accepted,
                            {"address": "127.0.0.1", "port": port, "version": "v1", "ttl_s": 600,
                             "metadata": {p[:1000]: "x"}})
            accepted += st == 200
            st, ans = g.req("PUT", "/v1/policies/order",
                            {"service": "order", "default": "v1",
                             "rules": [{"name": "r", "route": "v2", "tag": "t",
                                        "when": {"attr": "header:x-inject", "op": "eq", "value": p[:1000]}}]})
            check(st in (200, 400), (st, ans))
        rev = g.put_policy("order", "v1", [{"name": "r", "route": "v2",
                                            "when": {"attr": "header:x-inject", "op": "eq",
                                                     "value": "; %s on; } server { listen 9; " % MARK}}])
        s.wait_applied(max(rev, s.rev))
        check(accepted > 0, "no metadata was accepted: the inert path went untested")
        dump = ngx.dump()
        check(MARK not in dump, "a foreign directive in nginx -T:\n" + dump[-3000:])
        # The upstream file holds only what the agent writes.
        up = ngx.file("gray-upstreams.conf")
        allowed = re.compile(r"^(gray_upstreams_revision \d+;|#[ -~]*|upstream [A-Za-z0-9._-]+ \{|"
                             r"    server (\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d+( down)?;|"
                             r"    keepalive \d+;|\})$")
        for line in up.splitlines():
            check(allowed.match(line), "unexpected line in gray-upstreams.conf: %r" % line)
        pol = json.loads(ngx.file("gray-policies.json"))
        check(MARK in json.dumps(pol), "the policy value is in the JSON file, as data")
        check(versions_seen(ngx) == {"v1"}, versions_seen(ngx))
        print("     %d registry and policy values refused, %d metadata values accepted and inert" % (refused, accepted))
    finally:
        s.stop()


@test
def t_grayd_down_fail_static_and_cache(tmp):
    """grayd down: Nginx keeps serving the last policy; an agent restarted
    while grayd is down renders from its cache file (here with another
    --keepalive, so the render differs and must be applied)."""
    s = Stack(tmp)
    try:
        ngx, g = s.ngx, s.g
        rev = g.put_policy("order", "v2")
        s.wait_applied(rev)
        check(versions_seen(ngx) == {"v2"}, versions_seen(ngx))
        gport, token = g.port, g.agent_token
        g.stop()
        time.sleep(1.5)  # the agent notices, Nginx is left alone
        check(versions_seen(ngx, 10) == {"v2"}, "Nginx stopped serving the last policy with grayd down")
        check(s.agent.alive(), "the agent died with grayd down")
        s.agent.stop()
        time.sleep(0.5)  # the cache file was flushed at stop
        worker = ngx.worker_pid()
        s.agent = Agent(tmp, g, ngx, ["--keepalive", "7"])
        # grayd is down, so the agent's own log says when it has applied.
        wait_until("a render from the cache", lambda: "upstreams (reloaded)" in s.agent.text(), 10)
        check("keepalive 7;" in ngx.file("gray-upstreams.conf"), ngx.file("gray-upstreams.conf"))
        check(ngx.status()["upstreams_revision"] >= rev, ngx.status())
        check("from the cache file" in s.agent.text(), s.agent.text()[-1500:])
        check(ngx.worker_pid() != worker, "the new upstream file was not loaded")
        check(versions_seen(ngx, 10) == {"v2"}, "not serving the cached policy")
        # grayd back on the same port: the agent reports what it applied.
        s.g = Grayd(tmp, port=gport, agent_token=token)
        a = wait_until("the agent to report to the restarted grayd", lambda: s.g.agent("edge-1"), 15)
        check(a["revision"] >= rev and a["last_error"] is None, a)
    finally:
        s.stop()


@test
def t_burst_coalesces(tmp):
    """Ten registry changes in ~200 ms: at most two reloads, and the final
    state wins."""
    s = Stack(tmp)
    try:
        ngx, g = s.ngx, s.g
        time.sleep(1.1)  # past the reload interval of the start-up apply
        before = ngx.reloads()
        backs = [Backend("v1") for _ in range(10)]
        s.backends += backs
        t0 = time.time()
        for i, b in enumerate(backs):
            s.rev = g.register("order", "burst-%d" % i, b.port, "v1")
            time.sleep(0.02)
        took = time.time() - t0
        s.wait_applied(s.rev, 15)
        up = ngx.file("gray-upstreams.conf")
        for b in backs:
            check("127.0.0.1:%d;" % b.port in up, "the final state lost a server: " + up)
        check(ngx.status()["upstreams_revision"] == s.rev, ngx.status())
        time.sleep(1.2)  # nothing more is coming
        n = ngx.reloads() - before
        check(1 <= n <= 2, "%d reloads for a burst of 10 changes in %.0f ms" % (n, took * 1000))
        print("     10 changes in %.0f ms -> %d reloads" % (took * 1000, n))
    finally:
        s.stop()


@test
def t_agent_flags_and_refusals(tmp):
    """Start-up checks: --help, a main config that does not name the files,
    bad flags."""
    p = subprocess.run([AGENT, "--help"], capture_output=True, text=True, timeout=10)
    check(p.returncode == 0 and "--nginx-dir" in p.stdout and "--min-reload-interval" in p.stdout, p.stdout)
    ngx = Nginx(tmp)
    other = os.path.join(tmp, "other.conf")
    with open(other, "w") as f:
        f.write("events {}\nhttp { include /somewhere/else.conf; }\n")
    p = subprocess.run([AGENT, "--server", "http://127.0.0.1:1", "--nginx-dir", ngx.dir, "--nginx-conf", other],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 2 and "must name the agent's files" in p.stderr, p.stderr)
    for bad in (["--min-reload-interval", "soon"], ["--keepalive", "-1"], ["--id", "a;b"], ["--bogus"]):
        p = subprocess.run([AGENT, "--server", "http://127.0.0.1:1", "--nginx-dir", ngx.dir,
                            "--nginx-conf", ngx.conf] + bad, capture_output=True, text=True, timeout=10)
        check(p.returncode == 64, (bad, p.returncode, p.stderr))


def main():
    if not os.path.exists(MODULE):
        print("SKIP: the Nginx module %s is not built (make builds it once nginx/ exists); "
              "the agent's Nginx tests need it" % MODULE)
        return SKIP
    if not (os.path.isabs(NGINX) and os.access(NGINX, os.X_OK)):
        print("SKIP: no nginx binary at %s" % NGINX)
        return SKIP
    return testkit.run(TESTS, ONLY, "gray-agent-")


if __name__ == "__main__":
    sys.exit(main())
