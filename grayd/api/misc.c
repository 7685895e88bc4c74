/* /v1/explain, /v1/audit, /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "gray/json.h"
#include "registry/registry.h"
#include "watch/watch.h"

void gd_api_explain(gd_call *c) {
  if (strcmp(gd_req_method(c->req), "POST")) {
    gd_reply_error(c, 405, "EMETHOD", "", "use POST /v1/explain");
    return;
  }
  size_t len;
  const char *body = gd_req_body(c->req, &len);
  json_error_t jerr;
  json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!j || !json_is_object(j)) {
    char msg[300];
    snprintf(msg, sizeof msg, "body must be {\"service\": S, \"request\": {...}}%s%s", j ? "" : ": ",
             j ? "" : jerr.text);
    json_decref(j);
    gd_reply_error(c, 400, "EJSON", "", msg);
    return;
  }
  const char *key;
  json_t *v;
  json_object_foreach(j, key, v) {
    if (strcmp(key, "service") && strcmp(key, "request")) {
      json_decref(j);
      gd_reply_error(c, 400, "ESCHEMA", key, "unknown key (allowed: service, request)");
      return;
    }
  }
  json_t *svc = json_object_get(j, "service"), *rq = json_object_get(j, "request");
  if (!json_is_string(svc)) {
    json_decref(j);
    gd_reply_error(c, 400, "ESCHEMA", "service", "must be a service name");
    return;
  }
  const gray_policy_t *p =
      c->s->compiled ? gray_policyset_find(c->s->compiled, json_string_value(svc), json_string_length(svc)) : NULL;
  if (!p) {
    json_decref(j);
    gd_reply_error(c, 404, "ENOTFOUND", "service", "no policy for this service");
    return;
  }
  gray_json_request_t *jr = NULL;
  gray_error_t err;
  json_t *empty = rq ? NULL : json_object();
  if (gray_json_request_new(rq ? rq : empty, &jr, &err) != GRAY_OK) {
    char path[GRAY_ERROR_PATH_MAX + 16];
    snprintf(path, sizeof path, "request%s%s", err.path[0] ? "." : "", err.path);
    json_decref(empty);
    json_decref(j);
    gd_reply_error(c, 400, "ESCHEMA", path, err.message);
    return;
  }
  gray_trace_t *t = gray_trace_new();
  gray_decision_t d;
  if (!t || gray_explain(p, gray_json_request_get(jr), &d, t) != GRAY_OK) abort();
  json_t *out = gray_decision_to_json(&d, t);
  if (!out) abort();
  json_object_set_new(out, "revision", json_integer(c->s->revision));
  gray_trace_free(t);
  gray_json_request_free(jr);
  json_decref(empty);
  json_decref(j);
  gd_reply_json(c, 200, out, NULL);
}

static int audit_one(void *ctx, const gd_audit_rec *r) {
  char when[40];
  time_t secs = (time_t)(r->time_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_array_append_new(ctx, json_pack("{s:I,s:s,s:s,s:s,s:s,s:i,s:s}", "id", (json_int_t)r->id, "time", when,
                                       "token", r->token ? r->token : "-", "op", r->op ? r->op : "",
                                       "target", r->target ? r->target : "", "status", r->status, "message",
                                       r->message ? r->message : ""));
  return 0;
}

void gd_api_audit(gd_call *c) {
  if (strcmp(gd_req_method(c->req), "GET")) {
    gd_reply_error(c, 405, "EMETHOD", "", "use GET /v1/audit");
    return;
  }
  int64_t limit = 100, before = 0;
  if (gd_query_int(c, "limit", 1, 1000, &limit) < 0) return;
  if (gd_query_int(c, "before", 0, INT64_MAX, &before) < 0) return;
  gd_audit_flush(c->s);
  json_t *arr = json_array();
  gray_error_t err;
  if (c->s->store->ops->audit_list(c->s->store, before, (int)limit, audit_one, arr, &err) != GRAY_OK) {
    json_decref(arr);
    gd_reply_error(c, 503, "EIO", "", "the store failed to read the audit log");
    return;
  }
  gd_reply_json(c, 200, json_pack("{s:o}", "audit", arr), NULL);
}

static void grow_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>
static void grow_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < *cap - *len) {
      *len += (size_t)n;
      return;
    }
    *cap = *cap * 2 + (size_t)n;
    char *nb = realloc(*buf, *cap);
    if (!nb) abort();
    *buf = nb;
  }
}

void gd_api_metrics(gd_call *c) {
  static const char *routes[GD_R_COUNT] = {"policies", "services", "watch",  "snapshot",
                                           "explain",  "audit",    "agents", "other"};
  gd_state *s = c->s;
  size_t cap = 4096, len = 0;
  char *b = malloc(cap);
  if (!b) abort();
  b[0] = '\0';
  grow_append(&b, &len, &cap, "# HELP grayd_requests_total HTTP requests answered, by route and status.\n"
                              "# TYPE grayd_requests_total counter\n");
  for (int r = 0; r < GD_R_COUNT; r++)
    for (int k = 100; k < 600; k++)
      if (s->metrics.requests[r][k])
        grow_append(&b, &len, &cap, "grayd_requests_total{route=\"%s\",code=\"%d\"} %llu\n", routes[r], k,
                    (unsigned long long)s->metrics.requests[r][k]);
  gd_http_stats hs;
  gd_http_get_stats(s->http, &hs);
  grow_append(&b, &len, &cap,
              "# TYPE grayd_revision gauge\ngrayd_revision %lld\n"
              "# TYPE grayd_watchers gauge\ngrayd_watchers %d\n"
              "# TYPE grayd_connections gauge\ngrayd_connections %d\n"
              "# TYPE grayd_connections_refused_total counter\ngrayd_connections_refused_total %llu\n"
              "# TYPE grayd_requests_timed_out_total counter\ngrayd_requests_timed_out_total %llu\n"
              "# TYPE grayd_bad_requests_total counter\ngrayd_bad_requests_total %llu\n"
              "# TYPE grayd_evictions_total counter\ngrayd_evictions_total %llu\n"
              "# TYPE grayd_policies gauge\ngrayd_policies %zu\n"
              "# HELP grayd_instances Live instances by service and version.\n# TYPE grayd_instances gauge\n",
              (long long)s->revision, gd_watch_count(s->watch), hs.open_conns,
              (unsigned long long)hs.refused_over_cap, (unsigned long long)hs.timed_out,
              (unsigned long long)hs.bad_requests, (unsigned long long)s->metrics.evictions, s->npolicies);
  gd_service_list *sl;
  size_t n = gd_registry_services(s->registry, &sl);
  for (size_t i = 0; i < n; i++) {
    /* Versions per service: small, count with a scan per distinct version. */
    for (gd_instance *in = sl[i].head; in; in = in->snext) {
      int seen = 0;
      for (gd_instance *p = sl[i].head; p != in; p = p->snext)
        if (!strcmp(p->version, in->version)) seen = 1;
      if (seen) continue;
      int cnt = 0;
      for (gd_instance *p = in; p; p = p->snext)
        if (!strcmp(p->version, in->version)) cnt++;
      grow_append(&b, &len, &cap, "grayd_instances{service=\"%s\",version=\"%s\"} %d\n", sl[i].service,
                  in->version, cnt);
    }
  }
  c->s->metrics.requests[GD_R_OTHER][200]++;
  char hdr[64];
  snprintf(hdr, sizeof hdr, "X-Gray-Revision: %lld\r\n", (long long)s->revision);
  gd_req_reply(c->req, 200, "text/plain; version=0.0.4", b, len, hdr);
  free(b);
}
