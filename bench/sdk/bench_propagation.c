/* bench_sdk_propagation: time from a policy PUT on grayd to the moment a
 * gray_client in this process serves a snapshot holding the new revision.
 *   GRAYLANE_TOKEN=T bench_sdk_propagation --url http://127.0.0.1:PORT DIR
 *                    [--puts N] [--gap-ms G] [--timeout-ms T]
 * DIR is bench/eval (reference-policy.json).
 *
 * One client follows service "order" (its watch thread long-polls grayd's
 * /v1/watch). An observer thread polls gray_client_revision() every 50 us
 * (timer slack set to 1 us, so the sleep is close to 50 us) and logs the
 * time each new revision first appears; the SDK offers no wait on a
 * revision, and the poll bounds the measurement's resolution to about
 * 0.06 ms. The main thread then makes N PUTs (default 200, after 3 not
 * counted) of the 10-rule reference policy, alternating "default" v1 and
 * v2 (the first warm-up PUT says v3) so that every PUT is a change the SDK
 * must parse and compile (the SDK's revision moves only on a change of
 * what it follows: a PUT of the content already there is not seen), each
 * over one keep-alive libcurl connection:
 *   t0 = just before the PUT is sent; t1 = its answer read (revision R);
 *   seen = the first logged time the client's revision was >= R.
 * sdk_propagation_ms = seen - t0; grayd_put_ms = t1 - t0 (grayd's own
 * answer time, including its SQLite commit, as seen by this client). The
 * next PUT follows G ms (default 5) after the previous one was seen, so the
 * watch has re-parked. A PUT not seen within T ms (default 5000) counts as
 * missed; every loop is bounded.
 *
 * Prints name: value lines on stdout, notes on stderr. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "gray/client.h"
#include "sdkbench.h"

#define LOG_MAX 65536
#define WARMUP_PUTS 3
#define POLL_NS 50000
#define READY_TIMEOUT_NS (10LL * 1000000000)

typedef struct change {
  int64_t rev, ns;
} change;

typedef struct observer {
  gray_client_t *c;
  change log[LOG_MAX];
  atomic_size_t n; /* entries published */
  atomic_int stop;
} observer;

static void *observe(void *arg) {
  observer *o = arg;
  int64_t last = -1;
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  while (!atomic_load_explicit(&o->stop, memory_order_relaxed)) {
    int64_t r = gray_client_revision(o->c);
    if (r != last) {
      int64_t t = sb_now_ns();
      size_t n = atomic_load_explicit(&o->n, memory_order_relaxed);
      if (n == LOG_MAX) break;
      o->log[n].rev = r;
      o->log[n].ns = t;
      atomic_store_explicit(&o->n, n + 1, memory_order_release);
      last = r;
    }
    sb_sleep_ns(POLL_NS);
  }
  return NULL;
}

/* First time at or after log index `from` that the revision was >= rev;
 * -1 when not yet. *from advances past entries already scanned. */
static int64_t seen_at(observer *o, size_t *from, int64_t rev) {
  size_t n = atomic_load_explicit(&o->n, memory_order_acquire);
  for (; *from < n; (*from)++)
    if (o->log[*from].rev >= rev) return o->log[*from].ns;
  return -1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: GRAYLANE_TOKEN=T bench_sdk_propagation --url http://127.0.0.1:PORT [--puts N] [--gap-ms G] "
          "[--timeout-ms T] DIR\n");
}

int main(int argc, char **argv) {
  int nputs = 200, gap_ms = 5, timeout_ms = 5000;
  const char *url = NULL, *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
    else if (!strcmp(argv[i], "--puts") && i + 1 < argc) nputs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--gap-ms") && i + 1 < argc) gap_ms = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) timeout_ms = atoi(argv[++i]);
    else if (argv[i][0] != '-') dir = argv[i];
    else {
      usage();
      return 64;
    }
  }
  const char *token = sb_token();
  if (!url || !dir || !token || nputs < 1 || nputs > 10000 || gap_ms < 0 || gap_ms > 10000 || timeout_ms < 1 ||
      timeout_ms > 60000) {
    usage();
    return 64;
  }
  char *body[3] = {sb_policy_text(dir, "v1"), sb_policy_text(dir, "v2"), sb_policy_text(dir, "v3")};
  sb_http *h = sb_http_new(url, token);
  if (!body[0] || !body[1] || !body[2] || !h) return 1;

  gray_client_options_t o;
  gray_client_t *c = NULL;
  gray_error_t err;
  char msg[1024];
  gray_client_options_init(&o);
  o.servers = url;
  o.token = token;
  o.services = SB_SERVICE;
  if (gray_client_new(&o, &c, &err) != GRAY_OK || gray_client_start(c, &err) != GRAY_OK) {
    fprintf(stderr, "bench_sdk_propagation: client: %s\n", gray_error_format(&err, msg, sizeof msg));
    return 1;
  }
  if (gray_client_wait_ready(c, 10000) != GRAY_OK) {
    fprintf(stderr, "bench_sdk_propagation: no snapshot from %s in 10 s\n", url);
    return 1;
  }
  observer *ob = calloc(1, sizeof *ob);
  pthread_t th;
  if (!ob) return 1;
  ob->c = c;
  if (pthread_create(&th, NULL, observe, ob) != 0) return 1;

  double *prop = calloc((size_t)nputs, sizeof(double)), *put = calloc((size_t)nputs, sizeof(double));
  double *after = calloc((size_t)nputs, sizeof(double)); /* seen - answer; negative: before it */
  if (!prop || !put || !after) return 1;
  size_t from = 0, nprop = 0;
  int missed = 0, failed = 0, before_answer = 0;
  int64_t first_rev = -1, last_rev = -1;
  for (int i = 0; i < WARMUP_PUTS + nputs; i++) {
    int64_t rev, seen = -1;
    int64_t t0 = sb_now_ns();
    long st = sb_http_do(h, "PUT", "/v1/policies/" SB_SERVICE, body[i ? i % 2 : 2], &rev);
    int64_t t1 = sb_now_ns();
    if (st != 200 || rev < 0) {
      failed++;
      if (failed > 5) break;
      continue;
    }
    while ((seen = seen_at(ob, &from, rev)) < 0 && sb_now_ns() - t1 < (int64_t)timeout_ms * 1000000)
      sb_sleep_ns(POLL_NS);
    if (i < WARMUP_PUTS) {
      if (seen < 0) missed++;
    } else {
      if (first_rev < 0) first_rev = rev;
      last_rev = rev;
      put[i - WARMUP_PUTS] = (double)(t1 - t0) / 1e6;
      if (seen < 0) {
        missed++;
      } else {
        after[nprop] = (double)(seen - t1) / 1e6;
        prop[nprop++] = (double)(seen - t0) / 1e6;
        if (seen < t1) before_answer++;
      }
    }
    sb_sleep_ns((int64_t)gap_ms * 1000000);
  }
  atomic_store(&ob->stop, 1);
  pthread_join(th, NULL);
  int lost = nputs - (int)nprop; /* not seen in time, or the PUT failed */

  fprintf(stderr,
          "bench_sdk_propagation: %d PUTs (revisions %lld..%lld, %zu-byte policy), seen %zu, failed PUTs %d; "
          "%d seen before the PUT's answer was read\n",
          nputs, (long long)first_rev, (long long)last_rev, strlen(body[0]), nprop, failed, before_answer);
  if (nprop)
    fprintf(stderr, "bench_sdk_propagation: seen after the PUT's answer: p50 %.3f ms, p99 %.3f ms (negative: before)\n",
            sb_percentile(after, nprop, 0.50), sb_percentile(after, nprop, 0.99));
  printf("sdk_propagation_puts: %d\n", nputs);
  if (nprop) {
    printf("sdk_propagation_p50_ms: %.3f\n", sb_percentile(prop, nprop, 0.50));
    printf("sdk_propagation_p99_ms: %.3f\n", sb_percentile(prop, nprop, 0.99));
    printf("sdk_propagation_max_ms: %.3f\n", prop[nprop - 1]);
  }
  printf("sdk_propagation_missed: %d\n", lost);
  if (!failed) {
    printf("grayd_put_p50_ms: %.3f\n", sb_percentile(put, (size_t)nputs, 0.50));
    printf("grayd_put_p99_ms: %.3f\n", sb_percentile(put, (size_t)nputs, 0.99));
  }

  gray_client_free(c);
  sb_http_free(h);
  free(ob);
  free(prop);
  free(after);
  free(put);
  for (int i = 0; i < 3; i++) free(body[i]);
  return lost || missed || failed ? 1 : 0;
}
