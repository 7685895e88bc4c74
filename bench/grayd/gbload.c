/* bench/grayd: the shared load client. See gbload.h. */
#define _GNU_SOURCE /* memmem */
#include "gbload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF_MIN 2048
#define RBUF_MAX (4u << 20) /* one answer or message never needs more */
#define HEAD_MAX (64u << 10)

struct gb_loop {
  struct event_base *base;
  struct event *tick;
  struct sockaddr_in addr;
  int max_connecting, connecting;
  gb_conn *wait_head, *wait_tail;
};

int64_t gb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int gb_raise_nofile(size_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    fprintf(stderr, "bench: getrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
    return -1;
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= need) return 0;
  struct rlimit want = rl;
  want.rlim_cur = need;
  if (want.rlim_max != RLIM_INFINITY && want.rlim_max < need) want.rlim_max = need;
  if (setrlimit(RLIMIT_NOFILE, &want) == 0) return 0;
  int e = errno;
  /* Without root the soft limit can still reach the hard one. */
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    fprintf(stderr,
            "bench: cannot raise the open-file limit to %zu (soft %llu, hard %llu): %s.\n"
            "       Run as root, or raise it first (ulimit -n %zu; /proc/sys/fs/nr_open).\n",
            need, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, strerror(e), need);
    return -1;
  }
  want.rlim_max = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &want) == 0) return 0;
  fprintf(stderr, "bench: cannot raise the open-file limit to %zu: %s\n", need, strerror(errno));
  return -1;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
}

gb_loop *gb_loop_new(int port, int max_connecting) {
  gb_loop *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->base = event_base_new();
  l->tick = l->base ? event_new(l->base, -1, EV_PERSIST, on_tick, l) : NULL;
  if (!l->tick) {
    if (l->base) event_base_free(l->base);
    free(l);
    return NULL;
  }
  struct timeval tv = {0, 5000};
  event_add(l->tick, &tv);
  l->addr.sin_family = AF_INET;
  l->addr.sin_port = htons((uint16_t)port);
  l->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only, always */
  l->max_connecting = max_connecting > 0 ? max_connecting : 256;
  return l;
}

void gb_loop_free(gb_loop *l) {
  if (!l) return;
  event_free(l->tick);
  event_base_free(l->base);
  free(l);
}

struct event_base *gb_loop_base(gb_loop *l) { return l->base; }

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

void gb_conn_init(gb_conn *c, gb_loop *l, gb_msg_cb on_msg, gb_close_cb on_close, void *user, size_t idx) {
  memset(c, 0, sizeof *c);
  c->loop = l;
  c->fd = -1;
  c->on_msg = on_msg;
  c->on_close = on_close;
  c->user = user;
  c->idx = idx;
}

static void reset_parse(gb_conn *c) {
  c->in_body = 0;
  c->status = 0;
  c->chunked = 0;
  c->clen = 0;
  c->acclen = 0;
  c->chunk_left = 0;
  c->in_chunk = 0;
}

static void start_connect(gb_conn *c);

static void pump_waiting(gb_loop *l) {
  while (l->wait_head && l->connecting < l->max_connecting) {
    gb_conn *c = l->wait_head;
    l->wait_head = c->next_wait;
    if (!l->wait_head) l->wait_tail = NULL;
    c->next_wait = NULL;
    c->queued = 0;
    start_connect(c);
  }
}

static void fail(gb_conn *c, const char *why) {
  gb_conn_close(c);
  if (c->on_close) c->on_close(c, why);
}

static void start_connect(gb_conn *c) {
  gb_loop *l = c->loop;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail(c, strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  c->rev = event_new(l->base, fd, EV_READ | EV_PERSIST, on_read, c);
  c->wev = event_new(l->base, fd, EV_WRITE, on_write, c);
  if (!c->rev || !c->wev) {
    fail(c, "out of memory");
    return;
  }
  if (connect(fd, (struct sockaddr *)&l->addr, sizeof l->addr) == 0) {
    c->connected = 1;
  } else if (errno == EINPROGRESS) {
    l->connecting++;
    c->counting = 1;
  } else {
    fail(c, strerror(errno));
    return;
  }
  event_add(c->rev, NULL);
  if (!c->connected || c->wlen > c->woff) event_add(c->wev, NULL);
}

int gb_conn_open(gb_conn *c) {
  gb_loop *l = c->loop;
  if (c->fd >= 0 || c->queued) return 0;
  reset_parse(c);
  c->rlen = 0;
  c->closing = 0;
  if (l->connecting >= l->max_connecting) {
    c->queued = 1;
    if (l->wait_tail) l->wait_tail->next_wait = c;
    else l->wait_head = c;
    l->wait_tail = c;
    return 0;
  }
  start_connect(c);
  return c->fd >= 0 ? 0 : -1;
}

void gb_conn_close(gb_conn *c) {
  gb_loop *l = c->loop;
  if (c->queued) {
    gb_conn **pp = &l->wait_head, *prev = NULL;
    while (*pp && *pp != c) {
      prev = *pp;
      pp = &(*pp)->next_wait;
    }
    if (*pp) {
      *pp = c->next_wait;
      if (l->wait_tail == c) l->wait_tail = prev;
    }
    c->queued = 0;
    c->next_wait = NULL;
  }
  if (c->rev) event_free(c->rev);
  if (c->wev) event_free(c->wev);
  c->rev = c->wev = NULL;
  if (c->fd >= 0) close(c->fd);
  if (c->counting) {
    c->counting = 0;
    l->connecting--;
    pump_waiting(l);
  }
  c->fd = -1;
  c->gen++;
  c->connected = 0;
  c->wlen = c->woff = 0;
  c->rlen = 0;
  reset_parse(c);
}

void gb_conn_destroy(gb_conn *c) {
  gb_conn_close(c);
  free(c->wbuf);
  free(c->rbuf);
  free(c->acc);
  c->wbuf = c->rbuf = c->acc = NULL;
  c->wcap = c->rcap = c->acccap = 0;
}

static void flush(gb_conn *c) {
  while (c->woff < c->wlen) {
    ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        event_add(c->wev, NULL);
        return;
      }
      if (errno == EINTR) continue;
      fail(c, strerror(errno));
      return;
    }
    c->woff += (size_t)n;
  }
  c->woff = c->wlen = 0;
}

int gb_conn_send(gb_conn *c, const char *data, size_t len) {
  if (c->wlen + len > c->wcap) {
    size_t cap = c->wcap ? c->wcap : 512;
    while (cap < c->wlen + len) cap *= 2;
    char *nb = realloc(c->wbuf, cap);
    if (!nb) return -1;
    c->wbuf = nb;
    c->wcap = cap;
  }
  memcpy(c->wbuf + c->wlen, data, len);
  c->wlen += len;
  if (c->fd >= 0 && c->connected) flush(c);
  return 0;
}

/* Returns 0 when connected (or still connecting), -1 when it failed. */
static int finish_connect(gb_conn *c) {
  int err = 0;
  socklen_t el = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
  if (err == EINPROGRESS || err == EALREADY) return 0;
  if (err) {
    fail(c, strerror(err)); /* gives the connect slot back */
    return -1;
  }
  c->connected = 1;
  if (c->counting) {
    c->counting = 0;
    c->loop->connecting--;
    pump_waiting(c->loop);
  }
  return 0;
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
  gb_conn *c = arg;
  (void)fd;
  (void)what;
  if (!c->connected) {
    if (finish_connect(c) || !c->connected) {
      if (c->fd >= 0 && !c->connected) event_add(c->wev, NULL);
      return;
    }
  }
  flush(c);
}

static int parse_hex(const char *p, const char *end, size_t *out) {
  size_t v = 0;
  int any = 0;
  for (; p < end; p++) {
    int d;
    if (*p >= '0' && *p <= '9') d = *p - '0';
    else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
    else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
    else break; /* chunk extensions after ';' are ignored */
    if (v > (SIZE_MAX >> 4)) return -1;
    v = v * 16 + (size_t)d;
    any = 1;
  }
  if (!any) return -1;
  *out = v;
  return 0;
}

static int header_is(const char *line, size_t len, const char *name, const char **val, size_t *vlen) {
  size_t nl = strlen(name);
  if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl)) return 0;
  const char *v = line + nl + 1, *e = line + len;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
  *val = v;
  *vlen = (size_t)(e - v);
  return 1;
}

/* Parses the answer head in rbuf[off..off+hlen). Returns 0 or -1. */
static int parse_head(gb_conn *c, const char *h, size_t hlen) {
  if (hlen < 12 || memcmp(h, "HTTP/1.", 7) || h[8] != ' ') return -1;
  int st = 0;
  for (int i = 9; i < 12; i++) {
    if (h[i] < '0' || h[i] > '9') return -1;
    st = st * 10 + (h[i] - '0');
  }
  c->status = st;
  c->chunked = 0;
  c->clen = 0;
  const char *p = memchr(h, '\n', hlen), *end = h + hlen;
  while (p && p + 1 < end) {
    const char *line = p + 1;
    const char *nl = memchr(line, '\n', (size_t)(end - line));
    if (!nl) break;
    size_t ll = (size_t)(nl - line);
    if (ll && line[ll - 1] == '\r') ll--;
    const char *v;
    size_t vl;
    if (header_is(line, ll, "Content-Length", &v, &vl)) {
      size_t n = 0;
      if (!vl) return -1;
      for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9' || n > RBUF_MAX) return -1;
        n = n * 10 + (size_t)(v[i] - '0');
      }
      if (n > RBUF_MAX) return -1;
      c->clen = n;
    } else if (header_is(line, ll, "Transfer-Encoding", &v, &vl)) {
      if (vl >= 7 && !strncasecmp(v + vl - 7, "chunked", 7)) c->chunked = 1;
    } else if (header_is(line, ll, "Connection", &v, &vl)) {
      if (vl == 5 && !strncasecmp(v, "close", 5)) c->closing = 1;
    }
    p = nl;
  }
  return 0;
}

static int acc_add(gb_conn *c, const char *p, size_t n) {
  if (c->acclen + n > c->acccap) {
    size_t cap = c->acccap ? c->acccap : 1024;
    while (cap < c->acclen + n) cap *= 2;
    if (cap > RBUF_MAX) return -1;
    char *nb = realloc(c->acc, cap);
    if (!nb) return -1;
    c->acc = nb;
    c->acccap = cap;
  }
  memcpy(c->acc + c->acclen, p, n);
  c->acclen += n;
  return 0;
}

/* in_chunk: 0 size line, 1 data, 2 CRLF after data, 3 trailer after the
 * last chunk. */
static void parse(gb_conn *c, int64_t t) {
  size_t off = 0;
  unsigned gen = c->gen;
  for (;;) {
    const char *b = c->rbuf + off;
    size_t avail = c->rlen - off;
    if (!c->in_body) {
      const char *e = avail >= 4 ? gb_find(b, avail, "\r\n\r\n") : NULL;
      if (!e) {
        if (avail > HEAD_MAX) goto bad;
        break;
      }
      size_t hlen = (size_t)(e - b) + 4;
      if (parse_head(c, b, hlen)) goto bad;
      c->in_body = 1;
      c->in_chunk = 0;
      c->acclen = 0;
      off += hlen;
      continue;
    }
    if (!c->chunked) {
      if (avail < c->clen) break;
      int st = c->status;
      size_t n = c->clen;
      int closing = c->closing;
      c->in_body = 0;
      off += n;
      c->on_msg(c, st, b, n, t, 0);
      if (c->gen != gen) return;
      if (closing) {
        fail(c, "the server closed the connection after its answer");
        return;
      }
      continue;
    }
    if (c->in_chunk == 0 || c->in_chunk == 3) {
      const char *e = avail >= 2 ? gb_find(b, avail, "\r\n") : NULL;
      if (!e) {
        if (avail > 1024) goto bad;
        break;
      }
      size_t ll = (size_t)(e - b);
      off += ll + 2;
      if (c->in_chunk == 3) {
        if (ll) continue; /* a trailer header */
        int st = c->status;
        c->in_body = 0;
        c->on_msg(c, st, c->acc ? c->acc : "", c->acclen, t, 0);
        if (c->gen != gen) return;
        c->acclen = 0;
        continue;
      }
      size_t n;
      if (parse_hex(b, e, &n)) goto bad;
      if (n == 0) {
        c->in_chunk = 3;
      } else {
        c->chunk_left = n;
        c->in_chunk = 1;
      }
      continue;
    }
    if (c->in_chunk == 1) {
      if (!avail) break;
      size_t take = avail < c->chunk_left ? avail : c->chunk_left;
      if (acc_add(c, b, take)) goto bad;
      off += take;
      c->chunk_left -= take;
      if (c->chunk_left == 0) c->in_chunk = 2;
      /* Deliver every complete message in the stream. */
      size_t start = 0;
      for (;;) {
        const char *nl = memchr(c->acc + start, '\n', c->acclen - start);
        if (!nl) break;
        size_t ml = (size_t)(nl - (c->acc + start));
        c->on_msg(c, c->status, c->acc + start, ml, t, 1);
        if (c->gen != gen) return;
        start += ml + 1;
      }
      if (start) {
        memmove(c->acc, c->acc + start, c->acclen - start);
        c->acclen -= start;
      }
      continue;
    }
    /* in_chunk == 2 */
    if (avail < 2) break;
    if (b[0] != '\r' || b[1] != '\n') goto bad;
    off += 2;
    c->in_chunk = 0;
  }
  if (off) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
  return;
bad:
  fail(c, "malformed HTTP answer");
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
  gb_conn *c = arg;
  (void)fd;
  (void)what;
  if (!c->connected) {
    if (finish_connect(c) || !c->connected) return;
    if (c->wlen > c->woff) flush(c);
    if (c->fd < 0) return;
  }
  if (c->rcap - c->rlen < RBUF_MIN) {
    size_t cap = c->rcap ? c->rcap * 2 : RBUF_MIN * 2;
    if (cap > RBUF_MAX) {
      fail(c, "answer too large");
      return;
    }
    char *nb = realloc(c->rbuf, cap);
    if (!nb) {
      fail(c, "out of memory");
      return;
    }
    c->rbuf = nb;
    c->rcap = cap;
  }
  ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
  if (n == 0) {
    fail(c, c->in_body || c->rlen ? "closed by the server in the middle of an answer" : "closed by the server");
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    fail(c, strerror(errno));
    return;
  }
  int64_t t = gb_now_ns();
  c->rlen += (size_t)n;
  parse(c, t);
}

int gb_run_until(gb_loop *l, int (*done)(void *), void *arg, int64_t deadline_ns) {
  for (;;) {
    if (done && done(arg)) return 0;
    if (gb_now_ns() >= deadline_ns) return -1;
    event_base_loop(l->base, EVLOOP_ONCE);
  }
}

void gb_run_for(gb_loop *l, int ms) { gb_run_until(l, NULL, NULL, gb_now_ns() + (int64_t)ms * 1000000); }

/* Sync calls keep their answer in a small side record hung on `user`. */
typedef struct sync_rec {
  int done, status;
  char *body;
  size_t len;
  const char *why; /* why the connection closed, if it did */
} sync_rec;

void gb_sync_cb(gb_conn *c, int status, const char *body, size_t len, int64_t t_ns, int msg) {
  sync_rec *r = c->user;
  (void)t_ns;
  (void)msg;
  if (!r) return;
  char *nb = realloc(r->body, r->len + len + 1);
  if (!nb) {
    r->status = -1;
    r->done = 1;
    return;
  }
  r->body = nb;
  memcpy(r->body + r->len, body, len);
  r->len += len;
  r->body[r->len] = '\0';
  r->status = status;
  if (!msg) r->done = 1;
}

static void sync_closed(gb_conn *c, const char *why) {
  sync_rec *r = c->user;
  if (r && !r->done) {
    r->why = why;
    r->status = -1;
    r->done = 1;
  }
}

static int sync_done(void *arg) { return ((sync_rec *)arg)->done; }

static int sync_once(gb_conn *c, const char *req, size_t len, int timeout_ms, sync_rec *r) {
  c->user = r;
  c->on_close = sync_closed;
  if (c->fd < 0 && gb_conn_open(c)) return -1;
  if (gb_conn_send(c, req, len)) return -1;
  if (gb_run_until(c->loop, sync_done, r, gb_now_ns() + (int64_t)timeout_ms * 1000000)) {
    fprintf(stderr, "bench: no answer within %d ms\n", timeout_ms);
    gb_conn_close(c);
    return -2;
  }
  return r->status;
}

int gb_sync_call(gb_conn *c, const char *req, size_t len, int timeout_ms, char **body) {
  sync_rec r = {0, 0, NULL, 0, NULL};
  /* A keep-alive connection the server closed while idle fails once: try
   * again on a new one (no answer byte was seen). */
  int reused = c->fd >= 0;
  int st = sync_once(c, req, len, timeout_ms, &r);
  if (st == -1 && reused && r.len == 0) {
    r.done = 0;
    r.status = 0;
    st = sync_once(c, req, len, timeout_ms, &r);
  }
  c->user = NULL;
  if (st < 0) {
    if (r.why) fprintf(stderr, "bench: control connection: %s\n", r.why);
    free(r.body);
    return -1;
  }
  if (body) *body = r.body ? r.body : calloc(1, 1);
  else free(r.body);
  return st;
}

long gb_grayd_metric(gb_conn *ctl, const char *token, const char *name) {
  char req[512], key[128], *body = NULL;
  int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                   token);
  snprintf(key, sizeof key, "\n%s ", name);
  int st = n > 0 && (size_t)n < sizeof req ? gb_sync_call(ctl, req, (size_t)n, 10000, &body) : -1;
  int64_t v = -1;
  if (st != 200 || !gb_find_int(body, strlen(body), key, &v)) {
    fprintf(stderr, "bench: GET /metrics: status %d, no %s\n", st, name);
    v = -1;
  }
  free(body);
  return (long)v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void gb_sort(double *v, size_t n) { qsort(v, n, sizeof *v, cmp_double); }

double gb_percentile(const double *sorted, size_t n, double p) {
  if (!n) return 0;
  double rank = p / 100.0 * (double)n;
  size_t k = (size_t)rank;
  if ((double)k < rank) k++;
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

const char *gb_find(const char *s, size_t len, const char *needle) {
  return memmem(s, len, needle, strlen(needle));
}

int gb_find_int(const char *s, size_t len, const char *key, int64_t *out) {
  const char *p = gb_find(s, len, key), *end = s + len;
  if (!p) return 0;
  p += strlen(key);
  while (p < end && *p == ' ') p++;
  if (p < end && *p == '"') p++;
  int64_t v = 0;
  int any = 0;
  for (; p < end && *p >= '0' && *p <= '9'; p++) {
    if (v > (INT64_MAX - 9) / 10) return 0;
    v = v * 10 + (*p - '0');
    any = 1;
  }
  if (!any) return 0;
  *out = v;
  return 1;
}

long gb_arg_long(const char *flag, const char *v, long lo, long hi) {
  long n = 0;
  const char *d = v;
  if (!v || !*d) goto bad;
  for (; *d; d++) {
    if (*d < '0' || *d > '9' || n > hi) goto bad;
    n = n * 10 + (*d - '0');
  }
  if (n < lo || n > hi) goto bad;
  return n;
bad:
  fprintf(stderr, "bench: %s must be a number from %ld to %ld, not \"%s\"\n", flag, lo, hi, v ? v : "");
  exit(64);
}

static long parse_kib(const char *line, const char *key) {
  size_t kl = strlen(key);
  if (strncmp(line, key, kl)) return -1;
  const char *p = line + kl;
  while (*p == ' ' || *p == '\t') p++;
  long v = 0;
  int any = 0;
  for (; *p >= '0' && *p <= '9'; p++) {
    v = v * 10 + (*p - '0');
    any = 1;
  }
  return any ? v : -1;
}

int gb_proc_rss_kib(long pid, long *hwm, long *rss) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%ld/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  *hwm = *rss = -1;
  while (fgets(line, sizeof line, f)) {
    long v;
    if ((v = parse_kib(line, "VmHWM:")) >= 0) *hwm = v;
    if ((v = parse_kib(line, "VmRSS:")) >= 0) *rss = v;
  }
  fclose(f);
  return *hwm >= 0 && *rss >= 0 ? 0 : -1;
}

int gb_proc_cpu_ticks(long pid, long long *ticks) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  if (!p) return -1;
  /* Fields after the command: state is field 3; utime 14, stime 15. */
  long long vals[2] = {0, 0};
  int field = 2;
  for (p++; *p && field < 15;) {
    while (*p == ' ') p++;
    field++;
    long long v = 0;
    while (*p && *p != ' ') {
      if (*p >= '0' && *p <= '9') v = v * 10 + (*p - '0');
      p++;
    }
    if (field == 14) vals[0] = v;
    if (field == 15) vals[1] = v;
  }
  if (field < 15) return -1;
  *ticks = vals[0] + vals[1];
  return 0;
}
