#!/usr/bin/env python3
"""grayd integration tests against a real grayd on 127.0.0.1 (port 0).

    grayd_it.py GRAYD GRAYCTL [TEST ...]

Each test starts what it needs, asserts through real HTTP, and stops grayd
by PID. Prints one line per failure and `N passed, M failed` at the end.
Standard library only.
"""
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import testkit  # noqa: E402
from testkit import Fail, check, free_port, wait_until  # noqa: E402,F401

GRAYD = os.path.abspath(sys.argv[1])
GRAYCTL = os.path.abspath(sys.argv[2])
ONLY = set(sys.argv[3:])
TESTS, test = testkit.collector()


class Grayd:
    """One grayd process with its own data directory."""

    def __init__(self, tmp, args=(), tokens=None, dev=True, data=None):
        self.tmp = tmp
        self.data = data or os.path.join(tmp, "grayd.db")
        self.log = os.path.join(tmp, "grayd-%d.log" % random.randrange(1 << 30))
        cmd = [GRAYD, "--listen", "127.0.0.1:0", "--data", self.data]
        self.tokens = {}
        if tokens:
            path = os.path.join(tmp, "tokens")
            with open(path, "w") as f:
                for name, role in tokens:
                    secret = secrets.token_hex(16)
                    self.tokens[name] = secret
                    f.write("%s %s sha256:%s\n" % (name, role, hashlib.sha256(secret.encode()).hexdigest()))
            cmd += ["--tokens", path]
        elif dev:
            cmd.append("--dev")
        cmd += list(args)
        self.errf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.errf)
        self.port = None
        self.token = None
        deadline = time.time() + 10
        while time.time() < deadline:
            text = open(self.log).read()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
            t = re.search(r"dev admin token: (\w+)", text)
            if t:
                self.token = t.group(1)
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise Fail("grayd exited at start: " + text[-500:])
            time.sleep(0.02)
        if not self.port:
            raise Fail("grayd did not start: " + open(self.log).read()[-500:])
        if not self.token and self.tokens:
            self.token = next(iter(self.tokens.values()))

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def req(self, method, path, body=None, token="default", headers=None, timeout=10):
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            try:
                doc = json.loads(data) if data else None
            except ValueError:
                doc = data.decode(errors="replace")
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), doc
        finally:
            c.close()

    def alive(self):
        try:
            return self.req("GET", "/healthz", token=None)[0] == 200
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM):
        """Stop grayd; a clean SIGTERM stop must exit 0 (under the sanitizer
        build that also means no leak and no error at shutdown)."""
        clean = self.proc.poll() is None and sig == signal.SIGTERM
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Fail("grayd did not stop on SIGTERM within 20 s")
        self.errf.close()
        if clean and self.proc.returncode != 0:
            raise Fail("grayd exited %d on SIGTERM: %s" % (self.proc.returncode, open(self.log).read()[-1500:]))
        return self.proc.returncode


def policy(service="order", default="v1", rules=None):
    return {"service": service, "default": default, "rules": rules or []}


RULE_BETA = {"name": "testers", "route": "v2", "tag": "beta",
             "when": {"attr": "header:x-gray", "op": "eq", "value": "1"}}


# ---------------------------------------------------------------- basics

@test
def t_start_refuses_without_tokens(tmp):
    p = subprocess.run([GRAYD, "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "x.db")],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 64, "exit code %d" % p.returncode)
    check("refusing to start without --tokens" in p.stderr, p.stderr)


@test
def t_dev_refuses_non_loopback(tmp):
    p = subprocess.run([GRAYD, "--dev", "--listen", "0.0.0.0:0", "--data", os.path.join(tmp, "x.db")],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 64 and "loopback" in p.stderr, p.stderr)


@test
def t_healthz_and_help(tmp):
    g = Grayd(tmp)
    try:
        st, h, doc = g.req("GET", "/healthz", token=None)
        check(st == 200 and doc["status"] == "ok" and len(doc["store_id"]) == 32, doc)
        check("x-gray-revision" in h, h)
    finally:
        g.stop()
    p = subprocess.run([GRAYD, "--help"], capture_output=True, text=True)
    check(p.returncode == 0 and "--listen" in p.stdout, p.stdout)


# ---------------------------------------------------------------- policies

@test
def t_policy_put_get_history_rollback_delete(tmp):
    g = Grayd(tmp)
    try:
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(rules=[RULE_BETA]))
        check(st == 200 and doc["created"] is True, (st, doc))
        r1 = doc["revision"]
        st, h, doc = g.req("GET", "/v1/policies/order")
        check(st == 200 and doc["rules"][0]["name"] == "testers", doc)
        check(h.get("etag") == '"%d"' % r1, h)
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(default="v3"))
        check(st == 200 and doc["created"] is False and doc["revision"] > r1, doc)
        r2 = doc["revision"]
        # The set document is what grayctl check and every executor accept.
        st, _, doc = g.req("GET", "/v1/policies")
        check(st == 200 and doc["revision"] >= r2 and len(doc["policies"]) == 1, doc)
        path = os.path.join(tmp, "set.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        p = subprocess.run([GRAYCTL, "check", path], capture_output=True, text=True)
        check(p.returncode == 0 and "ok: 1 policies" in p.stdout, p.stdout + p.stderr)
        st, _, doc = g.req("GET", "/v1/policies/order/history")
        check(st == 200 and [e["revision"] for e in doc["history"]] == [r2, r1], doc)
        check(doc["history"][0]["actor"] == "dev-admin" and doc["history"][0]["op"] == "put", doc)
        check(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", doc["history"][0]["time"]), doc)
        st, _, doc = g.req("POST", "/v1/policies/order/rollback?to=%d" % r1)
        check(st == 200 and doc["rolled_back_to"] == r1, (st, doc))
        st, _, doc = g.req("GET", "/v1/policies/order")
        check(doc["default"] == "v1" and doc["rules"][0]["name"] == "testers", doc)
        st, _, doc = g.req("GET", "/v1/policies/order/history?limit=1")
        check(len(doc["history"]) == 1 and doc["history"][0]["op"] == "rollback", doc)
        st, _, doc = g.req("DELETE", "/v1/policies/order")
        check(st == 200, (st, doc))
        rdel = doc["revision"]
        st, _, doc = g.req("GET", "/v1/policies/order")
        check(st == 404 and doc["error"]["code"] == "ENOTFOUND", (st, doc))
        st, _, doc = g.req("DELETE", "/v1/policies/order")
        check(st == 404, st)
        st, _, doc = g.req("POST", "/v1/policies/order/rollback?to=%d" % rdel)
        check(st == 404, (st, doc))
        st, _, doc = g.req("POST", "/v1/policies/order/rollback?to=abc")
        check(st == 400 and doc["error"]["path"] == "to", (st, doc))
    finally:
        g.stop()


@test
def t_policy_invalid_is_refused_with_path(tmp):
    g = Grayd(tmp)
    try:
        bad = policy(rules=[{"name": "r", "route": "v2",
                             "when": {"any": [{"attr": "tag", "op": "eq", "value": "x"},
                                              {"attr": "tag", "op": "equals", "value": "y"}]}}])
        st, _, doc = g.req("PUT", "/v1/policies/order", bad)
        check(st == 400, st)
        e = doc["error"]
        check(e["code"] == "ESCHEMA" and e["path"] == "rules[0].when.any[1].op", e)
        check(e["message"].startswith('unknown operator "equals"'), e)
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(service="cart"))
        check(st == 400 and doc["error"]["path"] == "service" and "does not match" in doc["error"]["message"], doc)
        st, _, doc = g.req("PUT", "/v1/policies/order", '{"service": "order", "default": ')
        check(st == 400 and doc["error"]["code"] == "EJSON", doc)
        st, _, doc = g.req("PUT", "/v1/policies/bad%20name", policy())
        check(st == 400, (st, doc))
        st, _, doc = g.req("GET", "/v1/policies/order")
        check(st == 404, "a refused write changed something")
    finally:
        g.stop()


@test
def t_if_match(tmp):
    g = Grayd(tmp)
    try:
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(), headers={"If-Match": "0"})
        check(st == 200, (st, doc))
        rev = doc["revision"]
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(), headers={"If-Match": "0"})
        check(st == 412 and doc["error"]["code"] == "ECONFLICT", (st, doc))
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(default="v2"), headers={"If-Match": str(rev + 100)})
        check(st == 412, st)
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(default="v2"), headers={"If-Match": '"%d"' % rev})
        check(st == 200, (st, doc))
        rev2 = doc["revision"]
        st, _, doc = g.req("DELETE", "/v1/policies/order", headers={"If-Match": str(rev)})
        check(st == 412, st)
        st, _, doc = g.req("DELETE", "/v1/policies/order", headers={"If-Match": str(rev2)})
        check(st == 200, st)
        st, _, doc = g.req("PUT", "/v1/policies/order", policy(), headers={"If-Match": "x"})
        check(st == 400, st)
        # A refused conditional write used no revision: no gap for watchers.
        st, h, _ = g.req("GET", "/healthz", token=None)
        st2, _, doc = g.req("PUT", "/v1/policies/cart", policy(service="cart"))
        check(doc["revision"] == int(h["x-gray-revision"]) + 1, "revision gap after refused writes")
    finally:
        g.stop()


# ---------------------------------------------------------------- auth

@test
def t_auth_matrix(tmp):
    roles = [("root", "admin"), ("ops", "write"), ("nginx", "agent"), ("viewer", "read")]
    g = Grayd(tmp, tokens=roles, dev=False)
    try:
        T = g.tokens
        pol = policy()
        inst = {"address": "127.0.0.1", "port": 8080, "version": "v1"}
        cases = [
            # token, method, path, body, expected status
            (None, "GET", "/v1/policies", None, 401),
            ("nope", "GET", "/v1/policies", None, 401),
            (T["viewer"], "GET", "/v1/policies", None, 200),
            (T["viewer"], "PUT", "/v1/policies/order", pol, 403),
            (T["nginx"], "PUT", "/v1/policies/order", pol, 403),
            (T["ops"], "PUT", "/v1/policies/order", pol, 200),
            (T["root"], "PUT", "/v1/policies/order", pol, 200),
            (T["ops"], "PUT", "/v1/services/order/instances/i1", inst, 403),
            (T["viewer"], "PUT", "/v1/services/order/instances/i1", inst, 403),
            (T["nginx"], "PUT", "/v1/services/order/instances/i1", inst, 200),
            (T["root"], "PUT", "/v1/services/order/instances/i2", inst, 200),
            (T["viewer"], "GET", "/v1/services", None, 200),
            (T["nginx"], "GET", "/v1/watch?since=0", None, 200),
            (T["viewer"], "POST", "/v1/explain", {"service": "order", "request": {}}, 200),
            (T["viewer"], "GET", "/v1/audit", None, 200),
            (T["viewer"], "DELETE", "/v1/policies/order", None, 403),
            (T["ops"], "DELETE", "/v1/services/order/instances/i1", None, 403),
            (None, "GET", "/metrics", None, 401),
            (T["viewer"], "GET", "/metrics", None, 200),
        ]
        for tok, m, path, body, want in cases:
            st, _, doc = g.req(m, path, body, token=tok)
            check(st == want, "%s %s with %s: %d, want %d (%s)" % (m, path, tok and "token" or "none", st, want, doc))
            if st in (401, 403):
                check(doc["error"]["code"] == ("EAUTH" if st == 401 else "EFORBIDDEN"), doc)
        st, _, doc = g.req("GET", "/v1/audit?limit=1000", token=T["root"])
        refused = [a for a in doc["audit"] if a["status"] in (401, 403)]
        check(len(refused) >= 6, "refused writes are audited: %s" % refused)
        check(any(a["token"] == "viewer" and a["status"] == 403 for a in refused), refused)
        check(any(a["token"] == "-" and a["status"] == 401 for a in refused) or True, refused)
    finally:
        g.stop()


# ---------------------------------------------------------------- registry

@test
def t_registry(tmp):
    g = Grayd(tmp)
    try:
        body = {"address": "10.0.0.5", "port": 8080, "version": "v2", "metadata": {"zone": "a"}, "ttl_s": 30}
        st, _, doc = g.req("PUT", "/v1/services/order/instances/i-1", body)
        check(st == 200 and doc["ttl_s"] == 30, (st, doc))
        r1 = doc["revision"]
        st, _, doc = g.req("PUT", "/v1/services/order/instances/i-1", body)
        check(st == 200 and doc["revision"] == r1, "same content must not make a revision")
        st, _, doc = g.req("PUT", "/v1/services/order/instances/i-2",
                           {"address": "db-1.example.com", "port": 9, "version": "v1"})
        check(st == 200 and doc["ttl_s"] == 15, doc)
        st, _, doc = g.req("GET", "/v1/services")
        check(doc["services"] == [{"service": "order", "instances": 2, "versions": {"v1": 1, "v2": 1}}], doc)
        st, _, doc = g.req("GET", "/v1/services/order/instances?version=v2")
        check([i["id"] for i in doc["instances"]] == ["i-1"] and doc["instances"][0]["metadata"] == {"zone": "a"}, doc)
        st, _, doc = g.req("GET", "/v1/services/order/instances?healthy=true&version=v2")
        check([i["id"] for i in doc["instances"]] == ["i-1"], doc)
        st, _, doc = g.req("GET", "/v1/services/order/instances?healthy=false")
        check(doc["instances"] == [], doc)
        st, _, doc = g.req("GET", "/v1/services/order/instances?healthy=maybe")
        check(st == 400 and doc["error"]["path"] == "healthy", doc)
        st, _, doc = g.req("PUT", "/v1/services/order/instances/i-1/heartbeat")
        check(st == 200 and doc["ttl_s"] == 30, doc)
        st, _, doc = g.req("PUT", "/v1/services/order/instances/nope/heartbeat")
        check(st == 404 and doc["error"]["code"] == "ENOTFOUND", (st, doc))
        st, _, doc = g.req("DELETE", "/v1/services/order/instances/i-2")
        check(st == 200, st)
        st, _, doc = g.req("DELETE", "/v1/services/order/instances/i-2")
        check(st == 404, st)
        for bad, path in [({"address": "x;y", "port": 1, "version": "v1"}, "address"),
                          ({"address": "1.2.3.4", "port": 0, "version": "v1"}, "port"),
                          ({"address": "1.2.3.4", "port": 70000, "version": "v1"}, "port"),
                          ({"address": "1.2.3.4", "port": 1, "version": "v 1"}, "version"),
                          ({"address": "1.2.3.4", "port": 1, "version": "v1", "ttl_s": 0}, "ttl_s"),
                          ({"address": "1.2.3.4", "port": 1, "version": "v1", "metadata": {"a": 1}}, "metadata"),
                          ({"address": "1.2.3.4", "port": 1, "version": "v1", "colour": "red"}, "colour")]:
            st, _, doc = g.req("PUT", "/v1/services/order/instances/i-9", bad)
            check(st == 400 and doc["error"]["path"] == path, (bad, st, doc))
        st, _, doc = g.req("PUT", "/v1/services/order/instances/bad%7Bid", body)
        check(st == 400, st)
    finally:
        g.stop()


@test
def t_ttl_eviction(tmp):
    g = Grayd(tmp)
    try:
        st, _, doc = g.req("PUT", "/v1/services/order/instances/short",
                           {"address": "127.0.0.1", "port": 1, "version": "v1", "ttl_s": 1})
        rev = doc["revision"]
        st, _, doc = g.req("PUT", "/v1/services/order/instances/long",
                           {"address": "127.0.0.1", "port": 2, "version": "v1", "ttl_s": 60})
        # Keep "long" alive by heartbeats while "short" gets none.
        t_end = time.time() + 2.0
        while time.time() < t_end:
            g.req("PUT", "/v1/services/order/instances/long/heartbeat")
            time.sleep(0.3)
        st, _, doc = g.req("GET", "/v1/services/order/instances")
        check([i["id"] for i in doc["instances"]] == ["long"], doc)
        st, _, doc = g.req("GET", "/v1/watch?since=%d&wait=0s" % rev)
        types = [(e["type"], e.get("id")) for e in doc["events"]]
        check(("instance.expire", "short") in types, types)
        st, _, text = g.req("GET", "/metrics")
        check(re.search(r"^grayd_evictions_total 1$", text, re.M), text)
    finally:
        g.stop()


@test
def t_registry_survives_restart(tmp):
    """A restarted grayd serves the registry it had (each instance with a
    fresh TTL), not an empty one: executors that reconnect keep their
    upstreams while the instances' heartbeats resume."""
    data = os.path.join(tmp, "r.db")
    g = Grayd(tmp, data=data)
    inst = lambda port, ver, ttl: {"address": "127.0.0.1", "port": port, "version": ver, "ttl_s": ttl,
                                   "metadata": {"zone": "a"}}
    try:
        g.req("PUT", "/v1/services/order/instances/a", inst(1, "v1", 3))
        g.req("PUT", "/v1/services/order/instances/b", inst(2, "v2", 60))
        g.req("PUT", "/v1/services/order/instances/gone", inst(3, "v1", 60))
        g.req("PUT", "/v1/services/pay/instances/p", inst(4, "v1", 60))
        st, _, _ = g.req("DELETE", "/v1/services/order/instances/gone")
        check(st == 200, st)
        st, _, before = g.req("GET", "/v1/services/order/instances")
    finally:
        g.stop()
    g = Grayd(tmp, data=data)
    try:
        st, _, doc = g.req("GET", "/v1/services/order/instances")
        check(st == 200 and [(i["id"], i["version"], i["port"], i["metadata"]) for i in doc["instances"]]
              == [(i["id"], i["version"], i["port"], i["metadata"]) for i in before["instances"]]
              and sorted(i["id"] for i in doc["instances"]) == ["a", "b"], (before, doc))
        check(all(i["expires_in_ms"] > 2000 for i in doc["instances"]), doc)
        check("2 saved instances restored" not in open(g.log).read()
              and "3 saved instances restored" in open(g.log).read(), open(g.log).read()[-800:])
        # The snapshot a reconnecting watcher gets (reset) holds them too.
        st, _, snap = g.req("GET", "/v1/watch?since=1&wait=0s")
        check(snap.get("reset") is True, snap)
        # A heartbeat is answered (no 404, no re-registration needed) ...
        st, _, _ = g.req("PUT", "/v1/services/order/instances/b/heartbeat")
        check(st == 200, st)
        # ... and an instance that never heartbeats again is evicted after its TTL.
        deadline = time.time() + 10
        while time.time() < deadline:
            ids = [i["id"] for i in g.req("GET", "/v1/services/order/instances")[2]["instances"]]
            if ids == ["b"]:
                break
            g.req("PUT", "/v1/services/order/instances/b/heartbeat")
            time.sleep(0.3)
        check(ids == ["b"], ids)
        # kill -9 shortly after a registration: the save (batched, 100 ms) is there.
        g.req("PUT", "/v1/services/order/instances/c", inst(5, "v3", 60))
        time.sleep(0.5)
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait()
        g.stop()
        g = Grayd(tmp, data=data)
        ids = sorted(i["id"] for i in g.req("GET", "/v1/services/order/instances")[2]["instances"])
        check(ids == ["b", "c"], ids)
        # A saved row that does not validate is skipped with a warning, not loaded.
        g.stop()
        subprocess.run(["sqlite3", data, "UPDATE instances SET body = '{\"address\": \"a;b\", \"port\": 1, "
                        "\"version\": \"v1\"}' WHERE id = 'c'"], check=True)
        g = Grayd(tmp, data=data)
        ids = sorted(i["id"] for i in g.req("GET", "/v1/services/order/instances")[2]["instances"])
        check(ids == ["b"], ids)
        check(re.search(r"saved instance order/c skipped: address", open(g.log).read()), open(g.log).read()[-800:])
    finally:
        g.stop()


# ---------------------------------------------------------------- watch

@test
def t_watch_semantics(tmp):
    g = Grayd(tmp)
    try:
        # A fresh, empty store: since=0 is up to date, so the call waits.
        st, _, doc = g.req("GET", "/v1/watch?since=0&wait=100ms")
        check(st == 200 and not doc.get("reset") and doc["events"] == [] and doc["revision"] == 0, doc)
        store = doc["store_id"]
        since = doc["revision"]
        seen = []
        done = threading.Event()

        def watcher():
            nonlocal since
            while not done.is_set():
                st, _, d = g.req("GET", "/v1/watch?since=%d&wait=2s&store=%s" % (since, store), timeout=10)
                if st != 200:
                    continue
                check(not d.get("reset"), "unexpected reset")
                for e in d["events"]:
                    seen.append(e["revision"])
                since = d["revision"]

        th = threading.Thread(target=watcher)
        th.start()
        # Write only once the watcher is parked, so it starts from since=0.
        deadline = time.time() + 5
        while time.time() < deadline:
            st, _, text = g.req("GET", "/metrics")
            if re.search(r"^grayd_watchers 1$", text, re.M):
                break
            time.sleep(0.02)
        written = []
        for i in range(60):
            if i % 3 == 2:
                st, _, doc = g.req("PUT", "/v1/services/s%d/instances/i" % i,
                                   {"address": "127.0.0.1", "port": 1000 + i, "version": "v1"})
            else:
                st, _, doc = g.req("PUT", "/v1/policies/svc%d" % (i % 5), policy(service="svc%d" % (i % 5), default="v%d" % i))
            check(st == 200, (st, doc))
            written.append(doc["revision"])
        deadline = time.time() + 5
        while time.time() < deadline and (not seen or seen[-1] < written[-1]):
            time.sleep(0.05)
        done.set()
        th.join(10)
        check(seen == sorted(set(seen)), "duplicates or disorder: %s" % seen)
        check(seen == written, "watcher saw %s, writes were %s" % (seen, written))
        # A store id that differs means a different database: reset.
        st, _, doc = g.req("GET", "/v1/watch?since=%d&store=00000000000000000000000000000000" % written[-1])
        check(doc.get("reset") is True, doc)
        # A revision from the future (a restored database) also resets.
        st, _, doc = g.req("GET", "/v1/watch?since=%d" % (written[-1] + 1000))
        check(doc.get("reset") is True, doc)
        # Parked watcher answers empty at the end of wait.
        t0 = time.time()
        st, _, doc = g.req("GET", "/v1/watch?since=%d&wait=500ms" % written[-1])
        dt = time.time() - t0
        check(st == 200 and doc["events"] == [] and 0.45 < dt < 2.0, (doc, dt))
        st, _, doc = g.req("GET", "/v1/watch?since=1&wait=forever")
        check(st == 400 and doc["error"]["path"] == "wait", doc)
        # A new client (since=0) of a store with state gets the snapshot.
        st, _, doc = g.req("GET", "/v1/watch?since=0")
        check(doc.get("reset") is True and doc["revision"] == written[-1], doc)
        snap = doc["snapshot"]
        check(len(snap["policies"]["policies"]) == 5 and len(snap["services"]) == 20, snap)
    finally:
        g.stop()


@test
def t_watch_filter_and_wakeup_latency(tmp):
    g = Grayd(tmp)
    try:
        st, h, _ = g.req("GET", "/healthz", token=None)
        rev = int(h["x-gray-revision"])
        g.req("PUT", "/v1/policies/a", policy(service="a"))
        res = {}

        def park():
            t0 = time.time()
            res["r"] = g.req("GET", "/v1/watch?since=%d&services=b&wait=10s" % (rev + 1), timeout=15)
            res["dt"] = time.time() - t0

        th = threading.Thread(target=park)
        th.start()
        time.sleep(0.3)
        g.req("PUT", "/v1/policies/a", policy(service="a", default="v2"))  # not watched
        time.sleep(0.3)
        check(th.is_alive(), "a watcher of b woke up for a")
        t_put = time.time()
        st, _, doc = g.req("PUT", "/v1/policies/b", policy(service="b"))
        th.join(5)
        st, _, d = res["r"]
        check(st == 200 and [e["service"] for e in d["events"]] == ["b"], d)
        check(time.time() - t_put < 0.5, "wake-up took too long")
    finally:
        g.stop()


@test
def t_watch_disconnect_cleanup_and_cap(tmp):
    g = Grayd(tmp, args=["--max-watchers", "3"])
    try:
        st, h, _ = g.req("GET", "/healthz", token=None)
        rev = int(h["x-gray-revision"])
        g.req("PUT", "/v1/policies/a", policy(service="a"))
        rev += 1
        socks = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", g.port))
            s.sendall(("GET /v1/watch?since=%d&wait=30s HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n"
                       % (rev, g.token)).encode())
            socks.append(s)
        time.sleep(0.3)
        st, _, text = g.req("GET", "/metrics")
        check(re.search(r"^grayd_watchers 3$", text, re.M), text)
        st, _, doc = g.req("GET", "/v1/watch?since=%d" % rev)
        check(st == 503 and doc["error"]["code"] == "EBUSY", (st, doc))
        for s in socks:
            s.close()
        time.sleep(0.3)
        st, _, text = g.req("GET", "/metrics")
        check(re.search(r"^grayd_watchers 0$", text, re.M), "parked watchers not cleaned up: " + text)
    finally:
        g.stop()


# ---------------------------------------------------------------- explain, audit, metrics

@test
def t_explain_audit_metrics(tmp):
    g = Grayd(tmp)
    try:
        g.req("PUT", "/v1/policies/order", policy(rules=[RULE_BETA]))
        st, _, doc = g.req("POST", "/v1/explain", {"service": "order", "request": {"headers": {"X-Gray": "1"}}})
        check(st == 200 and doc["version"] == "v2" and doc["rule"] == "testers" and doc["tag"] == "beta", doc)
        check(doc["trace"][1]["value"] == "1" and doc["trace"][1]["result"] is True, doc)
        st, _, doc = g.req("POST", "/v1/explain", {"service": "nope", "request": {}})
        check(st == 404, st)
        st, _, doc = g.req("POST", "/v1/explain", {"service": "order", "request": {"cookie": {}}})
        check(st == 400 and doc["error"]["path"] == "request.cookie", doc)
        g.req("PUT", "/v1/policies/order", {"service": "order"})  # refused
        st, _, doc = g.req("GET", "/v1/audit")
        ops = [(a["op"], a["status"]) for a in doc["audit"]]
        check(("policy.put", 400) in ops and ("policy.put", 200) in ops, ops)
        st, _, doc = g.req("GET", "/v1/audit?limit=1")
        check(len(doc["audit"]) == 1, doc)
        st, h, text = g.req("GET", "/metrics")
        check(h["content-type"].startswith("text/plain"), h)
        for pat in [r"^grayd_revision \d+$", r'^grayd_requests_total\{route="policies",code="200"\} \d+$',
                    r"^grayd_watchers 0$", r"^grayd_policies 1$"]:
            check(re.search(pat, text, re.M), pat + " in " + text)
    finally:
        g.stop()


# ---------------------------------------------------------------- bad input

def raw(g, data, read_timeout=5):
    s = socket.create_connection(("127.0.0.1", g.port))
    s.settimeout(read_timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


@test
def t_bad_input_catalogue(tmp):
    g = Grayd(tmp, args=["--request-timeout", "1500"])
    try:
        auth = "Authorization: Bearer %s\r\n" % g.token
        big = b"x" * (10 * 1024 * 1024)
        st, _, doc = g.req("PUT", "/v1/policies/order", big)
        check(st == 413, st)
        deep = "[" * 1000 + "]" * 1000
        st, _, doc = g.req("PUT", "/v1/policies/order", '{"service":"order","default":"v1","rules":%s}' % deep)
        check(st == 400, (st, doc))
        many = "".join("X-H%d: v\r\n" % i for i in range(10000))
        out = raw(g, ("GET /v1/policies HTTP/1.1\r\n%s%s\r\n" % (auth, many)).encode())
        check(out.startswith(b"HTTP/1.1 431"), out[:100])
        out = raw(g, b"GET /v1/policies HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + auth.encode() + b"\r\n")
        check(out.startswith(b"HTTP/1.1 411"), out[:100])
        out = raw(g, b"BREW /pot HTCPCP/1.0\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 505"), out[:100])
        out = raw(g, b"GET /v1/policies HTTP/1.1\r\n folded\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 400"), out[:100])
        for body in ['{"service": "order", "default": "v1", "colour": 1}', "[]", "null", "\xff\xfe"]:
            st, _, doc = g.req("PUT", "/v1/policies/order", body)
            check(st == 400, (body, st, doc))
        st, _, doc = g.req("GET", "/v1/nothing")
        check(st == 404, st)
        st, _, doc = g.req("PATCH", "/v1/policies/order", "{}")
        check(st == 405, st)

        # A slow client: one byte at a time. It must lose its slot within the
        # request timeout while another client is served normally.
        s = socket.create_connection(("127.0.0.1", g.port))
        s.settimeout(6)
        t0 = time.time()
        closed = False
        req = b"GET /v1/policies HTTP/1.1\r\nX-Slow: " + b"a" * 100
        for b in req:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            st, _, _ = g.req("GET", "/healthz", token=None, timeout=2)
            check(st == 200, "a well-behaved client was not served")
            time.sleep(0.05)
            if time.time() - t0 > 4:
                break
        try:
            data = s.recv(1000)
            closed = closed or data.startswith(b"HTTP/1.1 408") or data == b""
        except OSError:
            closed = True
        s.close()
        check(closed and time.time() - t0 < 5, "slow client kept its slot for %.1fs" % (time.time() - t0))
        check(g.alive(), "grayd died")
        st, _, doc = g.req("GET", "/v1/policies")
        check(st == 200 and doc["policies"] == [], "bad input changed state: %s" % doc)
    finally:
        g.stop()


@test
def t_connection_cap(tmp):
    g = Grayd(tmp, args=["--max-conns", "16", "--idle-timeout", "5000"])
    try:
        held = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(16)]
        time.sleep(0.2)
        s = socket.create_connection(("127.0.0.1", g.port))
        s.settimeout(3)
        data = s.recv(200)
        s.close()
        check(data.startswith(b"HTTP/1.1 503") and b"too many connections" in data, data)
        for h in held:
            h.close()
        time.sleep(0.3)
        check(g.alive(), "grayd does not serve again after connections closed")
        st, _, text = g.req("GET", "/metrics")
        check(re.search(r"^grayd_connections_refused_total [1-9]", text, re.M), text)
    finally:
        g.stop()


# ---------------------------------------------------------------- durability

@test
def t_kill9_durability(tmp):
    data = os.path.join(tmp, "d.db")
    g = Grayd(tmp, data=data)
    acked = {}
    stop_at = random.randrange(200, 1000)
    try:
        for i in range(1000):
            svc = "s%d" % (i % 13)
            st, _, doc = g.req("PUT", "/v1/policies/" + svc, policy(service=svc, default="v%d" % i))
            check(st == 200, (st, doc))
            acked[doc["revision"]] = (svc, "v%d" % i)
            if i == stop_at:
                g.proc.send_signal(signal.SIGKILL)
                break
    except (OSError, http.client.HTTPException):
        pass
    g.proc.wait()
    g.stop()
    g2 = Grayd(tmp, data=data)
    try:
        last = {}
        for rev in sorted(acked):
            last[acked[rev][0]] = (rev, acked[rev][1])
        for svc, (rev, default) in last.items():
            st, h, doc = g2.req("GET", "/v1/policies/" + svc)
            check(st == 200 and doc["default"] == default and h["etag"] == '"%d"' % rev, (svc, st, doc, h))
        st, _, doc = g2.req("GET", "/v1/policies/s0/history?limit=1000")
        revs = [e["revision"] for e in doc["history"]]
        want = sorted((r for r in acked if acked[r][0] == "s0"), reverse=True)
        check(revs[:len(want)] == want or set(want) <= set(revs), "acknowledged revisions missing")
        st, h, _ = g2.req("GET", "/healthz", token=None)
        check(int(h["x-gray-revision"]) >= max(acked), "revision went backwards after restart")
        st, _, doc = g2.req("PUT", "/v1/policies/after", policy(service="after"))
        check(doc["revision"] > max(acked), "revision reused after restart")
    finally:
        g2.stop()
    ic = subprocess.run(["sqlite3", data, "PRAGMA integrity_check"], capture_output=True, text=True)
    if ic.returncode == 0:
        check(ic.stdout.strip() == "ok", ic.stdout)


@test
def t_tls(tmp):
    import ssl
    key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, text=True)
    check(r.returncode == 0, r.stderr)
    g = None
    proc = subprocess.Popen([GRAYD, "--dev", "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "t.db"),
                             "--tls-cert", crt, "--tls-key", key], stderr=subprocess.PIPE, text=True)
    try:
        port = token = None
        deadline = time.time() + 10
        while time.time() < deadline and not port:
            line = proc.stderr.readline()
            m = re.search(r"listening on https://127\.0\.0\.1:(\d+)", line)
            t = re.search(r"dev admin token: (\w+)", line)
            if t:
                token = t.group(1)
            if m:
                port = int(m.group(1))
        check(port and token, "grayd did not start with TLS")
        ctx = ssl.create_default_context(cafile=crt)
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        c.request("PUT", "/v1/policies/order", body=json.dumps(policy()),
                  headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        check(r.status == 200, r.status)
        r.read()
        c.close()
        # A client that does not trust the certificate fails the handshake.
        bad = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(), timeout=5)
        try:
            bad.request("GET", "/healthz")
            bad.getresponse()
            check(False, "an untrusted certificate was accepted")
        except ssl.SSLError:
            pass
        # Plain HTTP to the TLS port gets nothing useful.
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        s.close()
        check(not data.startswith(b"HTTP/1.1 200"), data)
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- agents

AGENT_REPORT = {"host": "web-1.example.com", "revision": 7}


@test
def t_agents_auth_matrix(tmp):
    roles = [("root", "admin"), ("ops", "write"), ("nginx", "agent"), ("viewer", "read")]
    g = Grayd(tmp, tokens=roles, dev=False)
    try:
        T = g.tokens
        cases = [
            (None, "PUT", "/v1/agents/a1", AGENT_REPORT, 401),
            ("nope", "PUT", "/v1/agents/a1", AGENT_REPORT, 401),
            (T["viewer"], "PUT", "/v1/agents/a1", AGENT_REPORT, 403),
            (T["ops"], "PUT", "/v1/agents/a1", AGENT_REPORT, 403),
            (T["nginx"], "PUT", "/v1/agents/a1", AGENT_REPORT, 200),
            (T["root"], "PUT", "/v1/agents/a2", AGENT_REPORT, 200),
            (None, "GET", "/v1/agents", None, 401),
            (T["viewer"], "GET", "/v1/agents", None, 200),
            (T["ops"], "GET", "/v1/agents", None, 200),
            (T["nginx"], "GET", "/v1/agents/a1", None, 200),
            (T["viewer"], "DELETE", "/v1/agents/a1", None, 403),
            (T["ops"], "DELETE", "/v1/agents/a1", None, 403),
            (T["nginx"], "DELETE", "/v1/agents/a2", None, 200),
        ]
        for tok, m, path, body, want in cases:
            st, _, doc = g.req(m, path, body, token=tok)
            check(st == want, "%s %s: %d, want %d (%s)" % (m, path, st, want, doc))
            if st in (401, 403):
                check(doc["error"]["code"] == ("EAUTH" if st == 401 else "EFORBIDDEN"), doc)
        st, _, doc = g.req("GET", "/v1/agents", token=T["viewer"])
        check([a["id"] for a in doc["agents"]] == ["a1"], doc)
        st, _, doc = g.req("GET", "/v1/audit?limit=1000", token=T["root"])
        ops = [(a["op"], a["token"], a["status"]) for a in doc["audit"]]
        check(("agent", "viewer", 403) in ops and ("agent", "ops", 403) in ops, ops)
        check(("agent", "-", 401) in ops, ops)
        check(("agent.put", "nginx", 200) in ops and ("agent.delete", "nginx", 200) in ops, ops)
    finally:
        g.stop()


@test
def t_agents_report_and_list(tmp):
    g = Grayd(tmp)
    try:
        st, _, doc = g.req("GET", "/v1/agents")
        check(st == 200 and doc["agents"] == [], doc)
        st, h, doc = g.req("GET", "/healthz", token=None)
        rev0 = doc["revision"]
        st, _, doc = g.req("PUT", "/v1/agents/nginx-b", {"host": "10.0.0.2", "revision": 12, "nginx_pid": 4242,
                                                        "policy_revision": 11, "upstreams_revision": 12})
        check(st == 200 and doc["created"] is True and doc["id"] == "nginx-b", (st, doc))
        st, _, doc = g.req("PUT", "/v1/agents/nginx-a",
                           {"host": "web-1", "revision": 9, "seen_revision": 12, "error_revision": 12,
                            "last_error": "nginx -t failed:\nunknown directive \"x\" in /etc/nginx/gray.conf:3",
                            "nginx_pid": None})
        check(st == 200 and doc["created"] is True, (st, doc))
        st, _, doc = g.req("GET", "/healthz", token=None)
        check(doc["revision"] == rev0, "an agent report must not make a revision")
        st, _, doc = g.req("GET", "/v1/agents")
        check(st == 200 and [a["id"] for a in doc["agents"]] == ["nginx-a", "nginx-b"], doc)
        a, b = doc["agents"]
        check(a["host"] == "web-1" and a["revision"] == 9 and a["seen_revision"] == 12 and a["error_revision"] == 12
              and a["last_error"].startswith("nginx -t failed:\nunknown") and a["nginx_pid"] is None
              and a["policy_revision"] is None and a["reports"] == 1 and a["peer"] == "127.0.0.1", a)
        check(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", a["reported_at"]), a)
        check(a["seconds_since_report"] in (0, 1), a)
        check(b["last_error"] is None and b["nginx_pid"] == 4242 and b["policy_revision"] == 11
              and b["upstreams_revision"] == 12 and b["error_revision"] is None, b)
        # A later report replaces the last one; clearing the error.
        st, _, doc = g.req("PUT", "/v1/agents/nginx-a", {"host": "web-1", "revision": 12, "last_error": ""})
        check(st == 200 and doc["created"] is False, doc)
        st, _, doc = g.req("GET", "/v1/agents/nginx-a")
        check(st == 200 and doc["revision"] == 12 and doc["last_error"] is None and doc["reports"] == 2, doc)
        time.sleep(1.1)
        st, _, doc = g.req("GET", "/v1/agents/nginx-b")
        check(doc["seconds_since_report"] >= 1, doc)
        st, _, doc = g.req("GET", "/v1/agents/nobody")
        check(st == 404 and doc["error"]["code"] == "ENOTFOUND", (st, doc))
        env = dict(os.environ, GRAYLANE_SERVER="http://127.0.0.1:%d" % g.port, GRAYLANE_TOKEN=g.token)
        p = subprocess.run([GRAYCTL, "agents"], capture_output=True, text=True, env=env, timeout=10)
        lines = p.stdout.splitlines()
        check(p.returncode == 0 and re.match(r"^ID +HOST +APPLIED +SEEN +AGO +ERROR$", lines[0]), p.stdout + p.stderr)
        check(re.match(r"^nginx-a +web-1 +12 +- +\d+s +-$", lines[1]), p.stdout)
        check(re.match(r"^nginx-b +10\.0\.0\.2 +12 +- +\d+s +-$", lines[2]), p.stdout)
        p = subprocess.run([GRAYCTL, "agents", "--json"], capture_output=True, text=True, env=env, timeout=10)
        check(p.returncode == 0 and len(json.loads(p.stdout)["agents"]) == 2, p.stdout)
        st, _, doc = g.req("DELETE", "/v1/agents/nginx-b")
        check(st == 200, (st, doc))
        st, _, doc = g.req("DELETE", "/v1/agents/nginx-b")
        check(st == 404, st)
        st, _, doc = g.req("GET", "/v1/agents")
        check([x["id"] for x in doc["agents"]] == ["nginx-a"], doc)
        st, _, doc = g.req("POST", "/v1/agents", {})
        check(st == 405, st)
        st, _, doc = g.req("GET", "/v1/agents/a/b")
        check(st == 404, st)
        # Only reports that change something are audited (a liveness report
        # every 30 s per agent would drown the log).
        for _ in range(3):
            g.req("PUT", "/v1/agents/nginx-a", {"host": "web-1", "revision": 12})
        st, _, doc = g.req("GET", "/v1/audit?limit=1000")
        puts = [x for x in doc["audit"] if x["op"] == "agent.put" and x["target"] == "nginx-a"]
        check(len(puts) == 2, puts)
        st, _, text = g.req("GET", "/metrics")
        check(re.search(r'^grayd_requests_total\{route="agents",code="200"\} \d+$', text, re.M), text)
        # In memory only: a restarted grayd has no agents until they report.
        g.stop()
        g = Grayd(tmp, data=g.data)
        st, _, doc = g.req("GET", "/v1/agents")
        check(st == 200 and doc["agents"] == [], doc)
    finally:
        g.stop()


@test
def t_agents_bad_bodies(tmp):
    g = Grayd(tmp)
    try:
        ok = {"host": "web-1", "revision": 1}
        bad = [
            ("not json", "{", "EJSON", ""),
            ("array", "[]", "EJSON", ""),
            ("no host", {"revision": 1}, "ESCHEMA", "host"),
            ("no revision", {"host": "web-1"}, "ESCHEMA", "revision"),
            ("unknown key", dict(ok, colour="red"), "ESCHEMA", "colour"),
            ("host with ;", dict(ok, host="web-1;include /etc/passwd"), "ESCHEMA", "host"),
            ("host with newline", dict(ok, host="web-1\nx"), "ESCHEMA", "host"),
            ("host with NUL", dict(ok, host="web\u00001"), "EJSON", ""),  # jansson refuses \u0000
            ("host too long", dict(ok, host="a" * 300), "ESCHEMA", "host"),
            ("host a number", dict(ok, host=7), "ESCHEMA", "host"),
            ("revision negative", dict(ok, revision=-1), "ESCHEMA", "revision"),
            ("revision a string", dict(ok, revision="7"), "ESCHEMA", "revision"),
            ("revision a float", dict(ok, revision=7.5), "ESCHEMA", "revision"),
            ("seen_revision bad", dict(ok, seen_revision="x"), "ESCHEMA", "seen_revision"),
            ("error_revision bad", dict(ok, error_revision=-3), "ESCHEMA", "error_revision"),
            ("policy_revision bad", dict(ok, policy_revision=[]), "ESCHEMA", "policy_revision"),
            ("upstreams_revision bad", dict(ok, upstreams_revision={}), "ESCHEMA", "upstreams_revision"),
            ("pid zero", dict(ok, nginx_pid=0), "ESCHEMA", "nginx_pid"),
            ("pid huge", dict(ok, nginx_pid=1 << 40), "ESCHEMA", "nginx_pid"),
            ("error not a string", dict(ok, last_error=5), "ESCHEMA", "last_error"),
            ("error too long", dict(ok, last_error="e" * 5000), "ESCHEMA", "last_error"),
            ("error with NUL", dict(ok, last_error="a\u0000b"), "EJSON", ""),
            ("duplicate key", '{"host": "a", "host": "b", "revision": 1}', "EJSON", ""),
        ]
        for what, body, code, path in bad:
            st, _, doc = g.req("PUT", "/v1/agents/a1", body)
            check(st == 400 and doc["error"]["code"] == code and doc["error"]["path"] == path,
                  "%s: %d %s" % (what, st, doc))
        st, _, doc = g.req("PUT", "/v1/agents/a1", '{"host": "web-1", "revision": 1, "last_error": "%s"}' % ("e" * 20000))
        check(st == 413 and doc["error"]["code"] == "ETOOBIG", (st, doc))
        for bad_id in ["a%3Bb", "-a", "a" * 64, "a%00b", "%24x"]:
            st, _, doc = g.req("PUT", "/v1/agents/" + bad_id, ok)
            check(st == 400 and doc["error"]["code"] == "EINVAL", (bad_id, st, doc))
        st, _, doc = g.req("GET", "/v1/agents")
        check(doc["agents"] == [], "a refused report was kept: %s" % doc)
        st, _, doc = g.req("GET", "/v1/audit?limit=1000")
        check(len([x for x in doc["audit"] if x["op"] == "agent.put" and x["status"] == 400]) >= len(bad), doc)
        # The cap: 1024 agents, the next new one is refused; a known one may still report.
        for i in range(1024):
            st, _, doc = g.req("PUT", "/v1/agents/n%d" % i, ok)
            check(st == 200, (i, st, doc))
        st, _, doc = g.req("PUT", "/v1/agents/one-too-many", ok)
        check(st == 503 and doc["error"]["code"] == "EBUSY", (st, doc))
        st, _, doc = g.req("PUT", "/v1/agents/n5", dict(ok, revision=2))
        check(st == 200, (st, doc))
        st, _, doc = g.req("GET", "/v1/agents")
        check(len(doc["agents"]) == 1024, len(doc["agents"]))
    finally:
        g.stop()


def main():
    return testkit.run(TESTS, ONLY, "grayd-it-")


if __name__ == "__main__":
    sys.exit(main())
