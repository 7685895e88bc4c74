/* grayd storage interface. One implementation today (SQLite, embedded,
 * store_sqlite.c); a cluster backend (etcd) implements the same table of
 * operations later. All calls are made from grayd's event-loop thread and
 * must be short: a call returns only when what it wrote is durable (the
 * caller acknowledges the client right after).
 *
 * Model. Every change in grayd has one global revision (policies and
 * registry together, as in etcd). Policy writes are stored with the revision
 * grayd assigns to them; the registry lives in memory (saved in batches,
 * without heartbeats, for restarts: instance_save), so the store keeps
 * a "reserved" high-water mark that grayd raises in blocks, and a restarted
 * grayd continues after it: revisions never go backwards, never repeat. */
#ifndef GRAYD_STORE_H
#define GRAYD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "gray/err.h"

typedef struct gd_store gd_store;

/* Caps. Every string and body that enters the store has one. */
#define GD_STORE_BODY_MAX (16u << 20) /* a policy body, bytes (the API caps at 1 MiB) */
#define GD_STORE_TEXT_MAX 4096u       /* service, actor and each audit field, bytes */
#define GD_STORE_LIST_MAX 1000        /* entries per history or audit page */
#define GD_STORE_INSTANCE_MAX 65536u  /* a saved instance's JSON, bytes */

/* One stored policy version (an entry of the history). A record passed to a
 * callback is borrowed: its strings point into the store and are valid only
 * during the callback. A record filled by policy_at is owned by the caller:
 * its strings are malloc'd; free them with gd_policy_rec_clear. */
typedef struct gd_policy_rec {
  char *service;
  int64_t revision;   /* the global revision of this change */
  char op[16];        /* "put", "delete" or "rollback" */
  char *actor;        /* token name that made the change */
  int64_t time_ms;    /* wall clock, ms since the epoch (UTC) */
  char *body;         /* policy JSON as accepted; NULL for "delete" */
  size_t body_len;
} gd_policy_rec;

/* Free the strings of a record the caller owns (free()) and zero it.
 * Accepts NULL and a zeroed record. */
void gd_policy_rec_clear(gd_policy_rec *r);

/* An audit entry: every write attempt, accepted or refused. Records given
 * to audit_append are borrowed (NULL strings are stored as "-" for token and
 * "" otherwise; fields longer than GD_STORE_TEXT_MAX are cut at a UTF-8
 * boundary); records passed to audit_list's callback are borrowed and valid
 * only during the callback. */
typedef struct gd_audit_rec {
  int64_t id;         /* assigned by the store, increasing */
  int64_t time_ms;
  char *token;        /* token name, "-" when unauthenticated */
  char *op;           /* "policy.put", "instance.delete", ... */
  char *target;       /* "order", "order/i-1", ... */
  int status;         /* HTTP status answered */
  char *message;      /* short reason for refusals, "" otherwise */
} gd_audit_rec;

/* Free the strings of an audit record the caller built with malloc'd
 * strings (free()) and zero it. Accepts NULL. */
void gd_audit_rec_clear(gd_audit_rec *r);

/* A saved registry instance. The registry lives in memory (heartbeats are
 * never stored); grayd saves each instance's registration and removal in
 * batches so that a restarted grayd serves the registry it had, each
 * instance with a fresh TTL, instead of an empty one while every instance
 * re-registers. Borrowed in both directions. body is the instance as JSON
 * ({"address","port","version","metadata","ttl_s"}); NULL in a save means
 * delete. */
typedef struct gd_instance_rec {
  const char *service;
  const char *id;
  int64_t revision; /* of the instance's last change */
  const char *body;
  size_t body_len;
} gd_instance_rec;

/* Write of one policy change. expect_revision: -1 = no condition;
 * 0 = the service must have no current policy; N > 0 = the service's current
 * policy must have been written at revision N (compare-and-set, If-Match).
 * All pointers are borrowed for the duration of the call. body is required
 * for "put" and "rollback" and must be NULL for "delete"; actor NULL is
 * stored as "-". */
typedef struct gd_policy_write {
  const char *service;
  const char *op;     /* "put", "delete", "rollback" */
  const char *actor;
  const char *body;   /* NULL for delete */
  size_t body_len;
  int64_t revision;   /* assigned by grayd: current + 1 */
  int64_t expect_revision;
  int64_t time_ms;
} gd_policy_write;

/* Result codes beyond gray_err_t's, for conflicts (policy_write's *result). */
#define GD_STORE_OK 0
#define GD_STORE_CONFLICT 1 /* expect_revision did not hold */
#define GD_STORE_ABSENT 2   /* delete of a service with no policy */

/* The operations. Unless said otherwise each returns GRAY_OK or a negative
 * gray_err_t with err (optional) filled: GRAY_EINVAL for bad arguments,
 * GRAY_ETOOBIG over a cap, GRAY_ENOMEM, GRAY_EIO when the database failed
 * (the message carries SQLite's; a failed write leaves nothing of itself
 * behind). Callbacks: fn returning non-zero stops the iteration (the call
 * still returns GRAY_OK); a callback must not call into the same store
 * (such a call fails with GRAY_EINVAL). One thread at a time. */
typedef struct gd_store_ops {
  const char *name; /* "sqlite" */
  /* Identity of this database: a random id made when it was created (32
   * lower-case hex digits). A wiped or restored database has another, so
   * watchers reset. Borrowed, valid until close. */
  const char *(*store_id)(gd_store *s);
  /* Highest revision ever used or reserved; grayd starts after it. Never
   * fails (kept in memory, read at open, raised by each commit). */
  int64_t (*revision)(gd_store *s);
  /* Persist `upto` as the reserved high-water mark (only ever raised: a
   * lower value is a successful no-op; a negative one is GRAY_EINVAL). */
  int (*reserve)(gd_store *s, int64_t upto, gray_error_t *err);
  /* Apply one policy change atomically together with its history entry,
   * in one durable transaction. Checks, in this order: expect_revision
   * (CONFLICT), delete of an absent service (ABSENT), then monotonicity:
   * w->revision must be above every revision in the history and above
   * revision() as it was when the store was opened, else GRAY_EINVAL and
   * nothing is written. (Revisions inside a block reserved during this run
   * are accepted: grayd reserves ahead of the revisions it then writes.)
   * Returns GRAY_OK with *result GD_STORE_OK/CONFLICT/ABSENT, or an error.
   * *current (current may be NULL) is the service's current revision: on
   * CONFLICT and ABSENT the one that made the check fail (0 when it has
   * none), on OK the one just written (0 after a delete). */
  int (*policy_write)(gd_store *s, const gd_policy_write *w, int *result, int64_t *current,
                      gray_error_t *err);
  /* Current policies: calls fn for each (byte order of service), with the
   * op, actor and time of the history entry that wrote it; stops when fn
   * returns non-zero. */
  int (*policy_each)(gd_store *s, int (*fn)(void *ctx, const gd_policy_rec *r), void *ctx,
                     gray_error_t *err);
  /* History of one service, newest first, revisions < before (0 = no bound,
   * negative is GRAY_EINVAL), at most limit entries (clamped to
   * 1..GD_STORE_LIST_MAX). */
  int (*policy_history)(gd_store *s, const char *service, int64_t before, int limit,
                        int (*fn)(void *ctx, const gd_policy_rec *r), void *ctx, gray_error_t *err);
  /* Policy changes after revision `after`, oldest first, at most limit
   * (1..GD_STORE_LIST_MAX): "watch from a revision" over the durable log.
   * grayd uses the in-memory window for live watchers; a cluster backend
   * (several grayd on one etcd) replays peers' writes through this and adds
   * a push subscription of its own. */
  int (*policy_changes)(gd_store *s, int64_t after, int limit,
                        int (*fn)(void *ctx, const gd_policy_rec *r), void *ctx, gray_error_t *err);
  /* One history entry of a service at exactly `revision`; GRAY_ENOTFOUND if
   * none. *out is overwritten (not freed) and owned by the caller afterwards
   * (gd_policy_rec_clear); on any error it is left zeroed. body is NULL for
   * a delete. */
  int (*policy_at)(gd_store *s, const char *service, int64_t revision, gd_policy_rec *out,
                   gray_error_t *err);
  /* Append audit entries (a batch, one transaction: all or none). The
   * store assigns ids; recs[i].id is ignored. n == 0 does nothing. */
  int (*audit_append)(gd_store *s, const gd_audit_rec *recs, size_t n, gray_error_t *err);
  /* Audit entries newest first, id < before (0 = no bound, negative is
   * GRAY_EINVAL), at most limit (clamped to 1..GD_STORE_LIST_MAX). */
  int (*audit_list)(gd_store *s, int64_t before, int limit,
                    int (*fn)(void *ctx, const gd_audit_rec *r), void *ctx, gray_error_t *err);
  /* Save registry changes (a batch, one transaction: all or none): an
   * upsert per record with a body, a delete per record without (deleting
   * an absent instance is no error). n == 0 does nothing. */
  int (*instance_save)(gd_store *s, const gd_instance_rec *recs, size_t n, gray_error_t *err);
  /* The saved instances, by service then id. */
  int (*instance_each)(gd_store *s, int (*fn)(void *ctx, const gd_instance_rec *r), void *ctx,
                       gray_error_t *err);
  /* Finalize and close; s is freed. */
  void (*close)(gd_store *s);
} gd_store_ops;

struct gd_store {
  const gd_store_ops *ops;
};

/* Open (creating and migrating as needed) the SQLite store at path, in WAL
 * mode with synchronous=FULL so an acknowledged write survives kill -9 and
 * power loss. Returns a new store (release with s->ops->close(s)), or NULL
 * with err filled on failure: GRAY_EINVAL for a database made by a newer
 * schema than this code knows (the message names both versions) or one that
 * is not a graylane store, GRAY_EIO when SQLite failed. The path is not
 * kept. */
gd_store *gd_store_sqlite_open(const char *path, gray_error_t *err);

#endif
