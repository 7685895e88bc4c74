/* grayd API router: authentication, role checks, dispatch, replies. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/model.h"

static const char *status_code_name(int status) {
  switch (status) {
    case 401: return "EAUTH";
    case 403: return "EFORBIDDEN";
    case 404: return "ENOTFOUND";
    case 405: return "EMETHOD";
    case 412: return "ECONFLICT";
    case 413: return "ETOOBIG";
    case 503: return "EBUSY";
  }
  return "EINVAL";
}

static void count(gd_call *c, int status) {
  if (status < 100 || status > 599) status = 0;
  c->s->metrics.requests[c->route][status]++;
}

void gd_reply_raw(gd_call *c, int status, const char *body, size_t len, const char *extra) {
  char hdr[512];
  /* One line per request, after the fact: who, what, outcome, how long.
   * Never the Authorization header or a body. */
  gd_log(status >= 500 ? "error" : status >= 400 ? "warn" : "info", "%s %s %s %d %zuB %s",
         gd_req_peer(c->req), gd_req_method(c->req), gd_req_path(c->req), status, len,
         c->tok ? c->tok->name : "-");
  snprintf(hdr, sizeof hdr, "X-Gray-Revision: %lld\r\nCache-Control: no-store\r\n%s",
           (long long)c->s->revision, extra ? extra : "");
  count(c, status);
  gd_req_reply(c->req, status, "application/json", body, len, hdr);
}

void gd_reply_json(gd_call *c, int status, json_t *body, const char *extra) {
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (!text) abort(); /* out of memory: daemons may abort */
  size_t n = strlen(text);
  char *withnl = realloc(text, n + 2);
  if (!withnl) abort();
  withnl[n] = '\n';
  withnl[n + 1] = '\0';
  gd_reply_raw(c, status, withnl, n + 1, extra);
  free(withnl);
}

void gd_reply_error(gd_call *c, int status, const char *code, const char *path, const char *message) {
  json_t *e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code ? code : status_code_name(status),
                        "path", path ? path : "", "message", message ? message : gd_http_reason(status));
  if (!e) {
    /* Messages may hold bytes that are not UTF-8 (echoed names): say less. */
    e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code ? code : status_code_name(status), "path",
                  "", "message", gd_http_reason(status));
  }
  gd_reply_json(c, status, e, NULL);
}

void gd_reply_gray_error(gd_call *c, const gray_error_t *err) {
  int status = err->code == GRAY_ETOOBIG ? 413 : err->code == GRAY_ENOMEM ? 503 : 400;
  gd_reply_error(c, status, gray_err_name(err->code), err->path, err->message);
}

const char *gd_call_actor(const gd_call *c) { return c->tok ? c->tok->name : "-"; }

int gd_query_int(gd_call *c, const char *name, int64_t lo, int64_t hi, int64_t *out) {
  char buf[32], msg[160];
  if (!gd_req_query_param(c->req, name, buf, sizeof buf)) {
    /* present but unreadable (too long, encoded NUL) counts as invalid */
    const char *q = gd_req_query(c->req);
    size_t nl = strlen(name);
    for (const char *p = q; p && *p;) {
      if (!strncmp(p, name, nl) && (p[nl] == '=' || p[nl] == '&' || !p[nl])) goto bad;
      p = strchr(p, '&');
      if (p) p++;
    }
    return 0;
  }
  {
    int64_t v = 0;
    if (!buf[0]) goto bad;
    for (char *d = buf; *d; d++) {
      if (*d < '0' || *d > '9' || v > INT64_MAX / 10 - 10) goto bad;
      v = v * 10 + (*d - '0');
    }
    if (v < lo || v > hi) goto bad;
    *out = v;
    return 1;
  }
bad:
  snprintf(msg, sizeof msg, "query parameter \"%s\" must be an integer from %lld to %lld", name,
           (long long)lo, (long long)hi);
  gd_reply_error(c, 400, "EINVAL", name, msg);
  return -1;
}

/* Bearer token → token entry, comparing SHA-256 digests in constant time
 * over every configured token. */
static const gd_token *authenticate(gd_state *s, gd_req *req) {
  const char *h = gd_req_header(req, "authorization");
  if (!h || strncasecmp(h, "Bearer ", 7)) return NULL;
  const char *tok = h + 7;
  while (*tok == ' ') tok++;
  size_t n = strlen(tok);
  if (n == 0 || n > 512) return NULL;
  unsigned char dig[32];
  unsigned int dl = 0;
  if (!EVP_Digest(tok, n, dig, &dl, EVP_sha256(), NULL) || dl != 32) return NULL;
  const gd_token *found = NULL;
  for (size_t i = 0; i < s->ntokens; i++) {
    if (CRYPTO_memcmp(dig, s->tokens[i].hash, 32) == 0) found = &s->tokens[i];
  }
  return found;
}

static const char *role_name(gd_role r) {
  switch (r) {
    case GD_ROLE_READ: return "read";
    case GD_ROLE_AGENT: return "agent";
    case GD_ROLE_WRITE: return "write";
    case GD_ROLE_ADMIN: return "admin";
    default: return "none";
  }
}

/* What a role may do: writes to policies need write; registry writes need
 * agent; `write` cannot write the registry and `agent` cannot write
 * policies; admin can do everything; reads need any role. */
static int allowed(gd_role role, gd_route_class route, int is_write) {
  if (role == GD_ROLE_ADMIN) return 1;
  if (!is_write) return role >= GD_ROLE_READ;
  if (route == GD_R_POLICIES) return role == GD_ROLE_WRITE;
  if (route == GD_R_SERVICES || route == GD_R_AGENTS) return role == GD_ROLE_AGENT;
  return 0;
}

_Static_assert(GD_R_COUNT <= sizeof(((gd_metrics *)0)->requests) / sizeof(((gd_metrics *)0)->requests[0]),
               "gd_metrics.requests needs a row per route class");

static int split(char *path, const char **seg, int max) {
  int n = 0;
  char *p = path;
  while (*p == '/') p++;
  while (*p) {
    if (n == max) return -1;
    seg[n++] = p;
    char *sl = strchr(p, '/');
    if (!sl) break;
    *sl = '\0';
    p = sl + 1;
    if (!*p) break; /* trailing slash */
  }
  return n;
}

void gd_api_handle(gd_req *req, void *arg) {
  gd_state *s = arg;
  gd_call c;
  char path[1024];
  memset(&c, 0, sizeof c);
  c.s = s;
  c.req = req;
  c.route = GD_R_OTHER;
  const char *method = gd_req_method(req);
  const char *raw = gd_req_path(req);
  if (strlen(raw) >= sizeof path) {
    gd_reply_error(&c, 404, "ENOTFOUND", "", "no such route");
    return;
  }
  memcpy(path, raw, strlen(raw) + 1);
  const char *seg[8];
  int nseg = split(path, seg, 8);

  if (nseg == 1 && !strcmp(seg[0], "healthz")) {
    json_t *j = json_pack("{s:s,s:I,s:s}", "status", "ok", "revision", (json_int_t)s->revision,
                          "store_id", s->store_id);
    gd_reply_json(&c, 200, j, NULL);
    return;
  }
  int is_metrics = nseg == 1 && !strcmp(seg[0], "metrics");
  if (!is_metrics && (nseg < 2 || strcmp(seg[0], "v1"))) {
    gd_reply_error(&c, 404, "ENOTFOUND", "", "no such route (the API lives under /v1; see docs/api.md)");
    return;
  }
  if (!is_metrics) {
    const char *res = seg[1];
    if (!strcmp(res, "policies")) c.route = GD_R_POLICIES;
    else if (!strcmp(res, "services")) c.route = GD_R_SERVICES;
    else if (!strcmp(res, "watch")) c.route = GD_R_WATCH;
    else if (!strcmp(res, "snapshot")) c.route = GD_R_SNAPSHOT;
    else if (!strcmp(res, "explain")) c.route = GD_R_EXPLAIN;
    else if (!strcmp(res, "audit")) c.route = GD_R_AUDIT;
    else if (!strcmp(res, "agents")) c.route = GD_R_AGENTS;
    else {
      gd_reply_error(&c, 404, "ENOTFOUND", "", "no such route");
      return;
    }
    for (int i = 2; i < nseg && i - 2 < 6; i++) c.seg[i - 2] = seg[i];
    c.nseg = nseg - 2;
  }

  int is_write = strcmp(method, "GET") && strcmp(method, "HEAD") &&
                 !(c.route == GD_R_EXPLAIN && !strcmp(method, "POST"));
  const char *opname = c.route == GD_R_POLICIES   ? "policy"
                       : c.route == GD_R_SERVICES ? "instance"
                       : c.route == GD_R_AGENTS   ? "agent"
                                                  : "api";
  char target[300];
  snprintf(target, sizeof target, "%s%s%s", c.nseg > 0 ? c.seg[0] : "", c.nseg > 2 ? "/" : "",
           c.nseg > 2 ? c.seg[2] : "");

  /* Tokens must not cross a network in plain text unless the operator said
   * so explicitly. */
  if (!s->cfg.tls_cert[0] && !gd_req_peer_is_loopback(req) && !s->cfg.allow_plain_remote) {
    if (is_write) gd_audit(s, "-", opname, target, 403, "plain HTTP from a non-loopback peer", 0);
    gd_reply_error(&c, 403, "EFORBIDDEN", "",
                   "tokens are not accepted over plain HTTP from other hosts: use TLS "
                   "(--tls-cert/--tls-key) or start grayd with --allow-plain-remote");
    return;
  }
  c.tok = authenticate(s, req);
  if (!c.tok) {
    if (is_write) gd_audit(s, "-", opname, target, 401, "missing or unknown token", 0);
    gd_reply_error(&c, 401, "EAUTH", "", "missing or unknown bearer token (Authorization: Bearer TOKEN)");
    return;
  }
  if (!allowed(c.tok->role, is_metrics ? GD_R_OTHER : c.route, is_write)) {
    char msg[200];
    snprintf(msg, sizeof msg, "token \"%s\" has role %s, which may not %s %s", c.tok->name,
             role_name(c.tok->role), is_write ? "change" : "read", is_metrics ? "metrics" : seg[1]);
    if (is_write) gd_audit(s, c.tok->name, opname, target, 403, "role not allowed", 0);
    gd_reply_error(&c, 403, "EFORBIDDEN", "", msg);
    return;
  }
  if (is_metrics) {
    gd_api_metrics(&c);
    return;
  }
  switch (c.route) {
    case GD_R_POLICIES: gd_api_policies(&c); break;
    case GD_R_SERVICES: gd_api_services(&c); break;
    case GD_R_WATCH: gd_api_watch(&c); break;
    case GD_R_SNAPSHOT: gd_api_snapshot(&c); break;
    case GD_R_EXPLAIN: gd_api_explain(&c); break;
    case GD_R_AUDIT: gd_api_audit(&c); break;
    case GD_R_AGENTS: gd_api_agents(&c); break;
    default: gd_reply_error(&c, 404, "ENOTFOUND", "", "no such route"); break;
  }
}
