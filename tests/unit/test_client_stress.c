/* Snapshot swap under load: 8 reader threads decide and pick in a loop
 * while a writer swaps snapshots about 1,000 times a second for about two
 * seconds. Meant for the ThreadSanitizer build as much as the others: a
 * reader touching a freed snapshot is a use-after-free (ASan) or a race
 * with the free (TSan); a torn snapshot shows as an impossible answer.
 *
 * The writer alternates policy changes (default v1 <-> v2, a recompiled
 * set) with instance churn (the same set, a rebuilt registry). Invariants
 * the readers check on every call:
 *   - decide answers OK with v1 or v2, and the revision a thread sees never
 *     goes backwards;
 *   - pick answers OK (each version always has an instance), with an
 *     instance of the version asked for, never a fallback;
 *   - the endpoint's fields belong together (ids encode version and port). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "client/internal.h"

#define READERS 8
#define RUN_MS 2000
#define SWAPS_PER_S 1000

static const char *const STORE = "0123456789abcdef0123456789abcdef";

typedef struct shared {
  gray_client_t *c;
  atomic_int stop;
  atomic_int failures;
  char first_failure[256];
  pthread_mutex_t mu;
} shared;

typedef struct reader {
  shared *sh;
  long decides, picks;
} reader;

static void record(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void record(shared *sh, const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&sh->mu);
  if (atomic_fetch_add(&sh->failures, 1) == 0) {
    va_start(ap, fmt);
    vsnprintf(sh->first_failure, sizeof sh->first_failure, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&sh->mu);
}

static void *read_loop(void *arg) {
  reader *r = arg;
  shared *sh = r->sh;
  int64_t last_rev = 0;
  gray_kv_t hdr = {{"x-gray", 6}, {"1", 1}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  gray_request_t req = {gray_kv_lookup, &kv};
  unsigned i = 0;
  while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    gray_client_decision_t d;
    gray_endpoint_t ep;
    kv.headers = (i++ & 1) ? &hdr : NULL;
    kv.nheaders = kv.headers ? 1 : 0;
    int rc = gray_client_decide(sh->c, "order", &req, &d);
    if (rc != GRAY_OK) {
      record(sh, "decide: %d", rc);
      continue;
    }
    r->decides++;
    if (strcmp(d.version, "v1") && strcmp(d.version, "v2")) record(sh, "decide: version \"%s\"", d.version);
    if (kv.headers ? (strcmp(d.rule, "testers") || strcmp(d.version, "v2")) : d.rule[0] != '\0')
      record(sh, "decide: rule \"%s\" version %s (header %d)", d.rule, d.version, kv.headers != NULL);
    if (d.revision < last_rev) record(sh, "decide: revision went back %lld -> %lld", (long long)last_rev, (long long)d.revision);
    last_rev = d.revision;
    rc = gray_client_pick(sh->c, "order", d.version, &ep);
    if (rc != GRAY_OK) {
      record(sh, "pick %s: %d", d.version, rc);
      continue;
    }
    r->picks++;
    if (ep.fell_back || strcmp(ep.version, d.version)) record(sh, "pick %s: got %s (fell_back %d)", d.version, ep.version, ep.fell_back);
    /* ids are "<version>-<port>" */
    char want[160];
    snprintf(want, sizeof want, "%s-%d", ep.version, ep.port);
    if (strcmp(want, ep.id) || strcmp(ep.address, "127.0.0.1")) record(sh, "pick: torn endpoint %s %s:%d", ep.id, ep.address, ep.port);
  }
  return NULL;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void feed(gray_client_t *c, const char *answer) {
  int changed = 0;
  gray_error_t err;
  assert_int_equal(gray__model_apply(c->model, answer, strlen(answer), &changed, &err), GRAY_OK);
  assert_true(changed);
  assert_int_equal(gray__client_publish_model(c, &err), GRAY_OK);
}

static void test_swap_under_readers(void **state) {
  (void)state;
  gray_client_options_t o;
  gray_error_t err;
  shared sh;
  reader rd[READERS];
  pthread_t th[READERS];
  char buf[4096];
  memset(&sh, 0, sizeof sh);
  pthread_mutex_init(&sh.mu, NULL);
  gray_client_options_init(&o);
  o.servers = "http://127.0.0.1:1";
  assert_int_equal(gray_client_new(&o, &sh.c, &err), GRAY_OK);

  /* Start: v1-7001 and v2-7002 always live. */
  snprintf(buf, sizeof buf,
           "{\"reset\":true,\"snapshot\":{\"store_id\":\"%s\",\"revision\":1,\"policies\":{\"revision\":1,"
           "\"policies\":[{\"service\":\"order\",\"default\":\"v1\",\"rules\":[{\"name\":\"testers\",\"route\":\"v2\","
           "\"when\":{\"attr\":\"header:x-gray\",\"op\":\"eq\",\"value\":\"1\"}}]}]},\"services\":[{\"service\":\"order\","
           "\"instances\":[{\"id\":\"v1-7001\",\"address\":\"127.0.0.1\",\"port\":7001,\"version\":\"v1\"},"
           "{\"id\":\"v2-7002\",\"address\":\"127.0.0.1\",\"port\":7002,\"version\":\"v2\"}]}]}}",
           STORE);
  feed(sh.c, buf);

  for (int i = 0; i < READERS; i++) {
    rd[i].sh = &sh;
    rd[i].decides = rd[i].picks = 0;
    assert_int_equal(pthread_create(&th[i], NULL, read_loop, &rd[i]), 0);
  }

  int64_t start = now_ms(), rev = 1;
  char churn[64] = "";
  long swaps = 0;
  while (now_ms() - start < RUN_MS) {
    rev++;
    if (swaps % 2 == 0) {
      const char *def = (swaps / 2) % 2 ? "v1" : "v2";
      snprintf(buf, sizeof buf,
               "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[{\"revision\":%lld,\"type\":\"policy.put\","
               "\"service\":\"order\",\"policy\":{\"service\":\"order\",\"default\":\"%s\",\"rules\":[{\"name\":"
               "\"testers\",\"route\":\"v2\",\"when\":{\"attr\":\"header:x-gray\",\"op\":\"eq\",\"value\":\"1\"}}]}}]}",
               STORE, (long long)rev, (long long)rev, def);
    } else {
      /* Churn a third instance in and out, alternating versions. */
      if (churn[0]) {
        snprintf(buf, sizeof buf,
                 "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[{\"revision\":%lld,\"type\":\"instance.delete\","
                 "\"service\":\"order\",\"id\":\"%s\"}]}",
                 STORE, (long long)rev, (long long)rev, churn);
        churn[0] = '\0';
      } else {
        int port = 8000 + (int)(swaps % 1000);
        const char *ver = (swaps / 2) % 2 ? "v1" : "v2";
        snprintf(churn, sizeof churn, "%s-%d", ver, port);
        snprintf(buf, sizeof buf,
                 "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[{\"revision\":%lld,\"type\":\"instance.put\","
                 "\"service\":\"order\",\"id\":\"%s\",\"instance\":{\"id\":\"%s\",\"address\":\"127.0.0.1\","
                 "\"port\":%d,\"version\":\"%s\"}}]}",
                 STORE, (long long)rev, (long long)rev, churn, churn, port, ver);
      }
    }
    feed(sh.c, buf);
    swaps++;
    /* Pace to about SWAPS_PER_S. */
    int64_t due = start + swaps * 1000 / SWAPS_PER_S;
    int64_t wait = due - now_ms();
    if (wait > 0) {
      struct timespec ts = {0, (long)wait * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  atomic_store(&sh.stop, 1);
  long decides = 0, picks = 0;
  for (int i = 0; i < READERS; i++) {
    pthread_join(th[i], NULL);
    decides += rd[i].decides;
    picks += rd[i].picks;
    assert_true(rd[i].decides > 0);
  }
  gray__client_reclaim(sh.c);
  print_message("swaps %ld (%.0f/s), decisions %ld, picks %ld, retired left %zu\n", swaps,
                swaps * 1000.0 / (double)(now_ms() - start), decides, picks, sh.c->nretired);
  if (atomic_load(&sh.failures)) fail_msg("%d failures; first: %s", atomic_load(&sh.failures), sh.first_failure);
  assert_int_equal(sh.c->nretired, 0);
  assert_true(swaps >= RUN_MS * SWAPS_PER_S / 1000 / 4); /* even a slow sanitizer build swaps a lot */
  gray_client_free(sh.c);
  pthread_mutex_destroy(&sh.mu);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_swap_under_readers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
