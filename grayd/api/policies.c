/* /v1/policies: current policies with revisions, history, rollback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "core/model.h"
#include "gray/json.h"
#include "watch/watch.h"

static gd_policy_cur *find(gd_state *s, const char *service, size_t *pos) {
  size_t lo = 0, hi = s->npolicies;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(s->policies[mid].service, service);
    if (c == 0) {
      if (pos) *pos = mid;
      return &s->policies[mid];
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  if (pos) *pos = lo;
  return NULL;
}

static char *xstrndup(const char *p, size_t n) {
  char *d = malloc(n + 1);
  if (!d) abort();
  memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

static void set_current(gd_state *s, const char *service, int64_t rev, const char *body, size_t len) {
  size_t pos;
  gd_policy_cur *cur = find(s, service, &pos);
  if (!cur) {
    if (s->npolicies == s->cap_policies) {
      size_t cap = s->cap_policies ? s->cap_policies * 2 : 16;
      gd_policy_cur *n = realloc(s->policies, cap * sizeof(*n));
      if (!n) abort();
      s->policies = n;
      s->cap_policies = cap;
    }
    memmove(&s->policies[pos + 1], &s->policies[pos], (s->npolicies - pos) * sizeof(*s->policies));
    s->npolicies++;
    cur = &s->policies[pos];
    cur->service = xstrndup(service, strlen(service));
  } else {
    free(cur->body);
  }
  cur->revision = rev;
  cur->body = xstrndup(body, len);
  cur->body_len = len;
}

static void remove_current(gd_state *s, const char *service) {
  size_t pos;
  gd_policy_cur *cur = find(s, service, &pos);
  if (!cur) return;
  free(cur->service);
  free(cur->body);
  memmove(&s->policies[pos], &s->policies[pos + 1], (s->npolicies - pos - 1) * sizeof(*s->policies));
  s->npolicies--;
}

json_t *gd_policies_set_json(gd_state *s) {
  json_t *arr = json_array();
  for (size_t i = 0; i < s->npolicies; i++) {
    json_t *p = json_loadb(s->policies[i].body, s->policies[i].body_len, 0, NULL);
    if (p) json_array_append_new(arr, p);
  }
  return json_pack("{s:I,s:o}", "revision", (json_int_t)s->revision, "policies", arr);
}

/* Recompile the current policies for explain; they were each validated on
 * the way in, so a failure here is only out of memory. */
static void recompile(gd_state *s) {
  json_t *doc = gd_policies_set_json(s);
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  gray_policyset_t *set = NULL;
  gray_error_t err;
  if (text && gray_policyset_parse(text, strlen(text), GRAY_PARSE_SET, &set, &err) != GRAY_OK)
    gd_log("error", "policies: recompile failed: %s: %s", err.path, err.message);
  free(text);
  if (set) {
    gray_policyset_release(s->compiled);
    s->compiled = set;
  }
}

static int load_one(void *ctx, const gd_policy_rec *r) {
  set_current(ctx, r->service, r->revision, r->body, r->body_len);
  return 0;
}

int gd_policies_load(gd_state *s, gray_error_t *err) {
  int rc = s->store->ops->policy_each(s->store, load_one, s, err);
  if (rc == GRAY_OK) recompile(s);
  return rc;
}

void gd_policies_free(gd_state *s) {
  for (size_t i = 0; i < s->npolicies; i++) {
    free(s->policies[i].service);
    free(s->policies[i].body);
  }
  free(s->policies);
  s->policies = NULL;
  s->npolicies = s->cap_policies = 0;
  gray_policyset_release(s->compiled);
  s->compiled = NULL;
}

/* If-Match: -1 absent, else the revision; -2 malformed (replied). */
static int64_t if_match(gd_call *c) {
  const char *h = gd_req_header(c->req, "if-match");
  if (!h) return -1;
  if (*h == '"') h++;
  int64_t v = 0;
  const char *d = h;
  for (; *d >= '0' && *d <= '9'; d++) {
    if (v > INT64_MAX / 10 - 10) break;
    v = v * 10 + (*d - '0');
  }
  if (d == h || (*d && !(*d == '"' && !d[1]))) {
    gd_reply_error(c, 400, "EINVAL", "", "If-Match must be a revision number (0: only if absent)");
    return -2;
  }
  return v;
}

static int check_service_name(gd_call *c, const char *service) {
  char msg[GRAY_ERROR_TEXT_MAX];
  gray_str_t sv = {service, strlen(service)};
  if (gray__check_name(sv, msg, sizeof msg) == GRAY_OK) return 1;
  if (strcmp(gd_req_method(c->req), "GET")) gd_audit(c->s, gd_call_actor(c), "policy.write", service, 400, msg, 0);
  gd_reply_error(c, 400, "EINVAL", "", msg);
  return 0;
}

static const char *op_audit(const char *op) {
  return !strcmp(op, "delete") ? "policy.delete" : !strcmp(op, "rollback") ? "policy.rollback" : "policy.put";
}

/* The write path shared by PUT, rollback and DELETE: CAS in memory (this
 * grayd owns the store), then one durable store transaction, then memory,
 * watchers, audit, reply. */
static void write_policy(gd_call *c, const char *service, const char *op, const char *body, size_t len,
                         int64_t expect, int64_t rolled_from) {
  gd_state *s = c->s;
  gd_policy_cur *cur = find(s, service, NULL);
  int64_t current = cur ? cur->revision : 0;
  char msg[256];
  if (expect >= 0 && expect != current) {
    snprintf(msg, sizeof msg, "If-Match %lld does not hold: the policy's revision is %lld", (long long)expect,
             (long long)current);
    gd_audit(s, gd_call_actor(c), op_audit(op), service, 412, msg, 1);
    gd_reply_error(c, 412, "ECONFLICT", "", msg);
    return;
  }
  if (!body && !cur) {
    gd_audit(s, gd_call_actor(c), op_audit(op), service, 404, "no policy", 1);
    gd_reply_error(c, 404, "ENOTFOUND", "", "no policy for this service");
    return;
  }
  gray_error_t err;
  int64_t rev;
  if (gd_next_revision(s, &rev, &err) != 0) {
    gd_log("error", "store: %s", err.message);
    gd_audit(s, gd_call_actor(c), op_audit(op), service, 503, "store failure", 1);
    gd_reply_error(c, 503, "EIO", "", "the store failed; nothing was changed");
    return;
  }
  gd_policy_write w = {service, op, gd_call_actor(c), body, len, rev, expect >= 0 ? expect : -1, gd_now_ms()};
  int result = GD_STORE_OK;
  int64_t store_cur = 0;
  if (s->store->ops->policy_write(s->store, &w, &result, &store_cur, &err) != GRAY_OK ||
      result != GD_STORE_OK) {
    s->revision = rev - 1; /* nothing used it */
    gd_log("error", "store: policy %s %s failed: %s", op, service,
           result != GD_STORE_OK ? "store and memory disagree" : err.message);
    gd_audit(s, gd_call_actor(c), op_audit(op), service, 503, "store failure", 1);
    gd_reply_error(c, 503, "EIO", "", "the store failed; nothing was changed");
    return;
  }
  int created = cur == NULL;
  if (body) {
    set_current(s, service, rev, body, len);
    gd_watch_event(s->watch, rev, "policy.put", service, NULL, "policy", json_loadb(body, len, 0, NULL));
  } else {
    remove_current(s, service);
    gd_watch_event(s->watch, rev, "policy.delete", service, NULL, NULL, NULL);
  }
  recompile(s);
  gd_log("info", "policy %s %s by %s: revision %lld", op, service, gd_call_actor(c), (long long)rev);
  gd_audit(s, gd_call_actor(c), op_audit(op), service, 200, "", 1);
  json_t *j = json_pack("{s:s,s:I}", "service", service, "revision", (json_int_t)rev);
  if (body && !rolled_from) json_object_set_new(j, "created", json_boolean(created));
  if (rolled_from) json_object_set_new(j, "rolled_back_to", json_integer(rolled_from));
  gd_reply_json(c, 200, j, NULL);
}

/* Validate a policy document for `service`; on success returns its compact
 * canonical text (malloc), else replies 400 and returns NULL. */
static char *validate(gd_call *c, const char *service, const char *body, size_t len) {
  gray_policyset_t *set = NULL;
  gray_error_t err;
  if (gray_policyset_parse(body, len, GRAY_PARSE_ONE, &set, &err) != GRAY_OK) {
    gd_audit(c->s, gd_call_actor(c), "policy.put", service, err.code == GRAY_ETOOBIG ? 413 : 400,
             err.message, 1);
    gd_reply_gray_error(c, &err);
    return NULL;
  }
  const char *in_body = gray_policy_service(gray_policyset_at(set, 0));
  if (strcmp(in_body, service)) {
    char msg[300];
    snprintf(msg, sizeof msg, "service \"%s\" does not match the URL's service \"%s\"", in_body, service);
    gray_policyset_release(set);
    gd_audit(c->s, gd_call_actor(c), "policy.put", service, 400, msg, 1);
    gd_reply_error(c, 400, "ESCHEMA", "service", msg);
    return NULL;
  }
  gray_policyset_release(set);
  json_t *j = json_loadb(body, len, 0, NULL);
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!text) abort();
  return text;
}

static void history(gd_call *c, const char *service);

static int hist_one(void *ctx, const gd_policy_rec *r) {
  json_t *arr = ctx;
  char when[40];
  time_t secs = (time_t)(r->time_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_t *pol = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : json_null();
  json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:s,s:o}", "revision", (json_int_t)r->revision, "op",
                                       r->op, "actor", r->actor ? r->actor : "-", "time", when, "policy",
                                       pol ? pol : json_null()));
  return 0;
}

static void history(gd_call *c, const char *service) {
  int64_t limit = 100, before = 0;
  if (gd_query_int(c, "limit", 1, 1000, &limit) < 0) return;
  if (gd_query_int(c, "before", 0, INT64_MAX, &before) < 0) return;
  json_t *arr = json_array();
  gray_error_t err;
  if (c->s->store->ops->policy_history(c->s->store, service, before, (int)limit, hist_one, arr, &err) !=
      GRAY_OK) {
    json_decref(arr);
    gd_reply_error(c, 503, "EIO", "", "the store failed to read the history");
    return;
  }
  gd_reply_json(c, 200, json_pack("{s:s,s:o}", "service", service, "history", arr), NULL);
}

void gd_api_policies(gd_call *c) {
  gd_state *s = c->s;
  const char *m = gd_req_method(c->req);
  if (c->nseg == 0) {
    if (strcmp(m, "GET")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use GET /v1/policies, or PUT /v1/policies/{service}");
      return;
    }
    gd_reply_json(c, 200, gd_policies_set_json(s), NULL);
    return;
  }
  const char *service = c->seg[0];
  if (!check_service_name(c, service)) return;
  if (c->nseg == 1) {
    if (!strcmp(m, "GET")) {
      gd_policy_cur *cur = find(s, service, NULL);
      if (!cur) {
        gd_reply_error(c, 404, "ENOTFOUND", "", "no policy for this service");
        return;
      }
      char etag[64];
      snprintf(etag, sizeof etag, "ETag: \"%lld\"\r\n", (long long)cur->revision);
      size_t n = cur->body_len;
      char *withnl = malloc(n + 1);
      if (!withnl) abort();
      memcpy(withnl, cur->body, n);
      withnl[n] = '\n';
      gd_reply_raw(c, 200, withnl, n + 1, etag);
      free(withnl);
      return;
    }
    if (!strcmp(m, "PUT")) {
      int64_t expect = if_match(c);
      if (expect == -2) return;
      size_t len;
      const char *body = gd_req_body(c->req, &len);
      char *text = validate(c, service, body, len);
      if (!text) return;
      write_policy(c, service, "put", text, strlen(text), expect, 0);
      free(text);
      return;
    }
    if (!strcmp(m, "DELETE")) {
      int64_t expect = if_match(c);
      if (expect == -2) return;
      write_policy(c, service, "delete", NULL, 0, expect, 0);
      return;
    }
    gd_reply_error(c, 405, "EMETHOD", "", "use GET, PUT or DELETE on /v1/policies/{service}");
    return;
  }
  if (c->nseg == 2 && !strcmp(c->seg[1], "history")) {
    if (strcmp(m, "GET")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use GET on .../history");
      return;
    }
    history(c, service);
    return;
  }
  if (c->nseg == 2 && !strcmp(c->seg[1], "rollback")) {
    if (strcmp(m, "POST")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use POST .../rollback?to=REV");
      return;
    }
    int64_t to = 0, expect = if_match(c);
    if (expect == -2) return;
    int got = gd_query_int(c, "to", 1, INT64_MAX, &to);
    if (got < 0) return;
    if (got == 0) {
      gd_reply_error(c, 400, "EINVAL", "to", "rollback needs ?to=REV (a revision from the history)");
      return;
    }
    gd_policy_rec rec;
    gray_error_t err;
    memset(&rec, 0, sizeof rec);
    int rc = s->store->ops->policy_at(s->store, service, to, &rec, &err);
    if (rc != GRAY_OK && rc != GRAY_ENOTFOUND) {
      gd_log("error", "store: reading %s at %lld: %s", service, (long long)to, err.message);
      gd_reply_error(c, 503, "EIO", "", "the store failed to read the history");
      return;
    }
    if (rc != GRAY_OK || !rec.body) {
      char msg[200];
      snprintf(msg, sizeof msg, "revision %lld is not a stored version of this policy%s", (long long)to,
               rc == GRAY_OK ? " (it deleted the policy)" : "");
      gd_policy_rec_clear(&rec);
      gd_audit(s, gd_call_actor(c), "policy.rollback", service, 404, msg, 1);
      gd_reply_error(c, 404, "ENOTFOUND", "to", msg);
      return;
    }
    write_policy(c, service, "rollback", rec.body, rec.body_len, expect, to);
    gd_policy_rec_clear(&rec);
    return;
  }
  gd_reply_error(c, 404, "ENOTFOUND", "", "no such route");
}
