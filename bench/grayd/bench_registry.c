/* bench_grayd_registry: registry throughput and memory of grayd.
 *   bench_grayd_registry --port P --token T [--instances 10000] [--services 100]
 *                        [--conns 64] [--seconds 10] [--warmup-s 1]
 *                        [--pid PID] [--watchers N]
 *
 * 1. Registers the instances (`PUT /v1/services/svcK/instances/iJ`, spread
 *    over the services, TTL 300 s) over `conns` keep-alive connections.
 * 2. Heartbeats (`PUT .../instances/iJ/heartbeat`) from the same connections,
 *    one request in flight per connection (no pipelining), cycling through
 *    the instances, for a warm-up and then `seconds` measured seconds.
 * 3. With --watchers N: parks N long-poll watchers (one connection each)
 *    while the instances are registered, reads grayd's resident memory,
 *    wakes them all with one policy PUT, disconnects them all at once and
 *    reads grayd's peak (VmHWM) a second later. With --pid, VmRSS is also
 *    sampled every 5 ms throughout (the kernel's VmHWM can lag a short
 *    spike), reported as grayd_rss_sampled_max_mib.
 * With --pid, grayd's CPU use during the measured heartbeats is read from
 * /proc/PID/stat: 100 % is one core; under 100 % means the client (which
 * shares the machine) was the limit.
 *
 * Everything goes to 127.0.0.1; every phase is bounded in time and count.
 * Prints `name: value` lines on stdout, notes on stderr. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gbload.h"

#define TTL_S 300
#define PHASE_TIMEOUT_MS 120000
#define MAX_REQUESTS 100000000LL /* a hard cap on heartbeats, whatever the duration */
#define LAT_SAMPLES 2000000

typedef enum { PH_REGISTER, PH_HEARTBEAT } phase_t;

typedef struct client {
  gb_conn c;
  long next;      /* next instance index this connection handles */
  int inflight;
  int64_t sent_ns;
  int done;
} client;

typedef struct bench {
  gb_loop *l;
  const char *token;
  long ninst, nsvc;
  size_t nconns;
  client *cl;
  gb_conn ctl;
  phase_t phase;
  int stop, measuring;
  size_t ndone, inflight;
  long long answered, measured, total_sent;
  double *lat;
  size_t nlat;
  size_t nerr, nclosed;
  int errs_shown;
  /* watchers */
  gb_conn *w;
  size_t nw, nwgot;
  int wake_active;
  long pid;
  long rss_max_kib;
} bench;

static void sample_rss(evutil_socket_t fd, short what, void *arg) {
  bench *b = arg;
  long hwm, rss;
  (void)fd;
  (void)what;
  if (gb_proc_rss_kib(b->pid, &hwm, &rss) == 0 && rss > b->rss_max_kib) b->rss_max_kib = rss;
}

static void note_err(bench *b, const char *what, const char *body, size_t len) {
  b->nerr++;
  if (b->errs_shown++ < 5) fprintf(stderr, "bench: %s: %.*s\n", what, (int)(len > 300 ? 300 : len), body);
}

static void send_request(bench *b, client *x) {
  char req[768], body[256];
  long j = x->next;
  int n;
  if (b->phase == PH_REGISTER) {
    int bl = snprintf(body, sizeof body,
                      "{\"address\":\"10.%ld.%ld.%ld\",\"port\":8080,\"version\":\"%s\",\"ttl_s\":%d,"
                      "\"metadata\":{\"zone\":\"z%ld\"}}",
                      (j >> 16) & 255, (j >> 8) & 255, j & 255, j % 10 ? "v1" : "v2", TTL_S, j % 3);
    n = snprintf(req, sizeof req,
                 "PUT /v1/services/svc%ld/instances/i%ld HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                 j % b->nsvc, j, b->token, bl, body);
  } else {
    n = snprintf(req, sizeof req,
                 "PUT /v1/services/svc%ld/instances/i%ld/heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Authorization: Bearer %s\r\nContent-Length: 0\r\n\r\n",
                 j % b->nsvc, j, b->token);
  }
  x->inflight = 1;
  b->inflight++;
  b->total_sent++;
  x->sent_ns = gb_now_ns();
  if (x->c.fd < 0) gb_conn_open(&x->c);
  gb_conn_send(&x->c, req, (size_t)n);
}

static void client_msg(gb_conn *c, int status, const char *body, size_t len, int64_t t, int msg) {
  bench *b = c->user;
  client *x = &b->cl[c->idx];
  (void)msg;
  x->inflight = 0;
  b->inflight--;
  if (status != 200) note_err(b, b->phase == PH_REGISTER ? "register not 200" : "heartbeat not 200", body, len);
  b->answered++;
  if (b->phase == PH_REGISTER) {
    x->next += (long)b->nconns;
    if (x->next >= b->ninst) {
      x->done = 1;
      b->ndone++;
      return;
    }
    send_request(b, x);
    return;
  }
  if (b->measuring && status == 200) {
    b->measured++;
    if (b->nlat < LAT_SAMPLES) b->lat[b->nlat++] = (double)(t - x->sent_ns) / 1e6;
  }
  x->next += (long)b->nconns;
  if (x->next >= b->ninst) x->next = (long)c->idx;
  if (!b->stop && b->total_sent < MAX_REQUESTS) send_request(b, x);
}

static void client_closed(gb_conn *c, const char *why) {
  bench *b = c->user;
  client *x = &b->cl[c->idx];
  b->nclosed++;
  if (x->inflight) {
    x->inflight = 0;
    b->inflight--;
  }
  if (b->errs_shown++ < 5) fprintf(stderr, "bench: connection %zu: %s\n", c->idx, why);
}

static void watcher_msg(gb_conn *c, int status, const char *body, size_t len, int64_t t, int msg) {
  bench *b = c->user;
  (void)t;
  (void)msg;
  if (status != 200) {
    note_err(b, "watch answer not 200", body, len);
    return;
  }
  if (!b->wake_active) {
    note_err(b, "watch answered before the wake-up", body, len);
    return;
  }
  b->nwgot++;
}

static void watcher_closed(gb_conn *c, const char *why) {
  bench *b = c->user;
  b->nclosed++;
  if (b->errs_shown++ < 5) fprintf(stderr, "bench: watcher %zu: %s\n", c->idx, why);
}

static int registered(void *arg) {
  bench *b = arg;
  return b->ndone == b->nconns || b->nclosed || b->nerr;
}

static int drained(void *arg) { return ((bench *)arg)->inflight == 0; }

static int woken(void *arg) {
  bench *b = arg;
  return b->nwgot == b->nw || b->nclosed || b->nerr;
}

static double cpu_pct(long long ticks, int64_t ns) { return ns > 0 ? 100.0 * (double)ticks / (double)sysconf(_SC_CLK_TCK) / ((double)ns / 1e9) : 0; }

static double own_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

/* Sum of every "instances":N in GET /v1/services. */
static long live_instances(bench *b) {
  char req[512], *body = NULL;
  int n = snprintf(req, sizeof req,
                   "GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n", b->token);
  int st = gb_sync_call(&b->ctl, req, (size_t)n, 10000, &body);
  long sum = -1;
  if (st == 200) {
    sum = 0;
    size_t len = strlen(body);
    const char *p = body;
    int64_t v;
    while ((p = gb_find(p, len - (size_t)(p - body), "\"instances\":")) != NULL) {
      if (gb_find_int(p, len - (size_t)(p - body), "\"instances\":", &v)) sum += (long)v;
      p += 12;
    }
  }
  free(body);
  return sum;
}

static int put_policy(bench *b, const char *ver, int64_t *rev) {
  char req[512], body[128], *ans = NULL;
  int bl = snprintf(body, sizeof body, "{\"service\":\"bench\",\"default\":\"%s\"}", ver);
  int n = snprintf(req, sizeof req,
                   "PUT /v1/policies/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                   "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                   b->token, bl, body);
  int st = gb_sync_call(&b->ctl, req, (size_t)n, 10000, &ans);
  int ok = st == 200 && gb_find_int(ans, strlen(ans), "\"revision\":", rev);
  if (!ok) fprintf(stderr, "bench: PUT /v1/policies/bench: status %d %s\n", st, ans ? ans : "");
  free(ans);
  return ok ? 0 : -1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_grayd_registry --port P --token T [--instances N] [--services N]\n"
          "                            [--conns N] [--seconds S] [--warmup-s S] [--pid PID]\n"
          "                            [--watchers N]\n");
  exit(64);
}

int main(int argc, char **argv) {
  bench b;
  memset(&b, 0, sizeof b);
  long port = 0, conns = 64, seconds = 10, warmup = 1, pid = 0, nw = 0;
  b.ninst = 10000;
  b.nsvc = 100;
  for (int i = 1; i < argc; i += 2) { /* every option takes a value */
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--port") && v) port = gb_arg_long(a, v, 1, 65535);
    else if (!strcmp(a, "--token") && v) b.token = v;
    else if (!strcmp(a, "--instances") && v) b.ninst = gb_arg_long(a, v, 1, 1000000);
    else if (!strcmp(a, "--services") && v) b.nsvc = gb_arg_long(a, v, 1, 100000);
    else if (!strcmp(a, "--conns") && v) conns = gb_arg_long(a, v, 1, 4096);
    else if (!strcmp(a, "--seconds") && v) seconds = gb_arg_long(a, v, 1, 600);
    else if (!strcmp(a, "--warmup-s") && v) warmup = gb_arg_long(a, v, 0, 60);
    else if (!strcmp(a, "--pid") && v) pid = gb_arg_long(a, v, 1, 1L << 30);
    else if (!strcmp(a, "--watchers") && v) nw = gb_arg_long(a, v, 0, 100000);
    else usage();
  }
  if (!port || !b.token || strlen(b.token) > 200 || strpbrk(b.token, "\r\n")) usage();
  if (conns > b.ninst) conns = b.ninst;
  signal(SIGPIPE, SIG_IGN);
  if (gb_raise_nofile((size_t)conns + (size_t)nw + 256)) return 1;

  int rc = 1;
  struct event *sampler = NULL;
  b.nconns = (size_t)conns;
  b.l = gb_loop_new((int)port, 256);
  b.cl = calloc(b.nconns, sizeof(*b.cl));
  b.lat = malloc(LAT_SAMPLES * sizeof(double));
  b.nw = (size_t)nw;
  b.w = nw ? calloc(b.nw, sizeof(*b.w)) : NULL;
  if (!b.l || !b.cl || !b.lat || (nw && !b.w)) {
    fprintf(stderr, "bench: out of memory\n");
    goto out;
  }
  b.pid = pid;
  if (pid) {
    struct timeval tv = {0, 5000};
    sampler = event_new(gb_loop_base(b.l), -1, EV_PERSIST, sample_rss, &b);
    if (!sampler || event_add(sampler, &tv)) goto out;
  }
  gb_conn_init(&b.ctl, b.l, gb_sync_cb, NULL, NULL, 0);
  for (size_t i = 0; i < b.nw; i++) gb_conn_init(&b.w[i], b.l, watcher_msg, watcher_closed, &b, i);
  for (size_t i = 0; i < b.nconns; i++) {
    gb_conn_init(&b.cl[i].c, b.l, client_msg, client_closed, &b, i);
    b.cl[i].next = (long)i;
  }

  /* 1. Register. */
  b.phase = PH_REGISTER;
  int64_t t0 = gb_now_ns();
  for (size_t i = 0; i < b.nconns; i++) send_request(&b, &b.cl[i]);
  if (gb_run_until(b.l, registered, &b, t0 + (int64_t)PHASE_TIMEOUT_MS * 1000000) || b.ndone != b.nconns) {
    fprintf(stderr, "bench: registration did not finish (%lld answers, %zu errors, %zu closed)\n", b.answered,
            b.nerr, b.nclosed);
    goto out;
  }
  double reg_s = (double)(gb_now_ns() - t0) / 1e9;
  long live = live_instances(&b);
  if (live != b.ninst) {
    fprintf(stderr, "bench: %ld instances live after registering %ld\n", live, b.ninst);
    goto out;
  }
  printf("grayd_registrations_per_s: %.0f\n", (double)b.ninst / reg_s);
  fflush(stdout);

  /* 2. Heartbeats: warm-up, then the measured window. */
  b.phase = PH_HEARTBEAT;
  for (size_t i = 0; i < b.nconns; i++) {
    b.cl[i].next = (long)i;
    send_request(&b, &b.cl[i]);
  }
  gb_run_for(b.l, (int)(warmup * 1000));
  long long cpu0 = 0, cpu1 = 0;
  int have_cpu = pid && gb_proc_cpu_ticks(pid, &cpu0) == 0;
  double own0 = own_cpu_s();
  b.measured = 0;
  b.measuring = 1;
  int64_t m0 = gb_now_ns();
  gb_run_for(b.l, (int)(seconds * 1000));
  b.measuring = 0;
  int64_t m1 = gb_now_ns();
  double own1 = own_cpu_s();
  if (have_cpu) have_cpu = gb_proc_cpu_ticks(pid, &cpu1) == 0;
  b.stop = 1;
  gb_run_until(b.l, drained, &b, gb_now_ns() + 5000000000LL);
  if (b.nerr || b.nclosed) {
    fprintf(stderr, "bench: heartbeats: %zu errors, %zu connections lost\n", b.nerr, b.nclosed);
    goto out;
  }
  double secs = (double)(m1 - m0) / 1e9;
  gb_sort(b.lat, b.nlat);
  printf("grayd_heartbeats_per_s: %.0f\n", (double)b.measured / secs);
  printf("grayd_heartbeat_p50_ms: %.3f\n", gb_percentile(b.lat, b.nlat, 50));
  printf("grayd_heartbeat_p99_ms: %.3f\n", gb_percentile(b.lat, b.nlat, 99));
  if (have_cpu) printf("grayd_heartbeat_cpu_pct: %.0f\n", cpu_pct(cpu1 - cpu0, m1 - m0));
  printf("bench_client_heartbeat_cpu_pct: %.0f\n", 100.0 * (own1 - own0) / secs);
  fflush(stdout);
  fprintf(stderr, "bench: %lld heartbeats in %.2f s over %zu connections\n", b.measured, secs, b.nconns);
  for (size_t i = 0; i < b.nconns; i++) gb_conn_close(&b.cl[i].c);

  /* 3. Watchers parked next to the instances; then one wake-up. */
  if (nw) {
    int64_t since = 0;
    long base = gb_grayd_metric(&b.ctl, b.token, "grayd_watchers");
    if (base < 0 || put_policy(&b, "v1", &since)) goto out;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /v1/watch?since=%lld&wait=60s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     (long long)since, b.token);
    int64_t tp = gb_now_ns();
    for (size_t i = 0; i < b.nw; i++) {
      gb_conn_open(&b.w[i]);
      gb_conn_send(&b.w[i], req, (size_t)n);
    }
    long parked = -1;
    while (gb_now_ns() - tp < (int64_t)PHASE_TIMEOUT_MS * 1000000) {
      gb_run_for(b.l, 50);
      if (b.nerr || b.nclosed) break;
      parked = gb_grayd_metric(&b.ctl, b.token, "grayd_watchers");
      if (parked < 0 || parked - base >= nw) break;
    }
    if (parked - base != nw) {
      fprintf(stderr, "bench: %ld of %ld watchers parked (%zu errors, %zu closed)\n", parked - base, nw, b.nerr,
              b.nclosed);
      goto out;
    }
    live = live_instances(&b);
    long hwm = 0, rss = 0;
    if (pid && gb_proc_rss_kib(pid, &hwm, &rss) == 0) {
      printf("grayd_rss_parked_mib: %.1f\n", (double)rss / 1024.0);
      fprintf(stderr, "bench: %ld watchers parked, %ld instances live: grayd RSS %.1f MiB (peak so far %.1f)\n", nw,
              live, (double)rss / 1024.0, (double)hwm / 1024.0);
    }
    int64_t rev = 0;
    b.wake_active = 1;
    int64_t tw = gb_now_ns();
    if (put_policy(&b, "v2", &rev)) goto out;
    gb_run_until(b.l, woken, &b, tw + 30000000000LL);
    if (b.nwgot != b.nw) {
      fprintf(stderr, "bench: %zu of %zu watchers woken (%zu errors, %zu closed)\n", b.nwgot, b.nw, b.nerr,
              b.nclosed);
      goto out;
    }
    fprintf(stderr, "bench: all %zu watchers woken in %.1f ms\n", b.nw, (double)(gb_now_ns() - tw) / 1e6);
    if (pid && gb_proc_rss_kib(pid, &hwm, &rss) == 0)
      fprintf(stderr, "bench: after the wake-up: grayd RSS %.1f MiB, peak so far %.1f MiB\n", (double)rss / 1024.0,
              (double)hwm / 1024.0);
    /* All at once, as after a network partition: grayd frees 10,000
     * connections in a burst. */
    for (size_t i = 0; i < b.nw; i++) gb_conn_close(&b.w[i]);
    gb_run_for(b.l, 1000);
    if (pid && gb_proc_rss_kib(pid, &hwm, &rss) == 0) {
      printf("grayd_peak_rss_mib: %.1f\n", (double)hwm / 1024.0);
      printf("grayd_rss_sampled_max_mib: %.1f\n", (double)b.rss_max_kib / 1024.0);
      fprintf(stderr, "bench: after disconnecting them: grayd RSS %.1f MiB\n", (double)rss / 1024.0);
    }
    printf("grayd_rss_instances: %ld\n", live);
    printf("grayd_rss_watchers: %ld\n", nw);
  }
  rc = 0;
out:
  if (b.l && b.cl && b.lat && (!nw || b.w)) {
    for (size_t i = 0; i < b.nconns; i++) gb_conn_destroy(&b.cl[i].c);
    for (size_t i = 0; i < b.nw; i++) gb_conn_destroy(&b.w[i]);
    gb_conn_destroy(&b.ctl);
  }
  if (sampler) event_free(sampler);
  free(b.cl);
  free(b.w);
  free(b.lat);
  gb_loop_free(b.l);
  return rc;
}
