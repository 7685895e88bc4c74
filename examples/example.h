/* graylane examples — the plumbing the three example services share: flags,
 * the evhttp server, the SDK client and this instance's registration, the
 * request attributes a policy reads, the call to the next service and the
 * JSON answer that shows the route a request took.
 *
 * The interesting part of each example — decide, pick, call, forward the
 * tag — is in gateway.c, order.c and order_dal.c; nothing here decides.
 *
 * Every answer body is {"chain": [hop, hop, ...]} with one hop per line:
 *
 *   {"chain": [
 *     {"service": "gateway", "version": "v1", ...},
 *     {"service": "order-dal", "version": "v2", ...}
 *   ]}
 *
 * A caller puts its own hop in front of the hops its callee answered with,
 * so the gateway's answer shows the whole call chain. A hop that failed
 * carries "error", and the HTTP status says so (502 or 503). */
#ifndef GRAY_EXAMPLE_H
#define GRAY_EXAMPLE_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "gray/client.h"

/* One example service: its flags, event loop, HTTP server and SDK client. */
typedef struct ex_app_s {
  const char *service; /* "gateway", "order", "order-dal" */
  const char *follow;  /* policies and services the SDK follows */
  /* Flags (borrowed from argv or the environment). */
  const char *listen, *grayd, *token, *version, *cache, *id, *address;
  int ttl_s;
  /* Set up by ex_start. */
  char host[64];     /* listen host, without brackets */
  char self_id[64];  /* --id, or SERVICE-VERSION-PORT */
  int port;          /* the port bound (useful with --listen HOST:0) */
  struct event_base *base;
  struct evhttp *http;
  struct event *sigterm, *sigint;
  gray_client_t *client;
} ex_app_t;

/* Parse the common flags and start: bind the HTTP server, start the SDK
 * client (from the cache file when grayd is down), register this instance
 * and print "SERVICE: listening on http://HOST:PORT". `handler` answers
 * every request. Returns 0 when running, otherwise the process's exit code:
 * 64 for a bad command line, 1 when something failed (the reason is
 * printed). --help prints the usage and exits. */
int ex_start(ex_app_t *app, const char *service, const char *follow, int argc, char **argv,
             void (*handler)(struct evhttp_request *req, void *arg));

/* Run the event loop until SIGTERM or SIGINT, then deregister (the SDK's
 * stop), free everything and return the exit code. */
int ex_run(ex_app_t *app);

/* The attributes of an incoming request, as the evaluator reads them:
 * headers (the first EX_HEADERS_MAX), cookies from the Cookie header, the raw
 * query string, client address, path, method, host, and the incoming
 * X-Gray-Tag as `tag`. Everything points into `req`, which must outlive the
 * view. */
#define EX_HEADERS_MAX 64
typedef struct ex_view_s {
  gray_kv_request_t kv;
  gray_kv_t headers[EX_HEADERS_MAX];
  gray_request_t req; /* {gray_kv_lookup, &kv}: hand this to the SDK */
} ex_view_t;

void ex_view_init(ex_view_t *v, struct evhttp_request *req);
/* Set the tag the next decision reads ("" or NULL: none). `tag` must stay
 * valid while the view is used. */
void ex_view_set_tag(ex_view_t *v, const char *tag);

/* Hops. A hop is one line of JSON built into an evbuffer:
 *   ex_hop_begin(b, app, tag_in)  -> {"service": ..., "version": ..., "id": ..., "tag": tag_in
 *   ex_hop_lane(b, d)             -> , "lane": {"rule", "tag"}: the gateway policy's decision
 *   ex_hop_call(b, svc, d, ep)    -> , "call": {"service", "policy", "rule", "decided",
 *                                      "version", "instance", "fell_back", "tag", "revision"}:
 *                                      the decision for a call and the instance picked
 *   ex_hop_error(b, fmt, ...)     -> , "error": "..."
 *   ex_hop_no_policy(b, app, p)   -> , "error": why there is no decision with policy p
 *   ex_hop_end(b)                 -> }
 * Strings are escaped, so a hop is always one line. */
void ex_hop_begin(struct evbuffer *b, const ex_app_t *app, const char *tag_in);
void ex_hop_lane(struct evbuffer *b, const gray_client_decision_t *d);
void ex_hop_call(struct evbuffer *b, const char *service, const gray_client_decision_t *d,
                 const gray_endpoint_t *ep);
void ex_hop_error(struct evbuffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ex_hop_no_policy(struct evbuffer *b, ex_app_t *app, const char *policy);
void ex_hop_end(struct evbuffer *b);

/* Answer `req` with {"chain": [hop]} and `status`. Takes ownership of
 * `hop` (a finished hop). */
void ex_reply(struct evhttp_request *req, int status, struct evbuffer *hop);

/* Call `ep` with GET `uri` (the incoming path and query), forwarding
 * `tag` in X-Gray-Tag when it is not empty, then answer `req` with `hop`
 * (unfinished: ex_hop_begin and friends, not ex_hop_end) in front of the
 * callee's hops and with the callee's status. When the callee does not
 * answer (refused, timed out, not an example service) the answer is 502
 * with an "error" on this hop. Takes ownership of `hop`. */
void ex_call(ex_app_t *app, struct evhttp_request *req, const gray_endpoint_t *ep, const char *tag,
             struct evbuffer *hop);

/* The incoming X-Gray-Tag, or "" when there is none. Borrowed from req. */
const char *ex_tag_in(struct evhttp_request *req);

#endif
