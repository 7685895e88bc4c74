/* bench/sdk: shared pieces; see sdkbench.h. */
#define _GNU_SOURCE
#include "sdkbench.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const sb_versions[SB_NVERSIONS] = {"v1", "v2", "v3"};

/* ---- requests ------------------------------------------------------------ */

/* One request in one contiguous block, as an HTTP server holds it; the same
 * packing as bench/eval/bench_eval.c. */
typedef struct packed_req {
  gray_kv_request_t kv;
  gray_request_t req;
} packed_req;

static void pack_str(char **cur, gray_str_t *s) {
  if (!s->p) return;
  memcpy(*cur, s->p, s->len);
  s->p = *cur;
  *cur += s->len;
}

static packed_req *pack(const gray_request_t *src) {
  const gray_kv_request_t *kv = src->ctx;
  size_t npairs = kv->nheaders + kv->ncookies + kv->nparams;
  size_t bytes = sizeof(packed_req) + npairs * sizeof(gray_kv_t) + 1;
  const gray_kv_t *lists[3] = {kv->headers, kv->cookies, kv->params};
  size_t counts[3] = {kv->nheaders, kv->ncookies, kv->nparams};
  for (int l = 0; l < 3; l++)
    for (size_t i = 0; i < counts[l]; i++) bytes += lists[l][i].name.len + lists[l][i].value.len;
  bytes += kv->query.len + kv->ip.len + kv->tag.len + kv->path.len + kv->method.len + kv->host.len;
  packed_req *r = calloc(1, bytes);
  if (!r) return NULL;
  r->kv = *kv;
  gray_kv_t *pairs = (gray_kv_t *)(r + 1);
  char *cur = (char *)(pairs + npairs);
  gray_kv_t *out[3];
  for (int l = 0; l < 3; l++) {
    out[l] = lists[l] ? pairs : NULL;
    for (size_t i = 0; i < counts[l]; i++) {
      *pairs = lists[l][i];
      pack_str(&cur, &pairs->name);
      pack_str(&cur, &pairs->value);
      pairs++;
    }
  }
  r->kv.headers = out[0];
  r->kv.cookies = out[1];
  r->kv.params = out[2];
  pack_str(&cur, &r->kv.query);
  pack_str(&cur, &r->kv.ip);
  pack_str(&cur, &r->kv.tag);
  pack_str(&cur, &r->kv.path);
  pack_str(&cur, &r->kv.method);
  pack_str(&cur, &r->kv.host);
  r->req.lookup = gray_kv_lookup;
  r->req.ctx = &r->kv;
  return r;
}

int sb_requests_load(const char *dir, size_t max, sb_requests *out) {
  char path[4096];
  static char line[1 << 16];
  memset(out, 0, sizeof *out);
  snprintf(path, sizeof path, "%s/requests.jsonl", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "bench_sdk: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  out->rq = calloc(max, sizeof(*out->rq));
  out->blocks = calloc(max, sizeof(*out->blocks));
  if (!out->rq || !out->blocks) goto fail;
  while (out->n < max && fgets(line, sizeof line, f)) {
    json_error_t jerr;
    gray_error_t err;
    gray_json_request_t *jr = NULL;
    json_t *j = json_loads(line, 0, &jerr);
    if (!j || gray_json_request_new(j, &jr, &err) != GRAY_OK) {
      fprintf(stderr, "bench_sdk: %s: bad request line %zu\n", path, out->n + 1);
      json_decref(j);
      goto fail;
    }
    json_decref(j); /* the request keeps its own reference */
    packed_req *p = pack(gray_json_request_get(jr));
    gray_json_request_free(jr);
    if (!p) goto fail;
    out->blocks[out->n] = p;
    out->rq[out->n] = &p->req;
    out->n++;
  }
  fclose(f);
  if (out->n == 0) {
    fprintf(stderr, "bench_sdk: %s: no requests\n", path);
    sb_requests_free(out);
    return -1;
  }
  return 0;
fail:
  fclose(f);
  sb_requests_free(out);
  return -1;
}

void sb_requests_free(sb_requests *r) {
  if (r->blocks)
    for (size_t i = 0; i < r->n; i++) free(r->blocks[i]);
  free(r->blocks);
  free((void *)r->rq);
  memset(r, 0, sizeof *r);
}

/* ---- the reference policy ------------------------------------------------ */

char *sb_policy_text(const char *dir, const char *default_version) {
  char path[4096];
  json_error_t jerr;
  snprintf(path, sizeof path, "%s/reference-policy.json", dir);
  json_t *p = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (!p || !json_is_object(p)) {
    fprintf(stderr, "bench_sdk: %s: %s\n", path, p ? "not an object" : jerr.text);
    json_decref(p);
    return NULL;
  }
  const char *svc = json_string_value(json_object_get(p, "service"));
  if (!svc || strcmp(svc, SB_SERVICE)) {
    fprintf(stderr, "bench_sdk: %s: expected service \"%s\"\n", path, SB_SERVICE);
    json_decref(p);
    return NULL;
  }
  if (default_version && json_object_set_new(p, "default", json_string(default_version)) != 0) {
    json_decref(p);
    return NULL;
  }
  char *s = json_dumps(p, JSON_COMPACT);
  json_decref(p);
  if (!s) return NULL;
  /* jansson's allocator may not be free(): hand back a malloc'd copy. */
  char *copy = strdup(s);
  json_malloc_t m;
  json_free_t fr;
  json_get_alloc_funcs(&m, &fr);
  fr(s);
  return copy;
}

/* ---- HTTP ------------------------------------------------------------------ */

struct sb_http {
  CURL *h;
  struct curl_slist *hdrs;
  char base[1024];
  char buf[65536];
  size_t len;
  char err[CURL_ERROR_SIZE];
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg) {
  sb_http *h = arg;
  size_t k = sz * n, room = sizeof h->buf - 1 - h->len;
  memcpy(h->buf + h->len, p, k < room ? k : room);
  h->len += k < room ? k : room;
  return k;
}

sb_http *sb_http_new(const char *base_url, const char *token) {
  static int curl_ok = -1;
  if (curl_ok < 0) curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  sb_http *h = calloc(1, sizeof *h);
  if (!h || !curl_ok || !(h->h = curl_easy_init())) {
    free(h);
    return NULL;
  }
  snprintf(h->base, sizeof h->base, "%s", base_url);
  char auth[512];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
  struct curl_slist *l = curl_slist_append(NULL, auth);
  if (l) l = curl_slist_append(l, "Content-Type: application/json");
  if (l) l = curl_slist_append(l, "Expect:"); /* no 100-continue round trip */
  if (!l) {
    sb_http_free(h);
    return NULL;
  }
  h->hdrs = l;
  curl_easy_setopt(h->h, CURLOPT_HTTPHEADER, h->hdrs);
  curl_easy_setopt(h->h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h->h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h->h, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(h->h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
  curl_easy_setopt(h->h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h->h, CURLOPT_WRITEDATA, h);
  curl_easy_setopt(h->h, CURLOPT_ERRORBUFFER, h->err);
  return h;
}

void sb_http_free(sb_http *h) {
  if (!h) return;
  if (h->h) curl_easy_cleanup(h->h);
  curl_slist_free_all(h->hdrs);
  free(h);
}

long sb_http_do(sb_http *h, const char *method, const char *path, const char *body, int64_t *revision) {
  char url[2048];
  long status = 0;
  snprintf(url, sizeof url, "%s%s", h->base, path);
  h->len = 0;
  h->err[0] = '\0';
  if (revision) *revision = -1;
  curl_easy_setopt(h->h, CURLOPT_URL, url);
  curl_easy_setopt(h->h, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(h->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  } else {
    curl_easy_setopt(h->h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h->h, CURLOPT_CUSTOMREQUEST, method);
  }
  CURLcode rc = curl_easy_perform(h->h);
  if (rc != CURLE_OK) {
    fprintf(stderr, "bench_sdk: %s %s: %s\n", method, url, h->err[0] ? h->err : curl_easy_strerror(rc));
    return 0;
  }
  curl_easy_getinfo(h->h, CURLINFO_RESPONSE_CODE, &status);
  h->buf[h->len] = '\0';
  if (status < 200 || status > 299) {
    fprintf(stderr, "bench_sdk: %s %s: HTTP %ld %.300s\n", method, url, status, h->buf);
    return status;
  }
  if (revision) {
    json_error_t jerr;
    json_t *j = json_loadb(h->buf, h->len, 0, &jerr);
    json_t *r = j ? json_object_get(j, "revision") : NULL;
    if (json_is_integer(r)) *revision = (int64_t)json_integer_value(r);
    json_decref(j);
  }
  return status;
}

/* ---- clocks, statistics ---------------------------------------------------- */

int64_t sb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sb_sleep_ns(int64_t ns) {
  if (ns <= 0) return;
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int sb_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double sb_percentile(double *v, size_t n, double q) {
  if (n == 0) return 0;
  qsort(v, n, sizeof *v, sb_cmp_double);
  size_t rank = (size_t)(q * (double)n + 0.999999); /* nearest rank, 1-based */
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return v[rank - 1];
}

const char *sb_token(void) {
  const char *t = getenv("GRAYLANE_TOKEN");
  return t && *t ? t : NULL;
}
