/* graylane — compiled policies, requests and decisions (libgray core).
 *
 * A policy set is parsed and compiled once (see gray/json.h), then shared
 * read-only by any number of threads. Deciding performs no allocation and no
 * I/O. Strings handed out by a set stay valid while the caller holds a
 * reference to it. */
#ifndef GRAY_POLICY_H
#define GRAY_POLICY_H

#include "gray/common.h"
#include "gray/err.h"

GRAY_BEGIN_DECLS

/* Limits. Every input beyond one is refused with GRAY_ELIMIT (or
 * GRAY_ETOOBIG for the file size) and an error naming where. */
#define GRAY_POLICY_FILE_MAX (1024 * 1024) /* bytes of one policy file/body */
#define GRAY_POLICIES_MAX 10000             /* policies in one set */
#define GRAY_RULES_MAX 1000                 /* rules in one policy */
#define GRAY_CONDITIONS_MAX 10000           /* condition nodes in one policy */
#define GRAY_DEPTH_MAX 16 /* levels of condition nodes; the top of `when` is 1 */
#define GRAY_VALUES_MAX 10000               /* entries of one value list */
#define GRAY_VALUE_LEN_MAX 4096             /* bytes of one string value */
#define GRAY_NAME_LEN_MAX 63                /* service, version, tag, rule */
#define GRAY_ATTR_NAME_LEN_MAX 256          /* header/cookie/param name */
#define GRAY_REGEX_MATCH_LIMIT 100000       /* PCRE2 match limit per match */
#define GRAY_REGEX_DEPTH_LIMIT 1000         /* PCRE2 depth limit per match */
#define GRAY_SCRATCH_MAX 4096 /* bytes a lookup may decode a value into */

/* Request attributes a condition can read. */
typedef enum {
  GRAY_ATTR_HEADER = 1, /* header:NAME, NAME matched case-insensitively */
  GRAY_ATTR_COOKIE = 2, /* cookie:NAME */
  GRAY_ATTR_PARAM = 3,  /* param:NAME, query-string parameter, URL-decoded */
  GRAY_ATTR_IP = 4,     /* client address (textual IPv4 or IPv6) */
  GRAY_ATTR_TAG = 5,    /* incoming gray tag (X-Gray-Tag) */
  GRAY_ATTR_PATH = 6,   /* request path without the query string */
  GRAY_ATTR_METHOD = 7, /* request method */
  GRAY_ATTR_HOST = 8    /* Host, without port */
} gray_attr_t;

/* The caller's view of a request. `lookup` finds one attribute: it sets
 * *value and returns 1, or returns 0 when the request lacks it. `name` is
 * empty except for header (lower-case), cookie and param. A lookup that must
 * decode (URL-encoded parameters) may write up to `scratch_size` bytes into
 * `scratch` and point *value there; the bytes must stay valid until the next
 * lookup call. It must not block; it may be called several times per
 * decision. */
typedef int (*gray_lookup_fn)(void *ctx, gray_attr_t attr, gray_str_t name,
                              gray_str_t *value, char *scratch,
                              size_t scratch_size);

typedef struct gray_request_s {
  gray_lookup_fn lookup;
  void *ctx;
} gray_request_t;

/* A ready-made request made of arrays, for the CLI, tests and SDK users.
 * All memory is the caller's. Headers: first match wins (names compared
 * case-insensitively). Cookies: the `cookies` array, else the first
 * "Cookie" header. Params: the `params` array (values already decoded),
 * else the raw URL-encoded `query`. */
typedef struct gray_kv_s {
  gray_str_t name;
  gray_str_t value;
} gray_kv_t;

typedef struct gray_kv_request_s {
  const gray_kv_t *headers;
  size_t nheaders;
  const gray_kv_t *cookies;
  size_t ncookies;
  const gray_kv_t *params;
  size_t nparams;
  gray_str_t query; /* raw query string without '?', may be empty */
  gray_str_t ip, tag, path, method, host; /* p == NULL: absent */
} gray_kv_request_t;

/* The gray_lookup_fn for a gray_kv_request_t (ctx). */
GRAY_EXTERN int gray_kv_lookup(void *ctx, gray_attr_t attr, gray_str_t name,
                               gray_str_t *value, char *scratch,
                               size_t scratch_size);

/* Find cookie `name` in one Cookie header value ("a=1; b=2"). Returns 1 and
 * sets *value (borrowed from header) when found, else 0. Pure. */
GRAY_EXTERN int gray_cookie_find(gray_str_t header, gray_str_t name,
                                 gray_str_t *value);
/* Find parameter `name` in a raw query string ("a=1&b=x%20y"); the first
 * occurrence counts. Names are compared after URL-decoding; the value is
 * decoded ('+' is a space) into scratch, or borrowed from query when it has
 * nothing to decode. Returns 1 found, 0 absent, 0 also
 * when the decoded value would not fit in scratch_size. Pure. */
GRAY_EXTERN int gray_query_find(gray_str_t query, gray_str_t name,
                                gray_str_t *value, char *scratch,
                                size_t scratch_size);

/* Sticky bucket of DESIGN.md: murmur3_x86_32(seed 0) over the bytes
 * salt ":" value, mod 10000. Pure. */
GRAY_EXTERN uint32_t gray_murmur3_32(const void *data, size_t len, uint32_t seed);
GRAY_EXTERN uint32_t gray_percent_bucket(gray_str_t salt, gray_str_t value);

typedef struct gray_policyset_s gray_policyset_t;
typedef struct gray_policy_s gray_policy_t;

/* Reference counting. A new set (from the parser) holds one reference.
 * Both are thread-safe; release frees the set when the count reaches zero
 * and accepts NULL. ref returns its argument. */
GRAY_EXTERN gray_policyset_t *gray_policyset_ref(gray_policyset_t *set);
GRAY_EXTERN void gray_policyset_release(gray_policyset_t *set);

/* The set's "revision" (0 when the file had none). */
GRAY_EXTERN int64_t gray_policyset_revision(const gray_policyset_t *set);
GRAY_EXTERN size_t gray_policyset_count(const gray_policyset_t *set);
/* Policies sorted by service name; borrowed from the set. */
GRAY_EXTERN const gray_policy_t *gray_policyset_at(const gray_policyset_t *set, size_t i);
/* The policy of `service`, or NULL. Borrowed. O(log n). */
GRAY_EXTERN const gray_policy_t *gray_policyset_find(const gray_policyset_t *set,
                                                     const char *service, size_t len);

/* Accessors; returned strings are NUL-terminated and borrowed. */
GRAY_EXTERN const char *gray_policy_service(const gray_policy_t *p);
GRAY_EXTERN const char *gray_policy_default(const gray_policy_t *p);
/* 1 when the policy says "fallback": "fail". */
GRAY_EXTERN int gray_policy_fallback_fail(const gray_policy_t *p);
GRAY_EXTERN size_t gray_policy_rule_count(const gray_policy_t *p);
GRAY_EXTERN const char *gray_policy_rule_name(const gray_policy_t *p, size_t i);
GRAY_EXTERN const char *gray_policy_rule_route(const gray_policy_t *p, size_t i);
/* NULL when the rule sets no tag. */
GRAY_EXTERN const char *gray_policy_rule_tag(const gray_policy_t *p, size_t i);

/* The outcome of one decision. Strings are borrowed: from the policy set,
 * except `tag`, which may point into the request when it is the incoming
 * tag. */
typedef struct gray_decision_s {
  gray_str_t service;
  gray_str_t version;  /* the version to serve */
  gray_str_t tag;      /* tag to forward: the rule's, else the incoming one;
                          p == NULL when none */
  gray_str_t rule;     /* name of the deciding rule; p == NULL for default */
  int rule_index;      /* index of that rule, -1 for default */
  int fallback_fail;   /* policy says "fallback": "fail" */
} gray_decision_t;

/* Decide which version serves `req`. No allocation, no I/O, safe from any
 * number of threads on the same policy. */
GRAY_EXTERN void gray_decide(const gray_policy_t *p, const gray_request_t *req,
                             gray_decision_t *out);

/* A trace of one evaluation: every node tried, in order. */
typedef struct gray_trace_s gray_trace_t;

typedef enum {
  GRAY_TRACE_RULE = 1, /* a rule was tried */
  GRAY_TRACE_ALL,
  GRAY_TRACE_ANY,
  GRAY_TRACE_NOT,
  GRAY_TRACE_COND
} gray_trace_kind_t;

#define GRAY_TRACE_VALUE_MAX 256 /* bytes of an attribute value kept */

typedef struct gray_trace_entry_s {
  gray_trace_kind_t kind;
  int rule_index;      /* the rule this entry belongs to */
  const char *rule;    /* its name */
  int depth;           /* 0 for the rule, 1 for the top of `when`, ... */
  const char *attr;    /* COND: "header:x-gray" */
  const char *op;      /* COND: "eq" */
  int present;         /* COND: attribute was found */
  const char *value;   /* COND: its value (copy, NUL-terminated, truncated
                          to GRAY_TRACE_VALUE_MAX bytes), NULL when absent */
  int truncated;       /* value was cut */
  const char *note;    /* why a condition was false besides a mismatch
                          ("not a number", "regex match limit"), or NULL */
  int result;          /* 1 held, 0 did not */
} gray_trace_entry_t;

/* New empty trace (NULL on out of memory). Not thread-safe: one per call. */
GRAY_EXTERN gray_trace_t *gray_trace_new(void);
GRAY_EXTERN void gray_trace_free(gray_trace_t *t);
GRAY_EXTERN size_t gray_trace_count(const gray_trace_t *t);
GRAY_EXTERN const gray_trace_entry_t *gray_trace_at(const gray_trace_t *t, size_t i);

/* Like gray_decide, and also records every node tried into `trace` (which is
 * cleared first). The decision is always the same as gray_decide's. Returns
 * GRAY_OK or GRAY_ENOMEM (the trace is then incomplete). Allocates. */
GRAY_EXTERN int gray_explain(const gray_policy_t *p, const gray_request_t *req,
                             gray_decision_t *out, gray_trace_t *trace);

GRAY_END_DECLS

#endif
