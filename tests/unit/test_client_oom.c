/* Out-of-memory loop over the SDK's write path: fail the Nth allocation,
 * for N = 1, 2, ... until the whole path succeeds. The path: a reset
 * answer into the model, a snapshot, events, a snapshot, the cache payload,
 * the cache file written and read back, a second model loaded from it, and
 * a decision on its snapshot. Every failing run must fail cleanly (an error
 * code, never a crash) and leave no allocation behind; libgray, jansson and
 * PCRE2 all allocate through the counting functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/internal.h"

static long g_fail_at; /* 0: never fail */
static long g_count;
static long g_live;
static long g_calls; /* every allocation and reallocation */

typedef union hdr {
  max_align_t align;
  size_t size;
} hdr;

static void *t_malloc(size_t n) {
  g_calls++;
  if (g_fail_at && ++g_count >= g_fail_at) return NULL;
  hdr *h = malloc(sizeof(hdr) + n);
  if (!h) return NULL;
  h->size = n;
  g_live++;
  return h + 1;
}

static void t_free(void *p) {
  if (!p) return;
  g_live--;
  free((hdr *)p - 1);
}

static void *t_realloc(void *p, size_t n) {
  if (!p) return t_malloc(n);
  g_calls++;
  if (g_fail_at && ++g_count >= g_fail_at) return NULL;
  hdr *h = realloc((hdr *)p - 1, sizeof(hdr) + n);
  if (!h) return NULL;
  h->size = n;
  return h + 1;
}

static const char *const RESET =
    "{\"store_id\":\"0123456789abcdef0123456789abcdef\",\"revision\":5,\"reset\":true,\"snapshot\":{"
    "\"store_id\":\"0123456789abcdef0123456789abcdef\",\"revision\":5,\"policies\":{\"revision\":5,\"policies\":["
    "{\"service\":\"order\",\"default\":\"v1\",\"rules\":[{\"name\":\"re\",\"route\":\"v2\",\"tag\":\"beta\","
    "\"when\":{\"any\":[{\"attr\":\"header:user-agent\",\"op\":\"regex\",\"value\":\"App/5\\\\.\"},"
    "{\"attr\":\"header:x-gray\",\"op\":\"eq\",\"value\":\"1\"}]}}]},"
    "{\"service\":\"cart\",\"default\":\"v1\"}]},"
    "\"services\":[{\"service\":\"order\",\"instances\":["
    "{\"id\":\"o1\",\"address\":\"10.0.0.1\",\"port\":1,\"version\":\"v1\"},"
    "{\"id\":\"o2\",\"address\":\"10.0.0.2\",\"port\":2,\"version\":\"v2\"}]}]}}";

static const char *const EVENTS =
    "{\"store_id\":\"0123456789abcdef0123456789abcdef\",\"revision\":8,\"events\":["
    "{\"revision\":6,\"type\":\"policy.put\",\"service\":\"cart\",\"policy\":{\"service\":\"cart\","
    "\"default\":\"v2\"}},"
    "{\"revision\":7,\"type\":\"instance.put\",\"service\":\"cart\",\"id\":\"c1\",\"instance\":"
    "{\"id\":\"c1\",\"address\":\"10.0.1.1\",\"port\":3,\"version\":\"v2\"}},"
    "{\"revision\":8,\"type\":\"instance.delete\",\"service\":\"order\",\"id\":\"o1\"}]}";

/* 1 when every step succeeded. */
static int scenario(const char *path) {
  gray__model *m = NULL, *m2 = NULL;
  gray__snapshot *s1 = NULL, *s2 = NULL, *s3 = NULL;
  char *dump = NULL, *payload = NULL;
  json_t *doc = NULL;
  size_t len = 0, plen = 0;
  gray_error_t e;
  int changed, ok = 0;

  if (!(m = gray__model_new(NULL, 0, NULL))) goto out;
  if (gray__model_apply(m, RESET, strlen(RESET), &changed, &e) != GRAY_OK) goto out;
  if (gray__model_snapshot(m, &s1, &e) != GRAY_OK) goto out;
  if (gray__model_apply(m, EVENTS, strlen(EVENTS), &changed, &e) != GRAY_OK) goto out;
  if (gray__model_snapshot(m, &s2, &e) != GRAY_OK) goto out;
  if (!(dump = gray__model_dump(m, &len))) goto out;
  if (gray__cache_write(path, dump, len, &e) != GRAY_OK) goto out;
  if (gray__cache_read(path, &payload, &plen, &e) != GRAY_OK) goto out;
  if (!(doc = json_loadb(payload, plen, 0, NULL))) goto out;
  if (!(m2 = gray__model_new(NULL, 0, NULL))) goto out;
  if (gray__model_reset(m2, doc, &e) != GRAY_OK) goto out;
  if (gray__model_snapshot(m2, &s3, &e) != GRAY_OK) goto out;

  /* What was read back decides like what was written. */
  gray_decision_t d;
  gray_kv_t xgray = {{"x-gray", 6}, {"1", 1}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = &xgray;
  kv.nheaders = 1;
  gray_request_t req = {gray_kv_lookup, &kv};
  const gray_policy_t *p = gray__snapshot_policy(s3, "order");
  assert_non_null(p);
  gray_decide(p, &req, &d);
  assert_int_equal(d.version.len, 2);
  assert_memory_equal(d.version.p, "v2", 2);
  assert_non_null(gray__snapshot_policy(s3, "cart"));
  const gray__vgroup *g = gray__registry_find(s3->reg, "cart", "v2");
  assert_non_null(g);
  assert_int_equal(g->count, 1);
  assert_null(gray__registry_find(s3->reg, "order", "v1"));
  assert_int_equal(s3->revision, 8);
  ok = 1;
out:
  gray__snapshot_release(s1);
  gray__snapshot_release(s2);
  gray__snapshot_release(s3);
  gray__model_free(m);
  gray__model_free(m2);
  gray__json_free(dump);
  gray__free(payload);
  json_decref(doc);
  return ok;
}

static void test_oom_loop(void **state) {
  (void)state;
  char dir[256], path[300];
  const char *t = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/gray-client-oom-XXXXXX", t && *t ? t : "/tmp");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/oom.cache", dir);

  gray_set_alloc_funcs(t_malloc, t_realloc, t_free);
  json_set_alloc_funcs(t_malloc, t_free);
  long n;
  for (n = 1; n < 100000; n++) {
    g_count = 0;
    g_fail_at = n;
    int ok = scenario(path);
    g_fail_at = 0;
    if (g_live != 0) fail_msg("failing allocation %ld: %ld blocks left behind", n, g_live);
    if (ok) break;
  }
  gray_set_alloc_funcs(NULL, NULL, NULL);
  json_set_alloc_funcs(malloc, free);
  print_message("the path succeeded once %ld allocations could succeed\n", n - 1);
  assert_true(n > 20 && n < 100000);
  unlink(path);
  rmdir(dir);
}

/* gray_client_decide and gray_client_pick allocate nothing: 10,000 of each
 * (a regex rule, a fallback pick, a miss) on a snapshot installed as the
 * watch thread would, with every allocation of libgray, jansson and PCRE2
 * counted. (bench/sdk counts every malloc of the process.) */
static void test_decide_pick_no_allocation(void **state) {
  (void)state;
  gray_client_options_t o;
  gray_client_t *c;
  gray_error_t e;
  int changed;
  gray_set_alloc_funcs(t_malloc, t_realloc, t_free);
  json_set_alloc_funcs(t_malloc, t_free);
  gray_client_options_init(&o);
  o.servers = "http://127.0.0.1:1";
  assert_int_equal(gray_client_new(&o, &c, &e), GRAY_OK);
  assert_int_equal(gray__model_apply(c->model, RESET, strlen(RESET), &changed, &e), GRAY_OK);
  assert_int_equal(gray__client_publish_model(c, &e), GRAY_OK);

  gray_kv_t hdrs[2] = {{{"user-agent", 10}, {"App/5.1", 7}}, {{"x-gray", 6}, {"0", 1}}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdrs;
  kv.nheaders = 2;
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_client_decision_t d;
  gray_endpoint_t ep;
  /* The first call on this thread claims its hazard slot; count after it. */
  assert_int_equal(gray_client_decide(c, "order", &req, &d), GRAY_OK);
  long before = g_calls;
  int v2 = 0, fell_back = 0;
  for (int i = 0; i < 10000; i++) {
    assert_int_equal(gray_client_decide(c, "order", &req, &d), GRAY_OK);
    v2 += !strcmp(d.version, "v2") && !strcmp(d.tag, "beta");
    assert_int_equal(gray_client_pick(c, "order", d.version, &ep), GRAY_OK);
    assert_int_equal(gray_client_pick(c, "order", "v9", &ep), GRAY_OK); /* the default instead */
    fell_back += ep.fell_back && !strcmp(ep.version, "v1");
    assert_int_equal(gray_client_decide(c, "nobody", &req, &d), GRAY_ENOTFOUND);
  }
  long during = g_calls - before;
  gray_client_free(c);
  gray_set_alloc_funcs(NULL, NULL, NULL);
  json_set_alloc_funcs(malloc, free);
  assert_int_equal(v2, 10000);
  assert_int_equal(fell_back, 10000);
  assert_int_equal(during, 0);
  assert_int_equal(g_live, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_oom_loop),
      cmocka_unit_test(test_decide_pick_no_allocation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
