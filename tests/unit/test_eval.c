/* Unit tests for policies as a whole: parse flags, accessors, decisions,
 * explain, the percent property, zero allocation and threads. */
#include <pthread.h>
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

static gray_policyset_t *parse(const char *text, int flags) {
  gray_policyset_t *set = NULL;
  gray_error_t err;
  int rc = gray_policyset_parse(text, strlen(text), flags, &set, &err);
  if (rc) {
    char line[600];
    fprintf(stderr, "parse: %s\n", gray_error_format(&err, line, sizeof line));
  }
  return set;
}

/* The rule that decides a request of these headers and cookies (-1: the
 * default). */
static int rule_of(const gray_policy_t *p, const gray_kv_t *hdr, size_t nhdr,
                   const gray_kv_t *cookies, size_t ncookies) {
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdr;
  kv.nheaders = nhdr;
  kv.cookies = cookies;
  kv.ncookies = ncookies;
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_decision_t d;
  gray_decide(p, &req, &d);
  return d.rule_index;
}

static const char *SET =
    "{\"revision\": 7, \"policies\": ["
    " {\"service\": \"user\", \"default\": \"v1\"},"
    " {\"service\": \"order\", \"default\": \"v1\", \"fallback\": \"fail\", \"rules\": ["
    "   {\"name\": \"testers\", \"route\": \"v2\", \"tag\": \"beta\","
    "    \"when\": {\"attr\": \"header:X-Gray\", \"op\": \"eq\", \"value\": \"1\"}},"
    "   {\"name\": \"num\", \"route\": \"v3\","
    "    \"when\": {\"attr\": \"param:age\", \"op\": \"ge\", \"value\": 18}},"
    "   {\"name\": \"ramp\", \"route\": \"v4\","
    "    \"when\": {\"attr\": \"cookie:uid\", \"op\": \"percent\", \"from\": 0, \"to\": 50}}]},"
    " {\"service\": \"cart\", \"default\": \"v9\"}]}";

static void test_set_accessors(void **state) {
  (void)state;
  gray_policyset_t *set = parse(SET, GRAY_PARSE_ANY);
  assert_non_null(set);
  assert_int_equal(gray_policyset_revision(set), 7);
  assert_int_equal(gray_policyset_count(set), 3);
  /* Sorted by service name. */
  assert_string_equal(gray_policy_service(gray_policyset_at(set, 0)), "cart");
  assert_string_equal(gray_policy_service(gray_policyset_at(set, 1)), "order");
  assert_string_equal(gray_policy_service(gray_policyset_at(set, 2)), "user");
  assert_null(gray_policyset_at(set, 3));
  const gray_policy_t *p = gray_policyset_find(set, "order", 5);
  assert_non_null(p);
  assert_null(gray_policyset_find(set, "orde", 4));
  assert_null(gray_policyset_find(set, "orders", 6));
  assert_string_equal(gray_policy_default(p), "v1");
  assert_int_equal(gray_policy_fallback_fail(p), 1);
  assert_int_equal(gray_policy_rule_count(p), 3);
  assert_string_equal(gray_policy_rule_name(p, 0), "testers");
  assert_string_equal(gray_policy_rule_route(p, 1), "v3");
  assert_string_equal(gray_policy_rule_tag(p, 0), "beta");
  assert_null(gray_policy_rule_tag(p, 1));
  assert_null(gray_policy_rule_name(p, 3));
  assert_int_equal(gray_policy_fallback_fail(gray_policyset_find(set, "cart", 4)), 0);
  /* References: the set outlives the first release. */
  gray_policyset_ref(set);
  gray_policyset_release(set);
  assert_string_equal(gray_policy_service(gray_policyset_at(set, 0)), "cart");
  gray_policyset_release(set);
  gray_policyset_release(NULL);
}

static void test_parse_flags(void **state) {
  (void)state;
  const char *one = "{\"service\": \"a\", \"default\": \"v1\"}";
  gray_policyset_t *set = NULL;
  gray_error_t err;
  assert_int_equal(gray_policyset_parse(one, strlen(one), GRAY_PARSE_ONE, &set, &err), GRAY_OK);
  assert_int_equal(gray_policyset_count(set), 1);
  assert_int_equal(gray_policyset_revision(set), 0);
  gray_policyset_release(set);
  assert_int_equal(gray_policyset_parse(one, strlen(one), GRAY_PARSE_SET, &set, &err), GRAY_ESCHEMA);
  assert_null(set);
  assert_string_equal(err.message, "missing required key \"policies\"");
  assert_int_equal(gray_policyset_parse(SET, strlen(SET), GRAY_PARSE_ONE, &set, &err), GRAY_ESCHEMA);
  assert_null(set);
  assert_int_equal(err.code, GRAY_ESCHEMA);
  /* Not NUL-terminated input: only len bytes are read. */
  char buf[64];
  memcpy(buf, one, strlen(one));
  memset(buf + strlen(one), 'x', sizeof buf - strlen(one));
  assert_int_equal(gray_policyset_parse(buf, strlen(one), GRAY_PARSE_ANY, &set, &err), GRAY_OK);
  gray_policyset_release(set);
  /* An empty set is valid: nothing is routed by it. */
  const char *empty = "{\"policies\": []}";
  assert_int_equal(gray_policyset_parse(empty, strlen(empty), GRAY_PARSE_ANY, &set, &err), GRAY_OK);
  assert_int_equal(gray_policyset_count(set), 0);
  assert_null(gray_policyset_find(set, "a", 1));
  gray_policyset_release(set);
}

static void test_load_file_errors(void **state) {
  (void)state;
  gray_policyset_t *set = NULL;
  gray_error_t err;
  assert_int_equal(gray_policyset_load_file("/nonexistent/graylane.json", 0, &set, &err), GRAY_EIO);
  assert_non_null(strstr(err.message, "No such file"));
  assert_null(set);
}

static gray_str_t S(const char *s) {
  gray_str_t r = {s, strlen(s)};
  return r;
}

static void test_decide_and_tags(void **state) {
  (void)state;
  gray_policyset_t *set = parse(SET, GRAY_PARSE_ANY);
  const gray_policy_t *p = gray_policyset_find(set, "order", 5);
  gray_kv_t hdr[] = {{S("x-gray"), S("1")}, {S("X-GRAY"), S("2")}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdr;
  kv.nheaders = 2;
  kv.tag = S("lane-a");
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_decision_t d;
  gray_decide(p, &req, &d);
  assert_int_equal(d.rule_index, 0);
  assert_memory_equal(d.version.p, "v2", 2);
  assert_int_equal(d.tag.len, 4); /* the rule's tag wins over the incoming one */
  assert_memory_equal(d.tag.p, "beta", 4);
  assert_int_equal(d.fallback_fail, 1);

  kv.nheaders = 0;
  kv.query = S("age=17");
  gray_decide(p, &req, &d);
  /* No rule matches (cookie uid absent): default, incoming tag forwarded. */
  assert_int_equal(d.rule_index, -1);
  assert_null(d.rule.p);
  assert_memory_equal(d.version.p, "v1", 2);
  assert_int_equal(d.tag.len, 6);
  assert_memory_equal(d.tag.p, "lane-a", 6);

  kv.query = S("age=18.0");
  kv.tag = S("bad tag\n");
  gray_decide(p, &req, &d);
  assert_int_equal(d.rule_index, 1);
  assert_null(d.tag.p); /* an invalid incoming tag is never forwarded */
  gray_policyset_release(set);
}

/* A lookup that counts its calls per attribute and decodes every param
 * into scratch (as a URL-decoding executor may), over a gray_kv_request_t. */
typedef struct counting {
  gray_kv_request_t kv;
  int calls[16];
  int borrow; /* 1: params are not copied into scratch */
} counting;

static int counting_lookup(void *ctx, gray_attr_t attr, gray_str_t name, gray_str_t *value,
                           char *scratch, size_t scratch_size) {
  counting *c = ctx;
  c->calls[attr]++;
  if (!gray_kv_lookup(&c->kv, attr, name, value, scratch, scratch_size)) return 0;
  if (attr == GRAY_ATTR_PARAM && !c->borrow) {
    memmove(scratch, value->p, value->len);
    value->p = scratch;
  }
  return 1;
}

/* Each attribute is looked up once per decision however many conditions
 * test it (and `tag` once more only when it is not already known); a value
 * decoded into scratch is looked up again rather than read after the next
 * lookup overwrote it. */
static void test_lookup_once_per_attribute(void **state) {
  (void)state;
  gray_policyset_t *set = parse(
      "{\"service\": \"s\", \"default\": \"v1\", \"rules\": ["
      " {\"name\": \"a\", \"route\": \"v2\", \"when\": {\"all\": ["
      "   {\"attr\": \"header:x-a\", \"op\": \"eq\", \"value\": \"1\"},"
      "   {\"attr\": \"param:p\", \"op\": \"eq\", \"value\": \"no\"}]}},"
      " {\"name\": \"b\", \"route\": \"v3\", \"when\": {\"all\": ["
      "   {\"attr\": \"header:X-A\", \"op\": \"exists\"},"
      "   {\"attr\": \"param:q\", \"op\": \"eq\", \"value\": \"qq\"},"
      "   {\"attr\": \"param:p\", \"op\": \"eq\", \"value\": \"pp\"},"
      "   {\"attr\": \"tag\", \"op\": \"ne\", \"value\": \"x\"}]}}]}",
      GRAY_PARSE_ONE);
  assert_non_null(set);
  const gray_policy_t *p = gray_policyset_at(set, 0);
  gray_kv_t hdr[] = {{S("X-A"), S("1")}};
  counting c;
  memset(&c, 0, sizeof c);
  c.kv.headers = hdr;
  c.kv.nheaders = 1;
  c.kv.query = S("p=pp&q=qq");
  c.kv.tag = S("lane");
  gray_request_t req = {counting_lookup, &c};
  gray_decision_t d;
  gray_decide(p, &req, &d);
  assert_int_equal(d.rule_index, 1);
  assert_memory_equal(d.version.p, "v3", 2);
  assert_memory_equal(d.tag.p, "lane", 4); /* no rule tag: the incoming one */
  assert_int_equal(c.calls[GRAY_ATTR_HEADER], 1); /* x-a, tested twice */
  assert_int_equal(c.calls[GRAY_ATTR_TAG], 1);    /* by rule b and for the tag */
  /* p's value lived in scratch, which q's lookup overwrote: p again */
  assert_int_equal(c.calls[GRAY_ATTR_PARAM], 3);

  /* the same through gray_explain */
  memset(c.calls, 0, sizeof c.calls);
  gray_trace_t *t = gray_trace_new();
  assert_int_equal(gray_explain(p, &req, &d, t), GRAY_OK);
  assert_int_equal(d.rule_index, 1);
  assert_int_equal(c.calls[GRAY_ATTR_HEADER], 1);
  assert_int_equal(c.calls[GRAY_ATTR_PARAM], 3);
  gray_trace_free(t);

  /* values borrowed from the request are kept: p and q once each */
  memset(c.calls, 0, sizeof c.calls);
  c.borrow = 1;
  gray_decide(p, &req, &d);
  assert_int_equal(d.rule_index, 1);
  assert_int_equal(c.calls[GRAY_ATTR_PARAM], 2);
  gray_policyset_release(set);
}

static void test_explain_trace(void **state) {
  (void)state;
  gray_policyset_t *set = parse(SET, GRAY_PARSE_ANY);
  const gray_policy_t *p = gray_policyset_find(set, "order", 5);
  gray_kv_t ck[] = {{S("uid"), S("user-1")}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.cookies = ck;
  kv.ncookies = 1;
  kv.query = S("age=old");
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_trace_t *t = gray_trace_new();
  gray_decision_t d, d2;
  assert_int_equal(gray_explain(p, &req, &d, t), GRAY_OK);
  gray_decide(p, &req, &d2);
  assert_int_equal(d.rule_index, d2.rule_index);
  /* rule, cond for each of the three rules */
  assert_int_equal(gray_trace_count(t), 6);
  const gray_trace_entry_t *e = gray_trace_at(t, 1);
  assert_int_equal(e->kind, GRAY_TRACE_COND);
  assert_string_equal(e->attr, "header:x-gray");
  assert_false(e->present);
  assert_null(e->value);
  e = gray_trace_at(t, 3);
  assert_string_equal(e->value, "old");
  assert_string_equal(e->note, "not a number");
  assert_false(e->result);
  e = gray_trace_at(t, 5);
  assert_string_equal(e->op, "percent");
  uint32_t b = gray_percent_bucket(S("order"), S("user-1"));
  char note[32];
  snprintf(note, sizeof note, "bucket %u", b);
  assert_string_equal(e->note, note);
  assert_int_equal(e->result, b < 5000);
  assert_int_equal(d.rule_index, b < 5000 ? 2 : -1);
  /* Reusing a trace clears it. */
  assert_int_equal(gray_explain(p, &req, &d, t), GRAY_OK);
  assert_int_equal(gray_trace_count(t), 6);
  gray_trace_free(t);
  gray_policyset_release(set);
}

/* Raising `to` never drops a user that was in; the share is close to
 * to - from; a different salt reshuffles users. */
static void test_percent_property(void **state) {
  (void)state;
  enum { USERS = 20000 };
  static unsigned char in_before[USERS];
  const int steps[] = {0, 1, 5, 10, 25, 50, 75, 99, 100};
  memset(in_before, 0, sizeof in_before);
  for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
    char doc[256];
    snprintf(doc, sizeof doc,
             "{\"service\":\"order\",\"default\":\"v1\",\"rules\":[{\"name\":\"r\",\"route\":\"v2\","
             "\"when\":{\"attr\":\"cookie:uid\",\"op\":\"percent\",\"to\":%d}}]}",
             steps[s]);
    gray_policyset_t *set = parse(doc, 0);
    assert_non_null(set);
    const gray_policy_t *p = gray_policyset_at(set, 0);
    int count = 0;
    for (int u = 0; u < USERS; u++) {
      char uid[16];
      snprintf(uid, sizeof uid, "%d", 100000 + u);
      gray_kv_t ck[] = {{S("uid"), S(uid)}};
      int in = rule_of(p, NULL, 0, ck, 1) == 0;
      if (in_before[u]) assert_true(in);
      in_before[u] = (unsigned char)in;
      count += in;
    }
    double share = 100.0 * count / USERS;
    assert_true(share >= steps[s] - 1.0 && share <= steps[s] + 1.0);
    gray_policyset_release(set);
  }
}

/* Counting allocator: deciding must not allocate at all. */
static size_t g_allocs;
static void *count_malloc(size_t n) {
  g_allocs++;
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  g_allocs++;
  return realloc(p, n);
}

static const char *RICH =
    "{\"service\": \"order\", \"default\": \"v1\", \"rules\": ["
    " {\"name\": \"re\", \"route\": \"v2\", \"when\": {\"attr\": \"header:user-agent\", \"op\": \"regex\","
    "  \"value\": \"(iPhone|Android).*AppVersion/5\\\\.\"}},"
    " {\"name\": \"in\", \"route\": \"v2\", \"when\": {\"attr\": \"param:uid\", \"op\": \"in\","
    "  \"value\": [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", \"10\"]}},"
    " {\"name\": \"ip\", \"route\": \"v2\", \"when\": {\"not\": {\"attr\": \"ip\", \"op\": \"cidr\","
    "  \"value\": [\"0.0.0.0/0\", \"::/0\"]}}},"
    " {\"name\": \"mix\", \"route\": \"v3\", \"when\": {\"all\": ["
    "   {\"attr\": \"param:uid\", \"op\": \"mod\", \"divisor\": 100, \"in\": [1, 2, 3]},"
    "   {\"any\": [{\"attr\": \"cookie:x\", \"op\": \"exists\"}, {\"attr\": \"path\", \"op\": \"contains\","
    "     \"value\": \"/v2/\"}]}]}},"
    " {\"name\": \"pct\", \"route\": \"v4\", \"when\": {\"attr\": \"param:uid\", \"op\": \"percent\","
    "  \"from\": 10, \"to\": 20.5}}]}";

static void test_decide_allocates_nothing(void **state) {
  (void)state;
  gray_policyset_t *set = parse(RICH, 0);
  assert_non_null(set);
  const gray_policy_t *p = gray_policyset_at(set, 0);
  gray_kv_t hdr[] = {{S("User-Agent"), S("Mozilla/5.0 (Linux; Android 14) AppVersion/4.1")},
                     {S("Cookie"), S("a=1; x=2")}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdr;
  kv.nheaders = 2;
  kv.ip = S("192.0.2.1");
  kv.path = S("/api/v2/orders");
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_set_alloc_funcs(count_malloc, count_realloc, free);
  g_allocs = 0;
  int routed[5] = {0};
  for (int i = 0; i < 10000; i++) {
    char q[32];
    snprintf(q, sizeof q, "uid=%d&x=1", i);
    kv.query = S(q);
    gray_decision_t d;
    gray_decide(p, &req, &d);
    if (d.rule_index >= 0) routed[d.rule_index]++;
  }
  size_t allocs = g_allocs;
  gray_set_alloc_funcs(NULL, NULL, NULL);
  assert_int_equal(allocs, 0);
  /* The loop really exercised the rules. */
  assert_int_equal(routed[0], 0);
  assert_int_equal(routed[1], 10);
  assert_true(routed[3] > 250 && routed[4] > 800);
  gray_policyset_release(set);
}

typedef struct worker {
  const gray_policy_t *p;
  gray_policyset_t *set;
  int mismatches;
  int expect[64];
} worker;

static int decide_uid(const gray_policy_t *p, int uid) {
  char q[32];
  snprintf(q, sizeof q, "uid=%d", uid);
  gray_kv_t hdr[] = {{S("User-Agent"), S(uid % 7 ? "curl" : "iPhone AppVersion/5.0")}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdr;
  kv.nheaders = 1;
  kv.ip = S(uid % 2 ? "10.0.0.1" : "::1");
  kv.query = S(q);
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_decision_t d;
  gray_decide(p, &req, &d);
  return d.rule_index;
}

static void *work(void *arg) {
  worker *w = arg;
  for (int round = 0; round < 2000; round++) {
    gray_policyset_t *mine = gray_policyset_ref(w->set);
    for (int u = 0; u < 64; u++)
      if (decide_uid(w->p, u) != w->expect[u]) w->mismatches++;
    gray_policyset_release(mine);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  gray_policyset_t *set = parse(RICH, 0);
  worker w[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    w[i].p = gray_policyset_at(set, 0);
    w[i].set = set;
    w[i].mismatches = 0;
    for (int u = 0; u < 64; u++) w[i].expect[u] = decide_uid(w[i].p, u);
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].mismatches, 0);
  }
  gray_policyset_release(set);
}

static void test_regex_limit(void **state) {
  (void)state;
  const char *doc =
      "{\"service\":\"s\",\"default\":\"v1\",\"rules\":[{\"name\":\"r\",\"route\":\"v2\","
      "\"when\":{\"attr\":\"header:x\",\"op\":\"regex\",\"value\":\"^(a|aa)+$\"}}]}";
  gray_policyset_t *set = parse(doc, 0);
  char val[200];
  memset(val, 'a', sizeof val);
  val[sizeof val - 1] = 'b';
  gray_kv_t hdr[] = {{S("x"), {val, sizeof val}}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  kv.headers = hdr;
  kv.nheaders = 1;
  gray_request_t req = {gray_kv_lookup, &kv};
  gray_decision_t d;
  gray_trace_t *t = gray_trace_new();
  assert_int_equal(gray_explain(gray_policyset_at(set, 0), &req, &d, t), GRAY_OK);
  assert_int_equal(d.rule_index, -1);
  const gray_trace_entry_t *e = gray_trace_at(t, 1);
  assert_non_null(e->note);
  assert_non_null(strstr(e->note, "limit"));
  assert_true(e->truncated == 0);
  gray_trace_free(t);
  gray_policyset_release(set);
}

/* `in` over a set of values of every length from 0 to 48 (the set's own
 * hash reads short values in overlapping words and long ones in blocks):
 * each member is found, and each value one edit away from a member (a byte
 * changed at any position, one added, one dropped) is found exactly when it
 * is itself a member. */
#define IN_N 400
static char in_vals[IN_N][50];
static size_t in_lens[IN_N];

static int in_member(const char *p, size_t len) {
  for (int i = 0; i < IN_N; i++)
    if (in_lens[i] == len && !memcmp(in_vals[i], p, len)) return 1;
  return 0;
}

/* The value goes in a heap block of its own size, so a hash that reads
 * past its end sees other bytes than it did when the set was built (and
 * ASan reports the read). */
static int in_decide(const gray_policy_t *p, const char *value, size_t len) {
  char *v = malloc(len ? len : 1);
  assert_non_null(v);
  memcpy(v, value, len);
  gray_kv_t hdr[] = {{S("x-v"), {v, len}}};
  int in = rule_of(p, hdr, 1, NULL, 0) == 0;
  free(v);
  return in;
}

static void test_in_set_membership(void **state) {
  (void)state;
  static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  size_t cap = 64 + IN_N * 60;
  char *doc = malloc(cap);
  assert_non_null(doc);
  size_t o = (size_t)snprintf(doc, cap,
                              "{\"service\":\"s\",\"default\":\"v1\",\"rules\":[{\"name\":\"r\","
                              "\"route\":\"v2\",\"when\":{\"attr\":\"header:x-v\",\"op\":\"in\","
                              "\"value\":[");
  uint32_t x = 12345;
  for (int i = 0; i < IN_N; i++) {
    in_lens[i] = (size_t)(i % 49);
    for (size_t j = 0; j < in_lens[i]; j++) {
      x = x * 1103515245u + 12345u;
      in_vals[i][j] = alpha[(x >> 16) % 36];
    }
    o += (size_t)snprintf(doc + o, cap - o, "%s\"%.*s\"", i ? "," : "", (int)in_lens[i],
                          in_vals[i]);
  }
  snprintf(doc + o, cap - o, "]}}]}");
  gray_policyset_t *set = parse(doc, 0);
  free(doc);
  assert_non_null(set);
  const gray_policy_t *p = gray_policyset_at(set, 0);
  char buf[64];
  int probes = 0;
  for (int i = 0; i < IN_N; i++) {
    size_t n = in_lens[i];
    assert_true(in_decide(p, in_vals[i], n));
    for (size_t j = 0; j < n; j++) { /* a byte changed */
      memcpy(buf, in_vals[i], n);
      buf[j] = (char)(buf[j] == 'a' ? 'b' : 'a');
      assert_int_equal(in_decide(p, buf, n), in_member(buf, n));
      probes++;
    }
    memcpy(buf, in_vals[i], n); /* one added, at the end and in front */
    buf[n] = 'z';
    assert_int_equal(in_decide(p, buf, n + 1), in_member(buf, n + 1));
    buf[0] = '-';
    memcpy(buf + 1, in_vals[i], n);
    assert_int_equal(in_decide(p, buf, n + 1), in_member(buf, n + 1));
    if (n) { /* one dropped */
      assert_int_equal(in_decide(p, in_vals[i], n - 1), in_member(in_vals[i], n - 1));
      assert_int_equal(in_decide(p, in_vals[i] + 1, n - 1), in_member(in_vals[i] + 1, n - 1));
    }
    probes += 4;
  }
  assert_true(probes > 10000);
  gray_policyset_release(set);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_accessors),  cmocka_unit_test(test_parse_flags),
      cmocka_unit_test(test_load_file_errors), cmocka_unit_test(test_decide_and_tags),
      cmocka_unit_test(test_explain_trace),  cmocka_unit_test(test_percent_property),
      cmocka_unit_test(test_decide_allocates_nothing), cmocka_unit_test(test_threads),
      cmocka_unit_test(test_regex_limit), cmocka_unit_test(test_lookup_once_per_attribute),
      cmocka_unit_test(test_in_set_membership),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
