/* gray-agent: the SDK's state document -> the two files Nginx reads.
 *
 * Nothing from the document is copied into the upstream file unless it has
 * been checked as a type: names match the policy name rule (letters,
 * digits, '.', '_', '-'), addresses are IP literals or DNS host names, ports
 * are integers 1..65535. None of those alphabets holds a character that
 * could end a directive or open a block, so no registry value can inject
 * configuration. Policies go to a JSON file that the module parses with
 * the same core as grayd; they are never Nginx configuration. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "agent.h"
#include "core/model.h"
#include "gray/json.h"

/* ---- a growable string ------------------------------------------------------ */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  for (int tries = 0; !b->oom && tries < 2; tries++) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if (b->p && (size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n + 1;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
}

/* ---- upstreams ----------------------------------------------------------------- */

typedef struct upstream {
  char name[2 * GRAY_NAME_LEN_MAX + 2]; /* SERVICE.VERSION */
  char **servers;                       /* "ADDR:PORT" / "[V6]:PORT" */
  size_t n, cap;
  int placeholder; /* a policy default with no live instance */
  char service[GRAY_NAME_LEN_MAX + 1];
} upstream;

typedef struct ups {
  upstream *v;
  size_t n, cap;
} ups;

static void ups_clear(ups *u) {
  for (size_t i = 0; i < u->n; i++) {
    for (size_t j = 0; j < u->v[i].n; j++) free(u->v[i].servers[j]);
    free(u->v[i].servers);
  }
  free(u->v);
  memset(u, 0, sizeof *u);
}

/* Nginx compares upstream names without case: "Order.v1" and "order.v1"
 * would be a duplicate upstream (nginx -t fails). */
static upstream *ups_find(ups *u, const char *name) {
  for (size_t i = 0; i < u->n; i++)
    if (!strcasecmp(u->v[i].name, name)) return &u->v[i];
  return NULL;
}

static upstream *ups_add(ups *u, const char *name, const char *service) {
  if (u->n == u->cap) {
    size_t cap = u->cap ? u->cap * 2 : 16;
    upstream *nv = realloc(u->v, cap * sizeof *nv);
    if (!nv) return NULL;
    u->v = nv;
    u->cap = cap;
  }
  upstream *up = &u->v[u->n++];
  memset(up, 0, sizeof *up);
  snprintf(up->name, sizeof up->name, "%s", name);
  snprintf(up->service, sizeof up->service, "%s", service);
  return up;
}

static int server_add(upstream *up, const char *text) {
  for (size_t i = 0; i < up->n; i++)
    if (!strcmp(up->servers[i], text)) return 0; /* the same address twice */
  if (up->n == up->cap) {
    size_t cap = up->cap ? up->cap * 2 : 4;
    char **ns = realloc(up->servers, cap * sizeof *ns);
    if (!ns) return -1;
    up->servers = ns;
    up->cap = cap;
  }
  if (!(up->servers[up->n] = strdup(text))) return -1;
  up->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_up(const void *a, const void *b) {
  return strcasecmp(((const upstream *)a)->name, ((const upstream *)b)->name);
}

/* A JSON string that is a valid name (no NUL inside, the name rule). */
static const char *json_name(json_t *v) {
  char msg[GRAY_ERROR_TEXT_MAX];
  if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) return NULL;
  gray_str_t s = {json_string_value(v), json_string_length(v)};
  return gray__check_name(s, msg, sizeof msg) == GRAY_OK ? s.p : NULL;
}

/* Quote any JSON value for a log line. */
static const char *qjson(json_t *v, char *buf, size_t size) {
  if (json_is_string(v)) return ga_quote(json_string_value(v), json_string_length(v), buf, size);
  if (json_is_integer(v)) {
    snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    return buf;
  }
  snprintf(buf, size, "%s", !v ? "(missing)" : json_is_null(v) ? "null" : json_is_real(v) ? "a real number"
                                                              : json_is_object(v) ? "an object"
                                                              : json_is_array(v) ? "an array" : "a boolean");
  return buf;
}

static int render_instances(json_t *services, const ga_render_opts *o, ups *u, size_t *skipped, size_t *nservers) {
  size_t i, j;
  json_t *s, *in;
  char q1[300];
  json_array_foreach(services, i, s) {
    json_t *sv = json_object_get(s, "service"), *insts = json_object_get(s, "instances");
    const char *service = json_name(sv);
    if (!service || !json_is_array(insts)) {
      ga_log(GA_WARN, "render: skipping services[%zu]: service name %s is not a valid name, or no instances", i,
             qjson(sv, q1, sizeof q1));
      (*skipped)++;
      continue;
    }
    json_array_foreach(insts, j, in) {
      json_t *idv = json_object_get(in, "id"), *addr = json_object_get(in, "address"),
             *port = json_object_get(in, "port"), *ver = json_object_get(in, "version");
      const char *id = json_name(idv), *version = json_name(ver), *why = NULL;
      json_t *badv = NULL;
      const char *a = json_is_string(addr) ? json_string_value(addr) : NULL;
      unsigned char ipbuf[16];
      int v6 = 0, v4 = 0;
      if (!json_is_object(in)) why = "instance", badv = in;
      else if (!id) why = "id", badv = idv;
      else if (!a || strlen(a) != json_string_length(addr) || !gray__host_valid(a)) why = "address", badv = addr;
      else if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535)
        why = "port", badv = port;
      else if (!version) why = "version", badv = ver;
      if (why) {
        ga_log(GA_WARN, "render: skipping an instance of %s: invalid %s %s", service, why,
               qjson(badv, q1, sizeof q1));
        (*skipped)++;
        continue;
      }
      v4 = inet_pton(AF_INET, a, ipbuf) == 1;
      v6 = !v4 && inet_pton(AF_INET6, a, ipbuf) == 1;
      if (!v4 && !v6 && o && o->resolves && !o->resolves(o->resolves_arg, a)) {
        /* Nginx resolves host names when it loads the config: one that does
         * not resolve would make every nginx -t fail. */
        ga_log(GA_WARN, "render: skipping instance %s/%s: host name %s does not resolve", service, id, a);
        (*skipped)++;
        continue;
      }
      char name[2 * GRAY_NAME_LEN_MAX + 2];
      snprintf(name, sizeof name, "%s.%s", service, version);
      upstream *up = ups_find(u, name);
      if (up && strcmp(up->name, name)) {
        ga_log(GA_WARN, "render: skipping instance %s/%s: upstream %s differs from %s only in case", service, id,
               name, up->name);
        (*skipped)++;
        continue;
      }
      if (up && strcmp(up->service, service)) {
        /* "a.b" + "c" and "a" + "b.c" name the same upstream. */
        ga_log(GA_WARN, "render: skipping instance %s/%s: upstream %s is already service %s's", service, id, name,
               up->service);
        (*skipped)++;
        continue;
      }
      if (!up) {
        if (u->n >= GA_MAX_UPSTREAMS) {
          ga_log(GA_WARN, "render: skipping instance %s/%s: more than %d upstreams", service, id,
                 GA_MAX_UPSTREAMS);
          (*skipped)++;
          continue;
        }
        if (!(up = ups_add(u, name, service))) return -1;
      }
      if (up->n >= GA_MAX_SERVERS) {
        ga_log(GA_WARN, "render: skipping instance %s/%s: upstream %s has %d servers already", service, id, name,
               GA_MAX_SERVERS);
        (*skipped)++;
        continue;
      }
      char text[300];
      snprintf(text, sizeof text, v6 ? "[%s]:%d" : "%s:%d", a, (int)json_integer_value(port));
      size_t before = up->n;
      if (server_add(up, text) != 0) return -1;
      *nservers += up->n - before;
    }
  }
  return 0;
}

/* ---- policies ----------------------------------------------------------------- */

static int cmp_policy(const void *a, const void *b) {
  const char *x = json_string_value(json_object_get(*(json_t *const *)a, "service"));
  const char *y = json_string_value(json_object_get(*(json_t *const *)b, "service"));
  return strcmp(x ? x : "", y ? y : "");
}

/* The canonical text of a policy array: sorted by service, keys sorted,
 * ASCII only. Two equal sets give the same bytes. */
static char *canonical_policies(json_t *arr, char *err, size_t errsz) {
  size_t n = json_array_size(arr), i;
  json_t **v = calloc(n ? n : 1, sizeof *v), *p, *sorted = NULL;
  char *text = NULL;
  if (!v) goto oom;
  json_array_foreach(arr, i, p) {
    if (!json_is_object(p) || !json_is_string(json_object_get(p, "service"))) {
      snprintf(err, errsz, "policies[%zu] is not a policy object with a service", i);
      free(v);
      return NULL;
    }
    v[i] = p;
  }
  qsort(v, n, sizeof *v, cmp_policy);
  if (!(sorted = json_array())) goto oom;
  for (i = 0; i < n; i++)
    if (json_array_append(sorted, v[i]) != 0) goto oom;
  text = json_dumps(sorted, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
  if (!text) goto oom;
  free(v);
  json_decref(sorted);
  return text;
oom:
  free(v);
  json_decref(sorted);
  snprintf(err, errsz, "out of memory");
  return NULL;
}

char *ga_policies_file(const char *policies, int64_t rev) {
  size_t n = strlen(policies) + 64;
  char *t = malloc(n);
  if (t) snprintf(t, n, "{\"revision\":%lld,\"policies\":%s}\n", (long long)rev, policies);
  return t;
}

char *ga_upstreams_file(const char *body, int64_t rev) {
  size_t n = strlen(body) + 64;
  char *t = malloc(n);
  if (t) snprintf(t, n, "gray_upstreams_revision %lld;\n%s", (long long)rev, body);
  return t;
}

int ga_check_policies(const char *text, char *err, size_t errsz) {
  gray_policyset_t *set = NULL;
  gray_error_t e;
  int rc = gray_policyset_parse(text, strlen(text), GRAY_PARSE_SET, &set, &e);
  gray_policyset_release(set);
  if (rc == GRAY_OK) return 0;
  char msg[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX + 8];
  snprintf(err, errsz, "the policy set does not compile: %s", gray_error_format(&e, msg, sizeof msg));
  return -1;
}

int ga_parse_policies_file(const char *text, size_t len, int64_t *rev, char **policies, char *err, size_t errsz) {
  json_error_t jerr;
  json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *r = json_object_get(j, "revision"), *arr = json_object_get(j, "policies");
  int rc = -1;
  if (!json_is_object(j) || json_object_size(j) != 2 || !json_is_integer(r) || json_integer_value(r) < 0 ||
      !json_is_array(arr)) {
    snprintf(err, errsz, "not a policy set document {\"revision\", \"policies\"}%s%s", j ? "" : ": ",
             j ? "" : jerr.text);
    goto out;
  }
  if (!(*policies = canonical_policies(arr, err, errsz))) goto out;
  *rev = json_integer_value(r);
  rc = 0;
out:
  json_decref(j);
  return rc;
}

int ga_parse_upstreams_file(const char *text, size_t len, int64_t *rev, char **body, char *err, size_t errsz) {
  static const char head[] = "gray_upstreams_revision ";
  size_t i = sizeof head - 1;
  int64_t v = 0;
  if (len < i || memcmp(text, head, i) || memchr(text, '\0', len)) goto bad;
  if (i >= len || text[i] < '0' || text[i] > '9') goto bad;
  for (; i < len && text[i] >= '0' && text[i] <= '9'; i++) {
    if (v > (INT64_MAX - 9) / 10) goto bad;
    v = v * 10 + (text[i] - '0');
  }
  if (len - i < 2 || text[i] != ';' || text[i + 1] != '\n') goto bad;
  i += 2;
  if (!(*body = malloc(len - i + 1))) {
    snprintf(err, errsz, "out of memory");
    return -1;
  }
  memcpy(*body, text + i, len - i);
  (*body)[len - i] = '\0';
  *rev = v;
  return 0;
bad:
  snprintf(err, errsz, "does not start with a \"gray_upstreams_revision N;\" line");
  return -1;
}

/* ---- the whole document ------------------------------------------------------ */

void ga_rendered_clear(ga_rendered *r) {
  if (!r) return;
  free(r->policies);
  free(r->upstreams);
  memset(r, 0, sizeof *r);
}

int ga_render(const char *doc, size_t len, const ga_render_opts *o, ga_rendered *out, char *err, size_t errsz) {
  json_error_t jerr;
  json_t *j = NULL;
  ups u = {0};
  sbuf b = {0};
  char *pfile = NULL;
  int rc = -1;
  size_t i;
  json_t *p;
  memset(out, 0, sizeof *out);
  if (len > GA_DOC_MAX) {
    snprintf(err, errsz, "the state document is larger than %u bytes", GA_DOC_MAX);
    goto out;
  }
  j = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *rev = json_object_get(j, "revision"), *pdoc = json_object_get(j, "policies"),
         *plist = json_object_get(pdoc, "policies"), *services = json_object_get(j, "services");
  if (!json_is_object(j) || !json_is_integer(rev) || json_integer_value(rev) < 0 || !json_is_array(plist) ||
      !json_is_array(services)) {
    snprintf(err, errsz, "the state document is not {\"revision\", \"policies\": {\"policies\": [...]}, "
                         "\"services\": [...]}%s%s",
             j ? "" : ": ", j ? "" : jerr.text);
    goto out;
  }
  out->revision = json_integer_value(rev);

  /* Policies: canonical text, checked with the core parser. */
  if (!(out->policies = canonical_policies(plist, err, errsz))) goto out;
  if (!(pfile = ga_policies_file(out->policies, out->revision))) {
    snprintf(err, errsz, "out of memory");
    goto out;
  }
  if (ga_check_policies(pfile, err, errsz) != 0) goto out;

  /* Upstreams from live instances. */
  if (render_instances(services, o, &u, &out->skipped, &out->nservers) != 0) {
    snprintf(err, errsz, "out of memory");
    goto out;
  }
  /* A policy's default version with no live instance still gets an
   * upstream, one that answers 502 at once: the module falls back to the
   * default when a version has no upstream block, and proxy_pass must not
   * then go looking for "SERVICE.VERSION" in DNS. */
  json_array_foreach(plist, i, p) {
    const char *svc = json_name(json_object_get(p, "service")), *dflt = json_name(json_object_get(p, "default"));
    char name[2 * GRAY_NAME_LEN_MAX + 2];
    if (!svc || !dflt) continue; /* the core parser accepted it: cannot happen */
    snprintf(name, sizeof name, "%s.%s", svc, dflt);
    if (ups_find(&u, name) || u.n >= GA_MAX_UPSTREAMS) continue;
    upstream *up = ups_add(&u, name, svc);
    if (!up) {
      snprintf(err, errsz, "out of memory");
      goto out;
    }
    up->placeholder = 1;
  }

  qsort(u.v, u.n, sizeof *u.v, cmp_up);
  sb_printf(&b, "%s", GA_UPSTREAMS_HEAD);
  for (i = 0; i < u.n; i++) {
    upstream *up = &u.v[i];
    if (up->placeholder) {
      sb_printf(&b,
                "# %s: the default of %s's policy has no live instance; requests that fall back to it get 502\n"
                "upstream %s {\n    server 127.0.0.1:1 down;\n}\n",
                up->name, up->service, up->name);
      continue;
    }
    qsort(up->servers, up->n, sizeof *up->servers, cmp_str);
    sb_printf(&b, "upstream %s {\n", up->name);
    for (size_t k = 0; k < up->n; k++) sb_printf(&b, "    server %s;\n", up->servers[k]);
    if (o && o->keepalive > 0) sb_printf(&b, "    keepalive %d;\n", o->keepalive);
    sb_printf(&b, "}\n");
  }
  if (b.oom || !b.p) {
    snprintf(err, errsz, "out of memory");
    goto out;
  }
  out->upstreams = b.p;
  b.p = NULL;
  out->nupstreams = u.n;
  rc = 0;
out:
  if (rc != 0) ga_rendered_clear(out);
  free(b.p);
  free(pfile);
  ups_clear(&u);
  json_decref(j);
  return rc;
}
