/* /v1/agents: what each gray-agent (one per Nginx host) reports — the
 * revision it applied, the last error, its Nginx master. Kept in memory
 * only: a restarted grayd knows an agent again at its next report (agents
 * report at least every 30 s). Reports are not revisions: nothing here is
 * watched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "core/model.h"

#define AGENTS_MAX 1024
#define AGENT_BODY_MAX 16384
#define AGENT_ERROR_MAX 4096
#define AGENT_HOST_MAX 253

typedef struct gd_agent {
  char id[GRAY_NAME_LEN_MAX + 1];
  char host[AGENT_HOST_MAX + 1];
  char peer[64];           /* address the last report came from */
  int64_t revision;        /* applied */
  int64_t seen_revision;   /* newest received; -1 when not reported */
  int64_t error_revision;  /* the revision last_error is about; -1 none */
  int64_t policy_revision; /* what Nginx's gray_status showed; -1 none */
  int64_t upstreams_revision;
  int64_t nginx_pid;   /* 0: not reported */
  char *last_error;    /* NULL: none */
  int64_t reported_ms; /* wall clock, for people */
  int64_t reported_mono;
  uint64_t reports;
} gd_agent;

struct gd_agents {
  gd_agent *v; /* sorted by id */
  size_t n, cap;
};

void gd_agents_free(gd_state *s) {
  if (!s->agents) return;
  for (size_t i = 0; i < s->agents->n; i++) free(s->agents->v[i].last_error);
  free(s->agents->v);
  free(s->agents);
  s->agents = NULL;
}

static gd_agent *find(struct gd_agents *a, const char *id, size_t *pos) {
  size_t lo = 0, hi = a ? a->n : 0;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(a->v[mid].id, id);
    if (c == 0) {
      if (pos) *pos = mid;
      return &a->v[mid];
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  if (pos) *pos = lo;
  return NULL;
}

static void refuse(gd_call *c, const char *id, int status, const char *code, const char *path, const char *msg) {
  gd_audit(c->s, gd_call_actor(c), "agent.put", id, status, msg, 0);
  gd_reply_error(c, status, code, path, msg);
}

/* An optional integer field in lo..hi: 1 present and valid (*out), 0 absent
 * or null, -1 invalid (msg filled). */
static int opt_int(json_t *j, const char *key, int64_t lo, int64_t hi, int64_t *out, char *msg, size_t msgsz) {
  json_t *v = json_object_get(j, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
    snprintf(msg, msgsz, "must be an integer from %lld to %lld", (long long)lo, (long long)hi);
    return -1;
  }
  *out = json_integer_value(v);
  return 1;
}

/* The report's schema: {"host": host name or IP, "revision": applied,
 * "seen_revision"?, "error_revision"?, "policy_revision"?,
 * "upstreams_revision"?, "last_error"?: string or null, "nginx_pid"?: int or
 * null}. NULL when valid (r filled, r->last_error borrowed from j), else the
 * key at fault with the reason in msg. */
static const char *check_report(json_t *j, gd_agent *r, const char **last_error, char *msg, size_t msgsz) {
  static const char *const keys[] = {"host", "revision", "seen_revision", "error_revision", "policy_revision",
                                     "upstreams_revision", "last_error", "nginx_pid"};
  const char *key;
  json_t *v;
  json_object_foreach(j, key, v) {
    size_t k = 0;
    while (k < sizeof keys / sizeof keys[0] && strcmp(key, keys[k])) k++;
    if (k == sizeof keys / sizeof keys[0]) {
      snprintf(msg, msgsz,
               "unknown key (allowed: host, revision, seen_revision, error_revision, policy_revision, "
               "upstreams_revision, last_error, nginx_pid)");
      return key; /* lives in j */
    }
  }
  json_t *host = json_object_get(j, "host");
  if (!json_is_string(host) || json_string_length(host) > AGENT_HOST_MAX ||
      strlen(json_string_value(host)) != json_string_length(host) || !gray__host_valid(json_string_value(host))) {
    snprintf(msg, msgsz, "must be the agent's host name or IP address (at most %d bytes)", AGENT_HOST_MAX);
    return "host";
  }
  snprintf(r->host, sizeof r->host, "%s", json_string_value(host));
  if (opt_int(j, "revision", 0, INT64_MAX, &r->revision, msg, msgsz) != 1) {
    if (!json_object_get(j, "revision") || json_is_null(json_object_get(j, "revision")))
      snprintf(msg, msgsz, "is required: the revision the agent applied (0: none yet)");
    return "revision";
  }
  static const char *const revs[] = {"seen_revision", "error_revision", "policy_revision", "upstreams_revision"};
  int64_t *dst[] = {&r->seen_revision, &r->error_revision, &r->policy_revision, &r->upstreams_revision};
  for (size_t i = 0; i < 4; i++) {
    *dst[i] = -1;
    if (opt_int(j, revs[i], 0, INT64_MAX, dst[i], msg, msgsz) < 0) return revs[i];
  }
  r->nginx_pid = 0;
  if (opt_int(j, "nginx_pid", 1, INT32_MAX, &r->nginx_pid, msg, msgsz) < 0) return "nginx_pid";
  json_t *le = json_object_get(j, "last_error");
  *last_error = NULL;
  if (le && !json_is_null(le)) {
    if (!json_is_string(le) || json_string_length(le) > AGENT_ERROR_MAX ||
        strlen(json_string_value(le)) != json_string_length(le)) {
      snprintf(msg, msgsz, "must be null or a string of at most %d bytes without NUL", AGENT_ERROR_MAX);
      return "last_error";
    }
    if (json_string_length(le)) *last_error = json_string_value(le);
  }
  return NULL;
}

static int same_report(const gd_agent *a, const gd_agent *r, const char *le) {
  return !strcmp(a->host, r->host) && a->revision == r->revision && a->error_revision == r->error_revision &&
         a->nginx_pid == r->nginx_pid && (a->last_error ? le && !strcmp(a->last_error, le) : !le);
}

static void put_agent(gd_call *c, const char *id) {
  gd_state *s = c->s;
  size_t len;
  const char *body = gd_req_body(c->req, &len);
  if (len > AGENT_BODY_MAX) {
    refuse(c, id, 413, "ETOOBIG", "", "an agent report is at most 16384 bytes");
    return;
  }
  json_error_t jerr;
  json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!j || !json_is_object(j)) {
    char msg[300];
    snprintf(msg, sizeof msg, "body must be a JSON object: %s", j ? "not an object" : jerr.text);
    json_decref(j);
    refuse(c, id, 400, "EJSON", "", msg);
    return;
  }
  gd_agent r;
  memset(&r, 0, sizeof r);
  const char *le = NULL;
  char msg[GRAY_ERROR_TEXT_MAX];
  const char *bad = check_report(j, &r, &le, msg, sizeof msg);
  if (bad) {
    refuse(c, id, 400, "ESCHEMA", bad, msg);
    json_decref(j); /* after the reply: bad may live in j */
    return;
  }
  size_t pos;
  gd_agent *a = find(s->agents, id, &pos);
  int created = !a;
  if (!a) {
    if (!s->agents && !(s->agents = calloc(1, sizeof *s->agents))) abort();
    struct gd_agents *all = s->agents;
    if (all->n >= AGENTS_MAX) {
      json_decref(j);
      refuse(c, id, 503, "EBUSY", "", "too many agents (1024): DELETE /v1/agents/{id} the ones that are gone");
      return;
    }
    if (all->n == all->cap) {
      size_t cap = all->cap ? all->cap * 2 : 8;
      gd_agent *nv = realloc(all->v, cap * sizeof *nv);
      if (!nv) abort();
      all->v = nv;
      all->cap = cap;
    }
    memmove(&all->v[pos + 1], &all->v[pos], (all->n - pos) * sizeof *all->v);
    all->n++;
    a = &all->v[pos];
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", id);
  }
  int changed = created || !same_report(a, &r, le);
  /* The peer without its port: which machine sent the report. */
  snprintf(r.peer, sizeof r.peer, "%s", gd_req_peer(c->req));
  char *colon = strrchr(r.peer, ':');
  if (colon && colon != r.peer) *colon = '\0';
  memcpy(a->host, r.host, sizeof a->host);
  memcpy(a->peer, r.peer, sizeof a->peer);
  a->revision = r.revision;
  a->seen_revision = r.seen_revision;
  a->error_revision = r.error_revision;
  a->policy_revision = r.policy_revision;
  a->upstreams_revision = r.upstreams_revision;
  a->nginx_pid = r.nginx_pid;
  free(a->last_error);
  a->last_error = le ? strdup(le) : NULL;
  if (le && !a->last_error) abort();
  a->reported_ms = gd_now_ms();
  a->reported_mono = gd_mono_ms();
  a->reports++;
  /* A report that only says "still here" is not audited, as a heartbeat is
   * not; a new agent, a new revision or a new error is. */
  if (changed) {
    char what[160];
    snprintf(what, sizeof what, "revision %lld%s", (long long)a->revision, a->last_error ? ", with an error" : "");
    gd_audit(s, gd_call_actor(c), "agent.put", id, 200, what, 0);
    gd_log(a->last_error ? "warn" : "info", "agent %s (%s): revision %lld%s", id, a->host, (long long)a->revision,
           a->last_error ? ", reports an error" : "");
  }
  json_decref(j);
  gd_reply_json(c, 200,
                json_pack("{s:s,s:I,s:b}", "id", id, "revision", (json_int_t)s->revision, "created", created),
                NULL);
}

static json_t *agent_json(const gd_agent *a, int64_t now_mono) {
  char when[40];
  time_t secs = (time_t)(a->reported_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:s,s:I,s:I}", "id", a->id, "host", a->host, "peer", a->peer, "revision",
                        (json_int_t)a->revision, "reported_at", when, "seconds_since_report",
                        (json_int_t)((now_mono - a->reported_mono) / 1000), "reports", (json_int_t)a->reports);
  if (!o) abort();
  json_object_set_new(o, "last_error", a->last_error ? json_string(a->last_error) : json_null());
  json_object_set_new(o, "nginx_pid", a->nginx_pid ? json_integer(a->nginx_pid) : json_null());
  static const char *const names[] = {"seen_revision", "error_revision", "policy_revision", "upstreams_revision"};
  const int64_t vals[] = {a->seen_revision, a->error_revision, a->policy_revision, a->upstreams_revision};
  for (size_t i = 0; i < 4; i++)
    json_object_set_new(o, names[i], vals[i] >= 0 ? json_integer(vals[i]) : json_null());
  return o;
}

void gd_api_agents(gd_call *c) {
  const char *m = gd_req_method(c->req);
  gd_state *s = c->s;
  if (c->nseg == 0) {
    if (strcmp(m, "GET")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use GET /v1/agents");
      return;
    }
    json_t *arr = json_array();
    int64_t now = gd_mono_ms();
    for (size_t i = 0; s->agents && i < s->agents->n; i++)
      json_array_append_new(arr, agent_json(&s->agents->v[i], now));
    gd_reply_json(c, 200, json_pack("{s:I,s:o}", "revision", (json_int_t)s->revision, "agents", arr), NULL);
    return;
  }
  if (c->nseg > 1) {
    gd_reply_error(c, 404, "ENOTFOUND", "", "no such route (try /v1/agents or /v1/agents/{id})");
    return;
  }
  const char *id = c->seg[0];
  char nmsg[GRAY_ERROR_TEXT_MAX], full[GRAY_ERROR_TEXT_MAX + 32];
  gray_str_t ids = {id, strlen(id)};
  if (gray__check_name(ids, nmsg, sizeof nmsg) != GRAY_OK) {
    snprintf(full, sizeof full, "agent id: %s", nmsg);
    if (strcmp(m, "GET")) gd_audit(s, gd_call_actor(c), "agent.put", "-", 400, "bad agent id", 0);
    gd_reply_error(c, 400, "EINVAL", "", full);
    return;
  }
  if (!strcmp(m, "PUT")) {
    put_agent(c, id);
    return;
  }
  size_t pos;
  gd_agent *a = find(s->agents, id, &pos);
  if (!strcmp(m, "GET")) {
    if (!a) gd_reply_error(c, 404, "ENOTFOUND", "", "no such agent");
    else gd_reply_json(c, 200, agent_json(a, gd_mono_ms()), NULL);
    return;
  }
  if (!strcmp(m, "DELETE")) {
    if (!a) {
      gd_audit(s, gd_call_actor(c), "agent.delete", id, 404, "no such agent", 0);
      gd_reply_error(c, 404, "ENOTFOUND", "", "no such agent");
      return;
    }
    free(a->last_error);
    memmove(a, a + 1, (s->agents->n - pos - 1) * sizeof *a);
    s->agents->n--;
    gd_audit(s, gd_call_actor(c), "agent.delete", id, 200, "", 0);
    gd_log("info", "agent %s forgotten", id);
    gd_reply_json(c, 200, json_pack("{s:s}", "id", id), NULL);
    return;
  }
  gd_reply_error(c, 405, "EMETHOD", "", "use PUT, GET or DELETE on /v1/agents/{id}");
}
