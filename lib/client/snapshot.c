/* Snapshots and the writer's model of grayd.
 *
 * The model keeps what grayd said as JSON (policies by service, instances by
 * service and id) so events apply as small edits and a reset as a
 * replacement. Next to it the model keeps the policies compiled, one
 * gray_policyset_t per service (by the one parser every executor uses), so
 * a policy change compiles that policy only. A snapshot takes the compiled
 * policies and the instances as sorted arrays; both parts are
 * reference-counted and reused by the next snapshot when only the other
 * part changed. */
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

static gray__pols *pols_ref(gray__pols *p) {
  if (p) atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
  return p;
}

static void pols_release(gray__pols *p) {
  if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) return;
  for (size_t i = 0; i < p->n; i++) gray_policyset_release(p->v[i].set);
  gray__free(p);
}

/* A new part of n entries (zeroed), one reference; NULL on out of memory. */
static gray__pols *pols_new(size_t n) {
  gray__pols *p = gray__calloc(1, sizeof(*p) + n * sizeof(p->v[0]));
  if (!p) return NULL;
  atomic_init(&p->refs, 1);
  p->n = n;
  return p;
}

void gray__snapshot_release(gray__snapshot *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
  pols_release(s->pols);
  gray__registry_release(s->reg);
  gray__free(s);
}

/* ---- lookups (readers) --------------------------------------------------- */

static const gray__pol *pols_find(const gray__pols *p, const char *service) {
  size_t lo = 0, hi = p ? p->n : 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strcmp(service, p->v[mid].service);
    if (cmp == 0) return &p->v[mid];
    if (cmp < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

const gray_policy_t *gray__snapshot_policy(const gray__snapshot *s, const char *service) {
  const gray__pol *e = pols_find(s->pols, service);
  return e ? gray_policyset_at(e->set, 0) : NULL;
}

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
  m->pols = pols_new(0);
  if (!m->policies || !m->services || !m->pols) {
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
  pols_release(m->pols);
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

/* Compile one policy object into a set of one. GRAY_OK; GRAY_ENOMEM; or
 * the parser's error with the reason in msg. */
static int compile_one(const json_t *pol, gray_policyset_t **out, char *msg, size_t msgsz) {
  gray_error_t e;
  *out = NULL;
  char *text = json_dumps(pol, JSON_COMPACT);
  if (!text) {
    snprintf(msg, msgsz, "out of memory");
    return GRAY_ENOMEM;
  }
  int rc = gray_policyset_parse(text, strlen(text), GRAY_PARSE_ONE, out, &e);
  gray__json_free(text);
  if (rc != GRAY_OK) gray_error_format(&e, msg, msgsz);
  return rc;
}

/* A copy of `old` with `service` set to `set` (inserted or replaced; NULL:
 * removed). Takes the reference of `set` on success only. NULL on out of
 * memory. */
static gray__pols *pols_with(const gray__pols *old, const char *service, gray_policyset_t *set) {
  size_t n = old->n, at = 0;
  int found = 0;
  while (at < n) {
    int cmp = strcmp(service, old->v[at].service);
    if (cmp == 0) {
      found = 1;
      break;
    }
    if (cmp < 0) break;
    at++;
  }
  gray__pols *p = pols_new(n + (set && !found) - (!set && found));
  if (!p) return NULL;
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == at && set) p->v[j++] = (gray__pol){gray_policy_service(gray_policyset_at(set, 0)), set};
    if (i == at && found) continue;
    p->v[j] = old->v[i];
    gray_policyset_ref(p->v[j++].set);
  }
  if (at == n && set) p->v[j++] = (gray__pol){gray_policy_service(gray_policyset_at(set, 0)), set};
  return p;
}

static int pol_cmp(const void *a, const void *b) {
  return strcmp(((const gray__pol *)a)->service, ((const gray__pol *)b)->service);
}

int gray__model_reset(gray__model *m, json_t *snap, gray_error_t *err) {
  json_t *sid = json_object_get(snap, "store_id"), *rev = json_object_get(snap, "revision"),
         *pdoc = json_object_get(snap, "policies"), *svcs = json_object_get(snap, "services");
  json_t *plist = json_object_get(pdoc, "policies");
  json_t *npol = NULL, *nsvc = NULL, *v;
  gray__pols *pols = NULL;
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

  /* Compile what changed, policy by policy (an unchanged policy keeps its
   * compiled set). A policy this SDK cannot compile (a newer grayd, say)
   * must not take every other policy down with it: keep what this client
   * had for that service. */
  int same_policies = json_equal(npol, m->policies);
  if (!same_policies) {
    const char *key;
    void *tmp;
    size_t n = 0;
    pols = pols_new(json_object_size(npol));
    if (!pols) {
      rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
      goto out;
    }
    json_object_foreach_safe(npol, tmp, key, v) {
      json_t *old = json_object_get(m->policies, key);
      const gray__pol *had = pols_find(m->pols, key);
      gray_policyset_t *set = NULL;
      if (had && old && json_equal(old, v)) {
        set = gray_policyset_ref(had->set);
      } else {
        char msg[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX];
        int crc = compile_one(v, &set, msg, sizeof msg);
        if (crc == GRAY_ENOMEM) {
          rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
          goto out;
        }
        if (crc != GRAY_OK) {
          gray__log(&m->lg, GRAY__ERROR, "snapshot: the policy of %s does not compile here (%s); %s", key, msg,
                    had && old ? "keeping the previous one" : "ignoring it");
          if (had && old) {
            set = gray_policyset_ref(had->set);
            if (json_object_set(npol, key, old) != 0) {
              gray_policyset_release(set);
              rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
              goto out;
            }
          } else {
            json_object_del(npol, key);
            continue;
          }
        }
      }
      pols->v[n++] = (gray__pol){gray_policy_service(gray_policyset_at(set, 0)), set};
    }
    pols->n = n;
    qsort(pols->v, n, sizeof pols->v[0], pol_cmp);
  }

  /* Commit. */
  if (!same_policies) {
    json_decref(m->policies);
    m->policies = npol;
    npol = NULL;
    pols_release(m->pols);
    m->pols = pols;
    pols = NULL;
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
  pols_release(pols);
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
    gray_policyset_t *set;
    int crc = compile_one(pol, &set, msg, sizeof msg);
    if (crc == GRAY_ENOMEM) return -1;
    if (crc != GRAY_OK) {
      gray__log(&m->lg, GRAY__ERROR, "watch: the new policy of %s does not compile here (%s); %s", svc, msg,
                old ? "keeping the previous one" : "ignoring it");
      return 0;
    }
    gray__pols *np = pols_with(m->pols, svc, set);
    if (!np || json_object_set(m->policies, svc, pol) != 0) {
      if (np) pols_release(np); /* releases set too */
      else gray_policyset_release(set);
      return -1;
    }
    pols_release(m->pols);
    m->pols = np;
    return 1;
  }
  if (!strcmp(t, "policy.delete")) {
    if (!json_object_get(m->policies, svc)) return 0;
    gray__pols *np = pols_with(m->pols, svc, NULL);
    if (!np) return -1;
    json_object_del(m->policies, svc);
    pols_release(m->pols);
    m->pols = np;
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
  s->pols = pols_ref(m->pols);
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
