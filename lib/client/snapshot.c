/* Snapshots and the writer's model of grayd.
 *
 * The model keeps what grayd said as JSON (policies by service, instances by
 * service and id) so events apply as small edits and a reset as a
 * replacement. A snapshot is built from it: the policies compiled into a
 * gray_policyset_t (from a set document, by the one parser every executor
 * uses), the instances into sorted arrays. Both parts are reference-counted
 * and reused by the next snapshot when only the other part changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "core/model.h"
#include "gray/json.h"

/* ---- reference counting ------------------------------------------------ */

gray__registry *gray__registry_ref(gray__registry *r) {
  if (r) atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
  return r;
}

void gray__registry_release(gray__registry *r) {
  if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
  gray__arena_free(&r->arena);
  gray__free(r);
}

gray__snapshot *gray__snapshot_ref(gray__snapshot *s) {
  if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

void gray__snapshot_release(gray__snapshot *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
  gray_policyset_release(s->set);
  gray__registry_release(s->reg);
  gray__free(s);
}

/* ---- lookups (readers) --------------------------------------------------- */

const gray__vgroup *gray__registry_find(const gray__registry *r, const char *service, const char *version) {
  size_t lo = 0, hi = r->nsvcs;
  const gray__svc *sv = NULL;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strcmp(service, r->svcs[mid].name);
    if (cmp == 0) {
      sv = &r->svcs[mid];
      break;
    }
    if (cmp < 0) hi = mid;
    else lo = mid + 1;
  }
  if (!sv) return NULL;
  lo = 0;
  hi = sv->ngroups;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strcmp(version, sv->groups[mid].version);
    if (cmp == 0) return &sv->groups[mid];
    if (cmp < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

/* ---- model ---------------------------------------------------------------- */

gray__model *gray__model_new(char *const *follow, size_t nfollow, const gray__logger *lg) {
  gray__model *m = gray__calloc(1, sizeof(*m));
  if (!m) return NULL;
  m->policies = json_object();
  m->services = json_object();
  if (!m->policies || !m->services) {
    gray__model_free(m);
    return NULL;
  }
  m->follow = follow;
  m->nfollow = nfollow;
  if (lg) m->lg = *lg;
  return m;
}

void gray__model_free(gray__model *m) {
  if (!m) return;
  json_decref(m->policies);
  json_decref(m->services);
  gray_policyset_release(m->set);
  gray__registry_release(m->reg);
  gray__free(m);
}

static int follows(const gray__model *m, const char *service) {
  if (!m->follow) return 1;
  for (size_t i = 0; i < m->nfollow; i++)
    if (!strcmp(m->follow[i], service)) return 1;
  return 0;
}

static int name_ok(const char *s, size_t len) {
  char msg[GRAY_ERROR_TEXT_MAX];
  gray_str_t v = {s, len};
  return gray__check_name(v, msg, sizeof msg) == GRAY_OK;
}

static int json_name_ok(const json_t *v) {
  return json_is_string(v) && name_ok(json_string_value(v), json_string_length(v)) &&
         strlen(json_string_value(v)) == json_string_length(v);
}

static int store_id_ok(const json_t *v) {
  if (!json_is_string(v)) return 0;
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  if (n == 0 || n > GRAY__STORE_ID_MAX || strlen(s) != n) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' ||
          ch == '_'))
      return 0;
  }
  return 1;
}

/* grayd's instance object reduced to what a snapshot keeps, validated.
 * NULL when invalid (*why says which field) or out of memory (*why NULL). */
static json_t *instance_reduce(const json_t *in, const char **why) {
  json_t *id = json_object_get(in, "id"), *addr = json_object_get(in, "address"),
         *port = json_object_get(in, "port"), *ver = json_object_get(in, "version");
  *why = NULL;
  if (!json_is_object(in)) *why = "not an object";
  else if (!json_name_ok(id)) *why = "id";
  else if (!json_is_string(addr) || json_string_length(addr) > GRAY__ADDRESS_MAX ||
           strlen(json_string_value(addr)) != json_string_length(addr) ||
           !gray__host_valid(json_string_value(addr)))
    *why = "address";
  else if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535)
    *why = "port";
  else if (!json_name_ok(ver)) *why = "version";
  if (*why) return NULL;
  return json_pack("{s:O,s:O,s:O,s:O}", "id", id, "address", addr, "port", port, "version", ver);
}

/* 1 when the policy compiles on its own; msg says why not. */
static int policy_compiles(const json_t *pol, char *msg, size_t msgsz) {
  gray_policyset_t *set = NULL;
  gray_error_t e;
  char *text = json_dumps(pol, JSON_COMPACT);
  if (!text) {
    snprintf(msg, msgsz, "out of memory");
    return 0;
  }
  int rc = gray_policyset_parse(text, strlen(text), GRAY_PARSE_ONE, &set, &e);
  gray__json_free(text);
  gray_policyset_release(set);
  if (rc != GRAY_OK) gray_error_format(&e, msg, msgsz);
  return rc == GRAY_OK;
}

/* The set document of `policies` with `revision`, compiled. */
static int compile_set(const json_t *policies, int64_t revision, gray_policyset_t **out, gray_error_t *err) {
  json_t *arr = json_array();
  json_t *doc = arr ? json_pack("{s:I,s:o}", "revision", (json_int_t)revision, "policies", arr) : NULL;
  const char *key;
  json_t *v;
  char *text = NULL;
  int rc;
  *out = NULL;
  if (!doc) {
    rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    goto out;
  }
  json_object_foreach((json_t *)policies, key, v) {
    if (json_array_append(arr, v) != 0) {
      rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
      goto out;
    }
  }
  text = json_dumps(doc, JSON_COMPACT);
  if (!text) {
    rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    goto out;
  }
  rc = gray_policyset_parse(text, strlen(text), GRAY_PARSE_SET, out, err);
out:
  gray__json_free(text);
  json_decref(doc);
  return rc;
}

int gray__model_reset(gray__model *m, json_t *snap, gray_error_t *err) {
  json_t *sid = json_object_get(snap, "store_id"), *rev = json_object_get(snap, "revision"),
         *pdoc = json_object_get(snap, "policies"), *svcs = json_object_get(snap, "services");
  json_t *plist = json_object_get(pdoc, "policies");
  json_t *npol = NULL, *nsvc = NULL, *v;
  gray_policyset_t *set = NULL;
  size_t i, j;
  int rc = GRAY_OK;

  if (!json_is_object(snap)) return gray__seterr(err, GRAY_EJSON, "snapshot", "must be an object");
  if (!store_id_ok(sid)) return gray__seterr(err, GRAY_EJSON, "snapshot.store_id", "missing or invalid");
  if (!json_is_integer(rev) || json_integer_value(rev) < 0)
    return gray__seterr(err, GRAY_EJSON, "snapshot.revision", "must be a non-negative integer");
  if (!json_is_object(pdoc) || !json_is_array(plist))
    return gray__seterr(err, GRAY_EJSON, "snapshot.policies", "must be a set document");
  if (!json_is_array(svcs)) return gray__seterr(err, GRAY_EJSON, "snapshot.services", "must be an array");

  npol = json_object();
  nsvc = json_object();
  if (!npol || !nsvc) {
    rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    goto out;
  }
  json_array_foreach(plist, i, v) {
    json_t *svc = json_object_get(v, "service");
    if (!json_is_object(v) || !json_name_ok(svc)) {
      rc = gray__seterr(err, GRAY_EJSON, "", "snapshot.policies.policies[%zu].service: missing or invalid", i);
      goto out;
    }
    if (!follows(m, json_string_value(svc))) continue;
    if (json_object_get(npol, json_string_value(svc))) {
      rc = gray__seterr(err, GRAY_EJSON, "", "snapshot.policies: two policies for service \"%s\"",
                        json_string_value(svc));
      goto out;
    }
    if (json_object_set(npol, json_string_value(svc), v) != 0) {
      rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
      goto out;
    }
  }
  json_array_foreach(svcs, i, v) {
    json_t *svc = json_object_get(v, "service"), *insts = json_object_get(v, "instances"), *in, *byid;
    if (!json_is_object(v) || !json_name_ok(svc) || !json_is_array(insts)) {
      rc = gray__seterr(err, GRAY_EJSON, "", "snapshot.services[%zu]: needs \"service\" and \"instances\"", i);
      goto out;
    }
    if (!follows(m, json_string_value(svc)) || json_array_size(insts) == 0) continue;
    byid = json_object();
    if (!byid || json_object_set_new(nsvc, json_string_value(svc), byid) != 0) {
      rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
      goto out;
    }
    json_array_foreach(insts, j, in) {
      const char *why;
      json_t *red = instance_reduce(in, &why);
      if (!red) {
        if (!why) {
          rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
          goto out;
        }
        gray__log(&m->lg, GRAY__WARN, "snapshot: skipping an instance of %s: invalid %s", json_string_value(svc),
                  why);
        continue;
      }
      if (json_object_set_new(byid, json_string_value(json_object_get(red, "id")), red) != 0) {
        rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
        goto out;
      }
    }
  }

  /* Compile unless nothing changed. A policy this SDK cannot compile (a
   * newer grayd, say) must not take every other policy down with it: keep
   * what this client had for that service. */
  int same_policies = m->set && json_equal(npol, m->policies);
  if (!same_policies) {
    gray_error_t e;
    if (compile_set(npol, json_integer_value(rev), &set, &e) != GRAY_OK) {
      const char *key;
      void *tmp;
      char msg[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX];
      if (e.code == GRAY_ENOMEM) {
        rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
        goto out;
      }
      json_object_foreach_safe(npol, tmp, key, v) {
        if (policy_compiles(v, msg, sizeof msg)) continue;
        json_t *old = json_object_get(m->policies, key);
        gray__log(&m->lg, GRAY__ERROR, "snapshot: the policy of %s does not compile here (%s); %s", key, msg,
                  old ? "keeping the previous one" : "ignoring it");
        if (old) json_object_set(npol, key, old);
        else json_object_del(npol, key);
      }
      if (compile_set(npol, json_integer_value(rev), &set, err) != GRAY_OK) {
        rc = err ? err->code : GRAY_ESCHEMA;
        goto out;
      }
    }
  }

  /* Commit. */
  if (!same_policies) {
    json_decref(m->policies);
    m->policies = npol;
    npol = NULL;
    gray_policyset_release(m->set);
    m->set = set;
    m->set_stale = 0;
    set = NULL;
  }
  if (!m->reg || !json_equal(nsvc, m->services)) {
    json_decref(m->services);
    m->services = nsvc;
    nsvc = NULL;
    gray__registry_release(m->reg);
    m->reg = NULL;
    m->reg_stale = 0;
  }
  snprintf(m->store_id, sizeof m->store_id, "%s", json_string_value(sid));
  m->revision = json_integer_value(rev);
out:
  gray_policyset_release(set);
  json_decref(npol);
  json_decref(nsvc);
  return rc;
}

/* Check the shape of every event before applying any. */
static int events_valid(json_t *events, gray_error_t *err) {
  size_t i;
  json_t *e;
  json_array_foreach(events, i, e) {
    json_t *rev = json_object_get(e, "revision"), *type = json_object_get(e, "type"),
           *svc = json_object_get(e, "service");
    if (!json_is_object(e) || !json_is_integer(rev) || !json_is_string(type) || !json_name_ok(svc))
      return gray__seterr(err, GRAY_EJSON, "", "events[%zu]: needs revision, type and service", i);
    const char *t = json_string_value(type);
    if (!strcmp(t, "policy.put")) {
      if (!json_is_object(json_object_get(e, "policy")))
        return gray__seterr(err, GRAY_EJSON, "", "events[%zu].policy: must be an object", i);
    } else if (!strcmp(t, "instance.put")) {
      const char *why;
      json_t *red = instance_reduce(json_object_get(e, "instance"), &why);
      if (!red)
        return why ? gray__seterr(err, GRAY_EJSON, "", "events[%zu].instance: invalid %s", i, why)
                   : gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
      json_decref(red);
    } else if (!strcmp(t, "instance.delete") || !strcmp(t, "instance.expire")) {
      if (!json_name_ok(json_object_get(e, "id")))
        return gray__seterr(err, GRAY_EJSON, "", "events[%zu].id: missing or invalid", i);
    }
  }
  return GRAY_OK;
}

/* Apply one valid event; 1 when the model changed, -1 on out of memory. */
static int apply_event(gray__model *m, json_t *e) {
  const char *t = json_string_value(json_object_get(e, "type"));
  const char *svc = json_string_value(json_object_get(e, "service"));
  if (!strcmp(t, "policy.put")) {
    json_t *pol = json_object_get(e, "policy"), *old = json_object_get(m->policies, svc);
    json_t *psvc = json_object_get(pol, "service");
    char msg[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX];
    if (old && json_equal(old, pol)) return 0;
    if (!json_is_string(psvc) || strcmp(json_string_value(psvc), svc)) {
      gray__log(&m->lg, GRAY__ERROR, "watch: policy event for %s holds another service; ignored", svc);
      return 0;
    }
    if (!policy_compiles(pol, msg, sizeof msg)) {
      gray__log(&m->lg, GRAY__ERROR, "watch: the new policy of %s does not compile here (%s); %s", svc, msg,
                old ? "keeping the previous one" : "ignoring it");
      return 0;
    }
    if (json_object_set(m->policies, svc, pol) != 0) return -1;
    m->set_stale = 1;
    return 1;
  }
  if (!strcmp(t, "policy.delete")) {
    if (json_object_del(m->policies, svc) != 0) return 0;
    m->set_stale = 1;
    return 1;
  }
  if (!strcmp(t, "instance.put")) {
    const char *why;
    json_t *red = instance_reduce(json_object_get(e, "instance"), &why), *byid;
    if (!red) return -1; /* shape was checked: memory */
    byid = json_object_get(m->services, svc);
    if (!byid) {
      byid = json_object();
      if (!byid || json_object_set_new(m->services, svc, byid) != 0) {
        json_decref(red);
        return -1;
      }
    }
    const char *id = json_string_value(json_object_get(red, "id"));
    json_t *old = json_object_get(byid, id);
    if (old && json_equal(old, red)) {
      json_decref(red);
      return 0;
    }
    if (json_object_set_new(byid, id, red) != 0) return -1;
    m->reg_stale = 1;
    return 1;
  }
  if (!strcmp(t, "instance.delete") || !strcmp(t, "instance.expire")) {
    json_t *byid = json_object_get(m->services, svc);
    if (!byid || json_object_del(byid, json_string_value(json_object_get(e, "id"))) != 0) return 0;
    if (json_object_size(byid) == 0) json_object_del(m->services, svc);
    m->reg_stale = 1;
    return 1;
  }
  gray__log(&m->lg, GRAY__DEBUG, "watch: ignoring an event of unknown type \"%s\"", t);
  return 0;
}

int gray__model_apply(gray__model *m, const char *body, size_t len, int *changed, gray_error_t *err) {
  json_error_t jerr;
  json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  int rc = GRAY_OK;
  size_t i;
  json_t *e;
  *changed = 0;
  if (!doc || !json_is_object(doc)) {
    rc = gray__seterr(err, GRAY_EJSON, "", "watch answer is not a JSON object%s%s", doc ? "" : ": ",
                      doc ? "" : jerr.text);
    goto out;
  }
  if (json_is_true(json_object_get(doc, "reset"))) {
    char before[GRAY__STORE_ID_MAX + 1];
    int64_t rev_before = m->revision;
    json_t *p_before = m->policies, *s_before = m->services;
    memcpy(before, m->store_id, sizeof before);
    json_incref(p_before);
    json_incref(s_before);
    rc = gray__model_reset(m, json_object_get(doc, "snapshot"), err);
    if (rc == GRAY_OK) m->resets++;
    if (rc == GRAY_OK)
      *changed = strcmp(before, m->store_id) || rev_before != m->revision || p_before != m->policies ||
                 s_before != m->services;
    json_decref(p_before);
    json_decref(s_before);
    goto out;
  }
  json_t *sid = json_object_get(doc, "store_id"), *rev = json_object_get(doc, "revision"),
         *events = json_object_get(doc, "events");
  if (!store_id_ok(sid) || !json_is_integer(rev) || json_integer_value(rev) < 0 || !json_is_array(events)) {
    rc = gray__seterr(err, GRAY_EJSON, "", "watch answer needs store_id, revision and events");
    goto out;
  }
  if (m->store_id[0] && strcmp(m->store_id, json_string_value(sid))) {
    /* grayd resets a watcher whose store differs; events from another
     * store must never be mixed into this one. */
    rc = gray__seterr(err, GRAY_EJSON, "", "events from store %s while following store %s",
                      json_string_value(sid), m->store_id);
    goto out;
  }
  if ((rc = events_valid(events, err)) != GRAY_OK) goto out;
  int64_t top = m->revision;
  json_array_foreach(events, i, e) {
    int64_t r = json_integer_value(json_object_get(e, "revision"));
    if (r <= m->revision) continue; /* seen already */
    if (r > top) top = r;
    if (!follows(m, json_string_value(json_object_get(e, "service")))) continue;
    int a = apply_event(m, e);
    if (a < 0) {
      /* Partly applied: the built parts are marked stale, and the next
       * successful answer or reset repairs the rest. Report it. */
      rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
      *changed = 1;
      goto out;
    }
    if (a) *changed = 1;
  }
  if (!m->store_id[0]) {
    /* First contact with a grayd that has nothing yet: that is a state. */
    snprintf(m->store_id, sizeof m->store_id, "%s", json_string_value(sid));
    *changed = 1;
  }
  if (json_integer_value(rev) > top) top = json_integer_value(rev);
  /* Even with nothing for us, the next watch starts there. */
  m->revision = top;
out:
  json_decref(doc);
  return rc;
}

/* ---- building a snapshot ---------------------------------------------- */

typedef struct row {
  const char *svc, *ver, *id, *addr;
  int port;
} row;

static int row_cmp(const void *a, const void *b) {
  const row *x = a, *y = b;
  int c = strcmp(x->svc, y->svc);
  if (!c) c = strcmp(x->ver, y->ver);
  if (!c) c = strcmp(x->id, y->id);
  return c;
}

static uint32_t rr_index(const char *svc, const char *ver) {
  uint32_t h = gray_murmur3_32(svc, strlen(svc), 0);
  h = gray_murmur3_32(ver, strlen(ver), h);
  return h % GRAY__RR_SLOTS;
}

static gray__registry *build_registry(const json_t *services) {
  size_t n = 0, k = 0;
  const char *key, *id;
  json_t *byid, *in;
  json_object_foreach((json_t *)services, key, byid) n += json_object_size(byid);
  gray__registry *r = gray__calloc(1, sizeof(*r));
  row *rows = gray__calloc(n ? n : 1, sizeof(row));
  if (!r || !rows) goto fail;
  atomic_init(&r->refs, 1);
  gray__arena_init(&r->arena);
  json_object_foreach((json_t *)services, key, byid) {
    json_object_foreach(byid, id, in) {
      rows[k].svc = key;
      rows[k].id = id;
      rows[k].ver = json_string_value(json_object_get(in, "version"));
      rows[k].addr = json_string_value(json_object_get(in, "address"));
      rows[k].port = (int)json_integer_value(json_object_get(in, "port"));
      k++;
    }
  }
  qsort(rows, n, sizeof(row), row_cmp);
  size_t nsvcs = 0, ngroups = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || strcmp(rows[i].svc, rows[i - 1].svc)) nsvcs++, ngroups++;
    else if (strcmp(rows[i].ver, rows[i - 1].ver)) ngroups++;
  }
  r->insts = gray__arena_alloc(&r->arena, (n ? n : 1) * sizeof(gray__inst));
  r->svcs = gray__arena_alloc(&r->arena, (nsvcs ? nsvcs : 1) * sizeof(gray__svc));
  gray__vgroup *groups = gray__arena_alloc(&r->arena, (ngroups ? ngroups : 1) * sizeof(gray__vgroup));
  if (!r->insts || !r->svcs || !groups) goto fail;
  gray__svc *sv = NULL;
  gray__vgroup *g = NULL;
  for (size_t i = 0; i < n; i++) {
    gray__inst *t = &r->insts[i];
    t->id = gray__arena_strndup(&r->arena, rows[i].id, strlen(rows[i].id));
    t->address = gray__arena_strndup(&r->arena, rows[i].addr, strlen(rows[i].addr));
    t->port = rows[i].port;
    if (!t->id || !t->address) goto fail;
    if (!sv || strcmp(sv->name, rows[i].svc)) {
      sv = &r->svcs[r->nsvcs++];
      sv->name = gray__arena_strndup(&r->arena, rows[i].svc, strlen(rows[i].svc));
      if (!sv->name) goto fail;
      sv->groups = groups;
      sv->ngroups = 0;
      g = NULL;
    }
    if (!g || strcmp(g->version, rows[i].ver)) {
      g = &sv->groups[sv->ngroups++];
      groups++;
      g->version = gray__arena_strndup(&r->arena, rows[i].ver, strlen(rows[i].ver));
      if (!g->version) goto fail;
      g->rr = rr_index(sv->name, g->version);
      g->first = (uint32_t)i;
      g->count = 0;
    }
    t->version = g->version;
    g->count++;
  }
  r->ninsts = n;
  gray__free(rows);
  return r;
fail:
  gray__free(rows);
  if (r) gray__arena_free(&r->arena);
  gray__free(r);
  return NULL;
}

int gray__model_snapshot(gray__model *m, gray__snapshot **out, gray_error_t *err) {
  *out = NULL;
  if (!m->set || m->set_stale) {
    gray_policyset_t *set;
    gray_error_t e;
    int rc = compile_set(m->policies, m->revision, &set, &e);
    if (rc == GRAY_ENOMEM) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    if (rc != GRAY_OK) {
      char msg[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX];
      gray_error_format(&e, msg, sizeof msg);
      if (!m->set) return gray__seterr(err, rc, e.path, "%s", e.message);
      /* Every policy compiled on its own; the set as a whole did not (a
       * limit). Keep serving the last set. */
      gray__log(&m->lg, GRAY__ERROR, "snapshot: the policy set does not compile (%s); keeping the previous one",
                msg);
      /* Not again for every registry change: the next policy change retries. */
      m->set_stale = 0;
    } else {
      gray_policyset_release(m->set);
      m->set = set;
      m->set_stale = 0;
    }
  }
  if (!m->reg || m->reg_stale) {
    gray__registry *r = build_registry(m->services);
    if (!r) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    gray__registry_release(m->reg);
    m->reg = r;
    m->reg_stale = 0;
  }
  gray__snapshot *s = gray__calloc(1, sizeof(*s));
  if (!s) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  atomic_init(&s->refs, 1);
  s->revision = m->revision;
  memcpy(s->store_id, m->store_id, sizeof s->store_id);
  s->set = gray_policyset_ref(m->set);
  s->reg = gray__registry_ref(m->reg);
  *out = s;
  return GRAY_OK;
}

char *gray__model_dump(const gray__model *m, size_t *len) {
  json_t *pol = json_array(), *svcs = json_array();
  json_t *doc = NULL;
  const char *key;
  json_t *v, *byid, *in;
  char *text = NULL;
  if (!pol || !svcs) goto out;
  json_object_foreach(m->policies, key, v) {
    if (json_array_append(pol, v) != 0) goto out;
  }
  json_object_foreach(m->services, key, byid) {
    json_t *arr = json_array();
    const char *id;
    if (!arr || json_array_append_new(svcs, json_pack("{s:s,s:o}", "service", key, "instances", arr)) != 0)
      goto out;
    json_object_foreach(byid, id, in) {
      if (json_array_append(arr, in) != 0) goto out;
    }
  }
  doc = json_pack("{s:s,s:I,s:{s:I,s:O},s:O}", "store_id", m->store_id, "revision", (json_int_t)m->revision,
                  "policies", "revision", (json_int_t)m->revision, "policies", pol, "services", svcs);
  if (doc) text = json_dumps(doc, JSON_COMPACT);
out:
  json_decref(pol);
  json_decref(svcs);
  json_decref(doc);
  if (text) *len = strlen(text);
  return text;
}
