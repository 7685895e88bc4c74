"""Shared pieces for tests that run Debian's nginx with ngx_http_gray_module
(label "nginx"): an nginx with its own prefix, configuration and ports on
127.0.0.1, stopped by PID; echo backends in threads; small HTTP helpers.
Standard library only.

Nothing a test does splices an unchecked string into a configuration or a
command line: names written into nginx.conf must match NAME_RE (the policy
name pattern), paths are the test's own temporary directory, and commands
are argument lists.
"""
import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from testkit import Fail, check, free_port, nginx_env, sanitizer_report, wait_until  # noqa: E402,F401

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def safe_name(name):
    check(isinstance(name, str) and NAME_RE.match(name), "not a safe name for a config: %r" % (name,))
    return name


def write_atomic(path, data):
    """Replace a file by rename (a new inode), as the agent does."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


# ---- echo backends -----------------------------------------------------------

class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(min(n, 1 << 20))
        delay = float(self.headers.get("X-Backend-Sleep") or 0)
        if delay:
            time.sleep(min(delay, 5.0))
        status = int(self.headers.get("X-Backend-Status") or 200)
        body = json.dumps({
            "backend": self.server.name,
            "host": self.headers.get("Host"),
            "tags": self.headers.get_all("X-Gray-Tag") or [],
            "method": self.command,
            "path": self.path,
        }).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, *args):
        pass


class Backend:
    """An HTTP server in a thread that answers every request with JSON
    saying who it is and what it received (Host, X-Gray-Tag)."""

    def __init__(self, name):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.srv.daemon_threads = True
        self.srv.name = name
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(5)


# ---- nginx ---------------------------------------------------------------------

def children(pid):
    """PIDs whose parent is pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may hold spaces or parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(d))
    return out


def listener_of(port):
    """The inode of the socket listening on TCP `port` (IPv4 or IPv6), or
    None."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            col = row.split()
            # local address "ADDR:PORT" in hex; state 0A is LISTEN
            if len(col) > 9 and col[3] == "0A" and int(col[1].rsplit(":", 1)[1], 16) == port:
                return col[9]
    return None


def sockets_of(pid):
    """The inodes of the sockets process `pid` holds open."""
    out = set()
    fds = "/proc/%d/fd" % pid
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Nginx:
    """Debian's nginx with its own prefix directory, in the foreground
    (daemon off), so the PID we started is the master's."""

    def __init__(self, nginx, tmp, name="nginx"):
        self.nginx = nginx
        self.prefix = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "error.log")
        self.proc = None
        self.workers_seen = set()

    def main_context(self, module, workers=1):
        """The lines of the main context every test config starts with."""
        lines = ["load_module %s;" % module,
                 "daemon off;",
                 "master_process on;",
                 "worker_processes %d;" % workers,
                 "pid %s;" % os.path.join(self.prefix, "nginx.pid"),
                 "error_log %s info;" % self.error_log,
                 "events { worker_connections 512; }"]
        if os.geteuid() == 0:
            # workers must read the policy file in our private directory
            lines.insert(1, "user root;")
        return "\n".join(lines) + "\n"

    def http_common(self):
        t = os.path.join(self.prefix, "tmp")
        return ("access_log %s;\n" % os.path.join(self.prefix, "access.log") +
                "".join("%s_temp_path %s/%s;\n" % (k, t, k) for k in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")))

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def test_conf(self):
        """nginx -t: (exit code, output)."""
        p = subprocess.run([self.nginx, "-t", "-p", self.prefix + "/", "-c", self.conf, "-e", self.error_log],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=nginx_env())
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def start(self, port, timeout=10.0):
        self.out = open(os.path.join(self.prefix, "stderr.log"), "ab")
        argv = [self.nginx, "-p", self.prefix + "/", "-c", self.conf, "-e", self.error_log]
        if os.environ.get("GRAY_NGINX_VALGRIND"):
            # A manual memory check of the module in the real nginx (slow:
            # timing assertions may fail). Reports: valgrind.PID.log under
            # GRAY_NGINX_VALGRIND, which must be a directory.
            argv = ["valgrind", "--trace-children=yes", "--error-limit=no", "--num-callers=30",
                    "--log-file=" + os.path.join(os.environ["GRAY_NGINX_VALGRIND"], "valgrind.%p.log")] + argv
            timeout *= 10
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out,
                                     env=nginx_env())
        self.port = port

        def up():
            if self.proc.poll() is not None:
                raise Fail("nginx exited at start (%s): %s" % (self.proc.returncode, self.log_tail()))
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            # the port answers: it must be nginx's (its master holds the
            # listening socket), not another process's that took the port
            # before nginx could bind it (nginx retries bind() for seconds)
            check(listener_of(port) in sockets_of(self.proc.pid),
                  "port %d answers, but not from this nginx (another process holds it): %s"
                  % (port, self.log_tail()))
            return True
        wait_until("nginx to listen on %d" % port, up, timeout)
        return self

    def log_tail(self, n=3000):
        text = ""
        for p in (os.path.join(self.prefix, "stderr.log"), self.error_log):
            try:
                with open(p, errors="replace") as f:
                    text += f.read()[-n:]
            except OSError:
                pass
        return text

    def workers(self):
        pids = children(self.proc.pid) if self.proc else []
        self.workers_seen.update(pids)
        return pids

    def reload(self):
        self.workers()
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=15):
        if self.proc is None:
            return
        self.workers()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers we saw that outlived their master: by the PIDs recorded
        # as its children, and only while they still are nginx processes.
        deadline = time.time() + 5
        for pid in sorted(self.workers_seen):
            while alive(pid) and time.time() < deadline:
                time.sleep(0.02)
            if alive(pid) and comm(pid) == "nginx":
                os.kill(pid, signal.SIGKILL)
        self.out.close()
        self.proc = None
        # nginx points its stderr at the error log once it runs: a report
        # of the sanitizer build's module lands in one of the two
        report = sanitizer_report(os.path.join(self.prefix, "stderr.log"), self.error_log)
        if report:
            raise Fail("sanitizer report from nginx: " + report)


def request(port, method="GET", target="/", headers=(), body=None, timeout=10):
    """One request on its own connection. headers: (name, value) pairs,
    values str or bytes, sent in order (repeats allowed). Returns (status,
    {lower-case name: [values]}, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.putrequest(method, target, skip_host=any(k.lower() == "host" for k, _ in headers),
                     skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        elif method in ("POST", "PUT", "PATCH"):
            c.putheader("Content-Length", "0")
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
        hdrs = {}
        for k, v in r.getheaders():
            hdrs.setdefault(k.lower(), []).append(v)
        return r.status, hdrs, data
    finally:
        c.close()


def status(port, path="/gray_status", fmt=None):
    """gray_status as JSON (or the Prometheus text with fmt="prometheus")."""
    target = path + ("?format=" + fmt if fmt else "")
    st, _, body = request(port, "GET", target)
    check(st == 200, ("gray_status", st, body[:300]))
    return body.decode() if fmt == "prometheus" else json.loads(body)
