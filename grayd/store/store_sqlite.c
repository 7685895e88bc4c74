/* grayd store: the SQLite backend of store.h.
 *
 * One connection, owned by one thread at a time. The database runs in WAL
 * mode with synchronous=FULL, so a COMMIT that returned has reached the
 * disk. Every statement that carries a value binds it; the SQL texts below
 * are constants. The statements used by the operations are prepared once at
 * open and cached in the store.
 *
 * Schema. `meta` holds one row (schema version, store id, reserved
 * revision). `history` is keyed by the global revision (revisions never
 * repeat, so the key enforces it and max(revision) is one B-tree lookup).
 * `policies` holds the current policy of each service; its revision points
 * at the history entry that wrote it (a foreign key). `audit` is an
 * append-only log whose ids AUTOINCREMENT never reuses. `instances` is
 * the registry as grayd last saved it (a restart restores it; heartbeats
 * are not stored).
 *
 * Migrations are an ordered list of SQL steps; step N brings the schema
 * from version N-1 to N in one transaction. Add a step at the end, never
 * edit a shipped one. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "store.h"

/* How long a statement waits for a lock another connection holds (a backup
 * or an operator's sqlite3 shell) before it fails. Short: the caller is an
 * event loop. */
#define SQ_BUSY_MS 2000
/* Longest path accepted (the daemon's data_path buffer is 4096 bytes). */
#define SQ_PATH_MAX 4095

static const char *const migrations[] = {
    /* 1: the first schema. */
    "CREATE TABLE meta ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  schema_version INTEGER NOT NULL,"
    "  store_id TEXT NOT NULL CHECK (length(store_id) = 32),"
    "  reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0));"
    "CREATE TABLE history ("
    "  revision INTEGER PRIMARY KEY CHECK (revision > 0),"
    "  service TEXT NOT NULL,"
    "  op TEXT NOT NULL CHECK (op IN ('put', 'delete', 'rollback')),"
    "  actor TEXT NOT NULL,"
    "  time_ms INTEGER NOT NULL,"
    "  body TEXT,"
    "  CHECK ((op = 'delete') = (body IS NULL)));"
    "CREATE INDEX history_service_revision ON history (service, revision);"
    "CREATE TABLE policies ("
    "  service TEXT PRIMARY KEY NOT NULL,"
    "  revision INTEGER NOT NULL UNIQUE REFERENCES history (revision),"
    "  body TEXT NOT NULL);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  time_ms INTEGER NOT NULL,"
    "  token TEXT NOT NULL,"
    "  op TEXT NOT NULL,"
    "  target TEXT NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  message TEXT NOT NULL);",
    /* 2: the registry's last known instances, so a restarted grayd serves
     * them (with a fresh TTL) instead of an empty registry. */
    "CREATE TABLE instances ("
    "  service TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  revision INTEGER NOT NULL CHECK (revision > 0),"
    "  body TEXT NOT NULL,"
    "  PRIMARY KEY (service, id)) WITHOUT ROWID;",
};
#define SQ_SCHEMA_VERSION ((int64_t)(sizeof migrations / sizeof migrations[0]))

/* The cached statements. Columns of the SELECTs that fill a gd_policy_rec
 * are always (revision, service, op, actor, time_ms, body). */
#define SQ_STMT_MAP(X)                                                                         \
  X(BEGIN, "BEGIN IMMEDIATE")                                                                  \
  X(COMMIT, "COMMIT")                                                                          \
  X(ROLLBACK, "ROLLBACK")                                                                      \
  X(CUR_REV, "SELECT revision FROM policies WHERE service = ?1")                               \
  X(TOP_REV, "SELECT coalesce(max(revision), 0) FROM history")                                 \
  X(HIST_INSERT,                                                                               \
    "INSERT INTO history (revision, service, op, actor, time_ms, body)"                        \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)")                                                        \
  X(POL_UPSERT,                                                                                \
    "INSERT INTO policies (service, revision, body) VALUES (?1, ?2, ?3)"                       \
    " ON CONFLICT (service) DO UPDATE SET revision = excluded.revision, body = excluded.body") \
  X(POL_DELETE, "DELETE FROM policies WHERE service = ?1")                                     \
  X(POL_EACH,                                                                                  \
    "SELECT p.revision, p.service, h.op, h.actor, h.time_ms, p.body"                           \
    " FROM policies p JOIN history h ON h.revision = p.revision ORDER BY p.service")           \
  X(HIST_LIST,                                                                                 \
    "SELECT revision, service, op, actor, time_ms, body FROM history"                          \
    " WHERE service = ?1 AND revision < ?2 ORDER BY revision DESC LIMIT ?3")                   \
  X(HIST_SINCE,                                                                                \
    "SELECT revision, service, op, actor, time_ms, body FROM history"                          \
    " WHERE revision > ?1 ORDER BY revision ASC LIMIT ?2")                                     \
  X(HIST_AT,                                                                                   \
    "SELECT revision, service, op, actor, time_ms, body FROM history"                          \
    " WHERE revision = ?1 AND service = ?2")                                                   \
  X(RESERVE, "UPDATE meta SET reserved = ?1 WHERE id = 1 AND reserved < ?1")                   \
  X(AUDIT_INSERT,                                                                              \
    "INSERT INTO audit (time_ms, token, op, target, status, message)"                          \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)")                                                        \
  X(AUDIT_LIST,                                                                                \
    "SELECT id, time_ms, token, op, target, status, message FROM audit"                        \
    " WHERE id < ?1 ORDER BY id DESC LIMIT ?2")                                             \
  X(INST_UPSERT,                                                                               \
    "INSERT INTO instances (service, id, revision, body) VALUES (?1, ?2, ?3, ?4)"              \
    " ON CONFLICT (service, id) DO UPDATE SET revision = excluded.revision,"                   \
    " body = excluded.body")                                                                   \
  X(INST_DELETE, "DELETE FROM instances WHERE service = ?1 AND id = ?2")                       \
  X(INST_EACH, "SELECT service, id, revision, body FROM instances ORDER BY service, id")

typedef enum {
#define SQ_STMT_ENUM(name, sql) SQ_##name,
  SQ_STMT_MAP(SQ_STMT_ENUM)
#undef SQ_STMT_ENUM
      SQ_STMT_COUNT
} sq_stmt_id;

static const char *const sq_stmt_sql[SQ_STMT_COUNT] = {
#define SQ_STMT_TEXT(name, sql) sql,
    SQ_STMT_MAP(SQ_STMT_TEXT)
#undef SQ_STMT_TEXT
};

typedef struct gd_sqlite {
  gd_store base; /* first: a gd_store * is a gd_sqlite * */
  sqlite3 *db;
  sqlite3_stmt *st[SQ_STMT_COUNT];
  char store_id[33];
  int64_t reserved; /* meta.reserved as committed */
  int64_t top;      /* highest revision in the history as committed */
  int64_t floor;    /* revision() when opened: writes must go above it */
  int in_callback;  /* a callback is running: refuse re-entry */
} gd_sqlite;

/* ---- errors ---------------------------------------------------------- */

static void sq_set(gray_error_t *err, gray_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill err (when given) with code and a formatted message. */
static void sq_set(gray_error_t *err, gray_err_t code, const char *fmt, ...) {
  va_list ap;
  if (!err) return;
  err->code = code;
  err->path[0] = '\0';
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}

/* Report SQLite's last error on s's connection as GRAY_EIO; returns it. */
static int sq_fail(gd_sqlite *s, gray_error_t *err, const char *what) {
  sq_set(err, GRAY_EIO, "sqlite: %s: %s", what, sqlite3_errmsg(s->db));
  return GRAY_EIO;
}

/* ---- small helpers ---------------------------------------------------- */

/* Length of s if it is at most max bytes, else max + 1. */
static size_t sq_len(const char *s, size_t max) {
  return strnlen(s, max + 1);
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t sq_len_cut(const char *s, size_t max) {
  size_t n = sq_len(s, max);
  if (n <= max) return n;
  n = max;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  return n;
}

/* A malloc'd NUL-terminated copy of n bytes, or NULL. */
static char *sq_dup(const char *p, size_t n) {
  char *d = malloc(n + 1);
  if (!d) return NULL;
  if (n) memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

/* Reset a cached statement and drop its bindings (which may point at the
 * caller's memory). Harmless on a statement already reset. */
static void sq_release(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

/* Bind n bytes of text (SQLITE_STATIC: the caller keeps p alive until the
 * statement is released). Returns SQLite's code. */
static int sq_bind_text(sqlite3_stmt *st, int i, const char *p, size_t n) {
  return sqlite3_bind_text64(st, i, p, (sqlite3_uint64)n, SQLITE_STATIC, SQLITE_UTF8);
}

/* Column i as text. *out is NULL for SQL NULL when nullable, else the text
 * (owned by the statement, valid until its next step or reset). Returns 0,
 * or -1 when SQLite could not produce the text (out of memory) or a
 * non-nullable column was NULL. */
static int sq_col_text(sqlite3_stmt *st, int i, int nullable, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return nullable ? 0 : -1;
  const unsigned char *t = sqlite3_column_text(st, i);
  if (!t) return -1;
  *out = (char *)t;
  *len = (size_t)sqlite3_column_bytes(st, i);
  return 0;
}

/* Roll back a transaction left open on the connection (by an error in the
 * middle of a write, or by a failed COMMIT). SQLite rolls back some errors
 * itself, hence the check. */
static void sq_abort(gd_sqlite *s) {
  if (sqlite3_get_autocommit(s->db)) return;
  sqlite3_step(s->st[SQ_ROLLBACK]);
  sqlite3_reset(s->st[SQ_ROLLBACK]);
  if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Step a cached statement that returns no row and reset it. */
static int sq_exec_cached(gd_sqlite *s, sq_stmt_id id, const char *what, gray_error_t *err) {
  int rc = GRAY_OK;
  if (sqlite3_step(s->st[id]) != SQLITE_DONE) rc = sq_fail(s, err, what);
  sq_release(s->st[id]);
  return rc;
}

/* BEGIN IMMEDIATE: take the write lock now, so the checks a write makes
 * hold until its COMMIT. */
static int sq_begin(gd_sqlite *s, gray_error_t *err) {
  sq_abort(s);
  return sq_exec_cached(s, SQ_BEGIN, "begin", err);
}

/* Common entry check of the operations that use statements. */
static int sq_enter(gd_sqlite *s, gray_error_t *err) {
  if (!s) {
    sq_set(err, GRAY_EINVAL, "no store");
    return GRAY_EINVAL;
  }
  if (s->in_callback) {
    sq_set(err, GRAY_EINVAL, "the store was called from one of its own callbacks");
    return GRAY_EINVAL;
  }
  return GRAY_OK;
}

static int sq_clamp_limit(int limit) {
  if (limit < 1) return 1;
  if (limit > GD_STORE_LIST_MAX) return GD_STORE_LIST_MAX;
  return limit;
}

/* Fill r from a row shaped (revision, service, op, actor, time_ms, body);
 * the strings are borrowed from the statement. 0, or -1 (out of memory or
 * a malformed row). */
static int sq_row_policy(sqlite3_stmt *st, gd_policy_rec *r) {
  char *op;
  size_t oplen;
  memset(r, 0, sizeof *r);
  r->revision = sqlite3_column_int64(st, 0);
  if (sq_col_text(st, 1, 0, &r->service, &oplen) < 0) return -1;
  if (sq_col_text(st, 2, 0, &op, &oplen) < 0 || oplen >= sizeof r->op) return -1;
  memcpy(r->op, op, oplen);
  r->op[oplen] = '\0';
  if (sq_col_text(st, 3, 0, &r->actor, &oplen) < 0) return -1;
  r->time_ms = sqlite3_column_int64(st, 4);
  if (sq_col_text(st, 5, 1, &r->body, &r->body_len) < 0) return -1;
  return 0;
}

/* ---- operations ------------------------------------------------------- */

static const char *sq_store_id(gd_store *base) {
  gd_sqlite *s = (gd_sqlite *)base;
  return s->store_id;
}

static int64_t sq_revision(gd_store *base) {
  gd_sqlite *s = (gd_sqlite *)base;
  return s->reserved > s->top ? s->reserved : s->top;
}

static int sq_reserve(gd_store *base, int64_t upto, gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  int rc = sq_enter(s, err);
  if (rc != GRAY_OK) goto out;
  if (upto < 0) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "reserve: negative revision %lld", (long long)upto);
    goto out;
  }
  /* Only ever raised; a lower value needs no write (nor an fsync). */
  if (upto <= s->reserved) goto out;
  sq_abort(s);
  st = s->st[SQ_RESERVE];
  if (sqlite3_bind_int64(st, 1, upto) != SQLITE_OK) {
    rc = sq_fail(s, err, "reserve");
    goto out;
  }
  if (sqlite3_step(st) != SQLITE_DONE) {
    rc = sq_fail(s, err, "reserve");
    goto out;
  }
  s->reserved = upto;
out:
  if (st) sq_release(st);
  return rc;
}

/* Arguments of a policy write, checked before any SQL runs. */
static int sq_check_write(const gd_policy_write *w, int *result, gray_error_t *err) {
  if (!w || !result) {
    sq_set(err, GRAY_EINVAL, "policy write: missing argument");
    return GRAY_EINVAL;
  }
  if (!w->service || !w->service[0] || sq_len(w->service, GD_STORE_TEXT_MAX) > GD_STORE_TEXT_MAX) {
    sq_set(err, GRAY_EINVAL, "policy write: the service name is missing or longer than %u bytes",
           GD_STORE_TEXT_MAX);
    return GRAY_EINVAL;
  }
  if (w->actor && sq_len(w->actor, GD_STORE_TEXT_MAX) > GD_STORE_TEXT_MAX) {
    sq_set(err, GRAY_EINVAL, "policy write: the actor is longer than %u bytes", GD_STORE_TEXT_MAX);
    return GRAY_EINVAL;
  }
  int is_delete = w->op && !strcmp(w->op, "delete");
  if (!w->op || (!is_delete && strcmp(w->op, "put") && strcmp(w->op, "rollback"))) {
    sq_set(err, GRAY_EINVAL, "policy write: op must be put, delete or rollback");
    return GRAY_EINVAL;
  }
  if (is_delete ? w->body != NULL : w->body == NULL) {
    sq_set(err, GRAY_EINVAL, "policy write: %s", is_delete ? "a delete has no body" : "a body is required");
    return GRAY_EINVAL;
  }
  if (w->body && w->body_len > GD_STORE_BODY_MAX) {
    sq_set(err, GRAY_ETOOBIG, "policy write: body of %zu bytes is over the store's cap of %u", w->body_len,
           GD_STORE_BODY_MAX);
    return GRAY_ETOOBIG;
  }
  if (w->revision <= 0 || w->expect_revision < -1) {
    sq_set(err, GRAY_EINVAL, "policy write: revision %lld / expected revision %lld out of range",
           (long long)w->revision, (long long)w->expect_revision);
    return GRAY_EINVAL;
  }
  return GRAY_OK;
}

/* Read the service's current revision (0 when it has none) into *cur. */
static int sq_current_rev(gd_sqlite *s, const char *service, int64_t *cur, gray_error_t *err) {
  sqlite3_stmt *st = s->st[SQ_CUR_REV];
  int rc = GRAY_OK, step;
  *cur = 0;
  if (sq_bind_text(st, 1, service, strlen(service)) != SQLITE_OK) {
    rc = sq_fail(s, err, "read current revision");
    goto out;
  }
  step = sqlite3_step(st);
  if (step == SQLITE_ROW) {
    *cur = sqlite3_column_int64(st, 0);
  } else if (step != SQLITE_DONE) {
    rc = sq_fail(s, err, "read current revision");
  }
out:
  sq_release(st);
  return rc;
}

/* Read the highest revision in the history into *top. */
static int sq_top_rev(gd_sqlite *s, int64_t *top, gray_error_t *err) {
  sqlite3_stmt *st = s->st[SQ_TOP_REV];
  int rc = GRAY_OK;
  *top = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    *top = sqlite3_column_int64(st, 0);
  } else {
    rc = sq_fail(s, err, "read the highest revision");
  }
  sq_release(st);
  return rc;
}

/* Insert the history entry and update the current row, inside the open
 * transaction. History first: the current row's foreign key points at it. */
static int sq_apply_write(gd_sqlite *s, const gd_policy_write *w, const char *actor, gray_error_t *err) {
  sqlite3_stmt *h = s->st[SQ_HIST_INSERT];
  sqlite3_stmt *p = w->body ? s->st[SQ_POL_UPSERT] : s->st[SQ_POL_DELETE];
  size_t slen = strlen(w->service);
  int rc = GRAY_OK;
  if (sqlite3_bind_int64(h, 1, w->revision) != SQLITE_OK ||
      sq_bind_text(h, 2, w->service, slen) != SQLITE_OK ||
      sq_bind_text(h, 3, w->op, strlen(w->op)) != SQLITE_OK ||
      sq_bind_text(h, 4, actor, strlen(actor)) != SQLITE_OK ||
      sqlite3_bind_int64(h, 5, w->time_ms) != SQLITE_OK ||
      (w->body ? sq_bind_text(h, 6, w->body, w->body_len) : sqlite3_bind_null(h, 6)) != SQLITE_OK) {
    rc = sq_fail(s, err, "write history");
    goto out;
  }
  if (sqlite3_step(h) != SQLITE_DONE) {
    rc = sq_fail(s, err, "write history");
    goto out;
  }
  if (sq_bind_text(p, 1, w->service, slen) != SQLITE_OK ||
      (w->body && (sqlite3_bind_int64(p, 2, w->revision) != SQLITE_OK ||
                   sq_bind_text(p, 3, w->body, w->body_len) != SQLITE_OK))) {
    rc = sq_fail(s, err, "write current policy");
    goto out;
  }
  if (sqlite3_step(p) != SQLITE_DONE) rc = sq_fail(s, err, "write current policy");
out:
  sq_release(h);
  sq_release(p);
  return rc;
}

static int sq_policy_write(gd_store *base, const gd_policy_write *w, int *result, int64_t *current,
                           gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  int rc, began = 0, res = GD_STORE_OK;
  int64_t cur = 0, top = 0, lowest;
  rc = sq_enter(s, err);
  if (rc != GRAY_OK) goto out;
  rc = sq_check_write(w, result, err);
  if (rc != GRAY_OK) goto out;
  rc = sq_begin(s, err);
  if (rc != GRAY_OK) goto out;
  began = 1;
  rc = sq_current_rev(s, w->service, &cur, err);
  if (rc != GRAY_OK) goto out;
  if ((w->expect_revision == 0 && cur != 0) || (w->expect_revision > 0 && cur != w->expect_revision)) {
    res = GD_STORE_CONFLICT;
    goto out;
  }
  if (!w->body && cur == 0) {
    res = GD_STORE_ABSENT;
    goto out;
  }
  /* Monotonicity, checked against the database under the write lock, not
   * only against what this connection remembers. */
  rc = sq_top_rev(s, &top, err);
  if (rc != GRAY_OK) goto out;
  lowest = top > s->floor ? top : s->floor;
  if (w->revision <= lowest) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "policy write: revision %lld is not above the store's revision %lld",
           (long long)w->revision, (long long)lowest);
    goto out;
  }
  rc = sq_apply_write(s, w, w->actor ? w->actor : "-", err);
  if (rc != GRAY_OK) goto out;
  if (sqlite3_step(s->st[SQ_COMMIT]) != SQLITE_DONE) {
    rc = sq_fail(s, err, "commit");
    sqlite3_reset(s->st[SQ_COMMIT]);
    goto out;
  }
  sqlite3_reset(s->st[SQ_COMMIT]);
  began = 0;
  s->top = w->revision;
  cur = w->body ? w->revision : 0;
out:
  /* Also ends the read-only transaction of a CONFLICT or ABSENT answer. */
  if (began) sq_abort(s);
  if (rc == GRAY_OK) {
    *result = res;
    if (current) *current = cur;
  }
  return rc;
}

static int sq_policy_each(gd_store *base, int (*fn)(void *ctx, const gd_policy_rec *r), void *ctx,
                          gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  gd_policy_rec r;
  int rc = sq_enter(s, err), step = SQLITE_DONE, stop = 0;
  if (rc != GRAY_OK) goto out;
  if (!fn) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "policy_each: no callback");
    goto out;
  }
  st = s->st[SQ_POL_EACH];
  while (!stop && (step = sqlite3_step(st)) == SQLITE_ROW) {
    if (sq_row_policy(st, &r) < 0) {
      rc = GRAY_EIO;
      sq_set(err, rc, "sqlite: read current policies: out of memory or malformed row");
      goto out;
    }
    s->in_callback = 1;
    stop = fn(ctx, &r);
    s->in_callback = 0;
  }
  if (!stop && step != SQLITE_DONE) rc = sq_fail(s, err, "read current policies");
out:
  if (st) sq_release(st);
  return rc;
}

static int sq_policy_history(gd_store *base, const char *service, int64_t before, int limit,
                             int (*fn)(void *ctx, const gd_policy_rec *r), void *ctx, gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  gd_policy_rec r;
  int rc = sq_enter(s, err), step = SQLITE_DONE, stop = 0;
  if (rc != GRAY_OK) goto out;
  if (!fn || !service || before < 0 || sq_len(service, GD_STORE_TEXT_MAX) > GD_STORE_TEXT_MAX) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "policy_history: missing callback or service, or negative 'before'");
    goto out;
  }
  st = s->st[SQ_HIST_LIST];
  if (sq_bind_text(st, 1, service, strlen(service)) != SQLITE_OK ||
      sqlite3_bind_int64(st, 2, before ? before : INT64_MAX) != SQLITE_OK ||
      sqlite3_bind_int(st, 3, sq_clamp_limit(limit)) != SQLITE_OK) {
    rc = sq_fail(s, err, "read history");
    goto out;
  }
  while (!stop && (step = sqlite3_step(st)) == SQLITE_ROW) {
    if (sq_row_policy(st, &r) < 0) {
      rc = GRAY_EIO;
      sq_set(err, rc, "sqlite: read history: out of memory or malformed row");
      goto out;
    }
    s->in_callback = 1;
    stop = fn(ctx, &r);
    s->in_callback = 0;
  }
  if (!stop && step != SQLITE_DONE) rc = sq_fail(s, err, "read history");
out:
  if (st) sq_release(st);
  return rc;
}

static int sq_policy_changes(gd_store *base, int64_t after, int limit,
                             int (*fn)(void *ctx, const gd_policy_rec *r), void *ctx, gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  gd_policy_rec r;
  int rc = sq_enter(s, err), step = SQLITE_DONE, stop = 0;
  if (rc != GRAY_OK) goto out;
  if (!fn || after < 0) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "policy_changes: missing callback or negative revision");
    goto out;
  }
  st = s->st[SQ_HIST_SINCE];
  if (sqlite3_bind_int64(st, 1, after) != SQLITE_OK || sqlite3_bind_int(st, 2, sq_clamp_limit(limit)) != SQLITE_OK) {
    rc = sq_fail(s, err, "read changes");
    goto out;
  }
  while (!stop && (step = sqlite3_step(st)) == SQLITE_ROW) {
    if (sq_row_policy(st, &r) < 0) {
      rc = GRAY_EIO;
      sq_set(err, rc, "sqlite: read changes: out of memory or malformed row");
      goto out;
    }
    s->in_callback = 1;
    stop = fn(ctx, &r);
    s->in_callback = 0;
  }
  if (!stop && step != SQLITE_DONE) rc = sq_fail(s, err, "read changes");
out:
  if (st) sq_release(st);
  return rc;
}

static int sq_policy_at(gd_store *base, const char *service, int64_t revision, gd_policy_rec *out,
                        gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  gd_policy_rec r;
  int rc, step;
  if (out) memset(out, 0, sizeof *out);
  rc = sq_enter(s, err);
  if (rc != GRAY_OK) goto out;
  if (!out || !service || sq_len(service, GD_STORE_TEXT_MAX) > GD_STORE_TEXT_MAX) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "policy_at: missing service or output");
    goto out;
  }
  st = s->st[SQ_HIST_AT];
  if (sqlite3_bind_int64(st, 1, revision) != SQLITE_OK ||
      sq_bind_text(st, 2, service, strlen(service)) != SQLITE_OK) {
    rc = sq_fail(s, err, "read history entry");
    goto out;
  }
  step = sqlite3_step(st);
  if (step == SQLITE_DONE) {
    rc = GRAY_ENOTFOUND;
    sq_set(err, rc, "no history entry of service \"%.64s\" at revision %lld", service, (long long)revision);
    goto out;
  }
  if (step != SQLITE_ROW) {
    rc = sq_fail(s, err, "read history entry");
    goto out;
  }
  if (sq_row_policy(st, &r) < 0) {
    rc = GRAY_EIO;
    sq_set(err, rc, "sqlite: read history entry: out of memory or malformed row");
    goto out;
  }
  *out = r;
  out->service = sq_dup(r.service, strlen(r.service));
  out->actor = sq_dup(r.actor, strlen(r.actor));
  out->body = r.body ? sq_dup(r.body, r.body_len) : NULL;
  if (!out->service || !out->actor || (r.body && !out->body)) {
    gd_policy_rec_clear(out);
    rc = GRAY_ENOMEM;
    sq_set(err, rc, "policy_at: out of memory");
    goto out;
  }
out:
  if (st) sq_release(st);
  return rc;
}

/* Insert one audit entry inside the open transaction. */
static int sq_audit_one(gd_sqlite *s, const gd_audit_rec *a, gray_error_t *err) {
  sqlite3_stmt *st = s->st[SQ_AUDIT_INSERT];
  const char *token = a->token ? a->token : "-";
  const char *op = a->op ? a->op : "";
  const char *target = a->target ? a->target : "";
  const char *message = a->message ? a->message : "";
  int rc = GRAY_OK;
  if (sqlite3_bind_int64(st, 1, a->time_ms) != SQLITE_OK ||
      sq_bind_text(st, 2, token, sq_len_cut(token, GD_STORE_TEXT_MAX)) != SQLITE_OK ||
      sq_bind_text(st, 3, op, sq_len_cut(op, GD_STORE_TEXT_MAX)) != SQLITE_OK ||
      sq_bind_text(st, 4, target, sq_len_cut(target, GD_STORE_TEXT_MAX)) != SQLITE_OK ||
      sqlite3_bind_int(st, 5, a->status) != SQLITE_OK ||
      sq_bind_text(st, 6, message, sq_len_cut(message, GD_STORE_TEXT_MAX)) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_DONE)
    rc = sq_fail(s, err, "append audit");
  sq_release(st);
  return rc;
}

/* A batch write: one transaction over n records, row(s, i) writing record
 * i; all or none. `what` names the operation in errors. */
static int sq_batch(gd_sqlite *s, const void *recs, size_t n, int (*row)(gd_sqlite *, const void *, size_t,
                                                                        gray_error_t *),
                    const char *what, gray_error_t *err) {
  int rc = sq_enter(s, err), began = 0;
  if (rc != GRAY_OK || n == 0) goto out;
  if (!recs) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "%s: no records", what);
    goto out;
  }
  rc = sq_begin(s, err);
  if (rc != GRAY_OK) goto out;
  began = 1;
  for (size_t i = 0; i < n; i++) {
    rc = row(s, recs, i, err);
    if (rc != GRAY_OK) goto out;
  }
  if (sqlite3_step(s->st[SQ_COMMIT]) != SQLITE_DONE) {
    rc = sq_fail(s, err, what);
    sqlite3_reset(s->st[SQ_COMMIT]);
    goto out;
  }
  sqlite3_reset(s->st[SQ_COMMIT]);
  began = 0;
out:
  if (began) sq_abort(s);
  return rc;
}

static int sq_audit_row(gd_sqlite *s, const void *recs, size_t i, gray_error_t *err) {
  return sq_audit_one(s, (const gd_audit_rec *)recs + i, err);
}

static int sq_audit_append(gd_store *base, const gd_audit_rec *recs, size_t n, gray_error_t *err) {
  return sq_batch((gd_sqlite *)base, recs, n, sq_audit_row, "audit_append", err);
}

static int sq_audit_list(gd_store *base, int64_t before, int limit,
                         int (*fn)(void *ctx, const gd_audit_rec *r), void *ctx, gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  gd_audit_rec r;
  size_t len;
  int rc = sq_enter(s, err), step = SQLITE_DONE, stop = 0;
  if (rc != GRAY_OK) goto out;
  if (!fn || before < 0) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "audit_list: missing callback or negative 'before'");
    goto out;
  }
  st = s->st[SQ_AUDIT_LIST];
  if (sqlite3_bind_int64(st, 1, before ? before : INT64_MAX) != SQLITE_OK ||
      sqlite3_bind_int(st, 2, sq_clamp_limit(limit)) != SQLITE_OK) {
    rc = sq_fail(s, err, "read audit");
    goto out;
  }
  while (!stop && (step = sqlite3_step(st)) == SQLITE_ROW) {
    memset(&r, 0, sizeof r);
    r.id = sqlite3_column_int64(st, 0);
    r.time_ms = sqlite3_column_int64(st, 1);
    r.status = sqlite3_column_int(st, 5);
    if (sq_col_text(st, 2, 0, &r.token, &len) < 0 || sq_col_text(st, 3, 0, &r.op, &len) < 0 ||
        sq_col_text(st, 4, 0, &r.target, &len) < 0 || sq_col_text(st, 6, 0, &r.message, &len) < 0) {
      rc = GRAY_EIO;
      sq_set(err, rc, "sqlite: read audit: out of memory or malformed row");
      goto out;
    }
    s->in_callback = 1;
    stop = fn(ctx, &r);
    s->in_callback = 0;
  }
  if (!stop && step != SQLITE_DONE) rc = sq_fail(s, err, "read audit");
out:
  if (st) sq_release(st);
  return rc;
}

/* One saved instance change: upsert, or delete when body is NULL. */
static int sq_instance_one(gd_sqlite *s, const gd_instance_rec *r, gray_error_t *err) {
  if (!r->service || !r->id || !r->service[0] || !r->id[0] ||
      sq_len(r->service, GD_STORE_TEXT_MAX) > GD_STORE_TEXT_MAX ||
      sq_len(r->id, GD_STORE_TEXT_MAX) > GD_STORE_TEXT_MAX) {
    sq_set(err, GRAY_EINVAL, "instance_save: a service or id is missing or longer than %u bytes",
           GD_STORE_TEXT_MAX);
    return GRAY_EINVAL;
  }
  if (r->body && (r->body_len > GD_STORE_INSTANCE_MAX || r->revision <= 0)) {
    sq_set(err, GRAY_EINVAL, "instance_save: %s/%s: body over %u bytes or revision not positive", r->service,
           r->id, GD_STORE_INSTANCE_MAX);
    return GRAY_EINVAL;
  }
  sqlite3_stmt *st = s->st[r->body ? SQ_INST_UPSERT : SQ_INST_DELETE];
  int ok = sq_bind_text(st, 1, r->service, strlen(r->service)) == SQLITE_OK &&
           sq_bind_text(st, 2, r->id, strlen(r->id)) == SQLITE_OK;
  if (ok && r->body)
    ok = sqlite3_bind_int64(st, 3, r->revision) == SQLITE_OK &&
         sq_bind_text(st, 4, r->body, r->body_len) == SQLITE_OK;
  int rc = GRAY_OK;
  if (!ok || sqlite3_step(st) != SQLITE_DONE) rc = sq_fail(s, err, "save instance");
  sq_release(st);
  return rc;
}

static int sq_instance_row(gd_sqlite *s, const void *recs, size_t i, gray_error_t *err) {
  return sq_instance_one(s, (const gd_instance_rec *)recs + i, err);
}

static int sq_instance_save(gd_store *base, const gd_instance_rec *recs, size_t n, gray_error_t *err) {
  return sq_batch((gd_sqlite *)base, recs, n, sq_instance_row, "instance_save", err);
}

static int sq_instance_each(gd_store *base, int (*fn)(void *ctx, const gd_instance_rec *r), void *ctx,
                            gray_error_t *err) {
  gd_sqlite *s = (gd_sqlite *)base;
  sqlite3_stmt *st = NULL;
  gd_instance_rec r;
  size_t len;
  int rc = sq_enter(s, err), step = SQLITE_DONE, stop = 0;
  if (rc != GRAY_OK) goto out;
  if (!fn) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "instance_each: missing callback");
    goto out;
  }
  st = s->st[SQ_INST_EACH];
  while (!stop && (step = sqlite3_step(st)) == SQLITE_ROW) {
    char *service, *id, *body;
    memset(&r, 0, sizeof r);
    if (sq_col_text(st, 0, 0, &service, &len) < 0 || sq_col_text(st, 1, 0, &id, &len) < 0 ||
        sq_col_text(st, 3, 0, &body, &r.body_len) < 0) {
      rc = GRAY_EIO;
      sq_set(err, rc, "sqlite: read instances: out of memory or malformed row");
      goto out;
    }
    r.service = service;
    r.id = id;
    r.body = body;
    r.revision = sqlite3_column_int64(st, 2);
    s->in_callback = 1;
    stop = fn(ctx, &r);
    s->in_callback = 0;
  }
  if (!stop && step != SQLITE_DONE) rc = sq_fail(s, err, "read instances");
out:
  if (st) sq_release(st);
  return rc;
}

/* Finalize, close and free; accepts a half-opened store. */
static void sq_destroy(gd_sqlite *s) {
  if (!s) return;
  for (int i = 0; i < SQ_STMT_COUNT; i++) sqlite3_finalize(s->st[i]);
  /* _v2: never fails for unfinalized objects; the connection becomes a
   * zombie until they go (there are none left here). */
  sqlite3_close_v2(s->db);
  free(s);
}

static void sq_close(gd_store *base) {
  gd_sqlite *s = (gd_sqlite *)base;
  if (s) sq_abort(s);
  sq_destroy(s);
}

static const gd_store_ops sq_ops = {
    .name = "sqlite",
    .store_id = sq_store_id,
    .revision = sq_revision,
    .reserve = sq_reserve,
    .policy_write = sq_policy_write,
    .policy_each = sq_policy_each,
    .policy_history = sq_policy_history,
    .policy_changes = sq_policy_changes,
    .policy_at = sq_policy_at,
    .audit_append = sq_audit_append,
    .audit_list = sq_audit_list,
    .instance_save = sq_instance_save,
    .instance_each = sq_instance_each,
    .close = sq_close,
};

void gd_policy_rec_clear(gd_policy_rec *r) {
  if (!r) return;
  free(r->service);
  free(r->actor);
  free(r->body);
  memset(r, 0, sizeof *r);
}

void gd_audit_rec_clear(gd_audit_rec *r) {
  if (!r) return;
  free(r->token);
  free(r->op);
  free(r->target);
  free(r->message);
  memset(r, 0, sizeof *r);
}

/* ---- open ------------------------------------------------------------- */

/* Run a one-shot statement with no parameters and read its first column of
 * its first row as an integer (*out) or as text (into buf); a statement
 * without rows leaves *out / buf untouched. */
static int sq_query_one(gd_sqlite *s, const char *sql, int64_t *out, char *buf, size_t bufsz,
                        gray_error_t *err) {
  sqlite3_stmt *st = NULL;
  int rc = GRAY_OK, step;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = sq_fail(s, err, sql);
    goto out;
  }
  step = sqlite3_step(st);
  if (step == SQLITE_ROW) {
    if (out) *out = sqlite3_column_int64(st, 0);
    if (buf && bufsz) {
      const unsigned char *t = sqlite3_column_text(st, 0);
      snprintf(buf, bufsz, "%s", t ? (const char *)t : "");
    }
  } else if (step != SQLITE_DONE) {
    rc = sq_fail(s, err, sql);
  }
out:
  sqlite3_finalize(st);
  return rc;
}

/* Connection settings. WAL + synchronous=FULL is what makes a returned
 * COMMIT durable; each setting is read back, since SQLite ignores pragmas
 * it cannot apply. */
static int sq_configure(gd_sqlite *s, gray_error_t *err) {
  char mode[16] = "";
  int64_t v = -1;
  int rc = sq_query_one(s, "PRAGMA journal_mode = WAL", NULL, mode, sizeof mode, err);
  if (rc != GRAY_OK) goto out;
  if (strcmp(mode, "wal")) {
    rc = GRAY_EIO;
    sq_set(err, rc, "sqlite: cannot use WAL mode here (journal mode is \"%s\")", mode);
    goto out;
  }
  rc = sq_query_one(s, "PRAGMA synchronous = FULL", NULL, NULL, 0, err);
  if (rc != GRAY_OK) goto out;
  rc = sq_query_one(s, "PRAGMA synchronous", &v, NULL, 0, err);
  if (rc != GRAY_OK) goto out;
  if (v != 2) {
    rc = GRAY_EIO;
    sq_set(err, rc, "sqlite: synchronous=FULL did not take (it is %lld)", (long long)v);
    goto out;
  }
  rc = sq_query_one(s, "PRAGMA foreign_keys = ON", NULL, NULL, 0, err);
  if (rc != GRAY_OK) goto out;
  v = -1;
  rc = sq_query_one(s, "PRAGMA foreign_keys", &v, NULL, 0, err);
  if (rc != GRAY_OK) goto out;
  if (v != 1) {
    rc = GRAY_EIO;
    sq_set(err, rc, "sqlite: foreign keys are not available in this SQLite");
    goto out;
  }
out:
  return rc;
}

/* 16 random bytes from the kernel as 32 lower-case hex digits. */
static int sq_make_store_id(char out[33], gray_error_t *err) {
  static const char hex[] = "0123456789abcdef";
  unsigned char raw[16];
  size_t got = 0;
  int rc = GRAY_OK;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = GRAY_EIO;
      sq_set(err, rc, "store id: getrandom failed: %s", strerror(errno));
      goto out;
    }
    got += (size_t)n;
  }
  for (size_t i = 0; i < sizeof raw; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[32] = '\0';
out:
  return rc;
}

/* The schema version of the database: 0 for an empty database; GRAY_EINVAL for a database that has tables but
 * is not a graylane store. */
static int sq_schema_version(gd_sqlite *s, int64_t *version, gray_error_t *err) {
  int64_t n = 0;
  int rc;
  *version = 0;
  rc = sq_query_one(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", &n, NULL,
                    0, err);
  if (rc != GRAY_OK) goto out;
  if (n == 0) {
    rc = sq_query_one(s, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                      &n, NULL, 0, err);
    if (rc != GRAY_OK) goto out;
    if (n != 0) {
      rc = GRAY_EINVAL;
      sq_set(err, rc, "the database has tables but no graylane meta table: not a graylane store");
    }
    goto out;
  }
  *version = -1;
  rc = sq_query_one(s, "SELECT schema_version FROM meta WHERE id = 1", version, NULL, 0, err);
  if (rc != GRAY_OK) goto out;
  if (*version < 1) {
    rc = GRAY_EINVAL;
    sq_set(err, rc, "the meta table has no valid schema version (%lld): damaged graylane store",
           (long long)*version);
  }
out:
  return rc;
}

static int sq_too_new(int64_t v, gray_error_t *err) {
  sq_set(err, GRAY_EINVAL,
         "the database has schema version %lld, newer than this grayd knows (%lld): "
         "run a newer grayd or use another data file",
         (long long)v, (long long)SQ_SCHEMA_VERSION);
  return GRAY_EINVAL;
}

/* Before changing anything (journal mode, schema): refuse a database that
 * is not a graylane store or is newer than this code. sq_migrate checks
 * again under the write lock. */
static int sq_precheck(gd_sqlite *s, gray_error_t *err) {
  int64_t v = 0;
  int rc = sq_schema_version(s, &v, err);
  if (rc == GRAY_OK && v > SQ_SCHEMA_VERSION) rc = sq_too_new(v, err);
  return rc;
}

/* Apply step `next` (from version next-1) inside the open transaction. */
static int sq_migrate_step(gd_sqlite *s, int64_t next, gray_error_t *err) {
  sqlite3_stmt *st = NULL;
  char id[33];
  int rc = GRAY_OK;
  const char *sql = next == 1
                        ? "INSERT INTO meta (id, schema_version, store_id, reserved) VALUES (1, ?1, ?2, 0)"
                        : "UPDATE meta SET schema_version = ?1 WHERE id = 1";
  if (sqlite3_exec(s->db, migrations[next - 1], NULL, NULL, NULL) != SQLITE_OK) {
    rc = sq_fail(s, err, "migrate schema");
    goto out;
  }
  if (next == 1) {
    rc = sq_make_store_id(id, err);
    if (rc != GRAY_OK) goto out;
  }
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK ||
      sqlite3_bind_int64(st, 1, next) != SQLITE_OK ||
      (next == 1 && sq_bind_text(st, 2, id, 32) != SQLITE_OK) || sqlite3_step(st) != SQLITE_DONE) {
    rc = sq_fail(s, err, "record schema version");
    goto out;
  }
out:
  sqlite3_finalize(st);
  return rc;
}

/* Bring the schema to SQ_SCHEMA_VERSION, one transaction per step, the
 * version re-read under the write lock each time. *created is set when the
 * database was empty. */
static int sq_migrate(gd_sqlite *s, int *created, gray_error_t *err) {
  int64_t v = 0;
  int rc = GRAY_OK;
  *created = 0;
  for (;;) {
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
      rc = sq_fail(s, err, "begin migration");
      goto out;
    }
    rc = sq_schema_version(s, &v, err);
    if (rc != GRAY_OK) goto out;
    if (v > SQ_SCHEMA_VERSION) {
      rc = sq_too_new(v, err);
      goto out;
    }
    if (v == SQ_SCHEMA_VERSION) break;
    rc = sq_migrate_step(s, v + 1, err);
    if (rc != GRAY_OK) goto out;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
      rc = sq_fail(s, err, "commit migration");
      goto out;
    }
    if (v == 0) *created = 1;
  }
out:
  if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

/* Read store id, reserved and the highest history revision. */
static int sq_load_meta(gd_sqlite *s, gray_error_t *err) {
  sqlite3_stmt *st = NULL;
  const unsigned char *id;
  int rc = GRAY_OK;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT store_id, reserved, (SELECT coalesce(max(revision), 0) FROM history)"
                         " FROM meta WHERE id = 1",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = sq_fail(s, err, "read meta");
    goto out;
  }
  if (sqlite3_step(st) != SQLITE_ROW) {
    rc = sq_fail(s, err, "read meta");
    goto out;
  }
  id = sqlite3_column_text(st, 0);
  if (!id || sqlite3_column_bytes(st, 0) != 32 || strspn((const char *)id, "0123456789abcdef") != 32) {
    rc = GRAY_EIO;
    sq_set(err, rc, "the meta table's store id is missing or malformed: damaged graylane store");
    goto out;
  }
  memcpy(s->store_id, id, 33);
  s->reserved = sqlite3_column_int64(st, 1);
  s->top = sqlite3_column_int64(st, 2);
  s->floor = s->reserved > s->top ? s->reserved : s->top;
out:
  sqlite3_finalize(st);
  return rc;
}

static int sq_prepare_all(gd_sqlite *s, gray_error_t *err) {
  for (int i = 0; i < SQ_STMT_COUNT; i++) {
    if (sqlite3_prepare_v3(s->db, sq_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) !=
        SQLITE_OK)
      return sq_fail(s, err, "prepare statement");
  }
  return GRAY_OK;
}

/* fsync the directory holding path, so the directory entry of a database
 * file just created survives power loss. SQLite syncs the directory when it
 * creates a journal or WAL file, which covers the main file's entry too,
 * but only as a side effect and not in builds with SQLITE_DISABLE_DIRSYNC;
 * one fsync at creation makes it not depend on either. */
static int sq_sync_dir(const char *path, gray_error_t *err) {
  const char *slash = strrchr(path, '/');
  char *dir = NULL;
  int fd = -1, rc = GRAY_OK;
  if (!slash) {
    dir = sq_dup(".", 1);
  } else {
    dir = sq_dup(path, slash == path ? 1 : (size_t)(slash - path));
  }
  if (!dir) {
    rc = GRAY_ENOMEM;
    sq_set(err, rc, "sync directory: out of memory");
    goto out;
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
    rc = GRAY_EIO;
    sq_set(err, rc, "sync the database's directory: %s", strerror(errno));
    goto out;
  }
out:
  if (fd >= 0) close(fd);
  free(dir);
  return rc;
}

gd_store *gd_store_sqlite_open(const char *path, gray_error_t *err) {
  gd_sqlite *s = NULL;
  gd_store *ret = NULL;
  int created = 0, src;
  if (!path || !path[0] || sq_len(path, SQ_PATH_MAX) > SQ_PATH_MAX) {
    sq_set(err, GRAY_EINVAL, "sqlite store: the path is empty or longer than %d bytes", SQ_PATH_MAX);
    goto out;
  }
  s = calloc(1, sizeof *s);
  if (!s) {
    sq_set(err, GRAY_ENOMEM, "sqlite store: out of memory");
    goto out;
  }
  s->base.ops = &sq_ops;
  src = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (src != SQLITE_OK) {
    sq_set(err, GRAY_EIO, "sqlite: open: %s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(src));
    goto out;
  }
  sqlite3_busy_timeout(s->db, SQ_BUSY_MS);
  sqlite3_extended_result_codes(s->db, 1);
  /* Refuse writable_schema and other ways of corrupting the file by SQL. */
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
  if (sq_precheck(s, err) != GRAY_OK || sq_configure(s, err) != GRAY_OK ||
      sq_migrate(s, &created, err) != GRAY_OK || sq_load_meta(s, err) != GRAY_OK ||
      sq_prepare_all(s, err) != GRAY_OK)
    goto out;
  if (created && sq_sync_dir(path, err) != GRAY_OK) goto out;
  ret = &s->base;
  s = NULL;
out:
  sq_destroy(s);
  return ret;
}
