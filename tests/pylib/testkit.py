"""What every Python test script of graylane shares (standard library only):
failures, polling, free ports, and the runner that gives each test function
a temporary directory and prints `ok`/`FAIL` lines, the tails of the logs a
failed test left, and `N passed, M failed`.

A script puts tests/pylib on sys.path, decorates its tests with `test`, and
ends with `sys.exit(testkit.run(TESTS, selected, "prefix-"))`.
"""
import http.client
import json
import os
import random
import socket
import tempfile
import time
import traceback


class Fail(Exception):
    """An assertion of a test failed (reported without a traceback)."""


def check(cond, what):
    if not cond:
        raise Fail(what if isinstance(what, str) else json.dumps(what, default=str)[:2000])


def wait_until(what, fn, timeout=10.0, every=0.01, tolerate=()):
    """Poll fn() until it returns a true value; return (value, seconds).
    Connection errors and unparsable answers count as "not yet", and so do
    the exception types in `tolerate`."""
    t0 = time.time()
    last = None
    while time.time() - t0 < timeout:
        try:
            last = fn()
            if last:
                return last, time.time() - t0
        except (OSError, http.client.HTTPException, ValueError) + tuple(tolerate) as e:
            last = e
        time.sleep(every)
    raise Fail("timed out after %.1fs waiting for %s (last: %s)" % (timeout, what, str(last)[:800]))


def _ephemeral_low():
    """The first port of the kernel's ephemeral range (bind to port 0,
    client connections)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A port that was free a moment ago, for servers that cannot report a
    port 0 back. Drawn below the kernel's ephemeral range: whatever binds
    port 0 (the echo backends, grayd's tests) and every client connection
    take their ports from that range, so none of them can take this one in
    the moment before its server binds it (an nginx that lost its port that
    way once looked started, because the port answered). Two tests drawing
    the same port at once stay possible, about 1 in 10,000 per pair."""
    lo, hi = 10000, min(_ephemeral_low(), 65536)
    rng = random.SystemRandom()
    for _ in range(200 if hi - lo >= 1000 else 0):
        port = rng.randrange(lo, hi)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collector():
    """A list and a decorator that appends to it: `TESTS, test = collector()`."""
    tests = []

    def test(fn):
        tests.append(fn)
        return fn
    return tests, test


def _print_logs(tmp):
    for root, _, files in os.walk(tmp):
        for name in sorted(files):
            if name.endswith(".log"):
                path = os.path.join(root, name)
                print("---- %s (tail)" % os.path.relpath(path, tmp))
                with open(path, errors="replace") as f:
                    print(f.read()[-2000:])


def run(tests, only, prefix):
    """Run each test (all, or those named in `only`) in a fresh temporary
    directory; return the exit status (1 when any failed)."""
    passed = failed = 0
    for fn in tests:
        if only and fn.__name__ not in only:
            continue
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            t0 = time.time()
            try:
                fn(tmp)
                passed += 1
                print("ok   %s (%.1fs)" % (fn.__name__, time.time() - t0), flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure kind
                failed += 1
                tb = traceback.extract_tb(e.__traceback__)
                where = tb[-2] if isinstance(e, Fail) and len(tb) > 1 else tb[-1]
                print("FAIL %s (line %d): %s" % (fn.__name__, where.lineno, e), flush=True)
                if not isinstance(e, Fail):
                    traceback.print_exc()
                _print_logs(tmp)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def nginx_env(base=None):
    """The environment for a process that runs nginx (nginx itself, or the
    agent's `nginx -t`). In the ASan build ctest sets GRAY_NGINX_PRELOAD to
    the sanitizer runtimes the module was built with, which Debian's nginx
    does not link, and GRAY_NGINX_ASAN_OPTIONS; None: inherit as is."""
    env = dict(os.environ if base is None else base)
    pre = os.environ.get("GRAY_NGINX_PRELOAD")
    if not pre:
        return None if base is None else env
    env["LD_PRELOAD"] = pre
    if os.environ.get("GRAY_NGINX_ASAN_OPTIONS"):
        env["ASAN_OPTIONS"] = os.environ["GRAY_NGINX_ASAN_OPTIONS"]
    return env


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_report(*paths):
    """The first sanitizer report in these logs, or None."""
    for p in paths:
        try:
            with open(p, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        for m in SANITIZER_MARKS:
            k = text.find(m)
            if k >= 0:
                return "%s: %s" % (p, text[max(0, k - 200):k + 3000])
    return None
