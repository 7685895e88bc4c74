/* graylane — ngx_http_gray_module: declarations shared by the module's files.
 *
 *   ngx_http_gray_module.c   directives, variables, the decision, phases
 *   ngx_http_gray_request.c  the request as the evaluator sees it (lookups)
 *   ngx_http_gray_policy.c   the policy file: load at configuration time,
 *                            notice and swap a new one in each worker
 *   ngx_http_gray_status.c   counters in shared memory, gray_status
 *
 * Nginx workers are single-threaded; a worker starts a thread of ours only
 * to compile a big policy file, and joins it when the result is in
 * (ngx_http_gray_policy.c: the thread's start and join are the hand-offs).
 * Nothing here takes a lock except the counters' insertion of a new
 * service/version pair (shared memory, all workers). See docs/nginx.md. */
#ifndef NGX_HTTP_GRAY_MODULE_H_INCLUDED
#define NGX_HTTP_GRAY_MODULE_H_INCLUDED

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "gray/policy.h"

#define NGX_HTTP_GRAY_ERROR_MAX (GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX + 64)
#define NGX_HTTP_GRAY_INTERVAL_DEFAULT 200 /* ms between two stat() calls */
#define NGX_HTTP_GRAY_ATTR_SLOTS 16 /* header/cookie attributes found at once */
#define NGX_HTTP_GRAY_EXISTS_CACHE 16 /* upstream answers kept per worker */
#define NGX_HTTP_GRAY_COUNTER_CACHE 64 /* counter slots kept per worker */
#define NGX_HTTP_GRAY_XFF_HEADERS 16 /* X-Forwarded-For headers considered */
#define NGX_HTTP_GRAY_PAIRS_DEFAULT 2048 /* gray_status_pairs */
#define NGX_HTTP_GRAY_PAIRS_MAX 1048576
/* gray_policies_compile_thread: a file this big takes 9-13 ms to compile
 * on a slow machine when it is all regexes (docs/nginx.md) */
#define NGX_HTTP_GRAY_THREAD_DEFAULT (64 * 1024)
#define NGX_HTTP_GRAY_THREAD_OFF ((size_t) GRAY_POLICY_FILE_MAX + 1)

/* Identity of the policy file as stat() sees it: a change of any field means
 * a new file to read. `err` is the errno of a failed stat(), else 0. */
typedef struct {
    dev_t   dev;
    ino_t   ino;
    off_t   size;
    time_t  mtime_sec;
    long    mtime_nsec;
    time_t  ctime_sec;
    long    ctime_nsec;
    int     err;
} ngx_http_gray_file_id_t;

/* The policy set one process runs and what it knows about the file. The
 * master fills it at configuration time; each worker inherits it and then
 * keeps its own copy current on its timer. */
typedef struct {
    gray_policyset_t         *set;        /* one reference; NULL: none */
    ngx_uint_t                generation; /* sets this process loaded */
    ngx_uint_t                seen;       /* `id` is valid */
    ngx_uint_t                racy;       /* `id` may not show the next change */
    ngx_http_gray_file_id_t   id;         /* the file last read (or tried) */
    u_char                   *content;    /* its bytes (ngx_alloc), or NULL */
    size_t                    content_len;
    size_t                    error_len;  /* 0: the last attempt succeeded */
    u_char                    error[NGX_HTTP_GRAY_ERROR_MAX];
} ngx_http_gray_policy_t;

/* The per-worker caches below hold answers about strings of the policy
 * set the worker held when they were made, keyed by address; each records
 * that set's policy.generation (0: made for an older set, trusted by
 * nothing). Loading a set bumps the generation, so an entry of the current
 * generation is about the current set, whose strings stay put. */

/* A counter slot of a service/version pair, by the addresses of its names
 * (see ngx_http_gray_counter in ngx_http_gray_status.c). */
typedef struct {
    u_char                   *service;
    u_char                   *version;
    void                     *slot;     /* in the shared zone */
    ngx_uint_t                generation;
} ngx_http_gray_cache_slot_t;

/* Whether a version (a decision's, or a policy's default) has an upstream
 * block. */
typedef struct {
    ngx_uint_t                generation;
    const char               *version;
    ngx_uint_t                exists;
} ngx_http_gray_exists_t;

typedef struct {
    ngx_str_t                 policy_path;     /* full, NUL-terminated; len 0: unset */
    ngx_msec_t                check_interval;  /* gray_policies_check_interval */
    /* gray_policies_compile_thread: files of at least this many bytes are
     * compiled in a compiler thread (NGX_HTTP_GRAY_THREAD_OFF: never) */
    size_t                    compile_thread;
    ngx_int_t                 status_pairs;    /* gray_status_pairs: counter slots */
    int64_t                   upstreams_revision; /* -1: unset (printed as 0) */
    ngx_http_gray_policy_t    policy;
    ngx_str_t                *upstreams;       /* lower-case names, sorted */
    ngx_uint_t                nupstreams;
    ngx_shm_zone_t           *zone;            /* counters; NULL when unused */
    /* this worker's answers of ngx_http_gray_upstream_exists for the
     * versions of the set it holds now (policy.set at policy.generation) */
    ngx_http_gray_exists_t    exists[NGX_HTTP_GRAY_EXISTS_CACHE];
    ngx_http_gray_cache_slot_t counter_cache[NGX_HTTP_GRAY_COUNTER_CACHE];
    ngx_event_t               timer;
    ngx_uint_t                status_used;     /* some location has gray_status */
} ngx_http_gray_main_conf_t;

typedef struct {
    ngx_str_t                 service;         /* gray_route; data NULL: unset */
    ngx_flag_t                upstream_check;  /* gray_upstream_check */
    ngx_array_t              *trusted;         /* gray_trusted_proxies: ngx_cidr_t */
    ngx_array_t              *trusted_ip;      /* the same IP nets: gray__cidr */
    ngx_uint_t                status;          /* gray_status here */
    /* this worker's policy for `service` in its set of policy_generation */
    ngx_uint_t                policy_generation;
    const gray_policy_t      *policy;
} ngx_http_gray_loc_conf_t;

/* One request's decision. Strings borrow from `set` (held until the
 * request's pool goes) or from the request itself. */
typedef struct {
    ngx_http_request_t       *r;
    ngx_http_gray_loc_conf_t *lcf;         /* of the decision: trusted proxies */
    gray_policyset_t         *set;         /* the set this request started with */
    const gray_policy_t      *policy;      /* the one being decided with */
    ngx_str_t                 service;     /* decided for */
    gray_decision_t           d;
    ngx_str_t                 upstream;    /* SERVICE.VERSION to proxy to */
    ngx_str_t                 served;      /* its version; len 0: none exists */
    ngx_table_elt_t          *cookie;      /* the first Cookie header */
    ngx_table_elt_t          *tag;         /* the first X-Gray-Tag header */
    ngx_uint_t                nxff;        /* X-Forwarded-For headers seen */
    uint32_t                  slot_found;  /* bit i: sval[i] is slot i's value */
    const char               *ip_text;     /* an address parsed already: */
    size_t                    ip_len;
    uint8_t                   ip_bin[16];  /* its gray__ip_parse */
    unsigned                  decided:1;
    unsigned                  has_policy:1;
    unsigned                  fallback:1;  /* served by the default version */
    unsigned                  unavailable:1; /* no upstream may serve it */
    unsigned                  refused:1;   /* answered 503 by this module */
    unsigned                  headers_done:1; /* cookie, tag, xff found */
    unsigned                  slot_headers:1; /* header slots of `policy` found */
    unsigned                  slot_cookies:1; /* cookie slots of `policy` found */
    unsigned                  ip_ok:1;     /* ip_text is an address */
    /* last: a new context is zeroed up to here */
    /* the values of the policy's first NGX_HTTP_GRAY_ATTR_SLOTS attributes
     * that are headers or cookies, each found in one pass over the headers
     * or the Cookie header (see ngx_http_gray_request.c) */
    gray_str_t                sval[NGX_HTTP_GRAY_ATTR_SLOTS];
    /* the last X-Forwarded-For headers, a ring: the n-th seen at
     * xff[n % NGX_HTTP_GRAY_XFF_HEADERS] */
    ngx_table_elt_t          *xff[NGX_HTTP_GRAY_XFF_HEADERS];
} ngx_http_gray_ctx_t;

extern ngx_module_t ngx_http_gray_module;

/* ngx_http_gray_request.c */
/* Hashes of the header names the module looks for (at configuration). */
void ngx_http_gray_request_init(void);
/* The generation of the set the worker holds when that is `set`, else 0
 * (see the caches above). */
static ngx_inline ngx_uint_t
ngx_http_gray_current(ngx_http_gray_main_conf_t *mcf, gray_policyset_t *set)
{
    return set != NULL && set == mcf->policy.set ? mcf->policy.generation : 0;
}

/* Decide the request of ctx with p (the core's evaluator with the module's
 * lookups inlined). */
void ngx_http_gray_evaluate(ngx_http_gray_ctx_t *ctx, const gray_policy_t *p,
    gray_decision_t *out);
/* The first header named lname (lower-case), found by nginx's hash of the
 * lower-cased name (ngx_hash_key(lname, len)), then the name; hash 0: by the
 * name alone. */
ngx_table_elt_t *ngx_http_gray_find_header(ngx_http_request_t *r,
    ngx_uint_t hash, const u_char *lname, size_t len);
/* The incoming X-Gray-Tag when it is a valid name, else 0. */
ngx_int_t ngx_http_gray_incoming_tag(ngx_http_request_t *r, ngx_str_t *tag);

/* ngx_http_gray_policy.c */
/* Read the file when its identity changed since the last call, and
 * compile it when it has fewer than `inline_max` bytes. NGX_OK: a new set
 * is in place (the old one released). NGX_DONE: new bytes, `inline_max` or
 * more, are in pol->content, for the caller to compile. NGX_DECLINED: the
 * file is the one already seen. NGX_AGAIN: it changed while being read
 * (try again later). NGX_ERROR: it could not be used; pol->error says why
 * and the current set stays. Never logs. */
ngx_int_t ngx_http_gray_policy_load(ngx_http_gray_policy_t *pol,
    ngx_str_t *path, ngx_log_t *log, size_t inline_max);
void ngx_http_gray_policy_release(void *data);
/* A worker's policy checks: the timer, and the thread that compiles a big
 * new file off the event loop (one per file; a compile under way at exit is
 * waited for by ngx_http_gray_policy_exit_process). */
ngx_int_t ngx_http_gray_policy_init_process(ngx_cycle_t *cycle,
    ngx_http_gray_main_conf_t *mcf);
void ngx_http_gray_policy_exit_process(ngx_cycle_t *cycle);

/* ngx_http_gray_status.c */
ngx_int_t ngx_http_gray_status_zone(ngx_conf_t *cf,
    ngx_http_gray_main_conf_t *mcf);
/* Publish this worker's policy and upstream revisions to shared memory. */
void ngx_http_gray_status_worker(ngx_http_gray_main_conf_t *mcf);
ngx_int_t ngx_http_gray_log_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gray_status_handler(ngx_http_request_t *r);

/* ngx_http_gray_module.c */
/* The request's context, created when `create` is set (NULL on out of
 * memory or when absent). Survives internal redirects. */
ngx_http_gray_ctx_t *ngx_http_gray_get_ctx(ngx_http_request_t *r,
    ngx_uint_t create);

#endif
