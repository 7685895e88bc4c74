/* bench/sdk: pieces shared by the client SDK benchmarks (bench_sdk_decide,
 * bench_sdk_mt, bench_sdk_propagation): the request mix packed as a server
 * holds requests, the reference policy's text, a small libcurl helper for
 * grayd's API, clocks and percentiles. */
#ifndef SDKBENCH_H
#define SDKBENCH_H

#include <stddef.h>
#include <stdint.h>

#include "gray/gray.h"
#include "gray/json.h"

/* The service bench/eval/reference-policy.json is written for, and the
 * versions its rules and default route to. */
#define SB_SERVICE "order"
#define SB_NVERSIONS 3
extern const char *const sb_versions[SB_NVERSIONS];

/* The request mix of DIR/requests.jsonl, each request packed into one
 * contiguous block (as bench/eval does). At most `max` requests. */
typedef struct sb_requests {
  const gray_request_t **rq; /* n entries */
  size_t n;
  void **blocks; /* the packed blocks (free) */
} sb_requests;

int sb_requests_load(const char *dir, size_t max, sb_requests *out);
void sb_requests_free(sb_requests *r);

/* DIR/reference-policy.json as compact JSON with "default" set to
 * `default_version` (NULL: as in the file). New string (free()); NULL on
 * error (reported on stderr). */
char *sb_policy_text(const char *dir, const char *default_version);

/* A keep-alive HTTP/1.1 connection to grayd (libcurl easy handle). */
typedef struct sb_http sb_http;
sb_http *sb_http_new(const char *base_url, const char *token);
void sb_http_free(sb_http *h);
/* METHOD base_url+path with an optional JSON body. Returns the HTTP status
 * (0 on a transport failure, reported on stderr); when `revision` is
 * non-NULL, *revision is the answer's "revision" (-1 when absent). Bounded
 * by a 5 s timeout. */
long sb_http_do(sb_http *h, const char *method, const char *path, const char *body, int64_t *revision);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t sb_now_ns(void);
void sb_sleep_ns(int64_t ns);

/* Sort `v` (n values) and return the nearest-rank percentile q (0..1]. */
double sb_percentile(double *v, size_t n, double q);
int sb_cmp_double(const void *a, const void *b);

/* GRAYLANE_TOKEN from the environment, or NULL. */
const char *sb_token(void);

#endif
