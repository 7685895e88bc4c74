#!/usr/bin/env python3
"""bench/nginx/churn.sh's driver: the changes it makes while wrk loads Nginx,
and the propagation measurement. Standard library only; talks to 127.0.0.1.

    churn_drive.py ports N
    churn_drive.py ticks --root PID
    churn_drive.py setup --policy FILE --instances ID:VERSION:PORT,...
    churn_drive.py wait-applied --agent ID --rev N [--timeout S]
    churn_drive.py status --port P
    churn_drive.py policy --policy FILE --count N --interval S --agent ID
    churn_drive.py upstream --count N --interval S --agent ID --extra ID:VERSION:PORT
    churn_drive.py reload --count N --interval S -- NGINX-ARGV...
    churn_drive.py propagation --policy FILE --count N --port P --live FILE --agent ID

grayd's address is $CHURN_GRAYD (http://127.0.0.1:PORT), its admin token
$GRAYLANE_TOKEN (kept out of ps). Changes run on an absolute schedule (the
i-th at start + i * interval), each bounded in time; every command prints
`name: value` lines on stdout and notes (`# ...`) on stderr.
"""
import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import time

GRAYD = os.environ.get("CHURN_GRAYD", "")
TOKEN = os.environ.get("GRAYLANE_TOKEN", "")


def note(msg):
    print("# " + msg, file=sys.stderr, flush=True)


class Grayd:
    """grayd's API over one keep-alive connection (re-opened on error)."""

    def __init__(self):
        if not GRAYD.startswith("http://"):
            raise SystemExit("churn_drive: $CHURN_GRAYD must be http://127.0.0.1:PORT")
        host, port = GRAYD[len("http://"):].rstrip("/").split(":")
        self.addr = (host, int(port))
        self.c = None

    def req(self, method, path, body=None, timeout=10):
        data = json.dumps(body) if body is not None else None
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(*self.addr, timeout=timeout)
            try:
                self.c.request(method, path, body=data,
                               headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
                r = self.c.getresponse()
                out = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                try:
                    return r.status, json.loads(out) if out else None
                except ValueError:
                    return r.status, out
            except (OSError, http.client.HTTPException):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def put_policy(self, policy):
        st, ans = self.req("PUT", "/v1/policies/" + policy["service"], policy)
        if st != 200:
            raise SystemExit("churn_drive: PUT policy answered %s: %s" % (st, str(ans)[:300]))
        return ans["revision"]

    def register(self, service, iid, version, port):
        st, ans = self.req("PUT", "/v1/services/%s/instances/%s" % (service, iid),
                           {"address": "127.0.0.1", "port": port, "version": version, "ttl_s": 3600})
        if st != 200:
            raise SystemExit("churn_drive: register %s answered %s: %s" % (iid, st, str(ans)[:300]))
        return ans["revision"]

    def deregister(self, service, iid):
        st, ans = self.req("DELETE", "/v1/services/%s/instances/%s" % (service, iid))
        if st != 200:
            raise SystemExit("churn_drive: deregister %s answered %s: %s" % (iid, st, str(ans)[:300]))
        return ans["revision"]

    def agent(self, aid):
        st, ans = self.req("GET", "/v1/agents/" + aid)
        return ans if st == 200 and isinstance(ans, dict) else None

    def wait_applied(self, aid, rev, timeout):
        """Until the agent reports rev (or later) applied without an error;
        the seconds it took, or None on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            a = self.agent(aid)
            if a and a.get("revision", -1) >= rev and not a.get("last_error"):
                return time.monotonic() - t0
            time.sleep(0.01)
        return None


def load_policy(path):
    with open(path) as f:
        return json.load(f)


def other(version):
    return "v2" if version == "v1" else "v1"


def pct(values, p):
    """Percentile with linear interpolation between the closest ranks
    (numpy's default): with 50 values, p99 lies between the 49th and the
    50th (the maximum)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def schedule(count, interval, step, deadline_s):
    """Run step(i) for i in 0..count-1 at start + i * interval; returns
    (done, seconds, worst lateness in s). Stops at deadline_s."""
    t0 = time.monotonic()
    late = 0.0
    done = 0
    for i in range(count):
        at = t0 + i * interval
        now = time.monotonic()
        if now - t0 > deadline_s:
            note("schedule: deadline of %.0f s reached after %d of %d changes" % (deadline_s, done, count))
            break
        if at > now:
            time.sleep(at - now)
        else:
            late = max(late, now - at)
        step(i)
        done += 1
    return done, time.monotonic() - t0, late


# ---------------------------------------------------------------- commands

def cmd_ports(a):
    socks = []
    for _ in range(a.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_ticks(a):
    """CPU time, in clock ticks: the machine's (user + nice + system over
    all CPUs, as bench/nginx/run.sh counts it) and that of the process tree
    under --root (utime + stime + cutime + cstime of every live process in
    it: a child that exited and was waited for is in its parent's cutime)."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    machine = int(cpu[1]) + int(cpu[2]) + int(cpu[3])
    parent, ticks = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        # rest[0] is the state (field 3); utime..cstime are fields 14..17
        parent[int(d)] = int(rest[1])
        ticks[int(d)] = sum(int(x) for x in rest[11:15])
    tree, todo = set(), [a.root]
    while todo:
        p = todo.pop()
        if p in tree:
            continue
        tree.add(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    print(machine, sum(ticks.get(p, 0) for p in tree))


def parse_instance(text):
    iid, version, port = text.split(":")
    return iid, version, int(port)


def cmd_setup(a):
    g = Grayd()
    pol = load_policy(a.policy)
    rev = g.put_policy(pol)
    for spec in a.instances.split(","):
        iid, version, port = parse_instance(spec)
        rev = g.register(pol["service"], iid, version, port)
    print(rev)


def cmd_wait_applied(a):
    took = Grayd().wait_applied(a.agent, a.rev, a.timeout)
    if took is None:
        note("the agent did not report revision %d within %.0f s" % (a.rev, a.timeout))
        return 1
    return 0


def nginx_get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def cmd_status(a):
    st, body = nginx_get(a.port, "/gray_status")
    if st != 200:
        note("gray_status answered %d" % st)
        return 1
    s = json.loads(body)
    print("pid: %d" % s["pid"])
    print("policy_generation: %d" % s["policy_generation"])
    print("policy_revision: %d" % s["policy_revision"])
    print("upstreams_revision: %d" % s["upstreams_revision"])
    print("workers: %s" % ",".join(str(w["pid"]) for w in s.get("workers", [])))
    return 0


def cmd_policy(a):
    """count policy PUTs, the default alternating, so each is a change."""
    g = Grayd()
    pol = load_policy(a.policy)
    st, stored = g.req("GET", "/v1/policies/" + pol["service"])
    cur = stored["default"] if st == 200 and isinstance(stored, dict) else pol["default"]
    put_ms = []
    last = [0]

    def step(i):
        nonlocal cur
        cur = other(cur)
        pol["default"] = cur
        t0 = time.monotonic()
        last[0] = g.put_policy(pol)
        put_ms.append((time.monotonic() - t0) * 1000)

    done, secs, late = schedule(a.count, a.interval, step, a.count * a.interval + 30)
    took = g.wait_applied(a.agent, last[0], 15)
    print("changes: %d" % done)
    print("seconds: %.1f" % secs)
    print("schedule_late_max_ms: %.0f" % (late * 1000))
    print("put_p50_ms: %.2f" % pct(put_ms, 50))
    print("put_max_ms: %.2f" % max(put_ms or [0]))
    print("last_revision: %d" % last[0])
    print("last_applied: %s" % ("yes" if took is not None else "no"))
    print("final_default: %s" % cur)
    return 0 if done == a.count and took is not None else 1


def cmd_upstream(a):
    """count registry changes: the extra instance in, out, in, ..."""
    g = Grayd()
    iid, version, port = parse_instance(a.extra)
    last = [0]

    def step(i):
        if i % 2 == 0:
            last[0] = g.register(a.service, iid, version, port)
        else:
            last[0] = g.deregister(a.service, iid)

    done, secs, late = schedule(a.count, a.interval, step, a.count * a.interval + 30)
    if done % 2:  # leave the registry as it was
        last[0] = g.deregister(a.service, iid)
        note("the extra instance deregistered after an odd number of changes")
    took = g.wait_applied(a.agent, last[0], 15)
    print("changes: %d" % done)
    print("seconds: %.1f" % secs)
    print("schedule_late_max_ms: %.0f" % (late * 1000))
    print("last_revision: %d" % last[0])
    print("last_applied: %s" % ("yes" if took is not None else "no"))
    return 0 if done == a.count and took is not None else 1


def cmd_reload(a):
    """count runs of the given command (nginx -s reload), at 1/interval."""
    failed = [0]
    run_ms = []

    def step(i):
        t0 = time.monotonic()
        try:
            p = subprocess.run(a.argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            if p.returncode != 0:
                failed[0] += 1
                note("reload %d exited %d: %s" % (i, p.returncode, p.stderr.decode(errors="replace")[-300:]))
        except subprocess.TimeoutExpired:
            failed[0] += 1
            note("reload %d: the command took over 10 s" % i)
        run_ms.append((time.monotonic() - t0) * 1000)

    done, secs, late = schedule(a.count, a.interval, step, a.count * a.interval + 30)
    print("changes: %d" % done)
    print("seconds: %.1f" % secs)
    print("schedule_late_max_ms: %.0f" % (late * 1000))
    print("command_failures: %d" % failed[0])
    print("command_p50_ms: %.1f" % pct(run_ms, 50))
    return 0 if done == a.count and not failed[0] else 1


class Poller:
    """GET / through Nginx on one keep-alive connection (a new one after an
    error); the backend answers its version."""

    def __init__(self, port):
        self.port = port
        self.c = None
        self.errors = 0
        self.non200 = 0

    def version(self):
        try:
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            self.c.request("GET", "/")
            r = self.c.getresponse()
            body = r.read()
            if r.status != 200:
                self.non200 += 1
                return None
            return body.decode(errors="replace").strip()
        except (OSError, http.client.HTTPException):
            self.errors += 1
            if self.c is not None:
                self.c.close()
            self.c = None
            return None


def cmd_propagation(a):
    """count PUTs; each timed from just before the PUT to the first answer
    through Nginx from the new default's backend."""
    g = Grayd()
    pol = load_policy(a.policy)
    poll = Poller(a.port)
    cur = poll.version()
    if cur not in ("v1", "v2"):
        note("Nginx answers %r before the first change (want v1 or v2)" % cur)
        return 1
    rng = random.Random(a.seed)
    serve_ms, file_ms, put_ms, agent_ms = [], [], [], []
    missed = 0
    polls = 0
    t_phase = time.monotonic()
    for i in range(a.count):
        if time.monotonic() - t_phase > a.deadline:
            note("propagation: deadline of %.0f s reached after %d changes" % (a.deadline, i))
            break
        want = other(cur)
        pol["default"] = want
        try:
            ino0 = os.stat(a.live).st_ino
        except OSError:
            ino0 = None
        t0 = time.monotonic()
        rev = g.put_policy(pol)
        t_put = time.monotonic()
        put_ms.append((t_put - t0) * 1000)
        t_file = None
        seen = None
        while time.monotonic() - t0 < a.timeout:
            polls += 1
            if t_file is None:
                try:
                    if os.stat(a.live).st_ino != ino0:
                        t_file = time.monotonic()
                except OSError:
                    pass
            if poll.version() == want:
                seen = time.monotonic()
                break
            time.sleep(a.every)
        if seen is None:
            missed += 1
            note("change %d (revision %d): Nginx did not serve %s within %.1f s" % (i, rev, want, a.timeout))
        else:
            serve_ms.append((seen - t0) * 1000)
            if t_file is None:
                t_file = seen
            file_ms.append((t_file - t0) * 1000)
        cur = want
        # The next change starts from a quiet agent (each change measured
        # alone), at a random phase against the module's check timer.
        took = g.wait_applied(a.agent, rev, 10)
        if took is not None and seen is not None:
            agent_ms.append((time.monotonic() - t0) * 1000)
        time.sleep(rng.uniform(a.gap_min, a.gap_max))
    n = len(serve_ms)
    print("changes: %d" % (n + missed))
    print("missed: %d" % missed)
    for name, vals in (("serve", serve_ms), ("file", file_ms)):
        print("%s_p50_ms: %.1f" % (name, pct(vals, 50)))
        print("%s_p99_ms: %.1f" % (name, pct(vals, 99)))
        print("%s_max_ms: %.1f" % (name, max(vals) if vals else float("nan")))
        print("%s_min_ms: %.1f" % (name, min(vals) if vals else float("nan")))
    after = [s - f for s, f in zip(serve_ms, file_ms)]
    print("file_to_serve_p50_ms: %.1f" % pct(after, 50))
    print("file_to_serve_max_ms: %.1f" % (max(after) if after else float("nan")))
    print("put_p50_ms: %.2f" % pct(put_ms, 50))
    print("put_max_ms: %.2f" % (max(put_ms) if put_ms else float("nan")))
    print("poll_errors: %d" % poll.errors)
    print("poll_non200: %d" % poll.non200)
    print("polls: %d" % polls)
    print("final_default: %s" % cur)
    if a.samples:
        with open(a.samples, "w") as f:
            for s, fl in zip(serve_ms, file_ms):
                f.write("%.2f %.2f\n" % (s, fl))
    return 0 if missed == 0 else 1


def main():
    ap = argparse.ArgumentParser(description="bench/nginx/churn.sh's driver")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("ticks")
    p.add_argument("--root", type=int, required=True)
    p = sub.add_parser("setup")
    p.add_argument("--policy", required=True)
    p.add_argument("--instances", required=True)
    p = sub.add_parser("wait-applied")
    p.add_argument("--agent", required=True)
    p.add_argument("--rev", type=int, required=True)
    p.add_argument("--timeout", type=float, default=20)
    p = sub.add_parser("status")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("policy")
    p.add_argument("--policy", required=True)
    p.add_argument("--count", type=int, default=60)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--agent", required=True)
    p = sub.add_parser("upstream")
    p.add_argument("--service", default="order")
    p.add_argument("--extra", required=True)
    p.add_argument("--count", type=int, default=60)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--agent", required=True)
    p = sub.add_parser("reload")
    p.add_argument("--count", type=int, default=60)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("argv", nargs="+")
    p = sub.add_parser("propagation")
    p.add_argument("--policy", required=True)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--live", required=True, help="the live policy file (its inode changes on each swap)")
    p.add_argument("--agent", required=True)
    p.add_argument("--every", type=float, default=0.002, help="seconds between polls")
    p.add_argument("--timeout", type=float, default=5.0, help="per change")
    p.add_argument("--deadline", type=float, default=150.0, help="for the whole phase")
    p.add_argument("--gap-min", type=float, default=0.05)
    p.add_argument("--gap-max", type=float, default=0.45)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--samples", help="write 'serve_ms file_ms' per change here")
    a = ap.parse_args()
    fn = {"ports": cmd_ports, "ticks": cmd_ticks, "setup": cmd_setup, "wait-applied": cmd_wait_applied, "status": cmd_status,
          "policy": cmd_policy, "upstream": cmd_upstream, "reload": cmd_reload,
          "propagation": cmd_propagation}[a.cmd]
    return fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
