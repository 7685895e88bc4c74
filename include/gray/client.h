/* graylane — client SDK (libgray client): follow grayd, decide and pick
 * locally, register this instance.
 *
 * A background thread long-polls grayd's /v1/watch and keeps an immutable,
 * compiled snapshot (policies + registry). Decisions and picks read the
 * current snapshot: no network, no allocation, no lock that a snapshot swap
 * could hold for longer than a pointer exchange. The last good snapshot is
 * written to a cache file so a service restarted while grayd is down still
 * routes (fail-static).
 *
 * Threads: _start runs two, the watch thread (long poll, snapshot swaps,
 * cache file) and the registry thread (heartbeats), so a long poll never
 * delays a heartbeat. Readers (decide, pick) hold the snapshot with a hazard
 * pointer: a per-thread slot from a process-wide array of 256, claimed on a
 * thread's first call and given back when the thread exits. Threads beyond
 * 256 (or a decide called from inside a request lookup callback) take a
 * slow path instead: a reference taken under a mutex the writer holds only
 * for the pointer exchange. Neither path allocates; the slow path may free
 * a snapshot that was swapped out meanwhile. Not async-signal-safe.
 *
 * Failures: while grayd is unreachable, refuses the token or answers
 * nonsense, the SDK keeps the last snapshot, logs once per outage and
 * retries with backoff, going round the server list. A `reset` (grayd
 * restarted without the history, or its store changed) replaces the whole
 * snapshot, as grayd's API defines it; a reset that fails to parse changes
 * nothing. */
#ifndef GRAY_CLIENT_H
#define GRAY_CLIENT_H

#include "gray/common.h"
#include "gray/err.h"
#include "gray/policy.h"

GRAY_BEGIN_DECLS

typedef struct gray_client_s gray_client_t;

/* Options; strings are copied by gray_client_new. */
typedef struct gray_client_options_s {
  const char *servers;    /* "http://127.0.0.1:7070" or a comma-separated list,
                             tried in turn on failure (required) */
  const char *token;      /* bearer token; registration needs role agent.
                             Never logged. Over plain http:// to a host that
                             is not loopback, _start logs a warning. */
  const char *ca_file;    /* CA bundle to verify an https:// grayd; NULL: the
                             system's */
  const char *services;   /* comma-separated services to follow (at most
                             64); NULL or "": all */
  const char *cache_path; /* last-good snapshot file; NULL: no cache. Written
                             at most every 500 ms after a change (temp file,
                             fsync, rename), with a SHA-256 checked on load;
                             a damaged file is logged and ignored */
  int connect_timeout_ms; /* default 2000 */
  int watch_wait_s;       /* long-poll wait, default 30 (above 60: 60, as
                             grayd caps it) */
  int backoff_min_ms;     /* reconnect backoff, default 100, doubling with
                             jitter up to backoff_max_ms (default 10000) */
  int backoff_max_ms;
  /* Optional log sink: level 0 debug, 1 info, 2 warn, 3 error. Called from
   * the SDK's threads; must be thread-safe. NULL: silent. */
  void (*log)(void *arg, int level, const char *msg);
  void *log_arg;
  /* Optional change hook, for executors that render the whole state (the
   * Nginx agent): called after every new snapshot — from the watch thread,
   * and once from the thread in _start when the cache file was loaded —
   * with the snapshot as a document, NUL-terminated and borrowed for the
   * call: {"store_id", "revision", "policies": {"revision", "policies":
   * [...]}, "services": [{"service", "instances": [{"id", "address",
   * "port", "version"}, ...]}, ...]} (the cache file's payload). Decide and
   * pick already see the new snapshot. Keep it short (copy and hand off):
   * the watch waits for it. Must not call _stop or _free. */
  void (*on_change)(void *arg, int64_t revision, const char *doc, size_t len);
  void *on_change_arg;
} gray_client_options_t;

/* Fill with defaults (all NULL / 0 meaning "default"). */
GRAY_EXTERN void gray_client_options_init(gray_client_options_t *o);

/* New stopped client. GRAY_EINVAL (with err) for bad options. Not
 * thread-safe with any other call on the same client. */
GRAY_EXTERN int gray_client_new(const gray_client_options_t *o, gray_client_t **out, gray_error_t *err);

/* Load the cache file if present (a snapshot from it is used until grayd
 * answers) and start the watch and registry threads. Returns at once
 * (GRAY_EINVAL when already started or stopped: a stopped client cannot be
 * started again). Not thread-safe with _new, _stop or _free. */
GRAY_EXTERN int gray_client_start(gray_client_t *c, gray_error_t *err);

/* Wait until a snapshot is available (from grayd, even an empty grayd, or
 * the cache file). Returns GRAY_OK, or GRAY_ENOTFOUND after timeout_ms
 * (0: just check; negative: wait for ever). Thread-safe. */
GRAY_EXTERN int gray_client_wait_ready(gray_client_t *c, int timeout_ms);

/* Stop the threads (a pending cache write is flushed first) and
 * deregister registered instances (best effort: one DELETE each, bounded by
 * the connect timeout, none after the first that cannot reach grayd).
 * Decide and pick keep answering from the last snapshot until _free.
 * Idempotent. Not thread-safe with _start, _register or _free. */
GRAY_EXTERN void gray_client_stop(gray_client_t *c);
/* Stop if needed and free. Accepts NULL. No other call on this client may
 * run or follow. */
GRAY_EXTERN void gray_client_free(gray_client_t *c);

/* Revision of the current snapshot (0 before the first). It moves when
 * something the client follows changes, not on every revision of grayd.
 * Thread-safe, lock-free. */
GRAY_EXTERN int64_t gray_client_revision(gray_client_t *c);

/* A decision copied out of the snapshot (names are at most 63 bytes), so it
 * stays valid whatever happens to the snapshot afterwards. */
typedef struct gray_client_decision_s {
  char service[64];
  char version[64];  /* the version to call */
  char tag[64];      /* tag to forward ("" when none): the rule's, else the
                        incoming one when valid */
  char rule[64];     /* deciding rule ("" when the default decided) */
  int fallback_fail; /* the policy says "fallback": "fail" */
  int64_t revision;  /* snapshot revision that decided */
} gray_client_decision_t;

/* Decide with the current snapshot's policy for `service`. GRAY_OK, or
 * GRAY_ENOTFOUND when there is no snapshot or no policy for the service
 * (out->version is then ""); GRAY_EINVAL for a NULL client, service or
 * out. `req` may be NULL (a request with no attributes). No network, no
 * allocation; thread-safe (see the top of this file for the first call on
 * a thread). */
GRAY_EXTERN int gray_client_decide(gray_client_t *c, const char *service, const gray_request_t *req,
                                   gray_client_decision_t *out);

/* A live instance to call. */
typedef struct gray_endpoint_s {
  char id[64];
  char address[256];
  int port;
  char version[64]; /* the version of the instance picked */
  int fell_back;    /* 1: `version` had no live instance and the policy's
                       default version was picked instead */
} gray_endpoint_t;

/* Pick a live instance of `version` of `service`, round-robin (an atomic
 * counter per service and version, kept outside the snapshots, so
 * successive picks from all threads spread over the instances and the
 * rotation survives snapshot swaps). When the version has none: the
 * policy's default version (fell_back = 1), unless the policy says
 * "fallback": "fail" — then GRAY_ENOTFOUND. A service without a policy has
 * no default: GRAY_ENOTFOUND. GRAY_ENOTFOUND also when nothing is live;
 * GRAY_EINVAL for NULL arguments. No network, no allocation; thread-safe. */
GRAY_EXTERN int gray_client_pick(gray_client_t *c, const char *service, const char *version,
                                 gray_endpoint_t *out);

/* This process's instance, for registration. Strings are copied. */
typedef struct gray_instance_s {
  const char *service;
  const char *id;
  const char *address;
  int port;
  const char *version;
  int ttl_s;                /* default 15; heartbeats every ttl_s / 3 */
  const char *const *metadata; /* NULL, or "key", "value", ..., NULL */
} gray_instance_t;

/* Register now (synchronously: each server of the list once, each attempt
 * bounded by the connect timeout + 3 s) and keep the registration alive:
 * heartbeats every TTL/3 from the SDK's registry thread (once _start ran),
 * and a re-registration whenever grayd answers a heartbeat with 404 (grayd
 * restarted, or the instance was evicted or deleted). Registering the same
 * service and id again replaces the fields. Deregistered by _stop. Returns
 * GRAY_OK; GRAY_EINVAL for bad fields (names per the policy name rule,
 * address an IP or host name, port 1..65535, ttl_s 0..3600, metadata at
 * most 32 pairs and 4096 bytes) or when grayd refuses the content (400),
 * with *err naming the field; GRAY_ELIMIT beyond 64 registrations; or
 * GRAY_EIO when grayd could not be reached or refused the token — the SDK
 * keeps retrying in the background then. Thread-safe, except with _stop and
 * _free. */
GRAY_EXTERN int gray_client_register(gray_client_t *c, const gray_instance_t *in, gray_error_t *err);

/* Gray tag propagation. HTTP: read the incoming GRAY_TAG_HEADER, pass it to
 * the decision as the `tag` attribute, and send the decision's tag on
 * outgoing calls. Messages (MQ): the same name in lower case,
 * GRAY_TAG_MESSAGE_HEADER, as a message header. */
#define GRAY_TAG_HEADER "X-Gray-Tag"
#define GRAY_TAG_MESSAGE_HEADER "x-gray-tag"

/* 1 when the `len` bytes at `tag` are a valid tag (the name pattern of
 * docs/policy.md); 0 for NULL. Pure. */
GRAY_EXTERN int gray_tag_valid(const char *tag, size_t len);
/* Write "X-Gray-Tag: <tag>" (no CRLF, NUL-terminated) for the decision into
 * buf and return its length, or 0 (and "" when size > 0) when the decision
 * has no valid tag or buf is too small. Pure. */
GRAY_EXTERN size_t gray_tag_header_line(const gray_client_decision_t *d, char *buf, size_t size);

GRAY_END_DECLS

#endif
