/* Unit tests for lib/client without a network: snapshots built from watch
 * answers, events, the cache file, pick and its fallback, tag helpers,
 * options and registration checks. The clients here point at a port
 * nothing listens on and are mostly never started; the tests feed watch
 * answers to the model directly. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/internal.h"

#define NOWHERE "http://127.0.0.1:1"

/* ---- helpers -------------------------------------------------------------- */

typedef struct logbuf {
  pthread_mutex_t mu;
  char text[16384];
  size_t len;
} logbuf;

static void log_sink(void *arg, int level, const char *msg) {
  logbuf *b = arg;
  pthread_mutex_lock(&b->mu);
  int n = snprintf(b->text + b->len, sizeof b->text - b->len, "%d %s\n", level, msg);
  if (n > 0) b->len += (size_t)n < sizeof b->text - b->len ? (size_t)n : sizeof b->text - b->len - 1;
  pthread_mutex_unlock(&b->mu);
}

static int log_has(logbuf *b, const char *needle) {
  pthread_mutex_lock(&b->mu);
  int r = strstr(b->text, needle) != NULL;
  pthread_mutex_unlock(&b->mu);
  return r;
}

static void log_clear(logbuf *b) {
  pthread_mutex_lock(&b->mu);
  b->len = 0;
  b->text[0] = '\0';
  pthread_mutex_unlock(&b->mu);
}

static logbuf g_log = {PTHREAD_MUTEX_INITIALIZER, "", 0};

static gray_client_t *client_with(const char *services, const char *cache) {
  gray_client_options_t o;
  gray_client_t *c = NULL;
  gray_error_t err;
  gray_client_options_init(&o);
  o.servers = NOWHERE;
  o.services = services;
  o.cache_path = cache;
  o.connect_timeout_ms = 200;
  o.log = log_sink;
  o.log_arg = &g_log;
  assert_int_equal(gray_client_new(&o, &c, &err), GRAY_OK);
  return c;
}

/* Feed one watch answer as the watch thread would. */
static int feed(gray_client_t *c, const char *answer) {
  int changed = 0;
  gray_error_t err;
  int rc = gray__model_apply(c->model, answer, strlen(answer), &changed, &err);
  if (changed) assert_int_equal(gray__client_publish_model(c, &err), GRAY_OK);
  return rc;
}

static const char *const POLICY_ORDER =
    "{\"service\":\"order\",\"default\":\"v1\",\"rules\":["
    "{\"name\":\"testers\",\"route\":\"v2\",\"tag\":\"beta\","
    " \"when\":{\"attr\":\"header:x-gray\",\"op\":\"eq\",\"value\":\"1\"}},"
    "{\"name\":\"lane\",\"route\":\"v2\",\"when\":{\"attr\":\"tag\",\"op\":\"eq\",\"value\":\"beta\"}}]}";

static char *reset_answer(int64_t rev, const char *store, const char *policies, const char *services) {
  char *buf = malloc(16384);
  assert_non_null(buf);
  snprintf(buf, 16384,
           "{\"store_id\":\"%s\",\"revision\":%lld,\"reset\":true,\"snapshot\":{\"store_id\":\"%s\","
           "\"revision\":%lld,\"policies\":{\"revision\":%lld,\"policies\":[%s]},\"services\":[%s]}}",
           store, (long long)rev, store, (long long)rev, (long long)rev, policies, services);
  return buf;
}

static const char *const STORE_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *const STORE_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static const char *const ORDER_INSTANCES =
    "{\"service\":\"order\",\"instances\":["
    "{\"id\":\"o1\",\"address\":\"10.0.0.1\",\"port\":8001,\"version\":\"v1\",\"metadata\":{},\"ttl_s\":15,"
    "\"expires_in_ms\":1000},"
    "{\"id\":\"o2\",\"address\":\"10.0.0.2\",\"port\":8002,\"version\":\"v1\",\"metadata\":{},\"ttl_s\":15,"
    "\"expires_in_ms\":1000},"
    "{\"id\":\"o3\",\"address\":\"host-3.example\",\"port\":8003,\"version\":\"v1\"},"
    "{\"id\":\"o9\",\"address\":\"::1\",\"port\":8009,\"version\":\"v2\"}]}";

static void load_standard(gray_client_t *c) {
  char *a = reset_answer(7, STORE_A, POLICY_ORDER, ORDER_INSTANCES);
  assert_int_equal(feed(c, a), GRAY_OK);
  free(a);
}

typedef struct kvreq {
  gray_kv_t headers[2];
  gray_kv_request_t kv;
  gray_request_t req;
} kvreq;

static const gray_request_t *make_req(kvreq *r, const char *header, const char *value, const char *tag) {
  memset(r, 0, sizeof(*r));
  if (header) {
    r->headers[0].name.p = header;
    r->headers[0].name.len = strlen(header);
    r->headers[0].value.p = value;
    r->headers[0].value.len = strlen(value);
    r->kv.headers = r->headers;
    r->kv.nheaders = 1;
  }
  if (tag) {
    r->kv.tag.p = tag;
    r->kv.tag.len = strlen(tag);
  }
  r->req.lookup = gray_kv_lookup;
  r->req.ctx = &r->kv;
  return &r->req;
}

static char g_dir[256];

static void make_dir(void) {
  const char *t = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/gray-client-XXXXXX", t && *t ? t : "/tmp");
  assert_non_null(mkdtemp(g_dir));
}

static void remove_dir(void) {
  DIR *d = opendir(g_dir);
  struct dirent *e;
  char p[512];
  if (!d) return;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(g_dir);
}

static size_t dir_entries(void) {
  DIR *d = opendir(g_dir);
  struct dirent *e;
  size_t n = 0;
  assert_non_null(d);
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_decide_without_snapshot(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  gray_endpoint_t ep;
  memset(&d, 'x', sizeof d);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_ENOTFOUND);
  assert_string_equal(d.version, "");
  assert_string_equal(d.tag, "");
  assert_int_equal(gray_client_pick(c, "order", "v1", &ep), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_revision(c), 0);
  assert_int_equal(gray_client_wait_ready(c, 0), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_wait_ready(c, 30), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_decide(NULL, "order", NULL, &d), GRAY_EINVAL);
  assert_int_equal(gray_client_decide(c, NULL, NULL, &d), GRAY_EINVAL);
  gray_client_free(c);
  gray_client_free(NULL);
}

static void test_snapshot_from_reset(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  kvreq r;
  load_standard(c);
  assert_int_equal(gray_client_wait_ready(c, 0), GRAY_OK);
  assert_int_equal(gray_client_revision(c), 7);

  assert_int_equal(gray_client_decide(c, "order", make_req(&r, "x-gray", "1", NULL), &d), GRAY_OK);
  assert_string_equal(d.service, "order");
  assert_string_equal(d.version, "v2");
  assert_string_equal(d.tag, "beta");
  assert_string_equal(d.rule, "testers");
  assert_int_equal(d.revision, 7);
  assert_int_equal(d.fallback_fail, 0);

  assert_int_equal(gray_client_decide(c, "order", make_req(&r, NULL, NULL, NULL), &d), GRAY_OK);
  assert_string_equal(d.version, "v1");
  assert_string_equal(d.tag, "");
  assert_string_equal(d.rule, "");
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  assert_string_equal(d.version, "v1");

  /* The incoming tag decides through the lane rule and is forwarded. */
  assert_int_equal(gray_client_decide(c, "order", make_req(&r, NULL, NULL, "beta"), &d), GRAY_OK);
  assert_string_equal(d.version, "v2");
  assert_string_equal(d.rule, "lane");
  assert_string_equal(d.tag, "beta");
  /* An invalid incoming tag is dropped. */
  assert_int_equal(gray_client_decide(c, "order", make_req(&r, NULL, NULL, "bad tag!"), &d), GRAY_OK);
  assert_string_equal(d.version, "v1");
  assert_string_equal(d.tag, "");

  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_ENOTFOUND);
  assert_string_equal(d.version, "");
  assert_string_equal(c->model->store_id, STORE_A);
  gray_client_free(c);
}

static void test_events_applied(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  gray_endpoint_t ep;
  char buf[4096];
  load_standard(c);

  snprintf(buf, sizeof buf,
           "{\"store_id\":\"%s\",\"revision\":10,\"events\":["
           "{\"revision\":8,\"type\":\"policy.put\",\"service\":\"cart\",\"policy\":"
           "{\"service\":\"cart\",\"default\":\"v3\",\"fallback\":\"fail\"}},"
           "{\"revision\":9,\"type\":\"instance.put\",\"service\":\"cart\",\"id\":\"c1\",\"instance\":"
           "{\"id\":\"c1\",\"address\":\"10.1.0.1\",\"port\":9000,\"version\":\"v3\",\"metadata\":{},"
           "\"ttl_s\":15,\"expires_in_ms\":15000}},"
           "{\"revision\":10,\"type\":\"instance.expire\",\"service\":\"order\",\"id\":\"o9\"}]}",
           STORE_A);
  assert_int_equal(feed(c, buf), GRAY_OK);
  assert_int_equal(gray_client_revision(c), 10);
  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_OK);
  assert_string_equal(d.version, "v3");
  assert_int_equal(d.fallback_fail, 1);
  assert_int_equal(d.revision, 10);
  assert_int_equal(gray_client_pick(c, "cart", "v3", &ep), GRAY_OK);
  assert_string_equal(ep.id, "c1");
  assert_string_equal(ep.address, "10.1.0.1");
  assert_int_equal(ep.port, 9000);
  /* o9 (the only v2) expired: v2 falls back to v1. */
  assert_int_equal(gray_client_pick(c, "order", "v2", &ep), GRAY_OK);
  assert_int_equal(ep.fell_back, 1);
  assert_string_equal(ep.version, "v1");

  /* Replayed events (at or below the revision) change nothing. */
  snprintf(buf, sizeof buf,
           "{\"store_id\":\"%s\",\"revision\":10,\"events\":["
           "{\"revision\":8,\"type\":\"policy.delete\",\"service\":\"cart\"}]}",
           STORE_A);
  assert_int_equal(feed(c, buf), GRAY_OK);
  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_OK);

  /* A policy change, then a delete. */
  snprintf(buf, sizeof buf,
           "{\"store_id\":\"%s\",\"revision\":12,\"events\":["
           "{\"revision\":11,\"type\":\"policy.put\",\"service\":\"order\",\"policy\":"
           "{\"service\":\"order\",\"default\":\"v2\"}},"
           "{\"revision\":12,\"type\":\"policy.delete\",\"service\":\"cart\"},"
           "{\"revision\":12,\"type\":\"something.new\",\"service\":\"cart\"}]}",
           STORE_A);
  assert_int_equal(feed(c, buf), GRAY_OK);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  assert_string_equal(d.version, "v2");
  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_revision(c), 12);

  /* A timeout answer (no events, higher revision) moves `since` only. */
  snprintf(buf, sizeof buf, "{\"store_id\":\"%s\",\"revision\":20,\"events\":[]}", STORE_A);
  assert_int_equal(feed(c, buf), GRAY_OK);
  assert_int_equal(c->model->revision, 20);
  assert_int_equal(gray_client_revision(c), 12);

  /* Events from another store are refused whole. */
  snprintf(buf, sizeof buf,
           "{\"store_id\":\"%s\",\"revision\":30,\"events\":["
           "{\"revision\":30,\"type\":\"policy.delete\",\"service\":\"order\"}]}",
           STORE_B);
  assert_int_equal(feed(c, buf), GRAY_EJSON);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  gray_client_free(c);
}

static void test_bad_answers_keep_snapshot(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  char buf[4096];
  load_standard(c);
  const char *bad[] = {
      "",
      "not json",
      "[]",
      "{\"reset\":true}",
      "{\"reset\":true,\"snapshot\":{\"store_id\":\"x y\",\"revision\":1,\"policies\":{\"policies\":[]},"
      "\"services\":[]}}",
      "{\"reset\":true,\"snapshot\":{\"store_id\":\"abc\",\"revision\":-1,\"policies\":{\"policies\":[]},"
      "\"services\":[]}}",
      "{\"reset\":true,\"snapshot\":{\"store_id\":\"abc\",\"revision\":1,\"services\":[]}}",
      "{\"store_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"revision\":9}",
      /* The second event is malformed: the first must not be applied. */
      "{\"store_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"revision\":9,\"events\":["
      "{\"revision\":8,\"type\":\"policy.delete\",\"service\":\"order\"},"
      "{\"revision\":9,\"type\":\"instance.put\",\"service\":\"order\",\"id\":\"x\",\"instance\":"
      "{\"id\":\"x\",\"address\":\"bad host!\",\"port\":1,\"version\":\"v1\"}}]}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_not_equal(feed(c, bad[i]), GRAY_OK);
    assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
    assert_string_equal(d.version, "v1");
    assert_int_equal(gray_client_revision(c), 7);
  }

  /* A policy this SDK cannot compile keeps the previous one (events) ... */
  log_clear(&g_log);
  snprintf(buf, sizeof buf,
           "{\"store_id\":\"%s\",\"revision\":8,\"events\":["
           "{\"revision\":8,\"type\":\"policy.put\",\"service\":\"order\",\"policy\":"
           "{\"service\":\"order\",\"default\":\"v9\",\"rules\":[{\"name\":\"r\",\"route\":\"v2\","
           "\"when\":{\"attr\":\"header:a\",\"op\":\"future-op\"}}]}}]}",
           STORE_A);
  assert_int_equal(feed(c, buf), GRAY_OK);
  assert_true(log_has(&g_log, "does not compile here"));
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  assert_string_equal(d.version, "v1");

  /* ... and in a reset, without taking the other policies down. */
  char *a = reset_answer(
      20, STORE_A,
      "{\"service\":\"order\",\"default\":\"v9\",\"rules\":[{\"name\":\"r\",\"route\":\"v2\","
      "\"when\":{\"attr\":\"header:a\",\"op\":\"future-op\"}}]},"
      "{\"service\":\"cart\",\"default\":\"v5\"}",
      "");
  assert_int_equal(feed(c, a), GRAY_OK);
  free(a);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  assert_string_equal(d.version, "v1");
  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_OK);
  assert_string_equal(d.version, "v5");
  assert_int_equal(gray_client_revision(c), 20);
  gray_client_free(c);
}

static void test_reset_replaces_everything(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  gray_endpoint_t ep;
  load_standard(c);
  /* A new store: a full replacement, even with fewer policies. */
  char *a = reset_answer(3, STORE_B, "{\"service\":\"cart\",\"default\":\"v1\"}", "");
  assert_int_equal(feed(c, a), GRAY_OK);
  free(a);
  assert_int_equal(gray_client_revision(c), 3);
  assert_string_equal(c->model->store_id, STORE_B);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_pick(c, "order", "v1", &ep), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_OK);
  gray_client_free(c);
}

static void test_follow_filter(void **state) {
  (void)state;
  gray_client_t *c = client_with("order, gateway", NULL);
  gray_client_decision_t d;
  gray_endpoint_t ep;
  assert_string_equal(c->follow_text, "order,gateway");
  char *a = reset_answer(5, STORE_A, "{\"service\":\"cart\",\"default\":\"v1\"},{\"service\":\"order\",\"default\":\"v1\"}",
                         "{\"service\":\"cart\",\"instances\":[{\"id\":\"c\",\"address\":\"1.2.3.4\",\"port\":1,"
                         "\"version\":\"v1\"}]}");
  assert_int_equal(feed(c, a), GRAY_OK);
  free(a);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  assert_int_equal(gray_client_decide(c, "cart", NULL, &d), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_pick(c, "cart", "v1", &ep), GRAY_ENOTFOUND);
  gray_client_free(c);
}

static void test_pick_round_robin(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_endpoint_t ep;
  int seen[3] = {0, 0, 0};
  load_standard(c);
  for (int i = 0; i < 300; i++) {
    assert_int_equal(gray_client_pick(c, "order", "v1", &ep), GRAY_OK);
    assert_int_equal(ep.fell_back, 0);
    assert_string_equal(ep.version, "v1");
    if (!strcmp(ep.id, "o1")) {
      seen[0]++;
      assert_string_equal(ep.address, "10.0.0.1");
      assert_int_equal(ep.port, 8001);
    } else if (!strcmp(ep.id, "o2")) {
      seen[1]++;
    } else {
      assert_string_equal(ep.id, "o3");
      assert_string_equal(ep.address, "host-3.example");
      seen[2]++;
    }
  }
  assert_int_equal(seen[0], 100);
  assert_int_equal(seen[1], 100);
  assert_int_equal(seen[2], 100);

  /* The counter lives outside the snapshot: a swap keeps the rotation. */
  assert_int_equal(gray_client_pick(c, "order", "v1", &ep), GRAY_OK);
  char last[64];
  snprintf(last, sizeof last, "%s", ep.id);
  load_standard(c); /* same content, new snapshot */
  char *a = reset_answer(8, STORE_A, POLICY_ORDER, ORDER_INSTANCES);
  assert_int_equal(feed(c, a), GRAY_OK);
  free(a);
  assert_int_equal(gray_client_pick(c, "order", "v1", &ep), GRAY_OK);
  assert_string_not_equal(ep.id, last);

  assert_int_equal(gray_client_pick(c, "order", "v2", &ep), GRAY_OK);
  assert_string_equal(ep.id, "o9");
  assert_string_equal(ep.address, "::1");
  assert_int_equal(ep.fell_back, 0);
  gray_client_free(c);
}

static void test_pick_fallback(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_endpoint_t ep;
  const char *inst =
      "{\"service\":\"order\",\"instances\":[{\"id\":\"o1\",\"address\":\"10.0.0.1\",\"port\":1,\"version\":\"v1\"}]},"
      "{\"service\":\"strict\",\"instances\":[{\"id\":\"s1\",\"address\":\"10.0.0.2\",\"port\":2,\"version\":\"v1\"}]},"
      "{\"service\":\"nopolicy\",\"instances\":[{\"id\":\"n1\",\"address\":\"10.0.0.3\",\"port\":3,\"version\":\"v1\"}]},"
      "{\"service\":\"empty\",\"instances\":[]}";
  char *a = reset_answer(4, STORE_A,
                         "{\"service\":\"order\",\"default\":\"v1\"},"
                         "{\"service\":\"strict\",\"default\":\"v1\",\"fallback\":\"fail\"},"
                         "{\"service\":\"nodefault\",\"default\":\"v7\"}",
                         inst);
  assert_int_equal(feed(c, a), GRAY_OK);
  free(a);
  /* v2 has no instance: the default, flagged. */
  assert_int_equal(gray_client_pick(c, "order", "v2", &ep), GRAY_OK);
  assert_int_equal(ep.fell_back, 1);
  assert_string_equal(ep.version, "v1");
  assert_string_equal(ep.id, "o1");
  /* "fallback": "fail". */
  assert_int_equal(gray_client_pick(c, "strict", "v2", &ep), GRAY_ENOTFOUND);
  assert_string_equal(ep.id, "");
  assert_int_equal(gray_client_pick(c, "strict", "v1", &ep), GRAY_OK);
  /* No policy: no default. */
  assert_int_equal(gray_client_pick(c, "nopolicy", "v1", &ep), GRAY_OK);
  assert_int_equal(gray_client_pick(c, "nopolicy", "v2", &ep), GRAY_ENOTFOUND);
  /* The default has no instance either. */
  assert_int_equal(gray_client_pick(c, "nodefault", "v1", &ep), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_pick(c, "nodefault", "v7", &ep), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_pick(c, "empty", "v1", &ep), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_pick(c, "order", NULL, &ep), GRAY_EINVAL);
  gray_client_free(c);
}

static void test_tag_helpers(void **state) {
  (void)state;
  gray_client_decision_t d;
  char buf[128];
  assert_true(gray_tag_valid("beta", 4));
  assert_true(gray_tag_valid("a.b_c-9", 7));
  assert_false(gray_tag_valid("", 0));
  assert_false(gray_tag_valid(NULL, 0));
  assert_false(gray_tag_valid("-beta", 5));
  assert_false(gray_tag_valid("be ta", 5));
  assert_false(gray_tag_valid("beta\r\nX: y", 10));
  char long_tag[70];
  memset(long_tag, 'a', sizeof long_tag);
  assert_true(gray_tag_valid(long_tag, 63));
  assert_false(gray_tag_valid(long_tag, 64));
  /* Only len bytes count. */
  assert_true(gray_tag_valid("beta!!", 4));

  memset(&d, 0, sizeof d);
  assert_int_equal(gray_tag_header_line(&d, buf, sizeof buf), 0);
  assert_string_equal(buf, "");
  snprintf(d.tag, sizeof d.tag, "beta");
  assert_int_equal(gray_tag_header_line(&d, buf, sizeof buf), strlen("X-Gray-Tag: beta"));
  assert_string_equal(buf, "X-Gray-Tag: beta");
  assert_int_equal(gray_tag_header_line(&d, buf, 17), strlen("X-Gray-Tag: beta"));
  assert_int_equal(gray_tag_header_line(&d, buf, 16), 0);
  assert_int_equal(gray_tag_header_line(&d, NULL, 0), 0);
  snprintf(d.tag, sizeof d.tag, "bad tag");
  assert_int_equal(gray_tag_header_line(&d, buf, sizeof buf), 0);
  assert_string_equal(GRAY_TAG_HEADER, "X-Gray-Tag");
  assert_string_equal(GRAY_TAG_MESSAGE_HEADER, "x-gray-tag");
}

static void test_options(void **state) {
  (void)state;
  gray_client_options_t o;
  gray_client_t *c = NULL;
  gray_error_t err;
  struct {
    const char *servers, *token, *services;
    int bmin, bmax, cto;
  } bad[] = {
      {NULL, NULL, NULL, 0, 0, 0},
      {"", NULL, NULL, 0, 0, 0},
      {"ftp://x", NULL, NULL, 0, 0, 0},
      {"http://a,", NULL, NULL, 0, 0, 0},
      {"http://a b", NULL, NULL, 0, 0, 0},
      {"http://u@a", NULL, NULL, 0, 0, 0},
      {"http://a?x=1", NULL, NULL, 0, 0, 0},
      {"http://a", "to ken", NULL, 0, 0, 0},
      {"http://a", "tok\r\nX: y", NULL, 0, 0, 0},
      {"http://a", NULL, "order,bad name", 0, 0, 0},
      {"http://a", NULL, "order,,cart", 0, 0, 0},
      {"http://a", NULL, NULL, 500, 100, 0},
      {"http://a", NULL, NULL, 0, 0, -1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    gray_client_options_init(&o);
    o.servers = bad[i].servers;
    o.token = bad[i].token;
    o.services = bad[i].services;
    o.backoff_min_ms = bad[i].bmin;
    o.backoff_max_ms = bad[i].bmax;
    o.connect_timeout_ms = bad[i].cto;
    memset(&err, 0, sizeof err);
    assert_int_equal(gray_client_new(&o, &c, &err), GRAY_EINVAL);
    assert_null(c);
    assert_true(err.message[0] != '\0');
  }
  assert_int_equal(gray_client_new(NULL, &c, &err), GRAY_EINVAL);

  gray_client_options_init(&o);
  o.servers = " http://127.0.0.1:7070/ , https://grayd.example:7443";
  o.token = "secret-token";
  o.watch_wait_s = 600;
  assert_int_equal(gray_client_new(&o, &c, &err), GRAY_OK);
  assert_int_equal(c->nservers, 2);
  assert_string_equal(c->servers[0], "http://127.0.0.1:7070");
  assert_string_equal(c->servers[1], "https://grayd.example:7443");
  assert_int_equal(c->watch_wait_s, 60);
  assert_int_equal(c->connect_timeout_ms, 2000);
  assert_int_equal(c->backoff_min_ms, 100);
  assert_int_equal(c->backoff_max_ms, 10000);
  assert_null(c->follow_text);
  gray_client_free(c);
}

static void test_register_validation(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_error_t err;
  gray_instance_t in;
  const char *odd[] = {"k", NULL};
  const char *meta[] = {"zone", "a", "weight", "10", NULL};
  struct {
    const char *service, *id, *address, *version;
    int port, ttl;
    const char *const *meta;
    const char *path;
  } bad[] = {
      {NULL, "i1", "10.0.0.1", "v1", 80, 0, NULL, "service"},
      {"bad name", "i1", "10.0.0.1", "v1", 80, 0, NULL, "service"},
      {"order", "", "10.0.0.1", "v1", 80, 0, NULL, "id"},
      {"order", "i/1", "10.0.0.1", "v1", 80, 0, NULL, "id"},
      {"order", "i1", "bad host!", "v1", 80, 0, NULL, "address"},
      {"order", "i1", "-host", "v1", 80, 0, NULL, "address"},
      {"order", "i1", NULL, "v1", 80, 0, NULL, "address"},
      {"order", "i1", "10.0.0.1", "v 1", 80, 0, NULL, "version"},
      {"order", "i1", "10.0.0.1", "v1", 0, 0, NULL, "port"},
      {"order", "i1", "10.0.0.1", "v1", 65536, 0, NULL, "port"},
      {"order", "i1", "10.0.0.1", "v1", 80, -1, NULL, "ttl_s"},
      {"order", "i1", "10.0.0.1", "v1", 80, 3601, NULL, "ttl_s"},
      {"order", "i1", "10.0.0.1", "v1", 80, 0, odd, "metadata"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset(&in, 0, sizeof in);
    in.service = bad[i].service;
    in.id = bad[i].id;
    in.address = bad[i].address;
    in.version = bad[i].version;
    in.port = bad[i].port;
    in.ttl_s = bad[i].ttl;
    in.metadata = bad[i].meta;
    assert_int_equal(gray_client_register(c, &in, &err), GRAY_EINVAL);
    assert_string_equal(err.path, bad[i].path);
  }
  assert_int_equal(c->nregs, 0);

  /* Valid, but nobody listens: EIO, kept for the background. */
  log_clear(&g_log);
  memset(&in, 0, sizeof in);
  in.service = "order";
  in.id = "order-1";
  in.address = "order-1.internal";
  in.port = 8080;
  in.version = "v1";
  in.metadata = meta;
  assert_int_equal(gray_client_register(c, &in, &err), GRAY_EIO);
  assert_int_equal(c->nregs, 1);
  assert_non_null(strstr(c->regs[0].body, "\"zone\":\"a\""));
  assert_non_null(strstr(c->regs[0].body, "\"ttl_s\":15"));
  assert_true(log_has(&g_log, "retrying in the background"));
  gray_client_stop(c);
  assert_true(log_has(&g_log, "cannot deregister order/order-1"));
  assert_int_equal(c->nregs, 0);
  assert_int_equal(gray_client_register(c, &in, &err), GRAY_EINVAL); /* stopped */
  gray_client_free(c);
}

static void test_sha256_vectors(void **state) {
  (void)state;
  char hex[65];
  gray__sha256_hex("", 0, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  gray__sha256_hex("abc", 3, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: two tail blocks */
  gray__sha256_hex(two, strlen(two), hex);
  assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  char *million = malloc(1000000);
  assert_non_null(million);
  memset(million, 'a', 1000000);
  gray__sha256_hex(million, 1000000, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(million);
  /* Lengths at the padding boundaries: 55 bytes of 'a' (one tail block),
   * 56 (two), 64 (a whole block, then padding alone). */
  static const struct {
    size_t n;
    const char *hex;
  } as[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
  };
  char buf[128];
  memset(buf, 'a', sizeof buf);
  for (size_t i = 0; i < sizeof as / sizeof as[0]; i++) {
    gray__sha256_hex(buf, as[i].n, hex);
    assert_string_equal(hex, as[i].hex);
  }
}

static void test_cache_round_trip(void **state) {
  (void)state;
  char path[512];
  gray_client_decision_t d;
  gray_endpoint_t ep;
  kvreq r;
  make_dir();
  snprintf(path, sizeof path, "%s/snap.cache", g_dir);

  gray_client_t *a = client_with(NULL, path);
  load_standard(a);
  gray__client_write_cache(a);
  assert_int_equal(dir_entries(), 1); /* no temp file left */
  FILE *f = fopen(path, "rb");
  char head[40] = "";
  assert_non_null(f);
  assert_non_null(fgets(head, sizeof head, f));
  fclose(f);
  assert_memory_equal(head, "graylane-cache 1 sha256=", 24);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 077, 0); /* not readable by others */
  gray_client_free(a);

  /* A new client starts from it with grayd unreachable. */
  log_clear(&g_log);
  gray_client_t *b = client_with(NULL, path);
  gray_error_t err;
  assert_int_equal(gray_client_start(b, &err), GRAY_OK);
  assert_int_equal(gray_client_wait_ready(b, 0), GRAY_OK);
  assert_int_equal(gray_client_revision(b), 7);
  assert_string_equal(b->model->store_id, STORE_A);
  assert_true(log_has(&g_log, "loaded revision 7"));
  assert_int_equal(gray_client_decide(b, "order", make_req(&r, "X-Gray", "1", NULL), &d), GRAY_OK);
  assert_string_equal(d.version, "v2");
  assert_string_equal(d.tag, "beta");
  assert_int_equal(gray_client_pick(b, "order", "v2", &ep), GRAY_OK);
  assert_string_equal(ep.id, "o9");
  assert_int_equal(ep.port, 8009);
  int ids = 0;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(gray_client_pick(b, "order", "v1", &ep), GRAY_OK);
    ids |= !strcmp(ep.id, "o1") ? 1 : !strcmp(ep.id, "o2") ? 2 : !strcmp(ep.id, "o3") ? 4 : 8;
  }
  assert_int_equal(ids, 7);
  gray_client_stop(b);
  gray_client_stop(b); /* idempotent */
  assert_int_equal(gray_client_start(b, &err), GRAY_EINVAL);
  gray_client_free(b);
  remove_dir();
}

static void write_file(const char *path, const char *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = malloc(1 << 20);
  assert_non_null(buf);
  *len = fread(buf, 1, 1 << 20, f);
  fclose(f);
  return buf;
}

static void expect_ignored(const char *path, const char *why) {
  gray_client_decision_t d;
  log_clear(&g_log);
  gray_client_t *c = client_with(NULL, path);
  assert_int_equal(gray__client_load_cache(c), 0);
  assert_true(log_has(&g_log, why));
  assert_int_equal(gray_client_wait_ready(c, 0), GRAY_ENOTFOUND);
  assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_ENOTFOUND);
  gray_client_free(c);
}

static void test_cache_corrupt_ignored(void **state) {
  (void)state;
  char path[512];
  size_t len;
  gray_error_t err;
  make_dir();
  snprintf(path, sizeof path, "%s/snap.cache", g_dir);
  gray_client_t *a = client_with(NULL, path);
  load_standard(a);
  gray__client_write_cache(a);
  gray_client_free(a);
  char *good = read_file(path, &len);
  char *copy = malloc(len);
  assert_non_null(copy);

  /* One flipped byte in the payload. */
  memcpy(copy, good, len);
  copy[len - 10] ^= 0x20;
  write_file(path, copy, len);
  expect_ignored(path, "fails its checksum");

  /* Cut short (a torn write without the rename dance). */
  write_file(path, good, len - 100);
  expect_ignored(path, "cut short");
  write_file(path, good, 50);
  expect_ignored(path, "no valid cache header");

  /* A damaged header. */
  memcpy(copy, good, len);
  copy[30] = 'g';
  write_file(path, copy, len);
  expect_ignored(path, "no valid cache header");
  write_file(path, "", 0);
  expect_ignored(path, "no valid cache header");
  write_file(path, "graylane-cache 1 sha256=", 24);
  expect_ignored(path, "no valid cache header");

  /* A well-formed file whose payload is not a snapshot. */
  assert_int_equal(gray__cache_write(path, "not json", 8, &err), GRAY_OK);
  expect_ignored(path, "not JSON");
  assert_int_equal(gray__cache_write(path, "{\"store_id\":\"x\"}", 16, &err), GRAY_OK);
  expect_ignored(path, "ignoring the cache file");

  /* Not a file at all. */
  unlink(path);
  assert_int_equal(mkdir(path, 0700), 0);
  expect_ignored(path, "ignoring the cache file");
  rmdir(path);

  /* Absent: said at info level, not a warning. */
  expect_ignored(path, "no cache file at");

  /* And the good one still loads. */
  write_file(path, good, len);
  gray_client_t *b = client_with(NULL, path);
  assert_int_equal(gray__client_load_cache(b), 1);
  assert_int_equal(gray_client_revision(b), 7);
  gray_client_free(b);
  free(good);
  free(copy);
  remove_dir();
}

static void test_cache_unwritable_dir(void **state) {
  (void)state;
  char path[512];
  make_dir();
  snprintf(path, sizeof path, "%s/missing/snap.cache", g_dir);
  log_clear(&g_log);
  gray_client_t *c = client_with(NULL, path);
  load_standard(c);
  c->cache_dirty = 1;
  gray__client_write_cache(c);
  assert_true(log_has(&g_log, "cache: cannot create a temporary file"));
  assert_int_equal(c->cache_dirty, 1);
  gray_client_free(c);
  remove_dir();
}

static void test_swap_reclaims(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  char buf[1024];
  load_standard(c);
  for (int i = 0; i < 100; i++) {
    snprintf(buf, sizeof buf,
             "{\"store_id\":\"%s\",\"revision\":%d,\"events\":[{\"revision\":%d,\"type\":\"instance.put\","
             "\"service\":\"order\",\"id\":\"x\",\"instance\":{\"id\":\"x\",\"address\":\"10.9.9.9\",\"port\":%d,"
             "\"version\":\"v1\"}}]}",
             STORE_A, 100 + i, 100 + i, 1000 + i);
    assert_int_equal(feed(c, buf), GRAY_OK);
    assert_int_equal(gray_client_decide(c, "order", NULL, &d), GRAY_OK);
  }
  /* Nothing holds a retired snapshot, so none is left. */
  assert_int_equal(c->nretired, 0);
  /* The policy set is shared while only instances change. */
  gray__snapshot *s = atomic_load(&c->cur);
  assert_ptr_equal(s->pols, c->model->pols);
  gray_client_free(c);
}

/* A request lookup that decides again (nested use of the same thread's
 * hazard slot) must not unprotect the outer snapshot. */
typedef struct nested {
  gray_client_t *c;
  int calls;
  int inner_rc;
} nested;

static int nested_lookup(void *ctx, gray_attr_t attr, gray_str_t name, gray_str_t *value, char *scratch,
                         size_t scratch_size) {
  nested *n = ctx;
  gray_client_decision_t d;
  n->calls++;
  n->inner_rc = gray_client_decide(n->c, "order", NULL, &d);
  value->p = "1";
  value->len = 1;
  return attr == GRAY_ATTR_HEADER;
}

static void test_nested_decide(void **state) {
  (void)state;
  gray_client_t *c = client_with(NULL, NULL);
  gray_client_decision_t d;
  nested n = {c, 0, -100};
  gray_request_t req = {nested_lookup, &n};
  load_standard(c);
  assert_int_equal(gray_client_decide(c, "order", &req, &d), GRAY_OK);
  assert_string_equal(d.version, "v2");
  assert_true(n.calls > 0);
  assert_int_equal(n.inner_rc, GRAY_OK);
  /* The slot is free again. */
  gray__hp_slot *h = gray__hp_slot_get();
  assert_non_null(h);
  assert_null(atomic_load(&h->ptr));
  gray_client_free(c);
}

static void *decide_once(void *arg) {
  gray_client_decision_t d;
  if (!gray__hp_slot_get()) return NULL; /* a slot must be free */
  return gray_client_decide(arg, "order", NULL, &d) == GRAY_OK ? arg : NULL;
}

static void test_hazard_slots_released_at_thread_exit(void **state) {
  (void)state;
  /* Threads that come and go must not use up the slots. */
  gray_client_t *c = client_with(NULL, NULL);
  load_standard(c);
  for (int round = 0; round < 3 * GRAY__HP_SLOTS; round++) {
    pthread_t t;
    void *ok = NULL;
    assert_int_equal(pthread_create(&t, NULL, decide_once, c), 0);
    pthread_join(t, &ok);
    assert_non_null(ok);
  }
  gray_client_free(c);
}

/* More reader threads than hazard slots: the rest take the documented
 * slow path (a reference under the swap mutex) and still decide right,
 * while the writer keeps swapping. */
typedef struct crowd {
  gray_client_t *c;
  pthread_barrier_t *hold;
  int had_slot;
  int ok;
} crowd;

static void *crowd_reader(void *arg) {
  crowd *w = arg;
  gray_client_decision_t d;
  gray_endpoint_t ep;
  w->had_slot = gray__hp_slot_get() != NULL;
  w->ok = 1;
  for (int i = 0; i < 50; i++) {
    if (gray_client_decide(w->c, "order", NULL, &d) != GRAY_OK || strcmp(d.version, "v1")) w->ok = 0;
    if (gray_client_pick(w->c, "order", "v1", &ep) != GRAY_OK) w->ok = 0;
  }
  pthread_barrier_wait(w->hold); /* keep the slot until every thread ran */
  return NULL;
}

static void test_slow_path_beyond_slots(void **state) {
  (void)state;
  enum { N = GRAY__HP_SLOTS + 8 };
  gray_client_t *c = client_with(NULL, NULL);
  pthread_barrier_t hold;
  pthread_t *th = calloc(N, sizeof(*th));
  crowd *w = calloc(N, sizeof(*w));
  char buf[1024];
  assert_non_null(th);
  assert_non_null(w);
  load_standard(c);
  assert_int_equal(pthread_barrier_init(&hold, NULL, N + 1), 0);
  for (int i = 0; i < N; i++) {
    w[i].c = c;
    w[i].hold = &hold;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 256 * 1024);
    assert_int_equal(pthread_create(&th[i], &at, crowd_reader, &w[i]), 0);
    pthread_attr_destroy(&at);
    if (i % 32 == 0) {
      snprintf(buf, sizeof buf,
               "{\"store_id\":\"%s\",\"revision\":%d,\"events\":[{\"revision\":%d,\"type\":\"instance.put\","
               "\"service\":\"order\",\"id\":\"x\",\"instance\":{\"id\":\"x\",\"address\":\"10.9.9.9\",\"port\":%d,"
               "\"version\":\"v1\"}}]}",
               STORE_A, 100 + i, 100 + i, 1000 + i);
      assert_int_equal(feed(c, buf), GRAY_OK);
    }
  }
  pthread_barrier_wait(&hold);
  int slow = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    assert_true(w[i].ok);
    slow += !w[i].had_slot;
  }
  assert_true(slow >= 8);
  pthread_barrier_destroy(&hold);
  free(th);
  free(w);
  gray__client_reclaim(c);
  assert_int_equal(c->nretired, 0);
  gray_client_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decide_without_snapshot),
      cmocka_unit_test(test_snapshot_from_reset),
      cmocka_unit_test(test_events_applied),
      cmocka_unit_test(test_bad_answers_keep_snapshot),
      cmocka_unit_test(test_reset_replaces_everything),
      cmocka_unit_test(test_follow_filter),
      cmocka_unit_test(test_pick_round_robin),
      cmocka_unit_test(test_pick_fallback),
      cmocka_unit_test(test_tag_helpers),
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_register_validation),
      cmocka_unit_test(test_sha256_vectors),
      cmocka_unit_test(test_cache_round_trip),
      cmocka_unit_test(test_cache_corrupt_ignored),
      cmocka_unit_test(test_cache_unwritable_dir),
      cmocka_unit_test(test_swap_reclaims),
      cmocka_unit_test(test_nested_decide),
      cmocka_unit_test(test_hazard_slots_released_at_thread_exit),
      cmocka_unit_test(test_slow_path_beyond_slots),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
