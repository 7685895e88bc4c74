/* Internals of the client SDK (lib/client). Nothing here is public; the
 * unit tests include it to drive the snapshot, cache and hazard pieces
 * without a network.
 *
 * Pieces and who touches them:
 *   - gray__snapshot: immutable once published; read by any thread under a
 *     hazard pointer (hazard.c) or, on the slow path, a reference.
 *   - gray__model: the writer's mutable picture of grayd (policies and
 *     instances as JSON). Only the thread that publishes touches it: the
 *     caller of gray_client_start (cache load) before the watch thread
 *     exists, then the watch thread.
 *   - registrations: under reg_mu, shared by gray_client_register and the
 *     registry thread. */
#ifndef GRAY_CLIENT_INTERNAL_H
#define GRAY_CLIENT_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "gray/client.h"
#include "util/alloc.h"

/* Caps. */
#define GRAY__SERVERS_MAX 16
#define GRAY__FOLLOW_MAX 64                 /* grayd's watch filter takes 64 */
#define GRAY__FOLLOW_TEXT_MAX 1024          /* bytes of the services option */
#define GRAY__STORE_ID_MAX 64               /* grayd's are 32 hex digits */
#define GRAY__BODY_MAX (64u * 1024 * 1024)  /* a watch answer or cache file */
#define GRAY__SMALL_BODY_MAX (64u * 1024)   /* registry answers */
#define GRAY__REGS_MAX 64                   /* registrations per client */
#define GRAY__ADDRESS_MAX 255               /* gray_endpoint_t.address - 1 */
#define GRAY__META_KEYS_MAX 32              /* grayd's limits on metadata */
#define GRAY__META_BYTES_MAX 4096
#define GRAY__RR_SLOTS 1024                 /* round-robin counters */
#define GRAY__CACHE_INTERVAL_MS 500         /* at most one cache write per */

/* ---- logging ---------------------------------------------------------- */

typedef struct gray__logger {
  void (*fn)(void *arg, int level, const char *msg);
  void *arg;
} gray__logger;

enum { GRAY__DEBUG = 0, GRAY__INFO = 1, GRAY__WARN = 2, GRAY__ERROR = 3 };

/* Format (bounded) and hand to the sink; nothing when there is none. */
void gray__log(const gray__logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int64_t gray__mono_ms(void);

/* Free what jansson allocated (json_dumps), with jansson's allocator. */
void gray__json_free(void *p);

/* Fill *err (when non-NULL) and return code. */
int gray__seterr(gray_error_t *err, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- snapshot --------------------------------------------------------- */

typedef struct gray__inst {
  const char *id;
  const char *address;
  const char *version;
  int port;
} gray__inst;

/* The instances of one version of one service: insts[first .. first+count). */
typedef struct gray__vgroup {
  const char *version;
  uint32_t rr;    /* index of this (service, version)'s round-robin counter */
  uint32_t first; /* into gray__registry.insts */
  uint32_t count;
} gray__vgroup;

typedef struct gray__svc {
  const char *name;
  gray__vgroup *groups; /* sorted by version */
  uint32_t ngroups;
} gray__svc;

/* The registry part of a snapshot; shared by consecutive snapshots while
 * only policies change. Everything lives in the arena. */
typedef struct gray__registry {
  atomic_long refs;
  gray__arena arena;
  gray__svc *svcs; /* sorted by name */
  size_t nsvcs;
  gray__inst *insts; /* sorted by service, version, id */
  size_t ninsts;
} gray__registry;

/* One service's compiled policy: a policy set of one, compiled on its own
 * so that a change recompiles only the policy that changed. */
typedef struct gray__pol {
  const char *service;   /* the policy's own name (lives in set) */
  gray_policyset_t *set; /* one reference */
} gray__pol;

/* The policies part of a snapshot, sorted by service. Immutable once
 * built; shared by consecutive snapshots while only the registry changes,
 * and each set is shared by consecutive parts while its policy is
 * unchanged. */
typedef struct gray__pols {
  atomic_long refs;
  size_t n;
  gray__pol v[];
} gray__pols;

typedef struct gray__snapshot {
  atomic_long refs;
  int64_t revision;
  char store_id[GRAY__STORE_ID_MAX + 1];
  gray__pols *pols;    /* one reference; never NULL */
  gray__registry *reg; /* one reference; never NULL */
} gray__snapshot;

gray__snapshot *gray__snapshot_ref(gray__snapshot *s);
void gray__snapshot_release(gray__snapshot *s);
gray__registry *gray__registry_ref(gray__registry *r);
void gray__registry_release(gray__registry *r);

/* The compiled policy of `service` in a snapshot, or NULL. Pure, no
 * allocation. */
const gray_policy_t *gray__snapshot_policy(const gray__snapshot *s, const char *service);

/* The group of `version` of `service`, or NULL. Pure, no allocation. */
const gray__vgroup *gray__registry_find(const gray__registry *r, const char *service,
                                        const char *version);

/* ---- model (writer side) ---------------------------------------------- */

typedef struct gray__model {
  json_t *policies; /* service -> policy object as grayd sent it */
  json_t *services; /* service -> {id -> {"id","address","port","version"}} */
  char store_id[GRAY__STORE_ID_MAX + 1];
  int64_t revision; /* the next watch's `since` */
  gray__pols *pols;      /* `policies` compiled, one set per service */
  gray__registry *reg;   /* built from `services` (NULL: build it) */
  int reg_stale;         /* `services` changed since `reg` was built */
  char *const *follow;   /* borrowed; NULL: every service */
  size_t nfollow;
  uint64_t resets;       /* watch answers applied as a reset */
  gray__logger lg;
} gray__model;

/* New empty model following `follow` (borrowed, may be NULL). NULL on out
 * of memory. */
gray__model *gray__model_new(char *const *follow, size_t nfollow, const gray__logger *lg);
void gray__model_free(gray__model *m);

/* Replace everything with a snapshot document {"store_id", "revision",
 * "policies": set, "services": [...]} (grayd's /v1/snapshot, a reset's
 * "snapshot", or the cache payload). All or nothing: on any error the model
 * is unchanged. A policy this SDK cannot compile keeps the previous one
 * for that service (or none) and is logged. */
int gray__model_reset(gray__model *m, json_t *snap, gray_error_t *err);

/* Apply one /v1/watch answer (reset or events). *changed is set when the
 * model now differs from the last built snapshot. All or nothing for
 * malformed answers. */
int gray__model_apply(gray__model *m, const char *body, size_t len, int *changed, gray_error_t *err);

/* A new snapshot (one reference) of the model; compiles what is stale.
 * GRAY_ENOMEM, or an error when the policy set cannot be built (the
 * previous set is kept and the error logged, so this only fails on
 * memory). */
int gray__model_snapshot(gray__model *m, gray__snapshot **out, gray_error_t *err);

/* The model as a snapshot document (cache payload); new string from
 * jansson's allocator (gray__json_free), NULL on out of memory. */
char *gray__model_dump(const gray__model *m, size_t *len);

/* ---- cache file ------------------------------------------------------- */

/* Write `payload` to `path` atomically: temp file in the same directory,
 * fsync, rename, fsync the directory. The first line is
 * "graylane-cache 1 sha256=<hex> len=<n>". */
int gray__cache_write(const char *path, const char *payload, size_t len, gray_error_t *err);
/* Read and verify a cache file; *payload is new (gray__free). GRAY_ENOTFOUND
 * when absent, GRAY_EIO for unreadable, GRAY_EJSON for a bad header,
 * length or checksum. */
int gray__cache_read(const char *path, char **payload, size_t *len, gray_error_t *err);

/* SHA-256 (sha256.c); hex is lower case, NUL-terminated. */
void gray__sha256(const void *data, size_t len, unsigned char out[32]);
void gray__sha256_hex(const void *data, size_t len, char hex[65]);

/* ---- hazard pointers -------------------------------------------------- */

/* One per thread, claimed on first use from a process-wide array. */
typedef struct gray__hp_slot {
  _Alignas(64) _Atomic(void *) ptr;
  atomic_int owned;
} gray__hp_slot;

#define GRAY__HP_SLOTS 256

/* This thread's slot, claimed on first use; NULL when all slots are taken
 * (then the caller takes the slow path). */
gray__hp_slot *gray__hp_slot_get(void);
/* 1 when any thread's slot holds p. */
int gray__hp_protected(const void *p);

/* ---- the client ------------------------------------------------------- */

typedef struct gray__reg {
  char service[GRAY_NAME_LEN_MAX + 1];
  char id[GRAY_NAME_LEN_MAX + 1];
  char *body; /* PUT body, gray__malloc */
  int ttl_s;
  int registered; /* grayd accepted it and has not answered 404 since */
  int failing;    /* the last attempt failed (log once per outage) */
  int backoff_ms;
  int64_t next_ms; /* next heartbeat or registration attempt; INT64_MAX
                      while an attempt is in flight */
  unsigned gen;    /* bumped by each gray_client_register of this entry, so
                      an older attempt's outcome does not overwrite it */
} gray__reg;

struct gray_client_s {
  /* Options, immutable after _new. */
  char *servers[GRAY__SERVERS_MAX];
  size_t nservers;
  char *token;
  char *ca_file;
  char *follow_text; /* "a,b" as sent to grayd, NULL: all */
  char *follow[GRAY__FOLLOW_MAX];
  size_t nfollow;
  char *cache_path;
  int connect_timeout_ms, watch_wait_s, backoff_min_ms, backoff_max_ms;
  gray__logger lg;
  void (*on_change)(void *arg, int64_t revision, const char *doc, size_t len);
  void *on_change_arg;
  struct curl_slist *hdrs;      /* Authorization (when a token) */
  struct curl_slist *json_hdrs; /* ... and Content-Type: application/json */

  /* The published snapshot. */
  _Atomic(gray__snapshot *) cur;
  atomic_llong revision;
  pthread_mutex_t swap_mu;  /* the exchange, and slow-path readers */
  pthread_mutex_t write_mu; /* writers, and the retired list */
  gray__snapshot **retired; /* swapped out, maybe still under a hazard */
  size_t nretired, cap_retired;
  pthread_mutex_t ready_mu;
  pthread_cond_t ready_cv;
  int ready;

  /* Round-robin counters, outside the immutable snapshots so they survive
   * swaps; indexed by gray__vgroup.rr. */
  atomic_uint rr[GRAY__RR_SLOTS];

  /* Lifecycle: 0 new, 1 started, 2 stopped. Not thread-safe by contract. */
  int state;
  atomic_int stopping;

  /* Watch thread. */
  gray__model *model;
  pthread_t watch_thread;
  int watch_running;
  void *multi; /* CURLM *, for curl_multi_wakeup from _stop */
  int cache_dirty;
  int64_t cache_written_ms;

  /* Registrations and the registry thread. */
  pthread_mutex_t reg_mu;
  pthread_cond_t reg_cv;
  gray__reg regs[GRAY__REGS_MAX];
  size_t nregs;
  int reg_stop;
  atomic_int reg_abort; /* makes in-flight registry requests give up */
  atomic_uint reg_server;
  pthread_t reg_thread;
  int reg_running;
};

/* Publish `s` (takes its reference) as the current snapshot. Writers only:
 * serialized by write_mu. Readers are never blocked beyond the exchange. */
void gray__client_publish(gray_client_t *c, gray__snapshot *s);
/* Release retired snapshots no reader still holds. */
void gray__client_reclaim(gray_client_t *c);
/* Build a snapshot of c->model and publish it. */
int gray__client_publish_model(gray_client_t *c, gray_error_t *err);
/* Load the cache file into the model and publish it; 0 when nothing was
 * loaded (absent or invalid: logged, never fatal). */
int gray__client_load_cache(gray_client_t *c);
/* Write the model to the cache file now (no-op without a cache path). */
void gray__client_write_cache(gray_client_t *c);

/* Watch thread (watch.c) and registry thread (registry.c). */
void *gray__watch_main(void *arg);
void *gray__registry_main(void *arg);
/* Renew every registration now (the watch thread after a reset: a grayd
 * that lost its registry answers 404 and the instance registers again at
 * once rather than a third of its TTL later). Thread-safe. */
void gray__registry_poke(gray_client_t *c);
/* Deregister every registration (best effort, bounded by the connect
 * timeout), called by _stop after the threads have ended. */
void gray__registry_deregister_all(gray_client_t *c);
void gray__registry_free(gray_client_t *c);

/* ---- HTTP helpers (http.c) -------------------------------------------- */

typedef struct gray__buf {
  char *p;
  size_t len, cap, max;
  int too_big;
} gray__buf;

void gray__buf_free(gray__buf *b);

/* A new easy handle with the client's common options (timeouts, CA,
 * protocols, no signals). NULL on failure. */
void *gray__http_new(const gray_client_t *c);
/* Set up a request on h: method ("GET", "PUT", "DELETE"), URL, JSON body
 * (NULL: none), answer into sink, total timeout. `abort_flag` (may be NULL)
 * makes the transfer give up when it becomes non-zero. */
void gray__http_setup(const gray_client_t *c, void *h, const char *method, const char *url,
                      const char *body, gray__buf *sink, long timeout_ms, atomic_int *abort_flag);
/* Perform a request set up on h (blocking). Returns 0 and the HTTP status,
 * or -1 with a reason in errbuf (at least 256 bytes). */
int gray__http_perform(void *h, long *status, char *errbuf, size_t errsize);
/* "message" of grayd's {"error": {...}} body, or a short excerpt. */
void gray__http_error_text(const gray__buf *b, char *out, size_t size);

#endif
