/* bench_sdk_mt: gray_client_decide + gray_client_pick from N reader threads
 * while a writer swaps snapshots S times a second, for a bounded time.
 *   bench_sdk_mt DIR [--readers N] [--seconds T] [--swaps-per-s S] [--policy-every P]
 * DIR is bench/eval (reference-policy.json, requests.jsonl).
 *
 * No server: like tests/unit/test_client_stress.c, the writer installs
 * snapshots through the SDK's internal writer API (gray__model_apply on a
 * watch answer, then gray__client_publish_model), exactly what the watch
 * thread does with grayd's answers. It starts from the reference policy and
 * 3 instances of each of v1 v2 v3, then publishes
 *   - every P-th swap (default 10): a policy.put of the whole reference
 *     policy with "default" flipped v1 <-> v2 (the SDK parses and compiles
 *     the 10-rule policy, about 1 ms of writer CPU on the project's
 *     machine), and
 *   - the other swaps: instance churn, a tenth instance put, then deleted
 *     (a rebuilt registry, the same compiled policy set),
 * each a new snapshot swapped in, the old one retired and reclaimed once no
 * reader holds it; paced to S swaps a second (default 1000) on an absolute
 * schedule: a writer woken late (N readers, default 8, share the cores with
 * it) makes up the swaps it missed, back to back, but at most 20 ms worth
 * of them. With P = 2 the writer needs about half a core for the compiles
 * alone and, sharing 2 cores with 8 busy readers, falls short of 1,000
 * swaps a second; sdk_mt_swaps says how many really happened.
 *
 * Readers cycle over the request mix (each from its own offset), decide and
 * pick on every request, and check every answer: decide OK with v1, v2 or
 * v3 and a revision that never goes back; pick OK, an instance of the
 * decided version, no fallback, fields that belong together. Any failure
 * makes the exit status non-zero.
 *
 * Leaks: every allocation of the graylane libraries (gray_set_alloc_funcs)
 * and of jansson (json_set_alloc_funcs: the writer's model is JSON) goes
 * through counting wrappers installed before anything else runs.
 * sdk_mt_retired_left is the number of swapped-out snapshots still waiting
 * for readers after the readers stopped and the writer reclaimed;
 * sdk_mt_leaked_blocks is the number of blocks still allocated after
 * gray_client_free, counted from just before gray_client_new (every
 * snapshot, registry, compiled set and model object in between).
 *
 * Prints name: value lines on stdout, notes on stderr. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "sdkbench.h"

#define MAX_REQUESTS 100000
#define MAX_READERS 64
#define CATCH_UP_NS 20000000LL /* the writer makes up at most 20 ms of lost swaps */
#define STORE_ID "5db0e0c1a0b24c6f8e3e2a1b0c9d8e7f"

/* ---- counting allocators ------------------------------------------------- */

static atomic_llong g_live; /* blocks allocated and not freed */
static atomic_llong g_total;

static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p) {
    atomic_fetch_add_explicit(&g_live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_total, 1, memory_order_relaxed);
  }
  return p;
}
static void *count_realloc(void *old, size_t n) {
  void *p = realloc(old, n);
  if (p && !old) {
    atomic_fetch_add_explicit(&g_live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_total, 1, memory_order_relaxed);
  }
  return p;
}
static void count_free(void *p) {
  if (!p) return;
  atomic_fetch_sub_explicit(&g_live, 1, memory_order_relaxed);
  free(p);
}

/* ---- readers ------------------------------------------------------------- */

typedef struct shared {
  gray_client_t *c;
  const sb_requests *reqs;
  atomic_int go, stop;
  atomic_long failures;
  pthread_mutex_t mu;
  char first_failure[256];
} shared;

typedef struct reader {
  _Alignas(64) shared *sh;
  size_t offset;
  long decisions;
  int64_t t_start, t_end;
} reader;

static void record(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void record(shared *sh, const char *fmt, ...) {
  va_list ap;
  if (atomic_fetch_add(&sh->failures, 1) != 0) return;
  pthread_mutex_lock(&sh->mu);
  va_start(ap, fmt);
  vsnprintf(sh->first_failure, sizeof sh->first_failure, fmt, ap);
  va_end(ap);
  pthread_mutex_unlock(&sh->mu);
}

static void *read_loop(void *arg) {
  reader *r = arg;
  shared *sh = r->sh;
  const sb_requests *q = sh->reqs;
  size_t i = r->offset % q->n;
  int64_t last_rev = 0;
  long n = 0;
  while (!atomic_load_explicit(&sh->go, memory_order_acquire)) sb_sleep_ns(100000);
  r->t_start = sb_now_ns();
  while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    gray_client_decision_t d;
    gray_endpoint_t ep;
    int rc = gray_client_decide(sh->c, SB_SERVICE, q->rq[i], &d);
    if (++i == q->n) i = 0;
    if (rc != GRAY_OK) {
      record(sh, "decide: %d", rc);
      continue;
    }
    if (d.version[0] != 'v' || d.version[1] < '1' || d.version[1] > '3' || d.version[2])
      record(sh, "decide: version \"%s\"", d.version);
    if (d.revision < last_rev)
      record(sh, "decide: revision went back %lld -> %lld", (long long)last_rev, (long long)d.revision);
    last_rev = d.revision;
    rc = gray_client_pick(sh->c, SB_SERVICE, d.version, &ep);
    if (rc != GRAY_OK) {
      record(sh, "pick %s: %d", d.version, rc);
      continue;
    }
    n++;
    /* ids are "<version>-<port>" */
    char want[160];
    snprintf(want, sizeof want, "%s-%d", ep.version, ep.port);
    if (ep.fell_back || strcmp(ep.version, d.version) || strcmp(want, ep.id) || strcmp(ep.address, "127.0.0.1"))
      record(sh, "pick %s: torn or wrong endpoint %s %s:%d version %s fell_back %d", d.version, ep.id, ep.address,
             ep.port, ep.version, ep.fell_back);
  }
  r->t_end = sb_now_ns();
  r->decisions = n;
  return NULL;
}

/* ---- writer -------------------------------------------------------------- */

static int feed(gray_client_t *c, const char *answer) {
  int changed = 0;
  gray_error_t err;
  char msg[1024];
  if (gray__model_apply(c->model, answer, strlen(answer), &changed, &err) != GRAY_OK || !changed ||
      gray__client_publish_model(c, &err) != GRAY_OK) {
    fprintf(stderr, "bench_sdk_mt: writer: %s\n", changed ? gray_error_format(&err, msg, sizeof msg) : "no change");
    return -1;
  }
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: bench_sdk_mt [--readers N] [--seconds T] [--swaps-per-s S] [--policy-every P] DIR\n");
}

int main(int argc, char **argv) {
  int nreaders = 8, swaps_per_s = 1000, policy_every = 10;
  double seconds = 3;
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--readers") && i + 1 < argc) nreaders = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--swaps-per-s") && i + 1 < argc) swaps_per_s = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--policy-every") && i + 1 < argc) policy_every = atoi(argv[++i]);
    else if (argv[i][0] != '-') dir = argv[i];
    else {
      usage();
      return 64;
    }
  }
  if (!dir || nreaders < 1 || nreaders > MAX_READERS || !(seconds > 0 && seconds <= 60) || swaps_per_s < 1 ||
      swaps_per_s > 100000 || policy_every < 1 || policy_every > 1000000) {
    usage();
    return 64;
  }
  /* Before any other graylane or jansson call. */
  gray_set_alloc_funcs(count_malloc, count_realloc, count_free);
  json_set_alloc_funcs(count_malloc, count_free);

  sb_requests reqs;
  if (sb_requests_load(dir, MAX_REQUESTS, &reqs) != 0) return 1;
  char *pol[2] = {sb_policy_text(dir, "v1"), sb_policy_text(dir, "v2")};
  if (!pol[0] || !pol[1]) return 1;
  size_t cap = strlen(pol[0]) + strlen(pol[1]) + 4096;
  char *buf = malloc(cap);
  if (!buf) return 1;

  long long live0 = atomic_load(&g_live), total0 = atomic_load(&g_total);
  gray_client_options_t o;
  gray_error_t err;
  char msg[1024];
  shared sh;
  memset(&sh, 0, sizeof sh);
  pthread_mutex_init(&sh.mu, NULL);
  sh.reqs = &reqs;
  gray_client_options_init(&o);
  o.servers = "http://127.0.0.1:1"; /* never started: no thread, no network */
  if (gray_client_new(&o, &sh.c, &err) != GRAY_OK) {
    fprintf(stderr, "bench_sdk_mt: client: %s\n", gray_error_format(&err, msg, sizeof msg));
    return 1;
  }

  /* Start: the reference policy (default v1), 3 instances of each version. */
  size_t k = (size_t)snprintf(buf, cap,
                              "{\"reset\":true,\"snapshot\":{\"store_id\":\"%s\",\"revision\":1,\"policies\":{"
                              "\"revision\":1,\"policies\":[%s]},\"services\":[{\"service\":\"%s\",\"instances\":[",
                              STORE_ID, pol[0], SB_SERVICE);
  for (int v = 0; v < SB_NVERSIONS; v++)
    for (int j = 0; j < 3; j++) {
      int port = 7000 + 10 * v + j;
      k += (size_t)snprintf(buf + k, cap - k, "%s{\"id\":\"%s-%d\",\"address\":\"127.0.0.1\",\"port\":%d,\"version\":\"%s\"}",
                            v || j ? "," : "", sb_versions[v], port, port, sb_versions[v]);
    }
  snprintf(buf + k, cap - k, "]}]}}");
  if (feed(sh.c, buf) != 0) return 1;
  long long live_start = atomic_load(&g_live);

  pthread_t th[MAX_READERS];
  reader *rd = aligned_alloc(64, sizeof(reader) * MAX_READERS);
  if (!rd) return 1;
  for (int i = 0; i < nreaders; i++) {
    memset(&rd[i], 0, sizeof rd[i]);
    rd[i].sh = &sh;
    rd[i].offset = (size_t)i * reqs.n / (size_t)nreaders;
    if (pthread_create(&th[i], NULL, read_loop, &rd[i]) != 0) {
      fprintf(stderr, "bench_sdk_mt: cannot start reader %d\n", i);
      return 1;
    }
  }

  /* The writer (this thread), paced on an absolute schedule. */
  int64_t rev = 1, period_ns = 1000000000LL / swaps_per_s, run_ns = (int64_t)(seconds * 1e9);
  int64_t pol_ns = 0, reg_ns = 0, npol = 0, nreg = 0;
  long swaps = 0;
  char churn[64] = "";
  atomic_store_explicit(&sh.go, 1, memory_order_release);
  int64_t start = sb_now_ns(), next = start;
  int werr = 0;
  while (sb_now_ns() - start < run_ns) {
    rev++;
    int is_pol = swaps % policy_every == 0;
    if (is_pol) {
      snprintf(buf, cap,
               "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[{\"revision\":%lld,\"type\":\"policy.put\","
               "\"service\":\"%s\",\"policy\":%s}]}",
               STORE_ID, (long long)rev, (long long)rev, SB_SERVICE, pol[npol % 2 ? 0 : 1]);
    } else if (churn[0]) {
      snprintf(buf, cap,
               "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[{\"revision\":%lld,\"type\":\"instance.delete\","
               "\"service\":\"%s\",\"id\":\"%s\"}]}",
               STORE_ID, (long long)rev, (long long)rev, SB_SERVICE, churn);
      churn[0] = '\0';
    } else {
      int port = 8000 + (int)(swaps % 1000);
      const char *ver = sb_versions[(nreg / 2) % SB_NVERSIONS];
      snprintf(churn, sizeof churn, "%s-%d", ver, port);
      snprintf(buf, cap,
               "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[{\"revision\":%lld,\"type\":\"instance.put\","
               "\"service\":\"%s\",\"id\":\"%s\",\"instance\":{\"id\":\"%s\",\"address\":\"127.0.0.1\","
               "\"port\":%d,\"version\":\"%s\"}}]}",
               STORE_ID, (long long)rev, (long long)rev, SB_SERVICE, churn, churn, port, ver);
    }
    int64_t t0 = sb_now_ns();
    if (feed(sh.c, buf) != 0) {
      werr = 1;
      break;
    }
    int64_t dt = sb_now_ns() - t0;
    if (is_pol) pol_ns += dt, npol++;
    else reg_ns += dt, nreg++;
    swaps++;
    next += period_ns;
    int64_t now = sb_now_ns();
    if (next > now) sb_sleep_ns(next - now);
    else if (now - next > CATCH_UP_NS) next = now - CATCH_UP_NS; /* bounded backlog */
  }
  int64_t wall = sb_now_ns() - start;
  atomic_store(&sh.stop, 1);
  long decisions = 0;
  double reader_s = 0;
  for (int i = 0; i < nreaders; i++) {
    pthread_join(th[i], NULL);
    decisions += rd[i].decisions;
    reader_s += (double)(rd[i].t_end - rd[i].t_start) / 1e9;
  }
  gray__client_reclaim(sh.c);
  size_t retired_left = sh.c->nretired;
  long long live_end = atomic_load(&g_live);
  gray_client_free(sh.c);
  long long allocs_total = atomic_load(&g_total) - total0;
  free(buf);
  free(rd);
  long long leaked = atomic_load(&g_live) - live0;

  double mean_s = reader_s / nreaders;
  long failures = atomic_load(&sh.failures);
  fprintf(stderr,
          "bench_sdk_mt: %d readers for %.2f s, %ld swaps (%.0f/s; policy swaps %.0f us each, registry swaps %.0f us "
          "each, mean), %ld decide+pick\n",
          nreaders, (double)wall / 1e9, swaps, (double)swaps * 1e9 / (double)wall,
          npol ? (double)pol_ns / (double)npol / 1e3 : 0.0, nreg ? (double)reg_ns / (double)nreg / 1e3 : 0.0,
          decisions);
  fprintf(stderr, "bench_sdk_mt: tracked blocks live: %lld after the first snapshot, %lld after the last swap; %lld "
                  "allocations in all\n",
          live_start - live0, live_end - live0, allocs_total);
  if (failures) fprintf(stderr, "bench_sdk_mt: %ld failures; first: %s\n", failures, sh.first_failure);
  printf("sdk_mt_readers: %d\n", nreaders);
  printf("sdk_mt_seconds: %.2f\n", (double)wall / 1e9);
  printf("sdk_mt_decisions_per_s: %.0f\n", mean_s > 0 ? (double)decisions / mean_s : 0.0);
  printf("sdk_mt_swaps: %ld\n", swaps);
  printf("sdk_mt_swaps_per_s: %.0f\n", (double)swaps * 1e9 / (double)wall);
  printf("sdk_mt_policy_swaps: %lld\n", (long long)npol);
  printf("sdk_mt_failures: %ld\n", failures);
  printf("sdk_mt_retired_left: %zu\n", retired_left);
  printf("sdk_mt_leaked_blocks: %lld\n", leaked);

  pthread_mutex_destroy(&sh.mu);
  free(pol[0]);
  free(pol[1]);
  sb_requests_free(&reqs);
  return failures || werr || leaked || retired_left ? 1 : 0;
}
