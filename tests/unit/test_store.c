/* Unit tests for grayd/store: the SQLite backend of store.h. Each test gets
 * a fresh database in its own temporary directory. SQLite's allocator is
 * wrapped so the out-of-memory tests can fail its Nth allocation. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"

/* ---- SQLite allocation failures ---------------------------------------- */

static sqlite3_mem_methods real_mem;
static long fail_countdown; /* 0: off; n: the nth allocation from now fails */
static long failures;       /* allocations failed so far */

static int should_fail(void) {
  if (fail_countdown <= 0) return 0;
  if (--fail_countdown) return 0;
  failures++;
  return 1;
}

static void *wrap_malloc(int n) {
  return should_fail() ? NULL : real_mem.xMalloc(n);
}

static void *wrap_realloc(void *p, int n) {
  return should_fail() ? NULL : real_mem.xRealloc(p, n);
}

static void install_failing_allocator(void) {
  sqlite3_mem_methods m;
  if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_mem) != SQLITE_OK) abort();
  m = real_mem;
  m.xMalloc = wrap_malloc;
  m.xRealloc = wrap_realloc;
  if (sqlite3_config(SQLITE_CONFIG_MALLOC, &m) != SQLITE_OK) abort();
  /* Without lookaside every small allocation goes through the wrapper, so
   * there are many more points to fail. */
  if (sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) != SQLITE_OK) abort();
}

/* ---- fixture ------------------------------------------------------------ */

typedef struct fx {
  char dir[512];
  char path[600];
  gd_store *s;
} fx;

static void path_in(const fx *f, const char *name, char *out, size_t size) {
  int n = snprintf(out, size, "%s/%s", f->dir, name);
  assert_true(n > 0 && (size_t)n < size);
}

static gd_store *open_ok(const char *path) {
  gray_error_t err;
  memset(&err, 0, sizeof err);
  gd_store *s = gd_store_sqlite_open(path, &err);
  if (!s) fail_msg("open %s: %s", path, err.message);
  return s;
}

static void reopen(fx *f) {
  f->s->ops->close(f->s);
  f->s = open_ok(f->path);
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("TMPDIR");
  assert_non_null(f);
  snprintf(f->dir, sizeof f->dir, "%s/test_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(f->dir));
  path_in(f, "store.db", f->path, sizeof f->path);
  f->s = open_ok(f->path);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  char p[1200];
  DIR *d;
  struct dirent *e;
  if (f->s) f->s->ops->close(f->s);
  d = opendir(f->dir);
  if (d) {
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

/* ---- helpers -------------------------------------------------------------- */

/* One write; returns the gray_err_t, with *res and *cur. */
static int write_op(gd_store *s, const char *op, const char *service, int64_t rev, int64_t expect,
                    const char *body, int *res, int64_t *cur) {
  gray_error_t err;
  gd_policy_write w = {service, op,     "tester",           body, body ? strlen(body) : 0,
                       rev,     expect, 1700000000000 + rev};
  int r = GD_STORE_OK;
  int64_t c = -99;
  int rc = s->ops->policy_write(s, &w, &r, &c, &err);
  if (res) *res = r;
  if (cur) *cur = c;
  return rc;
}

static void put_ok(gd_store *s, const char *service, int64_t rev, const char *body) {
  int res;
  int64_t cur;
  assert_int_equal(write_op(s, "put", service, rev, -1, body, &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  assert_int_equal(cur, rev);
}

#define HMAX 64
typedef struct hist {
  int n;
  int stop_after; /* 0: never */
  int64_t rev[HMAX];
  char op[HMAX][16];
  char service[HMAX][64];
  char body[HMAX][256];
  int has_body[HMAX];
} hist;

static int hist_cb(void *ctx, const gd_policy_rec *r) {
  hist *h = ctx;
  assert_true(h->n < HMAX);
  h->rev[h->n] = r->revision;
  snprintf(h->op[h->n], sizeof h->op[0], "%s", r->op);
  snprintf(h->service[h->n], sizeof h->service[0], "%s", r->service);
  h->has_body[h->n] = r->body != NULL;
  if (r->body) {
    assert_true(r->body_len < sizeof h->body[0]);
    memcpy(h->body[h->n], r->body, r->body_len);
    h->body[h->n][r->body_len] = '\0';
  }
  h->n++;
  return h->stop_after && h->n >= h->stop_after;
}

static hist history(gd_store *s, const char *service, int64_t before, int limit) {
  hist h;
  gray_error_t err;
  memset(&h, 0, sizeof h);
  assert_int_equal(s->ops->policy_history(s, service, before, limit, hist_cb, &h, &err), GRAY_OK);
  return h;
}

static hist current(gd_store *s) {
  hist h;
  gray_error_t err;
  memset(&h, 0, sizeof h);
  assert_int_equal(s->ops->policy_each(s, hist_cb, &h, &err), GRAY_OK);
  return h;
}

typedef struct alist {
  int n;
  int64_t id[1100];
  int status[1100];
  char first_token[64], first_message[64];
  size_t first_message_len;
} alist;

static int audit_cb(void *ctx, const gd_audit_rec *r) {
  alist *a = ctx;
  assert_true(a->n < 1100);
  if (a->n == 0) {
    snprintf(a->first_token, sizeof a->first_token, "%s", r->token);
    snprintf(a->first_message, sizeof a->first_message, "%s", r->message);
    a->first_message_len = strlen(r->message);
  }
  a->id[a->n] = r->id;
  a->status[a->n] = r->status;
  a->n++;
  return 0;
}

static alist *audit(gd_store *s, int64_t before, int limit) {
  alist *a = calloc(1, sizeof *a);
  gray_error_t err;
  assert_non_null(a);
  assert_int_equal(s->ops->audit_list(s, before, limit, audit_cb, a, &err), GRAY_OK);
  return a;
}

static int64_t sql_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int64_t v = -1;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void sql_exec(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_store_id(void **state) {
  fx *f = *state;
  char first[33], other[700];
  const char *id = f->s->ops->store_id(f->s);
  assert_int_equal(strlen(id), 32);
  assert_int_equal(strspn(id, "0123456789abcdef"), 32);
  memcpy(first, id, 33);
  reopen(f);
  assert_string_equal(f->s->ops->store_id(f->s), first);
  /* Another database has another id. */
  path_in(f, "other.db", other, sizeof other);
  gd_store *o = open_ok(other);
  assert_string_not_equal(o->ops->store_id(o), first);
  o->ops->close(o);
  assert_string_equal(f->s->ops->name, "sqlite");
}

static void test_revision_monotonic(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  int res;
  assert_int_equal(s->ops->revision(s), 0);
  assert_int_equal(s->ops->reserve(s, 10, &err), GRAY_OK);
  assert_int_equal(s->ops->revision(s), 10);
  assert_int_equal(s->ops->reserve(s, 5, &err), GRAY_OK); /* only raises */
  assert_int_equal(s->ops->revision(s), 10);
  assert_int_equal(s->ops->reserve(s, -1, &err), GRAY_EINVAL);
  put_ok(s, "a", 11, "{}");
  assert_int_equal(s->ops->revision(s), 11);
  /* grayd reserves a block and then writes inside it. */
  assert_int_equal(s->ops->reserve(s, 100, &err), GRAY_OK);
  put_ok(s, "b", 12, "{}");
  put_ok(s, "a", 13, "{}");
  assert_int_equal(s->ops->revision(s), 100);
  reopen(f);
  s = f->s;
  assert_int_equal(s->ops->revision(s), 100);
  /* After a restart nothing at or below the old high-water mark. */
  assert_int_equal(write_op(s, "put", "a", 50, -1, "{}", &res, NULL), GRAY_EINVAL);
  assert_int_equal(write_op(s, "put", "a", 100, -1, "{}", &res, NULL), GRAY_EINVAL);
  put_ok(s, "a", 101, "{}");
  assert_int_equal(s->ops->revision(s), 101);
  assert_int_equal(s->ops->reserve(s, 101, &err), GRAY_OK);
  assert_int_equal(s->ops->revision(s), 101);
  reopen(f);
  assert_int_equal(f->s->ops->revision(f->s), 101);
}

static void test_cas_matrix(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  int res;
  int64_t cur;
  /* Absent service: N > 0 conflicts (current 0), 0 holds. */
  assert_int_equal(write_op(s, "put", "a", 1, 5, "{\"v\":0}", &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_CONFLICT);
  assert_int_equal(cur, 0);
  assert_int_equal(write_op(s, "put", "a", 1, 0, "{\"v\":1}", &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  assert_int_equal(cur, 1);
  /* Present: 0 conflicts, wrong N conflicts, right N and -1 hold. */
  assert_int_equal(write_op(s, "put", "a", 2, 0, "{\"v\":2}", &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_CONFLICT);
  assert_int_equal(cur, 1);
  assert_int_equal(write_op(s, "put", "a", 2, 7, "{\"v\":2}", &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_CONFLICT);
  assert_int_equal(cur, 1);
  assert_int_equal(write_op(s, "put", "a", 2, 1, "{\"v\":2}", &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  assert_int_equal(cur, 2);
  assert_int_equal(write_op(s, "rollback", "a", 3, -1, "{\"v\":1}", &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  /* Conflicts wrote nothing. */
  hist h = history(s, "a", 0, 100);
  assert_int_equal(h.n, 3);
  assert_int_equal(h.rev[0], 3);
  assert_int_equal(h.rev[2], 1);
  assert_int_equal(s->ops->revision(s), 3);
  /* Deletes: wrong N conflicts, right N deletes, then the service is absent. */
  assert_int_equal(write_op(s, "delete", "a", 4, 2, NULL, &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_CONFLICT);
  assert_int_equal(cur, 3);
  assert_int_equal(write_op(s, "delete", "a", 4, 3, NULL, &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  assert_int_equal(cur, 0);
  assert_int_equal(write_op(s, "delete", "a", 5, -1, NULL, &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_ABSENT);
  assert_int_equal(cur, 0);
  assert_int_equal(write_op(s, "delete", "never", 5, 0, NULL, &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_ABSENT);
  assert_int_equal(write_op(s, "delete", "never", 5, 9, NULL, &res, &cur), GRAY_OK);
  assert_int_equal(res, GD_STORE_CONFLICT);
  assert_int_equal(cur, 0);
  assert_int_equal(history(s, "a", 0, 100).n, 4);
  assert_int_equal(history(s, "never", 0, 100).n, 0);
  assert_int_equal(s->ops->revision(s), 4);
  /* After a delete, 0 holds again. */
  assert_int_equal(write_op(s, "put", "a", 5, 0, "{}", &res, NULL), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  /* current may be NULL. */
  assert_int_equal(write_op(s, "put", "a", 6, 5, "{}", &res, NULL), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
}

static void test_history_paging(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  char body[64];
  int res;
  for (int64_t r = 1; r <= 10; r++) {
    snprintf(body, sizeof body, "{\"r\":%lld}", (long long)r);
    put_ok(s, r % 2 ? "a" : "b", r, body);
  }
  assert_int_equal(write_op(s, "delete", "a", 11, -1, NULL, &res, NULL), GRAY_OK);
  put_ok(s, "a", 12, "{\"r\":12}");
  hist h = history(s, "a", 0, 100);
  int64_t want[] = {12, 11, 9, 7, 5, 3, 1};
  assert_int_equal(h.n, 7);
  for (int i = 0; i < 7; i++) assert_int_equal(h.rev[i], want[i]);
  assert_string_equal(h.op[1], "delete");
  assert_false(h.has_body[1]);
  assert_string_equal(h.op[0], "put");
  assert_string_equal(h.body[0], "{\"r\":12}");
  assert_string_equal(h.body[2], "{\"r\":9}");
  assert_string_equal(h.service[6], "a");
  /* Pages of 3. */
  h = history(s, "a", 0, 3);
  assert_int_equal(h.n, 3);
  assert_int_equal(h.rev[2], 9);
  h = history(s, "a", 9, 3);
  assert_int_equal(h.n, 3);
  assert_int_equal(h.rev[0], 7);
  assert_int_equal(h.rev[2], 3);
  h = history(s, "a", 3, 3);
  assert_int_equal(h.n, 1);
  assert_int_equal(h.rev[0], 1);
  assert_int_equal(history(s, "a", 1, 3).n, 0);
  /* Limit clamped to 1..1000. */
  assert_int_equal(history(s, "a", 0, 0).n, 1);
  assert_int_equal(history(s, "a", 0, -5).n, 1);
  assert_int_equal(history(s, "a", 0, 100000).n, 7);
  assert_int_equal(history(s, "b", 0, 100).n, 5);
  assert_int_equal(history(s, "c", 0, 100).n, 0);
  /* The callback stops the walk. */
  memset(&h, 0, sizeof h);
  h.stop_after = 2;
  assert_int_equal(s->ops->policy_history(s, "a", 0, 100, hist_cb, &h, &err), GRAY_OK);
  assert_int_equal(h.n, 2);
  /* The statement was reset: the next walk starts over. */
  assert_int_equal(history(s, "a", 0, 100).n, 7);
  assert_int_equal(s->ops->policy_history(s, "a", -1, 100, hist_cb, &h, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->policy_history(s, "a", 0, 100, NULL, &h, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->policy_history(s, NULL, 0, 100, hist_cb, &h, &err), GRAY_EINVAL);
}

/* Changes after a revision, oldest first, across services: the durable log
 * a cluster backend replays. */
static void test_policy_changes(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  int res;
  put_ok(s, "a", 1, "{\"r\":1}");
  put_ok(s, "b", 2, "{\"r\":2}");
  assert_int_equal(write_op(s, "delete", "a", 3, -1, NULL, &res, NULL), GRAY_OK);
  put_ok(s, "c", 4, "{\"r\":4}");
  hist h;
  memset(&h, 0, sizeof h);
  assert_int_equal(s->ops->policy_changes(s, 1, 100, hist_cb, &h, &err), GRAY_OK);
  assert_int_equal(h.n, 3);
  assert_int_equal(h.rev[0], 2);
  assert_int_equal(h.rev[1], 3);
  assert_int_equal(h.rev[2], 4);
  assert_string_equal(h.service[1], "a");
  assert_string_equal(h.op[1], "delete");
  assert_false(h.has_body[1]);
  assert_string_equal(h.body[2], "{\"r\":4}");
  memset(&h, 0, sizeof h);
  assert_int_equal(s->ops->policy_changes(s, 0, 2, hist_cb, &h, &err), GRAY_OK);
  assert_int_equal(h.n, 2);
  assert_int_equal(h.rev[1], 2);
  memset(&h, 0, sizeof h);
  assert_int_equal(s->ops->policy_changes(s, 4, 100, hist_cb, &h, &err), GRAY_OK);
  assert_int_equal(h.n, 0);
  assert_int_equal(s->ops->policy_changes(s, -1, 100, hist_cb, &h, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->policy_changes(s, 0, 100, NULL, &h, &err), GRAY_EINVAL);
}

static void test_policy_at(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_policy_rec r;
  int res;
  put_ok(s, "a", 1, "{\"a\":1}");
  put_ok(s, "b", 2, "{\"b\":2}");
  assert_int_equal(write_op(s, "delete", "a", 3, -1, NULL, &res, NULL), GRAY_OK);
  assert_int_equal(s->ops->policy_at(s, "a", 1, &r, &err), GRAY_OK);
  assert_string_equal(r.service, "a");
  assert_int_equal(r.revision, 1);
  assert_string_equal(r.op, "put");
  assert_string_equal(r.actor, "tester");
  assert_int_equal(r.time_ms, 1700000000001);
  assert_int_equal(r.body_len, 7);
  assert_memory_equal(r.body, "{\"a\":1}", 7);
  assert_int_equal(r.body[7], '\0');
  gd_policy_rec_clear(&r);
  assert_null(r.service);
  gd_policy_rec_clear(&r); /* twice is fine */
  gd_policy_rec_clear(NULL);
  assert_int_equal(s->ops->policy_at(s, "a", 3, &r, &err), GRAY_OK);
  assert_string_equal(r.op, "delete");
  assert_null(r.body);
  assert_int_equal(r.body_len, 0);
  gd_policy_rec_clear(&r);
  /* Misses: another service's revision, no such revision. out is zeroed. */
  memset(&r, 0x5a, sizeof r);
  assert_int_equal(s->ops->policy_at(s, "a", 2, &r, &err), GRAY_ENOTFOUND);
  assert_null(r.service);
  assert_null(r.body);
  assert_int_equal(err.code, GRAY_ENOTFOUND);
  assert_non_null(strstr(err.message, "revision 2"));
  assert_int_equal(s->ops->policy_at(s, "a", 99, &r, &err), GRAY_ENOTFOUND);
  assert_int_equal(s->ops->policy_at(s, "a", 0, &r, &err), GRAY_ENOTFOUND);
  assert_int_equal(s->ops->policy_at(s, "zzz", 1, &r, &err), GRAY_ENOTFOUND);
  assert_int_equal(s->ops->policy_at(s, NULL, 1, &r, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->policy_at(s, "a", 1, NULL, &err), GRAY_EINVAL);
}

static void test_rollback_and_current(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_policy_rec r;
  int res;
  put_ok(s, "order", 1, "{\"v\":1}");
  put_ok(s, "order", 2, "{\"v\":2}");
  assert_int_equal(s->ops->policy_at(s, "order", 1, &r, &err), GRAY_OK);
  assert_int_equal(write_op(s, "rollback", "order", 3, 2, r.body, &res, NULL), GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  gd_policy_rec_clear(&r);
  hist h = history(s, "order", 0, 10);
  assert_int_equal(h.n, 3);
  assert_string_equal(h.op[0], "rollback");
  assert_string_equal(h.body[0], "{\"v\":1}");
  /* Current policies: byte order of service, with the writing entry's op. */
  put_ok(s, "b", 4, "{\"b\":1}");
  put_ok(s, "B", 5, "{\"B\":1}");
  put_ok(s, "a", 6, "{\"a\":1}");
  put_ok(s, "gone", 7, "{}");
  assert_int_equal(write_op(s, "delete", "gone", 8, -1, NULL, &res, NULL), GRAY_OK);
  h = current(s);
  assert_int_equal(h.n, 4);
  assert_string_equal(h.service[0], "B");
  assert_string_equal(h.service[1], "a");
  assert_string_equal(h.service[2], "b");
  assert_string_equal(h.service[3], "order");
  assert_int_equal(h.rev[3], 3);
  assert_string_equal(h.op[3], "rollback");
  assert_string_equal(h.body[3], "{\"v\":1}");
  memset(&h, 0, sizeof h);
  h.stop_after = 1;
  assert_int_equal(s->ops->policy_each(s, hist_cb, &h, &err), GRAY_OK);
  assert_int_equal(h.n, 1);
  assert_int_equal(s->ops->policy_each(s, NULL, NULL, &err), GRAY_EINVAL);
}

static void test_audit(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_audit_rec recs[3] = {
      {0, 1000, "alice", "policy.put", "order", 200, ""},
      {0, 1001, NULL, "policy.put", "order", 401, "no token"},
      {0, 1002, "bob", "instance.delete", "order/i-1", 404, NULL},
  };
  assert_int_equal(s->ops->audit_append(s, recs, 3, &err), GRAY_OK);
  assert_int_equal(s->ops->audit_append(s, recs, 2, &err), GRAY_OK);
  assert_int_equal(s->ops->audit_append(s, NULL, 0, &err), GRAY_OK);
  assert_int_equal(s->ops->audit_append(s, NULL, 1, &err), GRAY_EINVAL);
  alist *a = audit(s, 0, 100);
  assert_int_equal(a->n, 5);
  for (int i = 1; i < a->n; i++) assert_true(a->id[i] < a->id[i - 1]);
  assert_int_equal(a->status[0], 401); /* newest: the second of the second batch */
  assert_string_equal(a->first_token, "-");
  assert_string_equal(a->first_message, "no token");
  int64_t third = a->id[2];
  free(a);
  a = audit(s, third, 2);
  assert_int_equal(a->n, 2);
  assert_int_equal(a->id[0], third - 1);
  assert_int_equal(a->status[1], 200);
  free(a);
  a = audit(s, 0, 1);
  assert_int_equal(a->n, 1);
  free(a);
  assert_int_equal(s->ops->audit_list(s, -1, 10, audit_cb, NULL, &err), GRAY_EINVAL);

  /* A page holds at most 1000; a long field is cut at a UTF-8 boundary. */
  size_t n = 1005;
  gd_audit_rec *many = calloc(n, sizeof *many);
  char *longmsg = malloc(GD_STORE_TEXT_MAX + 8);
  assert_non_null(many);
  assert_non_null(longmsg);
  memset(longmsg, 'x', GD_STORE_TEXT_MAX - 1);
  memcpy(longmsg + GD_STORE_TEXT_MAX - 1, "\xc3\xa9zz", 5); /* é straddles the cap */
  for (size_t i = 0; i < n; i++) {
    many[i].time_ms = (int64_t)i;
    many[i].token = "t";
    many[i].op = "instance.put";
    many[i].target = "svc/i";
    many[i].status = 200;
    many[i].message = i == n - 1 ? longmsg : "";
  }
  assert_int_equal(s->ops->audit_append(s, many, n, &err), GRAY_OK);
  a = audit(s, 0, 100000);
  assert_int_equal(a->n, 1000);
  assert_int_equal(a->first_message_len, GD_STORE_TEXT_MAX - 1); /* newest: the long one, cut before é */
  free(a);
  assert_int_equal(
      sql_int(f->path, "SELECT length(CAST(message AS BLOB)) FROM audit ORDER BY id DESC LIMIT 1"),
      GD_STORE_TEXT_MAX - 1);
  free(longmsg);
  free(many);
}

static void test_reopen_preserves(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  char id[33];
  int res;
  gd_audit_rec rec = {0, 5, "alice", "policy.put", "a", 200, ""};
  put_ok(s, "a", 1, "{\"a\":1}");
  put_ok(s, "b", 2, "{\"b\":1}");
  put_ok(s, "a", 3, "{\"a\":2}");
  assert_int_equal(write_op(s, "delete", "b", 4, 2, NULL, &res, NULL), GRAY_OK);
  assert_int_equal(s->ops->reserve(s, 1000, &err), GRAY_OK);
  assert_int_equal(s->ops->audit_append(s, &rec, 1, &err), GRAY_OK);
  memcpy(id, s->ops->store_id(s), 33);
  reopen(f);
  s = f->s;
  assert_string_equal(s->ops->store_id(s), id);
  assert_int_equal(s->ops->revision(s), 1000);
  hist h = current(s);
  assert_int_equal(h.n, 1);
  assert_string_equal(h.service[0], "a");
  assert_int_equal(h.rev[0], 3);
  assert_string_equal(h.body[0], "{\"a\":2}");
  h = history(s, "b", 0, 10);
  assert_int_equal(h.n, 2);
  assert_string_equal(h.op[0], "delete");
  alist *a = audit(s, 0, 10);
  assert_int_equal(a->n, 1);
  assert_string_equal(a->first_token, "alice");
  free(a);
  /* Audit ids keep growing across a restart. */
  assert_int_equal(s->ops->audit_append(s, &rec, 1, &err), GRAY_OK);
  a = audit(s, 0, 10);
  assert_int_equal(a->n, 2);
  assert_true(a->id[0] > a->id[1]);
  free(a);
}

static void test_newer_schema_refused(void **state) {
  fx *f = *state;
  gray_error_t err;
  char mine[32];
  f->s->ops->close(f->s);
  f->s = NULL;
  int64_t v = sql_int(f->path, "SELECT schema_version FROM meta");
  assert_true(v >= 1);
  sql_exec(f->path, "UPDATE meta SET schema_version = 999");
  memset(&err, 0, sizeof err);
  assert_null(gd_store_sqlite_open(f->path, &err));
  assert_int_equal(err.code, GRAY_EINVAL);
  snprintf(mine, sizeof mine, "(%lld)", (long long)v);
  assert_non_null(strstr(err.message, "schema version 999"));
  assert_non_null(strstr(err.message, mine));
  assert_non_null(strstr(err.message, "newer"));
  /* Refusing changed nothing. */
  assert_int_equal(sql_int(f->path, "SELECT schema_version FROM meta"), 999);
  sql_exec(f->path, "UPDATE meta SET schema_version = 1");
  /* Back at version 1 (and its tables only), the store migrates itself. */
  sql_exec(f->path, "DROP TABLE instances");
  f->s = open_ok(f->path);
  assert_int_equal(sql_int(f->path, "SELECT schema_version FROM meta"), v);
  assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'instances'"), 1);
}

/* ---- saved registry ---------------------------------------------------- */

typedef struct ilist {
  int n;
  char key[8][64];
  int64_t rev[8];
  char body[8][128];
} ilist;

static int inst_cb(void *ctx, const gd_instance_rec *r) {
  ilist *l = ctx;
  if (l->n == 8) return 1;
  snprintf(l->key[l->n], sizeof l->key[0], "%s/%s", r->service, r->id);
  l->rev[l->n] = r->revision;
  snprintf(l->body[l->n], sizeof l->body[0], "%.*s", (int)r->body_len, r->body);
  l->n++;
  return 0;
}

static ilist instances(gd_store *s) {
  ilist l;
  gray_error_t err;
  memset(&l, 0, sizeof l);
  assert_int_equal(s->ops->instance_each(s, inst_cb, &l, &err), GRAY_OK);
  return l;
}

static void test_instances(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_instance_rec b1[] = {
      {"order", "i-2", 5, "{\"v\":2}", 7},
      {"order", "i-1", 6, "{\"v\":1}", 7},
      {"gateway", "g-1", 7, "{\"g\":1}", 7},
      {"order", "i-1", 8, "{\"v\":9}", 7}, /* a later change of the same instance wins */
  };
  assert_int_equal(s->ops->instance_save(s, b1, 4, &err), GRAY_OK);
  ilist l = instances(s);
  assert_int_equal(l.n, 3);
  assert_string_equal(l.key[0], "gateway/g-1"); /* by service, then id */
  assert_string_equal(l.key[1], "order/i-1");
  assert_int_equal(l.rev[1], 8);
  assert_string_equal(l.body[1], "{\"v\":9}");
  assert_string_equal(l.key[2], "order/i-2");

  /* A removal (and one of an instance never saved) in the same batch. */
  gd_instance_rec b2[] = {{"order", "i-2", 9, NULL, 0}, {"order", "nobody", 10, NULL, 0}};
  assert_int_equal(s->ops->instance_save(s, b2, 2, &err), GRAY_OK);
  l = instances(s);
  assert_int_equal(l.n, 2);
  assert_string_equal(l.key[1], "order/i-1");

  /* A bad record anywhere in a batch: nothing of the batch is saved. */
  gd_instance_rec b3[] = {{"order", "i-3", 11, "{}", 2}, {"order", "", 12, "{}", 2}};
  assert_int_equal(s->ops->instance_save(s, b3, 2, &err), GRAY_EINVAL);
  assert_non_null(strstr(err.message, "service or id"));
  gd_instance_rec b4[] = {{"order", "i-3", 0, "{}", 2}};
  assert_int_equal(s->ops->instance_save(s, b4, 1, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->instance_save(s, NULL, 1, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->instance_save(s, NULL, 0, &err), GRAY_OK);
  assert_int_equal(instances(s).n, 2);
  assert_int_equal(s->ops->instance_each(s, NULL, NULL, &err), GRAY_EINVAL);

  /* They survive a reopen. */
  reopen(f);
  s = f->s;
  l = instances(s);
  assert_int_equal(l.n, 2);
  assert_string_equal(l.key[0], "gateway/g-1");
  assert_string_equal(l.body[0], "{\"g\":1}");
  assert_int_equal(l.rev[0], 7);
}

static void test_open_refusals(void **state) {
  fx *f = *state;
  gray_error_t err;
  char p[700];
  FILE *fp;
  /* A SQLite database that is not a graylane store. */
  path_in(f, "foreign.db", p, sizeof p);
  sql_exec(p, "CREATE TABLE x (a)");
  assert_null(gd_store_sqlite_open(p, &err));
  assert_int_equal(err.code, GRAY_EINVAL);
  assert_non_null(strstr(err.message, "not a graylane store"));
  /* ... and was left as it was (not switched to WAL). */
  assert_int_equal(sql_int(p, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'delete'"), 1);
  /* A file that is not a database. */
  path_in(f, "garbage.db", p, sizeof p);
  fp = fopen(p, "w");
  assert_non_null(fp);
  for (int i = 0; i < 100; i++) fputs("this is not a database file at all\n", fp);
  fclose(fp);
  assert_null(gd_store_sqlite_open(p, &err));
  assert_int_equal(err.code, GRAY_EIO);
  assert_non_null(strstr(err.message, "sqlite"));
  /* A directory that does not exist. */
  path_in(f, "missing/store.db", p, sizeof p);
  assert_null(gd_store_sqlite_open(p, &err));
  assert_int_equal(err.code, GRAY_EIO);
  /* No path; and no error structure is fine too. */
  assert_null(gd_store_sqlite_open("", &err));
  assert_int_equal(err.code, GRAY_EINVAL);
  assert_null(gd_store_sqlite_open(NULL, NULL));
}

static void test_binding(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_policy_rec r;
  int res;
  static char *const services[] = {"o'rder", "a\";b", "'); DROP TABLE x;--"};
  static char *const bodies[] = {
      "{\"q\":\"it's \\\"quoted\\\"; DROP TABLE policies;--\"}",
      "'); DROP TABLE x;--",
      "%s%n%x\n\t\"';\xe2\x9c\x93",
  };
  sql_exec(f->path, "CREATE TABLE x (a)");
  for (int i = 0; i < 3; i++) {
    gd_policy_write w = {
        services[i], "put", "'); DELETE FROM history;--", bodies[i], strlen(bodies[i]), i + 1, 0, 1};
    assert_int_equal(s->ops->policy_write(s, &w, &res, NULL, &err), GRAY_OK);
    assert_int_equal(res, GD_STORE_OK);
  }
  for (int i = 0; i < 3; i++) {
    assert_int_equal(s->ops->policy_at(s, services[i], i + 1, &r, &err), GRAY_OK);
    assert_string_equal(r.service, services[i]);
    assert_string_equal(r.actor, "'); DELETE FROM history;--");
    assert_int_equal(r.body_len, strlen(bodies[i]));
    assert_memory_equal(r.body, bodies[i], r.body_len);
    gd_policy_rec_clear(&r);
    hist h = history(s, services[i], 0, 10);
    assert_int_equal(h.n, 1);
    assert_string_equal(h.body[0], bodies[i]);
  }
  hist h = current(s);
  assert_int_equal(h.n, 3);
  gd_audit_rec a = {0, 1, "'); DROP TABLE audit;--", "policy.put", services[2], 400, bodies[2]};
  assert_int_equal(s->ops->audit_append(s, &a, 1, &err), GRAY_OK);
  alist *l = audit(s, 0, 10);
  assert_int_equal(l->n, 1);
  assert_string_equal(l->first_token, "'); DROP TABLE audit;--");
  assert_string_equal(l->first_message, bodies[2]);
  free(l);
  assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'x'"), 1);
  assert_int_equal(sql_int(f->path, "SELECT count(*) FROM history"), 3);
}

static void test_revision_lower_refused(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_policy_rec r;
  int res = -1;
  put_ok(s, "a", 5, "{\"a\":5}");
  assert_int_equal(write_op(s, "put", "b", 5, -1, "{}", &res, NULL), GRAY_EINVAL);
  memset(&err, 0, sizeof err);
  gd_policy_write w = {"b", "put", "t", "{}", 2, 3, -1, 0};
  assert_int_equal(s->ops->policy_write(s, &w, &res, NULL, &err), GRAY_EINVAL);
  assert_non_null(strstr(err.message, "revision 3"));
  assert_non_null(strstr(err.message, "5"));
  assert_int_equal(write_op(s, "delete", "a", 4, -1, NULL, &res, NULL), GRAY_EINVAL);
  assert_int_equal(write_op(s, "put", "a", 1, 5, "{}", &res, NULL), GRAY_EINVAL);
  /* Nothing of the refused writes was kept. */
  assert_int_equal(s->ops->policy_at(s, "b", 3, &r, &err), GRAY_ENOTFOUND);
  hist h = current(s);
  assert_int_equal(h.n, 1);
  assert_int_equal(h.rev[0], 5);
  assert_int_equal(s->ops->revision(s), 5);
  assert_int_equal(sql_int(f->path, "SELECT count(*) FROM history"), 1);
  put_ok(s, "b", 6, "{}");
}

static void test_arguments(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  int res;
  int64_t cur;
  char *huge = malloc(GD_STORE_TEXT_MAX + 2);
  assert_non_null(huge);
  memset(huge, 's', GD_STORE_TEXT_MAX + 1);
  huge[GD_STORE_TEXT_MAX + 1] = '\0';
  gd_policy_write ok = {"a", "put", "t", "{}", 2, 1, -1, 0};
  gd_policy_write w;
  assert_int_equal(s->ops->policy_write(s, NULL, &res, &cur, &err), GRAY_EINVAL);
  assert_int_equal(s->ops->policy_write(s, &ok, NULL, &cur, &err), GRAY_EINVAL);
  w = ok, w.service = NULL;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.service = "";
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.service = huge;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.actor = huge;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.op = "patch";
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.op = NULL;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.body = NULL;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.op = "delete";
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.revision = 0;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.expect_revision = -2;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_EINVAL);
  w = ok, w.body_len = (size_t)GD_STORE_BODY_MAX + 1; /* never read: refused by its length */
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, &err), GRAY_ETOOBIG);
  assert_int_equal(s->ops->revision(s), 0);
  /* actor NULL is stored as "-"; err may be NULL. */
  w = ok, w.actor = NULL;
  assert_int_equal(s->ops->policy_write(s, &w, &res, &cur, NULL), GRAY_OK);
  hist h = history(s, "a", 0, 1);
  assert_int_equal(h.n, 1);
  gd_policy_rec r;
  assert_int_equal(s->ops->policy_at(s, "a", 1, &r, NULL), GRAY_OK);
  assert_string_equal(r.actor, "-");
  gd_policy_rec_clear(&r);
  gd_audit_rec_clear(NULL);
  free(huge);
}

/* A callback calling back into the store is refused, and the walk goes on. */
typedef struct reenter {
  gd_store *s;
  int calls, refused;
} reenter;

static int reenter_cb(void *ctx, const gd_policy_rec *r) {
  reenter *re = ctx;
  gd_policy_rec out;
  gray_error_t err;
  re->calls++;
  if (re->s->ops->policy_at(re->s, r->service, r->revision, &out, &err) == GRAY_EINVAL) re->refused++;
  gd_policy_rec_clear(&out);
  return 0;
}

static void test_reentry(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  reenter re = {s, 0, 0};
  put_ok(s, "a", 1, "{}");
  put_ok(s, "b", 2, "{}");
  assert_int_equal(s->ops->policy_each(s, reenter_cb, &re, &err), GRAY_OK);
  assert_int_equal(re.calls, 2);
  assert_int_equal(re.refused, 2);
  assert_int_equal(current(s).n, 2);
}

/* Out of memory inside SQLite: fail its Nth allocation for every N until
 * the call succeeds. A failed write must leave nothing behind, and the
 * store must stay usable. */
static void test_oom_writes(void **state) {
  fx *f = *state;
  gd_store *s = f->s;
  gray_error_t err;
  gd_policy_rec r;
  int res, rc;
  long n;
  gd_audit_rec a = {0, 1, "t", "policy.put", "a", 200, ""};
  put_ok(s, "a", 1, "{\"v\":1}");

  failures = 0;
  for (n = 1; n < 100000; n++) {
    gd_policy_write w = {"a", "put", "t", "{\"v\":2}", 7, 2, 1, 0};
    fail_countdown = n;
    rc = s->ops->policy_write(s, &w, &res, NULL, &err);
    fail_countdown = 0;
    if (rc == GRAY_OK) break;
    assert_int_equal(rc, GRAY_EIO);
    assert_int_equal(s->ops->revision(s), 1);
    assert_int_equal(s->ops->policy_at(s, "a", 2, &r, &err), GRAY_ENOTFOUND);
    hist h = current(s);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.rev[0], 1);
  }
  assert_int_equal(rc, GRAY_OK);
  assert_int_equal(res, GD_STORE_OK);
  assert_int_equal(s->ops->revision(s), 2);
  assert_int_equal(current(s).rev[0], 2);

  for (n = 1; n < 100000; n++) {
    gd_audit_rec batch[3] = {a, a, a};
    fail_countdown = n;
    rc = s->ops->audit_append(s, batch, 3, &err);
    fail_countdown = 0;
    alist *l = audit(s, 0, 100);
    int got = l->n;
    free(l);
    if (rc == GRAY_OK) {
      assert_int_equal(got, 3);
      break;
    }
    assert_int_equal(got, 0);
  }
  assert_int_equal(rc, GRAY_OK);

  for (n = 1; n < 100000; n++) {
    gd_instance_rec batch[2] = {{"a", "i-1", 2, "{}", 2}, {"a", "i-2", 2, "{}", 2}};
    fail_countdown = n;
    rc = s->ops->instance_save(s, batch, 2, &err);
    fail_countdown = 0;
    ilist l;
    memset(&l, 0, sizeof l);
    assert_int_equal(s->ops->instance_each(s, inst_cb, &l, &err), GRAY_OK);
    if (rc == GRAY_OK) {
      assert_int_equal(l.n, 2);
      break;
    }
    assert_int_equal(rc, GRAY_EIO);
    assert_int_equal(l.n, 0);
  }
  assert_int_equal(rc, GRAY_OK);

  for (n = 1; n < 100000; n++) {
    fail_countdown = n;
    rc = s->ops->reserve(s, 500, &err);
    fail_countdown = 0;
    if (rc == GRAY_OK) break;
    assert_int_equal(s->ops->revision(s), 2);
  }
  assert_int_equal(s->ops->revision(s), 500);

  /* Reads fail cleanly (and leave out zeroed). */
  for (n = 1; n < 100000; n++) {
    fail_countdown = n;
    rc = s->ops->policy_at(s, "a", 2, &r, &err);
    fail_countdown = 0;
    if (rc == GRAY_OK) break;
    assert_null(r.service);
  }
  gd_policy_rec_clear(&r);
  for (n = 1; n < 100000; n++) {
    hist h;
    memset(&h, 0, sizeof h);
    fail_countdown = n;
    rc = s->ops->policy_history(s, "a", 0, 10, hist_cb, &h, &err);
    fail_countdown = 0;
    if (rc == GRAY_OK) break;
  }
  assert_true(failures > 0);
  reopen(f);
  assert_int_equal(f->s->ops->revision(f->s), 500);
  assert_int_equal(history(f->s, "a", 0, 10).n, 2);
}

static void test_oom_open(void **state) {
  fx *f = *state;
  gray_error_t err;
  char p[700];
  gd_store *o = NULL;
  long n;
  char side[760];
  failures = 0;
  for (n = 1; n < 100000 && !o; n++) {
    path_in(f, "oom.db", p, sizeof p);
    fail_countdown = n;
    o = gd_store_sqlite_open(p, &err);
    fail_countdown = 0;
    if (!o) {
      assert_true(err.code == GRAY_EIO || err.code == GRAY_ENOMEM);
      unlink(p);
      snprintf(side, sizeof side, "%s-wal", p);
      unlink(side);
      snprintf(side, sizeof side, "%s-shm", p);
      unlink(side);
    }
  }
  assert_non_null(o);
  assert_true(failures > 0);
  assert_int_equal(strlen(o->ops->store_id(o)), 32);
  o->ops->close(o);
  /* And reopening an existing store. */
  o = NULL;
  for (n = 1; n < 100000 && !o; n++) {
    fail_countdown = n;
    o = gd_store_sqlite_open(p, &err);
    fail_countdown = 0;
  }
  assert_non_null(o);
  o->ops->close(o);
}

int main(void) {
  install_failing_allocator();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_store_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_revision_monotonic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cas_matrix, setup, teardown),
      cmocka_unit_test_setup_teardown(test_history_paging, setup, teardown),
      cmocka_unit_test_setup_teardown(test_policy_changes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_policy_at, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rollback_and_current, setup, teardown),
      cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen_preserves, setup, teardown),
      cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_instances, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_binding, setup, teardown),
      cmocka_unit_test_setup_teardown(test_revision_lower_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reentry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oom_writes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oom_open, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
