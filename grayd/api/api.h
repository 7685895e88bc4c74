/* grayd API: one file per resource, a router, and reply helpers. */
#ifndef GRAYD_API_H
#define GRAYD_API_H

#include "grayd.h"

/* Route classes, for metrics. */
typedef enum {
  GD_R_POLICIES, GD_R_SERVICES, GD_R_WATCH, GD_R_SNAPSHOT, GD_R_EXPLAIN, GD_R_AUDIT, GD_R_AGENTS, GD_R_OTHER,
  GD_R_COUNT
} gd_route_class;

typedef struct gd_call {
  gd_state *s;
  gd_req *req;
  const gd_token *tok; /* NULL for unauthenticated routes */
  gd_route_class route;
  const char *seg[6]; /* path segments after /v1 */
  int nseg;
} gd_call;

/* The HTTP handler grayd installs. */
void gd_api_handle(gd_req *req, void *arg);

/* Replies: JSON with X-Gray-Revision (and extra "Name: v\r\n" lines). The
 * json_t is consumed. */
void gd_reply_json(gd_call *c, int status, json_t *body, const char *extra_headers);
void gd_reply_raw(gd_call *c, int status, const char *body, size_t len, const char *extra_headers);
void gd_reply_error(gd_call *c, int status, const char *code, const char *path, const char *message);
/* The policy parser's error as a 400 (or 413 for ETOOBIG). */
void gd_reply_gray_error(gd_call *c, const gray_error_t *err);

/* Resources. */
void gd_api_policies(gd_call *c);
void gd_api_services(gd_call *c);
void gd_api_watch(gd_call *c);
void gd_api_snapshot(gd_call *c);
void gd_api_explain(gd_call *c);
void gd_api_audit(gd_call *c);
void gd_api_metrics(gd_call *c);
/* /v1/agents: gray-agent reports, in memory (agents.c). */
void gd_api_agents(gd_call *c);
void gd_agents_free(gd_state *s);

/* Policies kept in memory (loaded from the store at start). */
int gd_policies_load(gd_state *s, gray_error_t *err);
void gd_policies_free(gd_state *s);
/* {"revision": R, "policies": [...]} of the current policies (new ref). */
json_t *gd_policies_set_json(gd_state *s);

/* The token name for audits ("-" when none). */
const char *gd_call_actor(const gd_call *c);

/* Parse a non-negative integer query parameter; 1 found and valid, 0 absent,
 * -1 invalid (an error reply was sent). */
int gd_query_int(gd_call *c, const char *name, int64_t lo, int64_t hi, int64_t *out);

#endif
