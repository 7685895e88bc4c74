/* grayd: shared state of the daemon. One libevent loop owns all of it. */
#ifndef GRAYD_H
#define GRAYD_H

#include <jansson.h>
#include <stdint.h>

#include <event2/event.h>

#include "gray/policy.h"
#include "http/http.h"
#include "store/store.h"

/* Roles, ordered by what they may do. */
typedef enum { GD_ROLE_NONE = 0, GD_ROLE_READ, GD_ROLE_AGENT, GD_ROLE_WRITE, GD_ROLE_ADMIN } gd_role;

typedef struct gd_token {
  char name[64];
  gd_role role;
  unsigned char hash[32]; /* SHA-256 of the token */
} gd_token;

typedef struct gd_registry gd_registry;
typedef struct gd_watch gd_watch;
struct gd_agents;

/* One current policy, as the API serves it. */
typedef struct gd_policy_cur {
  char *service;
  int64_t revision;
  char *body; /* compact JSON as accepted */
  size_t body_len;
} gd_policy_cur;

typedef struct gd_config {
  char listen_host[256];
  int listen_port;
  char data_path[4096];
  char tokens_path[4096];
  char tls_cert[4096], tls_key[4096];
  int dev;
  int allow_plain_remote; /* tokens over plain HTTP off loopback */
  gd_http_limits http;
  int max_watchers;
  int default_ttl_s;
  int event_window; /* events kept for watchers */
} gd_config;

typedef struct gd_metrics {
  uint64_t requests[8][600]; /* route class x HTTP status */
  uint64_t evictions;
} gd_metrics;

typedef struct gd_state {
  struct event_base *base;
  gd_config cfg;
  gd_store *store;
  const char *store_id;
  int64_t revision; /* the last revision used */
  int64_t reserved; /* persisted high-water mark */
  gd_policy_cur *policies; /* sorted by service */
  size_t npolicies, cap_policies;
  gray_policyset_t *compiled; /* the current policies, for explain */
  gd_token *tokens;
  size_t ntokens;
  gd_registry *registry;
  gd_watch *watch;
  gd_http *http;
  gd_metrics metrics;
  struct gd_agents *agents; /* gray-agent reports (api/agents.c), memory only */
  /* audit entries waiting for the next flush (batched for registry churn) */
  gd_audit_rec *audit_buf;
  size_t naudit, cap_audit;
  struct event *audit_timer; /* also flushes the instance saves */
  /* registry changes waiting to be saved (body NULL: a removal) */
  struct gd_inst_save {
    char *service, *id, *body;
    size_t body_len;
    int64_t revision;
  } *inst_buf;
  size_t ninst, cap_inst;
} gd_state;

/* Take the next revision, reserving a new block in the store when needed.
 * Returns 0 and *rev, or -1 when the store failed (err filled). */
int gd_next_revision(gd_state *s, int64_t *rev, gray_error_t *err);

/* Logging: one line to stderr, "time level message". */
void gd_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Milliseconds since the epoch / on a monotonic clock. */
int64_t gd_now_ms(void);
int64_t gd_mono_ms(void);

/* Audit one write attempt (buffered; flushed within 100 ms, or at once when
 * flush is set). */
void gd_audit(gd_state *s, const char *token, const char *op, const char *target, int status,
              const char *message, int flush);
void gd_audit_flush(gd_state *s);

/* Queue the save of a registry change for the store (batched like the
 * audit: within 100 ms, one transaction). body is the instance's JSON,
 * taken over (freed here); NULL records a removal. A crash may lose the
 * last 100 ms of saves: the registry is ephemeral, a lost registration
 * comes back with the instance's next heartbeat (404, re-register) and a
 * lost removal is evicted one TTL after the restart. */
void gd_instance_save(gd_state *s, const char *service, const char *id, int64_t revision, char *body);
void gd_instance_flush(gd_state *s);
/* Both queues, now (the timer and shutdown). */
void gd_batch_flush(gd_state *s);
/* At start: the saved registry back into memory, each instance with a
 * fresh TTL. Records that do not validate are logged and skipped. */
int gd_registry_restore(gd_state *s, gray_error_t *err);

#endif
