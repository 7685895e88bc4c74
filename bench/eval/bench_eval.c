/* bench/eval: ns per decision of the core evaluator on the 10-rule
 * reference policy against the committed request mix.
 *   bench_eval [--rounds R] [--passes K] [--write-expected FILE] DIR
 * DIR holds reference-policy.json and requests.jsonl. Prints name: value
 * lines on stdout; notes on stderr.
 *
 * Allocation counting: this program defines malloc/calloc/realloc/free
 * over glibc's own, so eval_allocations_per_decision counts every heap
 * allocation in the process during the timed loop, whoever makes it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gray/gray.h"
#include "gray/json.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static unsigned long long g_allocs;

void *malloc(size_t n) {
  g_allocs++;
  return __libc_malloc(n);
}
void *calloc(size_t n, size_t s) {
  g_allocs++;
  return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
  g_allocs++;
  return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }

/* One request in one contiguous block, as an HTTP server holds it (Nginx
 * keeps the request line and headers in one buffer). Copying out of the
 * jansson objects keeps the timed loop from measuring heap scatter. */
typedef struct packed_req {
  gray_kv_request_t kv;
  gray_request_t req;
} packed_req;

static size_t pack_str(char **cur, gray_str_t *s) {
  if (!s->p) return 0;
  memcpy(*cur, s->p, s->len);
  s->p = *cur;
  *cur += s->len;
  return s->len;
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

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int rounds = 9, passes = 50;
  const char *dir = NULL, *expected = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = (int)strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--passes") && i + 1 < argc)
      passes = (int)strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--write-expected") && i + 1 < argc)
      expected = argv[++i];
    else if (argv[i][0] != '-')
      dir = argv[i];
    else {
      fprintf(stderr, "usage: bench_eval [--rounds R] [--passes K] [--write-expected FILE] DIR\n");
      return 64;
    }
  }
  if (!dir || rounds < 1 || rounds > 1000 || passes < 1 || passes > 100000) {
    fprintf(stderr, "usage: bench_eval [--rounds R] [--passes K] [--write-expected FILE] DIR\n");
    return 64;
  }
  char path[4096];
  gray_error_t err;
  char line[1024];
  gray_policyset_t *set = NULL;
  snprintf(path, sizeof path, "%s/reference-policy.json", dir);
  if (gray_policyset_load_file(path, 0, &set, &err)) {
    fprintf(stderr, "bench_eval: %s: %s\n", path, gray_error_format(&err, line, sizeof line));
    return 1;
  }
  const gray_policy_t *pol = gray_policyset_find(set, "order", 5);
  snprintf(path, sizeof path, "%s/requests.jsonl", dir);
  FILE *f = fopen(path, "r");
  if (!f || !pol) {
    fprintf(stderr, "bench_eval: cannot open %s\n", path);
    return 1;
  }
  size_t n = 0, cap = 4096;
  gray_json_request_t **reqs = calloc(cap, sizeof(*reqs));
  static char buf[1 << 16];
  while (fgets(buf, sizeof buf, f)) {
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    if (!j || n == cap || gray_json_request_new(j, &reqs[n], &err)) {
      fprintf(stderr, "bench_eval: bad request line %zu\n", n + 1);
      return 1;
    }
    json_decref(j);
    n++;
  }
  fclose(f);
  const gray_request_t **rq = calloc(n, sizeof(*rq));
  packed_req **packed = calloc(n, sizeof(*packed));
  for (size_t i = 0; i < n; i++) {
    packed[i] = pack(gray_json_request_get(reqs[i]));
    if (!packed[i]) return 1;
    rq[i] = &packed[i]->req;
  }

  /* Decision mix, and the expected file for the peer's agreement check. */
  int by_rule[GRAY_RULES_MAX + 1] = {0};
  FILE *ef = expected ? fopen(expected, "w") : NULL;
  if (expected && !ef) {
    fprintf(stderr, "bench_eval: cannot write %s\n", expected);
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    gray_decision_t d;
    gray_decide(pol, rq[i], &d);
    by_rule[d.rule_index + 1]++;
    if (ef) {
      json_t *j = gray_decision_to_json(&d, NULL);
      char *s = json_dumps(j, JSON_COMPACT);
      fprintf(ef, "%s\n", s);
      free(s);
      json_decref(j);
    }
  }
  if (ef) fclose(ef);
  fprintf(stderr, "bench_eval: %zu requests; decided by default: %d", n, by_rule[0]);
  for (size_t r = 0; r < gray_policy_rule_count(pol); r++)
    fprintf(stderr, ", %s: %d", gray_policy_rule_name(pol, r), by_rule[r + 1]);
  fprintf(stderr, "\n");

  volatile size_t sink = 0;
  for (int w = 0; w < 5; w++)
    for (size_t i = 0; i < n; i++) {
      gray_decision_t d;
      gray_decide(pol, rq[i], &d);
      sink += d.version.len;
    }
  double *ns = calloc((size_t)rounds, sizeof(double));
  unsigned long long allocs_before = g_allocs;
  for (int r = 0; r < rounds; r++) {
    double t0 = now_ns();
    for (int k = 0; k < passes; k++)
      for (size_t i = 0; i < n; i++) {
        gray_decision_t d;
        gray_decide(pol, rq[i], &d);
        sink += d.version.len;
      }
    ns[r] = (now_ns() - t0) / ((double)passes * (double)n);
  }
  unsigned long long allocs = g_allocs - allocs_before;
  double decisions = (double)rounds * passes * (double)n;
  qsort(ns, (size_t)rounds, sizeof(double), cmp_double);
  fprintf(stderr, "bench_eval: rounds min %.1f median %.1f max %.1f ns\n", ns[0], ns[rounds / 2],
          ns[rounds - 1]);
  printf("eval_ns_per_decision: %.1f\n", ns[rounds / 2]);
  printf("eval_allocations_per_decision: %g\n", (double)allocs / decisions);
  printf("eval_decisions_timed: %.0f\n", decisions);
  (void)sink;
  for (size_t i = 0; i < n; i++) {
    gray_json_request_free(reqs[i]);
    free(packed[i]);
  }
  free(packed);
  free(reqs);
  free(rq);
  free(ns);
  gray_policyset_release(set);
  return 0;
}
