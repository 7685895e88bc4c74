/* bench_grayd_watch: change propagation to N parked watchers.
 *   bench_grayd_watch --system grayd|etcd --port P [--token T] --watchers N
 *                     [--rounds R] [--settle-ms MS] [--round-timeout-s S]
 *
 * grayd: N keep-alive connections each hold `GET /v1/watch?since=REV&wait=60s`;
 * once /metrics shows all N parked, one `PUT /v1/policies/bench` (default
 * alternating v1/v2, so every PUT is a change). A watcher's latency is the
 * time from just before the PUT is sent until its whole answer (head and
 * Content-Length body, carrying the new revision) has been read. Each round
 * re-parks every watcher with the new revision as `since`.
 *
 * etcd: N connections each hold one `POST /v3/watch` stream on the gRPC
 * gateway (1 watcher = 1 connection, as for grayd); the write is
 * `POST /v3/kv/put`; a watcher's latency ends when the chunk carrying the
 * event with the new mod_revision has been read. etcd's watches stay
 * registered between rounds (its streams need no re-park).
 *
 * Everything goes to 127.0.0.1. Every wait is bounded in time; the number
 * of writes is the number of rounds. One line per round on stdout:
 *   round K: notified=N min_ms=X p50_ms=X p99_ms=X max_ms=X put_ms=X
 * (put_ms: when the write's own answer arrived)
 * and notes on stderr. Exit status 0 only when every watcher was notified
 * of the right revision in every round. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbload.h"

#define PARK_TIMEOUT_MS 120000
#define MAX_WATCHERS 100000

typedef enum { SYS_GRAYD, SYS_ETCD } sys_t;

typedef struct watcher {
  gb_conn c;
  int64_t got_ns;
  int64_t rev;
  int got;
  int created;
} watcher;

typedef struct bench {
  sys_t sys;
  gb_loop *l;
  const char *token;
  watcher *w;
  size_t n;
  gb_conn ctl, put;
  int64_t since;    /* grayd: the revision watchers park at */
  int64_t put_rev;  /* revision the current round's write made */
  int64_t put_ns;
  int put_done, put_status;
  int round_active;
  int64_t t0;
  size_t ngot, ncreated;
  size_t nerr, nwrong, nclosed;
  int errs_shown;
} bench;

static void note_err(bench *b, const char *what, const char *body, size_t len) {
  b->nerr++;
  if (b->errs_shown++ < 5) fprintf(stderr, "bench: %s: %.*s\n", what, (int)(len > 300 ? 300 : len), body);
}

static void send_grayd_watch(bench *b, watcher *x) {
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET /v1/watch?since=%lld&wait=60s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Authorization: Bearer %s\r\n\r\n",
                   (long long)b->since, b->token);
  if (x->c.fd < 0) gb_conn_open(&x->c);
  gb_conn_send(&x->c, req, (size_t)n);
}

static const char etcd_watch_body[] = "{\"create_request\":{\"key\":\"YmVuY2g=\"}}"; /* "bench" */

static void send_etcd_watch(watcher *x) {
  char req[512];
  int n = snprintf(req, sizeof req,
                   "POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n%s",
                   sizeof etcd_watch_body - 1, etcd_watch_body);
  if (x->c.fd < 0) gb_conn_open(&x->c);
  gb_conn_send(&x->c, req, (size_t)n);
}

static void watcher_closed(gb_conn *c, const char *why) {
  bench *b = c->user;
  b->nclosed++;
  if (b->errs_shown++ < 5) fprintf(stderr, "bench: watcher %zu: %s\n", c->idx, why);
}

static void grayd_msg(gb_conn *c, int status, const char *body, size_t len, int64_t t, int msg) {
  bench *b = c->user;
  watcher *x = &b->w[c->idx];
  (void)msg;
  if (status != 200) {
    note_err(b, "watch answer not 200", body, len);
    return;
  }
  if (gb_find(body, len, "\"reset\":true")) {
    note_err(b, "watch answered with a reset", body, len);
    return;
  }
  int64_t rev = 0;
  if (!gb_find_int(body, len, "\"revision\":", &rev)) {
    note_err(b, "watch answer without a revision", body, len);
    return;
  }
  if (gb_find(body, len, "\"events\":[]")) {
    /* The wait ran out with nothing new: ask again, as a client would. */
    send_grayd_watch(b, x);
    return;
  }
  if (!b->round_active || x->got) {
    note_err(b, "watch woke outside a round", body, len);
    return;
  }
  x->got = 1;
  x->got_ns = t;
  x->rev = rev;
  b->ngot++;
}

static void etcd_msg(gb_conn *c, int status, const char *body, size_t len, int64_t t, int msg) {
  bench *b = c->user;
  watcher *x = &b->w[c->idx];
  if (status != 200) {
    note_err(b, "watch answer not 200", body, len);
    return;
  }
  if (!msg) {
    note_err(b, "watch stream ended", body, len);
    return;
  }
  if (gb_find(body, len, "\"error\"") || gb_find(body, len, "\"canceled\":true")) {
    note_err(b, "watch stream error", body, len);
    return;
  }
  if (gb_find(body, len, "\"created\":true")) {
    if (!x->created) b->ncreated++;
    x->created = 1;
  }
  int64_t rev = 0;
  if (!gb_find(body, len, "\"events\":[") || !gb_find_int(body, len, "\"mod_revision\":", &rev)) return;
  if (!b->round_active || x->got) {
    note_err(b, "watch event outside a round", body, len);
    return;
  }
  x->got = 1;
  x->got_ns = t;
  x->rev = rev;
  b->ngot++;
}

static void put_msg(gb_conn *c, int status, const char *body, size_t len, int64_t t, int msg) {
  bench *b = c->user;
  (void)msg;
  b->put_status = status;
  b->put_ns = t;
  b->put_done = 1;
  if (status != 200 || !gb_find_int(body, len, "\"revision\":", &b->put_rev))
    note_err(b, "write failed", body, len);
}

static void put_closed(gb_conn *c, const char *why) {
  bench *b = c->user;
  if (!b->put_done) {
    fprintf(stderr, "bench: write connection: %s\n", why);
    b->put_status = -1;
    b->put_done = 1;
  }
}

/* The write request for round `k` (k = 0 is the set-up write). */
static int write_req(bench *b, int k, char *out, size_t cap) {
  const char *ver = k % 2 ? "v1" : "v2";
  char body[128];
  int bl;
  if (b->sys == SYS_GRAYD) {
    bl = snprintf(body, sizeof body, "{\"service\":\"bench\",\"default\":\"%s\"}", ver);
    return snprintf(out, cap,
                    "PUT /v1/policies/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                    b->token, bl, body);
  }
  /* value: base64 of "v1" / "v2" */
  bl = snprintf(body, sizeof body, "{\"key\":\"YmVuY2g=\",\"value\":\"%s\"}", k % 2 ? "djE=" : "djI=");
  return snprintf(out, cap,
                  "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  "Content-Length: %d\r\n\r\n%s",
                  bl, body);
}

static int sync_call(bench *b, const char *req, size_t len, char **body) {
  return gb_sync_call(&b->ctl, req, len, 10000, body);
}

static long grayd_watchers(bench *b) { return gb_grayd_metric(&b->ctl, b->token, "grayd_watchers"); }

static int all_created(void *arg) {
  bench *b = arg;
  return b->ncreated == b->n || b->nerr || b->nclosed;
}

static int round_done(void *arg) {
  bench *b = arg;
  return (b->ngot == b->n && b->put_done) || (b->put_done && b->put_status != 200);
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_grayd_watch --system grayd|etcd --port P [--token T] --watchers N\n"
          "                         [--rounds R] [--settle-ms MS] [--round-timeout-s S]\n");
  exit(64);
}

int main(int argc, char **argv) {
  bench b;
  memset(&b, 0, sizeof b);
  long port = 0, nw = 0, rounds = 5, settle_ms = 300, round_timeout_s = 30;
  const char *sys = NULL;
  for (int i = 1; i < argc; i += 2) { /* every option takes a value */
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--system") && v) sys = v;
    else if (!strcmp(a, "--port") && v) port = gb_arg_long(a, v, 1, 65535);
    else if (!strcmp(a, "--token") && v) b.token = v;
    else if (!strcmp(a, "--watchers") && v) nw = gb_arg_long(a, v, 1, MAX_WATCHERS);
    else if (!strcmp(a, "--rounds") && v) rounds = gb_arg_long(a, v, 1, 1000);
    else if (!strcmp(a, "--settle-ms") && v) settle_ms = gb_arg_long(a, v, 0, 60000);
    else if (!strcmp(a, "--round-timeout-s") && v) round_timeout_s = gb_arg_long(a, v, 1, 600);
    else usage();
  }
  if (!sys || !port || !nw) usage();
  if (!strcmp(sys, "grayd")) b.sys = SYS_GRAYD;
  else if (!strcmp(sys, "etcd")) b.sys = SYS_ETCD;
  else usage();
  if (b.sys == SYS_GRAYD && (!b.token || strlen(b.token) > 200 || strpbrk(b.token, "\r\n"))) {
    fprintf(stderr, "bench: grayd needs --token (the admin token grayd printed)\n");
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  if (gb_raise_nofile((size_t)nw + 256)) return 1;

  int rc = 1;
  double *lat = NULL;
  b.n = (size_t)nw;
  b.l = gb_loop_new((int)port, 256);
  b.w = calloc(b.n, sizeof(*b.w));
  lat = calloc(b.n, sizeof(*lat));
  if (!b.l || !b.w || !lat) {
    fprintf(stderr, "bench: out of memory\n");
    goto out;
  }
  gb_conn_init(&b.ctl, b.l, gb_sync_cb, NULL, NULL, 0);
  gb_conn_init(&b.put, b.l, put_msg, put_closed, &b, 0);
  for (size_t i = 0; i < b.n; i++)
    gb_conn_init(&b.w[i].c, b.l, b.sys == SYS_GRAYD ? grayd_msg : etcd_msg, watcher_closed, &b, i);

  /* Set-up write: the key or policy exists, and round 1's write changes it. */
  char req[1024], *body = NULL;
  int rl = write_req(&b, 0, req, sizeof req);
  int st = sync_call(&b, req, (size_t)rl, &body);
  int64_t rev = 0;
  if (st != 200 || !gb_find_int(body, strlen(body), "\"revision\":", &rev)) {
    fprintf(stderr, "bench: set-up write failed (status %d): %s\n", st, body ? body : "");
    free(body);
    goto out;
  }
  free(body);
  b.since = rev;
  long base_watchers = 0;
  if (b.sys == SYS_GRAYD && (base_watchers = grayd_watchers(&b)) < 0) goto out;

  int64_t t_open = gb_now_ns();
  if (b.sys == SYS_ETCD) {
    for (size_t i = 0; i < b.n; i++) send_etcd_watch(&b.w[i]);
    if (gb_run_until(b.l, all_created, &b, t_open + (int64_t)PARK_TIMEOUT_MS * 1000000) || b.ncreated != b.n) {
      fprintf(stderr, "bench: only %zu of %zu etcd watches created (%zu errors, %zu closed)\n", b.ncreated, b.n,
              b.nerr, b.nclosed);
      goto out;
    }
    fprintf(stderr, "bench: %zu etcd watches created in %.0f ms\n", b.n, (double)(gb_now_ns() - t_open) / 1e6);
  }

  int ok = 1;
  for (int k = 1; k <= rounds; k++) {
    if (b.sys == SYS_GRAYD) {
      int64_t tp = gb_now_ns();
      for (size_t i = 0; i < b.n; i++) send_grayd_watch(&b, &b.w[i]);
      long parked = -1;
      for (;;) {
        gb_run_for(b.l, 20);
        if (b.nerr || b.nclosed) break;
        parked = grayd_watchers(&b);
        if (parked < 0 || parked - base_watchers >= (long)b.n) break;
        if (gb_now_ns() - tp > (int64_t)PARK_TIMEOUT_MS * 1000000) break;
        gb_run_for(b.l, 30);
      }
      if (parked - base_watchers != (long)b.n || b.nerr || b.nclosed) {
        fprintf(stderr, "bench: round %d: %ld of %zu watchers parked (%zu errors, %zu closed)\n", k,
                parked - base_watchers, b.n, b.nerr, b.nclosed);
        ok = 0;
        break;
      }
      if (k == 1)
        fprintf(stderr, "bench: %zu grayd watchers parked in %.0f ms\n", b.n, (double)(gb_now_ns() - tp) / 1e6);
    }
    gb_run_for(b.l, (int)settle_ms);
    for (size_t i = 0; i < b.n; i++) b.w[i].got = 0;
    b.ngot = 0;
    b.put_done = 0;
    b.put_status = 0;
    b.put_rev = 0;
    rl = write_req(&b, k, req, sizeof req);
    if (b.put.fd < 0) {
      gb_conn_open(&b.put);
      /* Connect outside the timed interval. */
      gb_run_for(b.l, 5);
    }
    b.round_active = 1;
    b.t0 = gb_now_ns();
    gb_conn_send(&b.put, req, (size_t)rl);
    gb_run_until(b.l, round_done, &b, b.t0 + (int64_t)round_timeout_s * 1000000000);
    b.round_active = 0;
    if (!b.put_done || b.put_status != 200) {
      fprintf(stderr, "bench: round %d: the write failed\n", k);
      ok = 0;
      break;
    }
    size_t m = 0, wrong = 0;
    for (size_t i = 0; i < b.n; i++) {
      if (!b.w[i].got) continue;
      lat[m++] = (double)(b.w[i].got_ns - b.t0) / 1e6;
      if (b.w[i].rev != b.put_rev) wrong++;
    }
    b.nwrong += wrong;
    gb_sort(lat, m);
    printf("round %d: notified=%zu min_ms=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f put_ms=%.3f\n", k, m,
           m ? lat[0] : 0.0, gb_percentile(lat, m, 50), gb_percentile(lat, m, 99), m ? lat[m - 1] : 0.0,
           (double)(b.put_ns - b.t0) / 1e6);
    fflush(stdout);
    if (m != b.n || wrong) {
      fprintf(stderr, "bench: round %d: %zu of %zu watchers notified, %zu with another revision than %lld\n", k, m,
              b.n, wrong, (long long)b.put_rev);
      ok = 0;
    }
    b.since = b.put_rev;
  }
  if (b.nerr || b.nclosed) {
    fprintf(stderr, "bench: %zu error answers, %zu connections lost\n", b.nerr, b.nclosed);
    ok = 0;
  }
  rc = ok ? 0 : 1;
out:
  if (b.l && b.w && lat) {
    for (size_t i = 0; i < b.n; i++) gb_conn_destroy(&b.w[i].c);
    gb_conn_destroy(&b.ctl);
    gb_conn_destroy(&b.put);
  }
  free(b.w);
  free(lat);
  gb_loop_free(b.l);
  return rc;
}
