/* bench_sdk_decide: ns per gray_client_decide + gray_client_pick on a real
 * snapshot followed from grayd, single thread, with the bare core
 * gray_decide on the same policy and requests as the in-run peer.
 *   GRAYLANE_TOKEN=T bench_sdk_decide --url http://127.0.0.1:PORT DIR
 *                    [--rounds R] [--passes K] [--instances N]
 * DIR is bench/eval (reference-policy.json, requests.jsonl).
 *
 * Setup: PUT the reference policy for service "order" on grayd, register N
 * instances (default 3) of each version it routes to (v1, v2, v3; TTL one
 * hour, so no heartbeat or eviction moves the revision during the run),
 * then a gray_client following "order" waits until its snapshot holds the
 * revision of the last of those writes. Every request is checked once: the
 * SDK's decision equals the core's, and pick returns an instance of the
 * decided version without falling back.
 *
 * Timing: after a warm-up, R rounds (default 9); each round times K passes
 * (default 50) over the request mix for each of (a) decide + pick, (b)
 * decide alone, (c) core gray_decide, in a rotating order, and the medians
 * of the rounds are printed. Allocation counting: this program defines
 * malloc/calloc/realloc over glibc's, counting per thread and in total;
 * sdk_allocations_per_decision counts what the timing thread allocated
 * during the SDK loops (a) and (b); sdk_process_allocations_timed counts
 * every thread of the process over the same time (the SDK's watch thread is
 * parked in its long poll then).
 *
 * Prints name: value lines on stdout, notes on stderr. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gray/client.h"
#include "sdkbench.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static _Thread_local unsigned long long t_allocs;
static atomic_ullong g_allocs;

void *malloc(size_t n) {
  t_allocs++;
  atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed);
  return __libc_malloc(n);
}
void *calloc(size_t n, size_t s) {
  t_allocs++;
  atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed);
  return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
  t_allocs++;
  atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed);
  return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }

#define MAX_REQUESTS 100000
#define READY_TIMEOUT_NS (10LL * 1000000000)

static volatile size_t g_sink;

/* One timed pass set; returns ns per decision. */
static double time_sdk(gray_client_t *c, const sb_requests *r, int passes, int with_pick) {
  size_t sink = 0;
  int64_t t0 = sb_now_ns();
  for (int k = 0; k < passes; k++)
    for (size_t i = 0; i < r->n; i++) {
      gray_client_decision_t d;
      gray_client_decide(c, SB_SERVICE, r->rq[i], &d);
      sink += (unsigned char)d.version[1];
      if (with_pick) {
        gray_endpoint_t ep;
        gray_client_pick(c, SB_SERVICE, d.version, &ep);
        sink += (size_t)ep.port;
      }
    }
  double ns = (double)(sb_now_ns() - t0) / ((double)passes * (double)r->n);
  g_sink += sink;
  return ns;
}

static double time_core(const gray_policy_t *p, const sb_requests *r, int passes) {
  size_t sink = 0;
  int64_t t0 = sb_now_ns();
  for (int k = 0; k < passes; k++)
    for (size_t i = 0; i < r->n; i++) {
      gray_decision_t d;
      gray_decide(p, r->rq[i], &d);
      sink += d.version.len;
    }
  double ns = (double)(sb_now_ns() - t0) / ((double)passes * (double)r->n);
  g_sink += sink;
  return ns;
}

static void usage(void) {
  fprintf(stderr,
          "usage: GRAYLANE_TOKEN=T bench_sdk_decide --url http://127.0.0.1:PORT [--rounds R] [--passes K] "
          "[--instances N] DIR\n");
}

int main(int argc, char **argv) {
  int rounds = 9, passes = 50, ninst = 3;
  const char *url = NULL, *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--passes") && i + 1 < argc) passes = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--instances") && i + 1 < argc) ninst = atoi(argv[++i]);
    else if (argv[i][0] != '-') dir = argv[i];
    else {
      usage();
      return 64;
    }
  }
  const char *token = sb_token();
  if (!url || !dir || !token || rounds < 1 || rounds > 1000 || passes < 1 || passes > 100000 || ninst < 1 ||
      ninst > 100) {
    usage();
    return 64;
  }

  /* The request mix and the core's own copy of the policy. */
  sb_requests reqs;
  if (sb_requests_load(dir, MAX_REQUESTS, &reqs) != 0) return 1;
  char path[4096], msg[1024];
  gray_error_t err;
  gray_policyset_t *set = NULL;
  snprintf(path, sizeof path, "%s/reference-policy.json", dir);
  if (gray_policyset_load_file(path, 0, &set, &err) != GRAY_OK) {
    fprintf(stderr, "bench_sdk_decide: %s: %s\n", path, gray_error_format(&err, msg, sizeof msg));
    return 1;
  }
  const gray_policy_t *pol = gray_policyset_find(set, SB_SERVICE, strlen(SB_SERVICE));
  char *policy = sb_policy_text(dir, NULL);
  if (!pol || !policy) return 1;

  /* grayd: the policy and the instances. */
  sb_http *h = sb_http_new(url, token);
  if (!h) return 1;
  int64_t rev = 0, r;
  if (sb_http_do(h, "PUT", "/v1/policies/" SB_SERVICE, policy, &r) != 200 || r < 0) return 1;
  rev = r;
  for (int v = 0; v < SB_NVERSIONS; v++)
    for (int k = 0; k < ninst; k++) {
      char ipath[256], body[256];
      snprintf(ipath, sizeof ipath, "/v1/services/%s/instances/%s-%s-%d", SB_SERVICE, SB_SERVICE,
               sb_versions[v], k + 1);
      snprintf(body, sizeof body, "{\"address\":\"127.0.0.1\",\"port\":%d,\"version\":\"%s\",\"ttl_s\":3600}",
               20000 + 100 * v + k, sb_versions[v]);
      if (sb_http_do(h, "PUT", ipath, body, &r) != 200) return 1;
      if (r > rev) rev = r;
    }
  fprintf(stderr, "bench_sdk_decide: grayd at revision %lld: policy %s (%zu bytes), %d instances of each of v1 v2 v3\n",
          (long long)rev, SB_SERVICE, strlen(policy), ninst);

  /* The client, and its snapshot holding that revision. */
  gray_client_options_t o;
  gray_client_t *c = NULL;
  gray_client_options_init(&o);
  o.servers = url;
  o.token = token;
  o.services = SB_SERVICE;
  if (gray_client_new(&o, &c, &err) != GRAY_OK || gray_client_start(c, &err) != GRAY_OK) {
    fprintf(stderr, "bench_sdk_decide: client: %s\n", gray_error_format(&err, msg, sizeof msg));
    return 1;
  }
  int64_t t0 = sb_now_ns();
  while (gray_client_revision(c) < rev && sb_now_ns() - t0 < READY_TIMEOUT_NS) sb_sleep_ns(1000000);
  if (gray_client_revision(c) < rev) {
    fprintf(stderr, "bench_sdk_decide: the client did not reach revision %lld in 10 s (at %lld)\n",
            (long long)rev, (long long)gray_client_revision(c));
    return 1;
  }
  fprintf(stderr, "bench_sdk_decide: snapshot at revision %lld after %.1f ms\n",
          (long long)gray_client_revision(c), (double)(sb_now_ns() - t0) / 1e6);

  /* Every request once: the SDK agrees with the core, pick finds the
   * decided version. */
  size_t wrong = 0, by_version[SB_NVERSIONS] = {0};
  for (size_t i = 0; i < reqs.n; i++) {
    gray_decision_t cd;
    gray_client_decision_t d;
    gray_endpoint_t ep;
    gray_decide(pol, reqs.rq[i], &cd);
    int rc = gray_client_decide(c, SB_SERVICE, reqs.rq[i], &d);
    int same = rc == GRAY_OK && strlen(d.version) == cd.version.len &&
               !memcmp(d.version, cd.version.p, cd.version.len) &&
               strlen(d.rule) == (cd.rule.p ? cd.rule.len : 0) && (!cd.rule.p || !memcmp(d.rule, cd.rule.p, cd.rule.len));
    int prc = rc == GRAY_OK ? gray_client_pick(c, SB_SERVICE, d.version, &ep) : -1;
    if (!same || prc != GRAY_OK || ep.fell_back || strcmp(ep.version, d.version)) {
      if (wrong++ < 5)
        fprintf(stderr, "bench_sdk_decide: request %zu: sdk rc %d version %s rule %s, core %.*s %.*s, pick rc %d\n",
                i + 1, rc, d.version, d.rule, (int)cd.version.len, cd.version.p, cd.rule.p ? (int)cd.rule.len : 0,
                cd.rule.p ? cd.rule.p : "", prc);
      continue;
    }
    for (int v = 0; v < SB_NVERSIONS; v++)
      if (!strcmp(d.version, sb_versions[v])) by_version[v]++;
  }
  if (wrong) {
    fprintf(stderr, "bench_sdk_decide: %zu of %zu requests disagree or cannot pick\n", wrong, reqs.n);
    return 1;
  }
  fprintf(stderr, "bench_sdk_decide: %zu requests, SDK == core on all; decided v1 %zu, v2 %zu, v3 %zu\n", reqs.n,
          by_version[0], by_version[1], by_version[2]);

  /* Warm-up, then rounds. */
  for (int w = 0; w < 3; w++) {
    time_sdk(c, &reqs, 2, 1);
    time_sdk(c, &reqs, 2, 0);
    time_core(pol, &reqs, 2);
  }
  double *ns[3];
  for (int k = 0; k < 3; k++) ns[k] = calloc((size_t)rounds, sizeof(double));
  unsigned long long sdk_allocs = 0, proc0 = atomic_load(&g_allocs);
  for (int rd = 0; rd < rounds; rd++)
    for (int j = 0; j < 3; j++) {
      int which = (rd + j) % 3;
      unsigned long long a0 = t_allocs;
      if (which == 0) ns[0][rd] = time_sdk(c, &reqs, passes, 1);
      else if (which == 1) ns[1][rd] = time_sdk(c, &reqs, passes, 0);
      else ns[2][rd] = time_core(pol, &reqs, passes);
      if (which != 2) sdk_allocs += t_allocs - a0;
    }
  unsigned long long proc = atomic_load(&g_allocs) - proc0;
  double sdk_decisions = 2.0 * rounds * passes * (double)reqs.n;
  double med[3];
  const char *names[3] = {"decide+pick", "decide", "core gray_decide"};
  for (int k = 0; k < 3; k++) {
    qsort(ns[k], (size_t)rounds, sizeof(double), sb_cmp_double);
    med[k] = ns[k][rounds / 2];
    fprintf(stderr, "bench_sdk_decide: %s: rounds min %.1f median %.1f max %.1f ns\n", names[k], ns[k][0], med[k],
            ns[k][rounds - 1]);
  }
  printf("sdk_decide_pick_ns: %.1f\n", med[0]);
  printf("sdk_decide_ns: %.1f\n", med[1]);
  printf("core_decide_ns: %.1f\n", med[2]);
  printf("sdk_overhead_ratio: %.2f\n", med[0] / med[2]);
  printf("sdk_allocations_per_decision: %g\n", (double)sdk_allocs / sdk_decisions);
  printf("sdk_process_allocations_timed: %llu\n", proc);
  printf("sdk_decisions_timed: %.0f\n", sdk_decisions);

  gray_client_free(c);
  sb_http_free(h);
  for (int k = 0; k < 3; k++) free(ns[k]);
  free(policy);
  gray_policyset_release(set);
  sb_requests_free(&reqs);
  return 0;
}
