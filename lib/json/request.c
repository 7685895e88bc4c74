/* Requests from JSON and decisions to JSON. */
#include <string.h>

#include "core/model.h"
#include "gray/json.h"
#include "json/internal.h"

struct gray_json_request_s {
  json_t *obj;
  gray_kv_request_t kv;
  gray_request_t req;
  gray_kv_t *pairs; /* headers, cookies, params back to back */
};

static int bad(gray_error_t *err, const char *path, const char *msg) {
  gray__error_set(err, GRAY_EINVAL, path, msg);
  return GRAY_EINVAL;
}

/* {"k": "v"} or [["k", "v"], ...] into pairs; returns count or -1. */
static int take_pairs(json_t *v, const char *key, gray_kv_t *dst, size_t *n, gray_error_t *err) {
  char path[GRAY_ERROR_PATH_MAX];
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
      if (!json_is_string(x)) {
        snprintf(path, sizeof path, "%s.%s", key, k);
        return bad(err, path, "must be a string");
      }
      dst[*n].name.p = k;
      dst[*n].name.len = strlen(k);
      dst[*n].value.p = json_string_value(x);
      dst[*n].value.len = json_string_length(x);
      (*n)++;
    }
    return GRAY_OK;
  }
  if (!json_is_array(v)) return bad(err, key, "must be an object or an array of [name, value] pairs");
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *pr = json_array_get(v, i);
    if (!json_is_array(pr) || json_array_size(pr) != 2 || !json_is_string(json_array_get(pr, 0)) ||
        !json_is_string(json_array_get(pr, 1))) {
      snprintf(path, sizeof path, "%s[%zu]", key, i);
      return bad(err, path, "must be a [name, value] pair of strings");
    }
    dst[*n].name.p = json_string_value(json_array_get(pr, 0));
    dst[*n].name.len = json_string_length(json_array_get(pr, 0));
    dst[*n].value.p = json_string_value(json_array_get(pr, 1));
    dst[*n].value.len = json_string_length(json_array_get(pr, 1));
    (*n)++;
  }
  return GRAY_OK;
}

static size_t pair_count(json_t *v) {
  return json_is_object(v) ? json_object_size(v) : json_is_array(v) ? json_array_size(v) : 0;
}

int gray_json_request_new(json_t *obj, gray_json_request_t **out, gray_error_t *err) {
  static const char *const scalars[] = {"query", "ip", "tag", "path", "method", "host"};
  *out = NULL;
  if (!json_is_object(obj)) return bad(err, "", "a request must be an object");
  const char *k;
  json_t *x;
  json_object_foreach(obj, k, x) {
    int ok = !strcmp(k, "headers") || !strcmp(k, "cookies") || !strcmp(k, "params");
    for (size_t i = 0; i < 6; i++) ok |= !strcmp(k, scalars[i]);
    if (!ok) {
      char msg[GRAY_ERROR_TEXT_MAX];
      snprintf(msg, sizeof msg,
               "unknown key (allowed: headers, cookies, params, query, ip, tag, path, method, host)");
      return bad(err, k, msg);
    }
  }
  json_t *h = json_object_get(obj, "headers"), *c = json_object_get(obj, "cookies"),
         *p = json_object_get(obj, "params");
  size_t total = pair_count(h) + pair_count(c) + pair_count(p);
  gray_json_request_t *r = gray__calloc(1, sizeof(*r));
  if (!r) goto oom;
  r->pairs = gray__calloc(total ? total : 1, sizeof(gray_kv_t));
  if (!r->pairs) goto oom;
  size_t n = 0;
  int rc;
  if (h) {
    r->kv.headers = r->pairs;
    if ((rc = take_pairs(h, "headers", r->pairs, &n, err))) goto fail;
    r->kv.nheaders = n;
  }
  if (c) {
    size_t start = n;
    r->kv.cookies = r->pairs + start;
    if ((rc = take_pairs(c, "cookies", r->pairs, &n, err))) goto fail;
    r->kv.ncookies = n - start;
  }
  if (p) {
    size_t start = n;
    r->kv.params = r->pairs + start;
    if ((rc = take_pairs(p, "params", r->pairs, &n, err))) goto fail;
    r->kv.nparams = n - start;
  }
  gray_str_t *dst[6] = {&r->kv.query, &r->kv.ip, &r->kv.tag, &r->kv.path, &r->kv.method, &r->kv.host};
  for (size_t i = 0; i < 6; i++) {
    json_t *v = json_object_get(obj, scalars[i]);
    if (!v || json_is_null(v)) continue;
    if (!json_is_string(v)) {
      rc = bad(err, scalars[i], "must be a string");
      goto fail;
    }
    dst[i]->p = json_string_value(v);
    dst[i]->len = json_string_length(v);
  }
  r->obj = json_incref(obj);
  r->req.lookup = gray_kv_lookup;
  r->req.ctx = &r->kv;
  *out = r;
  return GRAY_OK;
oom:
  rc = GRAY_ENOMEM;
  gray__error_set(err, GRAY_ENOMEM, "", "out of memory");
fail:
  if (r) gray__free(r->pairs);
  gray__free(r);
  return rc;
}

const gray_request_t *gray_json_request_get(const gray_json_request_t *r) { return &r->req; }

void gray_json_request_free(gray_json_request_t *r) {
  if (!r) return;
  json_decref(r->obj);
  gray__free(r->pairs);
  gray__free(r);
}

static json_t *str_or_null(gray_str_t s) {
  return s.p ? json_stringn_nocheck(s.p, s.len) : json_null();
}

static const char *kind_name(gray_trace_kind_t k) {
  switch (k) {
    case GRAY_TRACE_RULE: return "rule";
    case GRAY_TRACE_ALL: return "all";
    case GRAY_TRACE_ANY: return "any";
    case GRAY_TRACE_NOT: return "not";
    case GRAY_TRACE_COND: return "cond";
  }
  return "?";
}

/* Strings from requests need not be UTF-8; JSON output must be. Replace
 * what is not valid UTF-8 rather than fail the whole answer. */
static json_t *safe_string(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  size_t n = strlen(s);
  char *copy = gray__malloc(n + 1);
  if (!copy) return NULL;
  for (size_t i = 0; i < n; i++) copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
  copy[n] = '\0';
  j = json_string(copy);
  gray__free(copy);
  return j;
}

json_t *gray_decision_to_json(const gray_decision_t *d, const gray_trace_t *trace) {
  json_t *o = json_object();
  if (!o) return NULL;
  int bad_ = 0;
  bad_ |= json_object_set_new(o, "service", str_or_null(d->service));
  bad_ |= json_object_set_new(o, "version", str_or_null(d->version));
  bad_ |= json_object_set_new(o, "tag", str_or_null(d->tag));
  bad_ |= json_object_set_new(o, "rule", str_or_null(d->rule));
  if (trace) {
    json_t *arr = json_array();
    bad_ |= json_object_set_new(o, "trace", arr);
    for (size_t i = 0; arr && i < gray_trace_count(trace); i++) {
      const gray_trace_entry_t *e = gray_trace_at(trace, i);
      json_t *t = json_object();
      if (!t || json_array_append_new(arr, t)) {
        bad_ = 1;
        break;
      }
      bad_ |= json_object_set_new(t, "rule", json_string(e->rule));
      bad_ |= json_object_set_new(t, "kind", json_string(kind_name(e->kind)));
      bad_ |= json_object_set_new(t, "depth", json_integer(e->depth));
      if (e->kind == GRAY_TRACE_COND) {
        bad_ |= json_object_set_new(t, "attr", json_string(e->attr));
        bad_ |= json_object_set_new(t, "op", json_string(e->op));
        bad_ |= json_object_set_new(t, "value", e->value ? safe_string(e->value) : json_null());
        if (e->truncated) bad_ |= json_object_set_new(t, "truncated", json_true());
      }
      bad_ |= json_object_set_new(t, "result", json_boolean(e->result));
      if (e->note) bad_ |= json_object_set_new(t, "note", json_string(e->note));
    }
  }
  if (bad_) {
    json_decref(o);
    return NULL;
  }
  return o;
}
