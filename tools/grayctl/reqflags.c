/* The request flags of grayctl eval and grayctl explain: one parser, so a
 * request described on the command line means the same offline and online. */
#include <stdio.h>
#include <string.h>

#include "grayctl.h"

static gray_str_t str(const char *s) {
  gray_str_t r = {s, strlen(s)};
  return r;
}

static int add_pair(gray_kv_t *kv, size_t *n, const char *arg, char sep, const char *flag,
                    const char *cmd) {
  const char *at = strchr(arg, sep);
  if (!at || at == arg) {
    fprintf(stderr, "grayctl %s: %s expects %s, got \"%s\"\n", cmd, flag,
            sep == ':' ? "'Name: value'" : "name=value", arg);
    return -1;
  }
  if (*n == GRAYCTL_MAX_PAIRS) {
    fprintf(stderr, "grayctl %s: more than %d %s flags\n", cmd, GRAYCTL_MAX_PAIRS, flag);
    return -1;
  }
  const char *v = at + 1;
  size_t vlen = strlen(v);
  if (sep == ':') {
    /* Header values lose optional white space around them, as on the wire. */
    while (*v == ' ' || *v == '\t') v++, vlen--;
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
  }
  kv[*n].name.p = arg;
  kv[*n].name.len = (size_t)(at - arg);
  kv[*n].value.p = v;
  kv[*n].value.len = vlen;
  (*n)++;
  return 0;
}

int grayctl_req_option(grayctl_req *r, int opt, const char *arg, const char *cmd) {
  switch (opt) {
    case GRAYCTL_O_HEADER: return add_pair(r->headers, &r->nheaders, arg, ':', "--header", cmd) ? -1 : 1;
    case GRAYCTL_O_COOKIE: return add_pair(r->cookies, &r->ncookies, arg, '=', "--cookie", cmd) ? -1 : 1;
    case GRAYCTL_O_PARAM: return add_pair(r->params, &r->nparams, arg, '=', "--param", cmd) ? -1 : 1;
    case GRAYCTL_O_QUERY: r->kv.query = str(arg); return 1;
    case GRAYCTL_O_IP: r->kv.ip = str(arg); return 1;
    case GRAYCTL_O_TAG: r->kv.tag = str(arg); return 1;
    case GRAYCTL_O_PATH: {
      const char *q = strchr(arg, '?');
      r->kv.path.p = arg;
      r->kv.path.len = q ? (size_t)(q - arg) : strlen(arg);
      if (q && !r->kv.query.p) r->kv.query = str(q + 1);
      return 1;
    }
    case GRAYCTL_O_METHOD: r->kv.method = str(arg); return 1;
    case GRAYCTL_O_HOST: r->kv.host = str(arg); return 1;
    default: return 0;
  }
}

void grayctl_req_finish(grayctl_req *r) {
  r->kv.headers = r->headers;
  r->kv.nheaders = r->nheaders;
  /* Without any --cookie (--param), cookies come from a Cookie header (the
   * query); an empty array would mean "none at all". */
  r->kv.cookies = r->ncookies ? r->cookies : NULL;
  r->kv.ncookies = r->ncookies;
  r->kv.params = r->nparams ? r->params : NULL;
  r->kv.nparams = r->nparams;
}

static json_t *pairs_json(const gray_kv_t *kv, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++) {
    json_t *pr = json_pack("[s#s#]", kv[i].name.p, kv[i].name.len, kv[i].value.p, kv[i].value.len);
    if (!pr || json_array_append_new(arr, pr)) {
      json_decref(arr);
      return NULL;
    }
  }
  return arr;
}

static int set_str(json_t *o, const char *key, gray_str_t s) {
  if (!s.p) return 0;
  return json_object_set_new(o, key, json_stringn(s.p, s.len));
}

json_t *grayctl_req_to_json(const grayctl_req *r) {
  json_t *o = json_object();
  if (!o) return NULL;
  /* Arrays of pairs keep the order and the repeats, so "first one counts"
   * holds on the server exactly as in eval. */
  int bad = r->nheaders && json_object_set_new(o, "headers", pairs_json(r->headers, r->nheaders));
  bad |= r->ncookies && json_object_set_new(o, "cookies", pairs_json(r->cookies, r->ncookies));
  bad |= r->nparams && json_object_set_new(o, "params", pairs_json(r->params, r->nparams));
  bad |= set_str(o, "query", r->kv.query);
  bad |= set_str(o, "ip", r->kv.ip);
  bad |= set_str(o, "tag", r->kv.tag);
  bad |= set_str(o, "path", r->kv.path);
  bad |= set_str(o, "method", r->kv.method);
  bad |= set_str(o, "host", r->kv.host);
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}
