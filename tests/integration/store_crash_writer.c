/* Crash durability of the SQLite store, the two halves driven by
 * store_crash.sh.
 *
 *   store_crash_writer DB                 write revisions 1..1000 (service
 *                                         "s<rev % 7>"), printing each one on
 *                                         stdout once policy_write returned
 *   store_crash_writer check DB MAX_ACKED after a SIGKILL: every acknowledged
 *                                         revision is there, nothing else is,
 *                                         and the file is intact
 *
 * Exit status 0 on success, 1 on a failed check, 2 on a usage error. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

#define WRITES 1000
#define SERVICES 7

/* The service and body of revision rev, as written and as checked. */
static void content(int64_t rev, char *service, size_t ssize, char *body, size_t bsize) {
  snprintf(service, ssize, "s%d", (int)(rev % SERVICES));
  snprintf(body, bsize, "{\"service\":\"s%d\",\"default\":\"v1\",\"rules\":[],\"seq\":%" PRId64 "}",
           (int)(rev % SERVICES), rev);
}

/* A whole decimal number in 0..max, or -1. */
static int64_t parse_count(const char *text, int64_t max) {
  char *end = NULL;
  long long v;
  if (!text || !*text) return -1;
  errno = 0;
  v = strtoll(text, &end, 10);
  if (errno || *end || v < 0 || v > max) return -1;
  return (int64_t)v;
}

static int write_all(const char *path) {
  gray_error_t err;
  char service[16], body[160];
  int rc = 1, result;
  gd_store *s = gd_store_sqlite_open(path, &err);
  if (!s) {
    fprintf(stderr, "writer: open: %s\n", err.message);
    goto out;
  }
  for (int64_t rev = 1; rev <= WRITES; rev++) {
    content(rev, service, sizeof service, body, sizeof body);
    gd_policy_write w = {service, "put", "crash-writer", body, strlen(body), rev, -1, rev};
    if (s->ops->policy_write(s, &w, &result, NULL, &err) != GRAY_OK || result != GD_STORE_OK) {
      fprintf(stderr, "writer: revision %" PRId64 ": %s\n", rev,
              result != GD_STORE_OK ? "conflict" : err.message);
      goto out;
    }
    /* Acknowledge only after the call returned, as grayd answers a client. */
    if (printf("%" PRId64 "\n", rev) < 0 || fflush(stdout) != 0) goto out;
  }
  rc = 0;
out:
  if (s) s->ops->close(s);
  return rc;
}

typedef struct latest {
  int64_t rev[SERVICES];
  int seen;
  int bad;
} latest;

static int latest_cb(void *ctx, const gd_policy_rec *r) {
  latest *l = ctx;
  int64_t k = parse_count(r->service + (r->service[0] == 's'), SERVICES - 1);
  if (r->service[0] != 's' || k < 0 || l->rev[k] != r->revision) {
    fprintf(stderr, "check: current policy %s is at revision %" PRId64 ", expected %" PRId64 "\n", r->service,
            r->revision, k < 0 ? -1 : l->rev[k]);
    l->bad++;
  }
  l->seen++;
  return 0;
}

/* PRAGMA name must answer exactly one row "ok" (integrity_check) or no row
 * at all (foreign_key_check, want NULL). */
static int pragma_clean(const char *path, const char *sql, const char *want) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int rows = 0, ok = 1, step;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    fprintf(stderr, "check: %s: %s\n", sql, sqlite3_errmsg(db));
    ok = 0;
    goto out;
  }
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *t = sqlite3_column_text(st, 0);
    rows++;
    if (!want || !t || strcmp((const char *)t, want)) {
      fprintf(stderr, "check: %s: %s\n", sql, t ? (const char *)t : "(null)");
      ok = 0;
    }
  }
  if (step != SQLITE_DONE || (want && rows != 1)) {
    fprintf(stderr, "check: %s: %d rows, %s\n", sql, rows, sqlite3_errmsg(db));
    ok = 0;
  }
out:
  sqlite3_finalize(st);
  sqlite3_close(db);
  return ok;
}

static int check(const char *path, int64_t acked) {
  gray_error_t err;
  gd_policy_rec r;
  char service[16], body[160];
  latest l;
  int64_t top = acked, rev;
  int bad = 0;
  gd_store *s = gd_store_sqlite_open(path, &err);
  memset(&l, 0, sizeof l);
  memset(&r, 0, sizeof r);
  if (!s) {
    fprintf(stderr, "check: open: %s\n", err.message);
    return 1;
  }
  for (rev = 1; rev <= acked; rev++) {
    content(rev, service, sizeof service, body, sizeof body);
    if (s->ops->policy_at(s, service, rev, &r, &err) != GRAY_OK) {
      fprintf(stderr, "check: acknowledged revision %" PRId64 " is lost: %s\n", rev, err.message);
      bad++;
      continue;
    }
    if (strcmp(r.op, "put") || r.body_len != strlen(body) || memcmp(r.body, body, r.body_len)) {
      fprintf(stderr, "check: revision %" PRId64 " has other content\n", rev);
      bad++;
    }
    gd_policy_rec_clear(&r);
  }
  /* The write in flight at the kill may have committed without being
   * acknowledged; nothing after it can exist. */
  content(acked + 1, service, sizeof service, body, sizeof body);
  if (acked < WRITES && s->ops->policy_at(s, service, acked + 1, &r, &err) == GRAY_OK) top = acked + 1;
  gd_policy_rec_clear(&r);
  content(top + 1, service, sizeof service, body, sizeof body);
  if (s->ops->policy_at(s, service, top + 1, &r, &err) != GRAY_ENOTFOUND) {
    fprintf(stderr, "check: revision %" PRId64 " exists but was never written\n", top + 1);
    bad++;
  }
  gd_policy_rec_clear(&r);
  if (s->ops->revision(s) < acked) {
    fprintf(stderr, "check: revision() is %" PRId64 ", below %" PRId64 " acknowledged\n", s->ops->revision(s),
            acked);
    bad++;
  }
  /* The current row of each service is its latest write. */
  for (rev = 1; rev <= top; rev++) l.rev[rev % SERVICES] = rev;
  if (s->ops->policy_each(s, latest_cb, &l, &err) != GRAY_OK) {
    fprintf(stderr, "check: policy_each: %s\n", err.message);
    bad++;
  }
  int want = 0;
  for (int k = 0; k < SERVICES; k++) want += l.rev[k] != 0;
  if (l.bad || l.seen != want) {
    fprintf(stderr, "check: %d current policies (%d wrong), expected %d\n", l.seen, l.bad, want);
    bad++;
  }
  s->ops->close(s);
  if (!pragma_clean(path, "PRAGMA integrity_check", "ok")) bad++;
  if (!pragma_clean(path, "PRAGMA foreign_key_check", NULL)) bad++;
  if (!bad)
    printf("check: ok: %" PRId64 " acknowledged, %" PRId64 " committed, all present; integrity ok\n", acked,
           top);
  return bad ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 2) return write_all(argv[1]);
  if (argc == 4 && !strcmp(argv[1], "check")) {
    int64_t acked = parse_count(argv[3], WRITES);
    if (acked >= 0) return check(argv[2], acked);
  }
  fprintf(stderr, "usage: store_crash_writer DB | store_crash_writer check DB MAX_ACKED (0..%d)\n", WRITES);
  return 2;
}
