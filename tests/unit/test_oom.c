/* Out-of-memory loop (SQLite/curl torture style): fail the Nth allocation,
 * for N = 1, 2, ... until parse + compile + explain succeeds. Every failing
 * run must report GRAY_ENOMEM, return no set, and leave no allocation
 * behind. Covers libgray, jansson and PCRE2 (both use our allocator). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gray/gray.h"
#include "gray/json.h"

static long g_fail_at; /* 0: never fail */
static long g_count;
static long g_live;
static int g_failed_in_jansson; /* the failed allocation was jansson's */

/* A small header in front of each block tells free() whether the block was
 * counted, so the live count stays exact whatever frees it. */
typedef union hdr {
  max_align_t align;
  size_t size;
} hdr;

static void *t_malloc(size_t n) {
  if (g_fail_at && ++g_count >= g_fail_at) {
    g_failed_in_jansson = 0;
    return NULL;
  }
  hdr *h = malloc(sizeof(hdr) + n);
  if (!h) return NULL;
  h->size = n;
  g_live++;
  return h + 1;
}

static void *j_malloc(size_t n) {
  if (g_fail_at && g_count + 1 >= g_fail_at) {
    g_count++;
    g_failed_in_jansson = 1;
    return NULL;
  }
  return t_malloc(n);
}

static void t_free(void *p) {
  if (!p) return;
  g_live--;
  free((hdr *)p - 1);
}

static void *t_realloc(void *p, size_t n) {
  if (!p) return t_malloc(n);
  if (g_fail_at && ++g_count >= g_fail_at) return NULL;
  hdr *h = realloc((hdr *)p - 1, sizeof(hdr) + n);
  if (!h) return NULL;
  h->size = n;
  return h + 1;
}

static const char *DOC =
    "{\"revision\": 3, \"policies\": ["
    " {\"service\": \"order\", \"default\": \"v1\", \"rules\": ["
    "  {\"name\": \"re\", \"route\": \"v2\", \"tag\": \"beta\", \"when\": {\"any\": ["
    "    {\"attr\": \"header:user-agent\", \"op\": \"regex\", \"value\": \"(iPhone|Android).*App/5\\\\.\"},"
    "    {\"attr\": \"cookie:gray\", \"op\": \"eq\", \"value\": \"on\"}]}},"
    "  {\"name\": \"vip\", \"route\": \"v2\", \"when\": {\"attr\": \"param:uid\", \"op\": \"in\","
    "    \"value\": [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", \"10\", \"11\"]}},"
    "  {\"name\": \"mod\", \"route\": \"v2\", \"when\": {\"all\": ["
    "    {\"attr\": \"param:uid\", \"op\": \"mod\", \"divisor\": 100, \"in\": [3, 1, 2]},"
    "    {\"not\": {\"attr\": \"ip\", \"op\": \"cidr\", \"value\": [\"10.0.0.0/8\", \"2001:db8::/32\"]}}]}},"
    "  {\"name\": \"ramp\", \"route\": \"v3\", \"salt\": \"s1\","
    "   \"when\": {\"attr\": \"cookie:uid\", \"op\": \"percent\", \"from\": 5, \"to\": 7.5}}]},"
    " {\"service\": \"cart\", \"default\": \"v1\", \"rules\": ["
    "  {\"name\": \"lane\", \"route\": \"v2\", \"when\": {\"attr\": \"tag\", \"op\": \"eq\", \"value\": \"beta\"}}]}]}";

static int attempt(void) {
  gray_policyset_t *set = NULL;
  gray_error_t err;
  int rc = gray_policyset_parse(DOC, strlen(DOC), GRAY_PARSE_ANY, &set, &err);
  if (rc != GRAY_OK) {
    assert_null(set);
    /* jansson reports some allocation failures inside its lexer as a
     * syntax error; that is upstream behaviour we cannot tell apart. Every
     * failure of our own (or PCRE2's) allocations must say ENOMEM. */
    if (rc == GRAY_EJSON && g_failed_in_jansson) return rc;
    if (rc != GRAY_ENOMEM) {
      char line[600];
      fprintf(stderr, "attempt %ld: %s (%s)\n", g_fail_at, gray_err_name(rc),
              gray_error_format(&err, line, sizeof line));
    }
    assert_int_equal(rc, GRAY_ENOMEM);
    assert_int_equal(err.code, GRAY_ENOMEM);
    return rc;
  }
  const gray_policy_t *p = gray_policyset_find(set, "order", 5);
  assert_non_null(p);
  gray_kv_t hdr_[] = {{{"User-Agent", 10}, {"iPhone App/5.1", 14}}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdr_;
  kv.nheaders = 1;
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_decision_t d;
  gray_trace_t *t = gray_trace_new();
  if (!t) {
    gray_policyset_release(set);
    return GRAY_ENOMEM;
  }
  rc = gray_explain(p, &req, &d, t);
  /* Even when the trace ran out of memory, the decision is right. */
  assert_int_equal(d.rule_index, 0);
  gray_trace_free(t);
  gray_policyset_release(set);
  return rc;
}

static void test_oom_loop(void **state) {
  (void)state;
  json_set_alloc_funcs(j_malloc, t_free);
  gray_set_alloc_funcs(t_malloc, t_realloc, t_free);
  long n;
  int rc = GRAY_ENOMEM;
  for (n = 1; n < 100000 && rc != GRAY_OK; n++) {
    g_fail_at = n;
    g_count = 0;
    g_live = 0;
    g_failed_in_jansson = 0;
    rc = attempt();
    assert_int_equal(g_live, 0); /* nothing leaked on any path */
  }
  g_fail_at = 0;
  json_set_alloc_funcs(malloc, free);
  gray_set_alloc_funcs(NULL, NULL, NULL);
  assert_int_equal(rc, GRAY_OK);
  /* The loop must have failed many distinct allocations before succeeding. */
  fprintf(stderr, "oom loop: succeeded once allocation %ld was allowed to work\n", n - 1);
  assert_true(n > 50);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_oom_loop)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
