#!/usr/bin/env python3
"""End-to-end lane test (issue 4): grayd and the example call chain on
127.0.0.1, port 0 everywhere.

    lanes_e2e.py GRAYD EXAMPLES_BIN_DIR POLICY_SET [TEST ...]

Each test starts grayd (--dev, a temporary data directory) and the chain
gateway v1 -> order v1 -> order-dal v1 and v2, puts the sample policy set
(examples/lanes.json, the one `make demo` uses) and asserts through real
HTTP what the chain's answers say about the route: each hop's service,
version, the tag it saw and what it decided. Processes are started and
stopped by PID. Prints one line per test and `N passed, M failed`.
Standard library only.
"""
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import testkit  # noqa: E402
from testkit import Fail, check, free_port, wait_until  # noqa: E402,F401

GRAYD = os.path.abspath(sys.argv[1])
BIN = os.path.abspath(sys.argv[2])
POLICY_SET = os.path.abspath(sys.argv[3])
ONLY = set(sys.argv[4:])
TESTS, test = testkit.collector()


def read_port(log, proc, name, timeout=10.0):
    """The port in the `listening on http://127.0.0.1:PORT` line of a log."""
    def find():
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(log).read())
        if not m and proc.poll() is not None:
            raise Fail("%s exited at start (%s): %s" % (name, proc.returncode, open(log).read()[-800:]))
        return int(m.group(1)) if m else None
    return wait_until("%s to listen" % name, find, timeout)[0]


class Proc:
    """A child process with its stderr in a log file of its own, stopped by
    PID."""
    started = 0

    def __init__(self, tmp, name, cmd, env=None):
        Proc.started += 1
        self.name = name
        self.log = os.path.join(tmp, "%s.%d.log" % (name, Proc.started))
        self.errf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.errf, env=env)
        try:
            self.port = read_port(self.log, self.proc, name)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            raise

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop it; a SIGTERM stop must exit 0."""
        clean = self.proc.poll() is None and sig == signal.SIGTERM
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Fail("%s did not stop within %ds of signal %d" % (self.name, timeout, sig))
        self.errf.close()
        if clean and self.proc.returncode != 0:
            raise Fail("%s exited %d on SIGTERM: %s" % (self.name, self.proc.returncode,
                                                       open(self.log).read()[-1500:]))

    def alive(self):
        return self.proc.poll() is None


class Grayd(Proc):
    """grayd --dev (an admin token for the test) plus a tokens file with the
    agent token the services use, so both survive a restart of grayd."""

    def __init__(self, tmp, port=0, agent_token=None):
        self.tmp = tmp
        self.agent_token = agent_token or secrets.token_hex(16)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("chain agent sha256:%s\n" % hashlib.sha256(self.agent_token.encode()).hexdigest())
        Proc.__init__(self, tmp, "grayd", [GRAYD, "--dev", "--listen", "127.0.0.1:%d" % port,
                                           "--data", os.path.join(tmp, "grayd.db"), "--tokens", tokens])
        m = re.findall(r"dev admin token: (\w+)", open(self.log).read())
        check(m, "no dev token in grayd's log")
        self.token = m[-1]
        self.url = "http://127.0.0.1:%d" % self.port

    def req(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Authorization": "Bearer " + self.token})
            r = c.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            c.close()

    def put_policy(self, doc):
        st, ans = self.req("PUT", "/v1/policies/" + doc["service"], doc)
        check(st == 200, ("PUT policy", st, ans))
        return ans["revision"]

    def instances(self, service):
        st, ans = self.req("GET", "/v1/services/%s/instances" % service)
        check(st == 200, ("GET instances", st, ans))
        return ans["instances"]


class Service(Proc):
    def __init__(self, tmp, name, version, grayd, listen="127.0.0.1:0", cache=True, extra=()):
        label = "%s-%s" % (name, version)
        self.cache = os.path.join(tmp, label + ".cache") if cache is True else cache
        cmd = [os.path.join(BIN, name), "--listen", listen, "--grayd", grayd.url, "--version", version]
        if self.cache:
            cmd += ["--cache", self.cache]
        cmd += list(extra)
        env = dict(os.environ, GRAYLANE_TOKEN=grayd.agent_token)
        env.pop("GRAYLANE_SERVER", None)
        self.service, self.version = name, version
        Proc.__init__(self, tmp, label, cmd, env)
        self.id = "%s-%s-%d" % (name, version, self.port)  # the examples' default --id


def get(port, path="/", headers=None, timeout=10):
    """GET through the gateway: (status, chain) where chain is the list of hops."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    try:
        doc = json.loads(data)
    except ValueError:
        raise Fail("answer %d is not JSON: %r" % (r.status, data[:300]))
    return r.status, doc.get("chain", [])


def dal(chain):
    """The last hop when it is order-dal, else None."""
    return chain[-1] if chain and chain[-1]["service"] == "order-dal" else None


def routed(port, path="/", headers=None):
    """(order-dal version, tag it saw) for one request, or (None, chain)."""
    st, chain = get(port, path, headers)
    d = dal(chain)
    if st != 200 or not d:
        return None, chain
    return d["version"], d["tag"]


def policies():
    with open(POLICY_SET) as f:
        return {p["service"]: p for p in json.load(f)["policies"]}


class Chain:
    """gateway v1 -> order v1 -> order-dal v1 and v2, with the sample policies."""

    def __init__(self, tmp, extra=()):
        self.tmp = tmp
        self.extra = tuple(extra)
        self.procs = []
        self.g = Grayd(tmp)
        try:
            self.revision = 0
            for doc in policies().values():
                self.revision = self.g.put_policy(doc)
            self.dal1 = self.start("order-dal", "v1")
            self.dal2 = self.start("order-dal", "v2")
            self.order = self.start("order", "v1")
            self.gw = self.start("gateway", "v1")
            # Ready when a beta tester reaches order-dal v2: every policy and
            # all four registrations are in the gateway's and order's snapshots.
            wait_until("the chain to route the beta lane",
                       lambda: routed(self.gw.port, "/", {"X-Gray": "1"}) == ("v2", "beta"))
        except BaseException:
            self.stop(strict=False)
            raise

    def start(self, name, version, **kw):
        p = Service(self.tmp, name, version, self.g, extra=self.extra, **kw)
        self.procs.append(p)
        return p

    def stop(self, strict=True):
        """Stop every process; with strict, each must have exited 0."""
        errors = []
        for p in list(reversed(self.procs)) + [self.g]:  # services first: they deregister
            try:
                p.stop()
            except Fail as e:
                errors.append(str(e))
        if strict:
            check(not errors, "; ".join(errors))


@contextlib.contextmanager
def running_chain(tmp, **kw):
    """A running Chain, stopped at the end; a failure inside is reported
    before any trouble stopping."""
    c = Chain(tmp, **kw)
    ok = False
    try:
        yield c
        ok = True
    finally:
        c.stop(strict=ok)


def expect_route(port, cases, times=3):
    """Each (path, headers, version, tag) case, `times` times."""
    for path, headers, version, tag in cases:
        for _ in range(times):
            got = routed(port, path, headers)
            check(got == (version, tag), ("route", path, headers, "wanted", version, tag, "got", got))


# Requests the sample set (examples/lanes.json) puts in lane beta, and the
# ones that must stay on v1: (path, headers, order-dal version, tag it saw).
BETA = [("/", {"X-Gray": "1"}, "v2", "beta"),                  # gateway rule beta-testers
        ("/orders/42", {"Cookie": "a=1; gray=on"}, "v2", "beta"),
        ("/orders/42?uid=1019", {}, "v2", "beta"),             # uid-20: 1019 mod 100 = 19 < 20
        ("/orders?x=1&uid=20000", {}, "v2", "beta"),
        ("/", {"Cookie": "uid=30"}, "v2", "beta")]             # ramp-5: bucket of "gateway:30" < 500
PLAIN = [("/", {}, "v1", ""),
         ("/orders/42", {}, "v1", ""),
         ("/", {"X-Gray": "0"}, "v1", ""),
         ("/", {"X-Gray": "11"}, "v1", ""),
         ("/", {"Cookie": "gray=off"}, "v1", ""),
         ("/?uid=1050", {}, "v1", ""),                         # 50: not below 20
         ("/?uid=abc", {}, "v1", ""),                          # not a number
         ("/", {"Cookie": "uid=29"}, "v1", ""),                # outside the 5 %
         ("/", {"X-Gray-Tag": "alpha"}, "v1", "alpha"),        # another lane's tag travels on
         ("/", {"X-Gray-Tag": "no good"}, "v1", "")]           # an invalid tag is dropped


# ---------------------------------------------------------------- lanes

@test
def t_lane_routing(tmp):
    with running_chain(tmp) as c:
        st, chain = get(c.gw.port, "/orders/7", {"X-Gray": "1"})
        check(st == 200 and [h["service"] for h in chain] == ["gateway", "order", "order-dal"], chain)
        gw, order, d = chain
        # The gateway rule put the request in lane beta ...
        check(gw["lane"]["rule"] == "beta-testers"
              and gw["lane"]["tag"] == "beta" and gw["tag"] == "", gw)
        # ... the order policy sends the lane to order v2, which is not
        # running: its default version serves, and the tag goes with it ...
        check(gw["call"]["service"] == "order" and gw["call"]["policy"] == "order"
              and gw["call"]["rule"] == "lane-beta" and gw["call"]["decided"] == "v2", gw)
        check(gw["call"]["version"] == "v1" and gw["call"]["fell_back"] is True
              and gw["call"]["tag"] == "beta" and gw["call"]["instance"] == order["id"], (gw, order))
        check(order["tag"] == "beta" and order["version"] == "v1", order)
        # ... and order, deciding with order-dal's policy, calls order-dal v2 with the tag.
        check(order["call"]["service"] == "order-dal" and order["call"]["policy"] == "order-dal"
              and order["call"]["rule"] == "lane-beta" and order["call"]["decided"] == "v2"
              and order["call"]["fell_back"] is False and order["call"]["tag"] == "beta", order)
        check(d["version"] == "v2" and d["tag"] == "beta" and order["call"]["instance"] == d["id"], d)
        check(order["call"]["revision"] >= c.revision and gw["call"]["revision"] >= c.revision, chain)

        expect_route(c.gw.port, BETA + PLAIN)
        for path, headers, rule in [("/?uid=1019", {}, "uid-20"), ("/", {"Cookie": "uid=30"}, "ramp-5")]:
            st, chain = get(c.gw.port, path, headers)
            check(chain[0]["lane"]["rule"] == rule, chain)
        # Plain requests: no lane, default versions all the way.
        st, chain = get(c.gw.port, "/")
        check(st == 200 and chain[0]["lane"]["rule"] == "" and chain[0]["call"]["tag"] == "", chain)
        check(chain[0]["call"]["decided"] == "v1" and chain[0]["call"]["fell_back"] is False, chain)
        check(chain[1]["call"]["rule"] == "" and chain[1]["call"]["decided"] == "v1", chain)
        # HEAD is served too (no body).
        conn = http.client.HTTPConnection("127.0.0.1", c.gw.port, timeout=10)
        conn.request("HEAD", "/", headers={"X-Gray": "1"})
        r = conn.getresponse()
        check(r.status == 200 and r.read() == b"", r.status)
        conn.close()


@test
def t_policy_change_without_restart(tmp):
    with running_chain(tmp) as c:
        pids = [p.proc.pid for p in c.procs]
        pol = policies()
        # The gateway's lane rule moves from X-Gray: 1 to X-Gray: 2.
        gw = json.loads(json.dumps(pol["gateway"]))
        gw["rules"][0]["when"] = {"attr": "header:x-gray", "op": "eq", "value": "2"}
        t0 = time.time()
        rev = c.g.put_policy(gw)
        wait_until("the new gateway rule", lambda: routed(c.gw.port, "/", {"X-Gray": "2"}) == ("v2", "beta"))
        took = time.time() - t0
        expect_route(c.gw.port, [("/", {"X-Gray": "2"}, "v2", "beta"), ("/", {"X-Gray": "1"}, "v1", "")])
        st, chain = get(c.gw.port, "/", {"X-Gray": "2"})
        check(chain[0]["call"]["revision"] >= rev, chain)
        # order-dal's lane rule closes: tagged requests stay on order-dal v1.
        dalp = json.loads(json.dumps(pol["order-dal"]))
        dalp["rules"] = [r for r in dalp["rules"] if r["name"] != "lane-beta"]
        c.g.put_policy(dalp)
        wait_until("order-dal's lane rule to go", lambda: routed(c.gw.port, "/", {"X-Gray": "2"}) == ("v1", "beta"))
        # And back: the lane reopens.
        c.g.put_policy(pol["order-dal"])
        wait_until("order-dal's lane rule to return",
                   lambda: routed(c.gw.port, "/", {"X-Gray": "2"}) == ("v2", "beta"))
        check([p.proc.pid for p in c.procs] == pids and all(p.alive() for p in c.procs), "a service restarted")
        print("     policy change seen by the chain in %.0f ms" % (took * 1000), flush=True)


# ---------------------------------------------------------------- fallback

@test
def t_fallback_when_v2_stops(tmp):
    with running_chain(tmp) as c:
        check(sorted(i["version"] for i in c.g.instances("order-dal")) == ["v1", "v2"], "instances")
        c.dal2.stop()  # SIGTERM: deregisters on the way out
        left = c.g.instances("order-dal")
        check([i["version"] for i in left] == ["v1"], ("still registered", left))

        def fell_back():
            st, chain = get(c.gw.port, "/", {"X-Gray": "1"})
            return st == 200 and dal(chain) and chain
        chain, took = wait_until("tagged requests to fall back to v1", fell_back)
        order, d = chain[1], chain[2]
        check(d["version"] == "v1" and d["tag"] == "beta", d)
        check(order["call"]["decided"] == "v2" and order["call"]["version"] == "v1"
              and order["call"]["fell_back"] is True, order)
        expect_route(c.gw.port, [(p, h, "v1", t) for p, h, _, t in BETA] + PLAIN)

        # "fallback": "fail": no fallback, the chain answers 503 and says where.
        strict = dict(policies()["order-dal"], fallback="fail")
        c.g.put_policy(strict)
        st, chain = wait_until("fallback fail", lambda: (lambda r: r[0] == 503 and r)(
            get(c.gw.port, "/", {"X-Gray": "1"})))[0]
        check([h["service"] for h in chain] == ["gateway", "order"] and "error" in chain[1], chain)
        check("order-dal v2" in chain[1]["error"], chain)
        expect_route(c.gw.port, PLAIN)

        # v2 comes back: the lane reaches it again.
        c.dal2 = c.start("order-dal", "v2")
        wait_until("v2 to be back", lambda: routed(c.gw.port, "/", {"X-Gray": "1"}) == ("v2", "beta"))
        print("     fell back %.0f ms after v2 stopped" % (took * 1000), flush=True)


@test
def t_killed_v2_evicted(tmp):
    """A v2 killed outright cannot deregister: its calls fail (502, and the
    hop says which instance) until its TTL runs out, then the lane falls back."""
    with running_chain(tmp, extra=("--ttl", "2")) as c:
        c.dal2.stop(signal.SIGKILL)
        st, chain = get(c.gw.port, "/", {"X-Gray": "1"})
        if st == 502:
            check([h["service"] for h in chain] == ["gateway", "order"], chain)
            check(chain[1]["call"]["version"] == "v2" and "did not answer" in chain[1]["error"], chain)
        else:
            check(st == 200 and dal(chain)["version"] == "v1", (st, chain))
        _, took = wait_until("the killed v2 to be evicted",
                             lambda: routed(c.gw.port, "/", {"X-Gray": "1"}) == ("v1", "beta"), timeout=15)
        expect_route(c.gw.port, PLAIN[:3])
        print("     evicted and fell back %.1f s after the kill (TTL 2 s)" % took, flush=True)


# ---------------------------------------------------------------- fail-static

@test
def t_grayd_down(tmp):
    with running_chain(tmp, extra=("--ttl", "3")) as c:
        expect_route(c.gw.port, BETA[:1] + PLAIN[:1])
        # The instances each caller needs have reached its cache file (the
        # SDK writes it after a change, at most every half second) before
        # grayd goes.
        for p, callees in ((c.gw, [c.order]), (c.order, [c.dal1, c.dal2])):
            wait_until("%s's cache file" % p.name, lambda p=p, callees=callees: os.path.exists(p.cache)
                       and all(q.id.encode() in open(p.cache, "rb").read() for q in callees))
        st, before = get(c.gw.port, "/", {"X-Gray": "1"})
        gport = c.g.port
        c.g.stop()

        # Routing goes on unchanged.
        expect_route(c.gw.port, BETA + PLAIN)

        # order restarts while grayd is down (same port, so the gateway's
        # snapshot still finds it) and routes from its cache file.
        c.order.stop()
        c.procs.remove(c.order)
        c.order = c.start("order", "v1", listen="127.0.0.1:%d" % c.order.port)
        expect_route(c.gw.port, BETA + PLAIN)
        st, after = get(c.gw.port, "/", {"X-Gray": "1"})
        check(after[1]["call"]["revision"] == before[1]["call"]["revision"], (before, after))
        check("unreachable" in open(c.order.log).read(), "order did not notice grayd was down")

        # So does a gateway restarted on a new port ...
        c.gw.stop()
        c.procs.remove(c.gw)
        c.gw = c.start("gateway", "v1")
        expect_route(c.gw.port, BETA + PLAIN)
        # ... while one without a cache file has nothing to route with.
        bare = c.start("gateway", "v1", cache=os.path.join(tmp, "none.cache"))
        st, chain = get(bare.port, "/")
        check(st == 503 and "no snapshot" in chain[0].get("error", ""), (st, chain))

        # grayd returns (same port and database): the instances register
        # again (their heartbeats get 404), and policy changes flow again.
        c.g = Grayd(tmp, port=gport, agent_token=c.g.agent_token)
        # grayd restored the registry it had, so the snapshot each SDK gets
        # when it reconnects (a reset) still holds every instance: routing
        # goes on without a gap while they reconnect.
        t_end = time.time() + 2.5
        while time.time() < t_end:
            expect_route(c.gw.port, BETA[:1] + PLAIN[:1], times=1)
        wait_until("the chain to register again",
                   lambda: sorted(i["version"] for i in c.g.instances("order-dal")) == ["v1", "v2"]
                   and len(c.g.instances("order")) == 1, timeout=20)
        gw = json.loads(json.dumps(policies()["gateway"]))
        gw["rules"][0]["when"] = {"attr": "header:x-gray", "op": "eq", "value": "2"}
        c.g.put_policy(gw)
        wait_until("a policy change after grayd's return",
                   lambda: routed(c.gw.port, "/", {"X-Gray": "2"}) == ("v2", "beta"), timeout=30)


def main():
    return testkit.run(TESTS, ONLY, "gray-e2e-")


if __name__ == "__main__":
    sys.exit(main())
