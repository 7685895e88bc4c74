/* graylane — ngx_http_gray_module: counters in shared memory and gray_status.
 *
 * One shared zone ("gray_status") holds a fixed table of counters per
 * service and version, open addressing on a hash of the pair. A worker finds
 * its slot without a lock; only a pair seen for the first time takes the
 * zone's mutex to claim an empty slot (slots are never freed, so a slot's
 * key, once published, never changes); each worker also remembers the
 * slots of the pairs it counted lately, so a request usually needs neither.
 * Counters are atomic increments, two per request in the usual case (the
 * status class and the upstream time bucket; the request count and the
 * time count are their sums). The zone is reused across reloads, so
 * counters survive them. Each worker also publishes the revisions it runs
 * in a slot of its own. */
#include "ngx_http_gray_module.h"

/* worker slots: as many as nginx allows worker processes */
#define NGX_HTTP_GRAY_WORKERS  NGX_MAX_PROCESSES
#define NGX_HTTP_GRAY_NBOUNDS  11   /* finite histogram bounds */

/* Upper bounds of the upstream response time buckets, in milliseconds;
 * one more bucket takes the rest (+Inf). */
static const ngx_msec_t ngx_http_gray_bounds[NGX_HTTP_GRAY_NBOUNDS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};

static const char *ngx_http_gray_bounds_s[NGX_HTTP_GRAY_NBOUNDS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10"
};

typedef struct {
    ngx_atomic_t  ready;        /* key published */
    uint32_t      hash;
    u_char        slen;
    u_char        vlen;
    u_char        service[GRAY_NAME_LEN_MAX + 1];
    u_char        version[GRAY_NAME_LEN_MAX + 1];
    /* requests: the sum of status[]; upstream time count: the sum of
     * time_bucket[] (one increment fewer each, per request) */
    ngx_atomic_t  status[6];    /* [1..5]: 1xx..5xx, [0]: anything else */
    ngx_atomic_t  fallbacks;
    ngx_atomic_t  unavailable;
    ngx_atomic_t  time_sum_ms;
    ngx_atomic_t  time_bucket[NGX_HTTP_GRAY_NBOUNDS + 1]; /* not cumulative */
} ngx_http_gray_counter_t;

/* This worker's slots of the pairs it counted lately (mcf->counter_cache),
 * by the addresses of the two names (the location's service, the version
 * in the policy set): a request of a pair seen before needs neither the
 * hash nor the probe. An entry is used as it is for a request of the set
 * the worker holds, when made for that set (the version's text cannot
 * have moved); otherwise only when its slot's names equal the request's,
 * so a name at a reused address never counts into another pair's slot. */

typedef struct {
    ngx_atomic_t  pid;
    ngx_atomic_t  policy_revision;   /* int64_t */
    ngx_atomic_t  policy_generation;
    ngx_atomic_t  policy_failed;     /* the last reload attempt failed */
    ngx_atomic_t  upstreams_revision; /* int64_t */
} ngx_http_gray_worker_t;

typedef struct {
    ngx_atomic_t             no_policy;  /* routed requests without a policy */
    ngx_atomic_t             overflow;   /* requests of pairs beyond the table */
    ngx_uint_t               nslots;     /* counters[]: gray_status_pairs when made */
    ngx_http_gray_worker_t   workers[NGX_HTTP_GRAY_WORKERS];
    ngx_http_gray_counter_t  counters[];
} ngx_http_gray_shm_t;


static size_t
ngx_http_gray_shm_size(ngx_uint_t nslots)
{
    return offsetof(ngx_http_gray_shm_t, counters)
           + nslots * sizeof(ngx_http_gray_counter_t);
}


/* zone->data holds gray_status_pairs until the zone is initialised. */
static ngx_int_t
ngx_http_gray_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_uint_t            nslots;
    ngx_slab_pool_t      *shpool;
    ngx_http_gray_shm_t  *shm;

    if (data) {
        /* the same zone as before the reload: keep the counters */
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    /* the number of slots is the zone's: a reload that changes
     * gray_status_pairs gets a zone of another size, so a new table
     * (nginx reuses a zone only at the same size) */
    nslots = (ngx_uint_t) (uintptr_t) zone->data;

    shm = ngx_slab_calloc(shpool, ngx_http_gray_shm_size(nslots));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    shm->nslots = nslots;

    shpool->data = shm;
    zone->data = shm;

    return NGX_OK;
}


ngx_int_t
ngx_http_gray_status_zone(ngx_conf_t *cf, ngx_http_gray_main_conf_t *mcf)
{
    size_t           size;
    ngx_str_t        name = ngx_string("gray_status");
    ngx_shm_zone_t  *zone;

    /* the table, the slab allocator's page descriptors, and room to spare */
    size = ngx_http_gray_shm_size((ngx_uint_t) mcf->status_pairs);
    size = ngx_align(size + size / 32 + 16 * ngx_pagesize, ngx_pagesize);

    zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_gray_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_gray_zone_init;
    zone->data = (void *) (uintptr_t) mcf->status_pairs;
    mcf->zone = zone;

    return NGX_OK;
}


static ngx_http_gray_shm_t *
ngx_http_gray_shm(ngx_http_gray_main_conf_t *mcf)
{
    return mcf->zone ? mcf->zone->data : NULL;
}


void
ngx_http_gray_status_worker(ngx_http_gray_main_conf_t *mcf)
{
    ngx_http_gray_shm_t     *shm;
    ngx_http_gray_worker_t  *w;

    shm = ngx_http_gray_shm(mcf);

    if (shm == NULL || ngx_worker >= NGX_HTTP_GRAY_WORKERS
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return;
    }

    w = &shm->workers[ngx_worker];
    w->pid = (ngx_atomic_uint_t) ngx_pid;
    w->policy_revision = (ngx_atomic_uint_t)
        (mcf->policy.set ? gray_policyset_revision(mcf->policy.set) : 0);
    w->policy_generation = mcf->policy.generation;
    w->policy_failed = mcf->policy.error_len != 0;
    w->upstreams_revision = (ngx_atomic_uint_t)
        (mcf->upstreams_revision < 0 ? 0 : mcf->upstreams_revision);
}


static uint32_t
ngx_http_gray_pair_hash(ngx_str_t *service, ngx_str_t *version)
{
    uint32_t  crc;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, service->data, service->len);
    ngx_crc32_update(&crc, (u_char *) "\0", 1);
    ngx_crc32_update(&crc, version->data, version->len);
    ngx_crc32_final(crc);

    return crc;
}


static ngx_http_gray_counter_t *
ngx_http_gray_probe(ngx_http_gray_shm_t *shm, uint32_t hash,
    ngx_str_t *service, ngx_str_t *version, ngx_uint_t *empty)
{
    ngx_uint_t                i, k;
    ngx_http_gray_counter_t  *c;

    for (i = 0; i < shm->nslots; i++) {
        k = (hash + i) % shm->nslots;
        c = &shm->counters[k];

        if (!c->ready) {
            *empty = k;
            return NULL;
        }

        if (c->hash == hash && c->slen == service->len
            && c->vlen == version->len
            && ngx_memcmp(c->service, service->data, service->len) == 0
            && ngx_memcmp(c->version, version->data, version->len) == 0)
        {
            return c;
        }
    }

    *empty = shm->nslots;
    return NULL;
}


static ngx_http_gray_counter_t *
ngx_http_gray_counter_find(ngx_http_gray_main_conf_t *mcf,
    ngx_http_gray_shm_t *shm, ngx_str_t *service, ngx_str_t *version)
{
    uint32_t                  hash;
    ngx_uint_t                empty;
    ngx_slab_pool_t          *shpool;
    ngx_http_gray_counter_t  *c;

    hash = ngx_http_gray_pair_hash(service, version);

    c = ngx_http_gray_probe(shm, hash, service, version, &empty);
    if (c || empty == shm->nslots) {
        return c;
    }

    /* A new pair: claim a slot under the lock, probing again (another
     * worker may have claimed it meanwhile). */
    shpool = (ngx_slab_pool_t *) mcf->zone->shm.addr;
    ngx_shmtx_lock(&shpool->mutex);

    c = ngx_http_gray_probe(shm, hash, service, version, &empty);

    if (c == NULL && empty < shm->nslots) {
        c = &shm->counters[empty];
        c->hash = hash;
        c->slen = (u_char) service->len;
        c->vlen = (u_char) version->len;
        ngx_memcpy(c->service, service->data, service->len);
        ngx_memcpy(c->version, version->data, version->len);
        ngx_memory_barrier();
        c->ready = 1;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return c;
}


static ngx_http_gray_counter_t *
ngx_http_gray_counter(ngx_http_gray_main_conf_t *mcf,
    ngx_http_gray_ctx_t *ctx, ngx_str_t *service, ngx_str_t *version)
{
    ngx_uint_t                   gen;
    ngx_http_gray_shm_t         *shm;
    ngx_http_gray_counter_t     *c;
    ngx_http_gray_cache_slot_t  *e;

    shm = ngx_http_gray_shm(mcf);
    gen = ngx_http_gray_current(mcf, ctx->set);

    if (service->len > GRAY_NAME_LEN_MAX || version->len > GRAY_NAME_LEN_MAX) {
        return NULL;
    }

    e = &mcf->counter_cache[(((uintptr_t) service->data >> 3)
                             ^ ((uintptr_t) version->data >> 3))
                            % NGX_HTTP_GRAY_COUNTER_CACHE];
    c = e->slot;

    if (c == NULL || e->service != service->data
        || e->version != version->data)
    {
        c = NULL;

    } else if (gen && e->generation == gen) {
        return c;   /* the same strings of the set the worker holds */

    } else if (!((u_char *) c >= (u_char *) shm->counters
                 && (u_char *) c < (u_char *) (shm->counters + shm->nslots)
                 && c->slen == service->len && c->vlen == version->len
                 && ngx_memcmp(c->service, service->data, service->len) == 0
                 && ngx_memcmp(c->version, version->data, version->len) == 0))
    {
        c = NULL;
    }

    if (c == NULL) {
        c = ngx_http_gray_counter_find(mcf, shm, service, version);

        if (c == NULL) {
            return NULL;
        }
    }

    e->service = service->data;
    e->version = version->data;
    e->slot = c;
    e->generation = gen;

    return c;
}


ngx_int_t
ngx_http_gray_log_handler(ngx_http_request_t *r)
{
    ngx_str_t                   version;
    ngx_int_t                   ms, sum;
    ngx_uint_t                  i, status, n;
    ngx_http_gray_ctx_t        *ctx;
    ngx_http_gray_shm_t        *shm;
    ngx_http_upstream_state_t  *state;
    ngx_http_gray_counter_t    *c;
    ngx_http_gray_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_gray_module);
    shm = ngx_http_gray_shm(mcf);

    if (shm == NULL) {
        return NGX_OK;
    }

    ctx = ngx_http_gray_get_ctx(r, 0);

    if (ctx == NULL || !ctx->decided) {
        return NGX_OK;
    }

    if (!ctx->has_policy) {
        (void) ngx_atomic_fetch_add(&shm->no_policy, 1);
        return NGX_OK;
    }

    if (ctx->served.len) {
        version = ctx->served;
    } else {
        version.data = (u_char *) ctx->d.version.p;
        version.len = ctx->d.version.len;
    }

    c = ngx_http_gray_counter(mcf, ctx, &ctx->service, &version);

    if (c == NULL) {
        (void) ngx_atomic_fetch_add(&shm->overflow, 1);
        return NGX_OK;
    }

    /* what $status says */
    status = r->err_status ? r->err_status : r->headers_out.status;
    status = status >= 100 && status < 600 ? status / 100 : 0;
    (void) ngx_atomic_fetch_add(&c->status[status], 1);

    if (ctx->fallback) {
        (void) ngx_atomic_fetch_add(&c->fallbacks, 1);
    }

    if (ctx->refused) {
        (void) ngx_atomic_fetch_add(&c->unavailable, 1);
    }

    /* Time spent in upstreams: every attempt, as $upstream_response_time
     * lists them. */
    if (r->upstream_states && r->upstream_states->nelts) {
        state = r->upstream_states->elts;
        n = 0;
        sum = 0;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].status == 0) { /* "-" in $upstream_response_time */
                continue;
            }
            ms = (ngx_msec_int_t) state[i].response_time;
            sum += ngx_max(ms, 0);
            n++;
        }

        if (n) {
            for (i = 0; i < NGX_HTTP_GRAY_NBOUNDS; i++) {
                if ((ngx_msec_t) sum <= ngx_http_gray_bounds[i]) {
                    break;
                }
            }

            (void) ngx_atomic_fetch_add(&c->time_bucket[i], 1);
            if (sum) {
                (void) ngx_atomic_fetch_add(&c->time_sum_ms,
                                            (ngx_atomic_int_t) sum);
            }
        }
    }

    return NGX_OK;
}


/* One pair's counters as read now, with the two sums they imply. */
typedef struct {
    ngx_atomic_uint_t  requests;
    ngx_atomic_uint_t  status[6];
    ngx_atomic_uint_t  fallbacks;
    ngx_atomic_uint_t  unavailable;
    ngx_atomic_uint_t  time_count;
    ngx_atomic_uint_t  time_sum_ms;
    ngx_atomic_uint_t  time_bucket[NGX_HTTP_GRAY_NBOUNDS + 1];
} ngx_http_gray_snap_t;


static void
ngx_http_gray_snap(ngx_http_gray_counter_t *c, ngx_http_gray_snap_t *s)
{
    ngx_uint_t  k;

    s->requests = 0;
    for (k = 0; k < 6; k++) {
        s->status[k] = c->status[k];
        s->requests += s->status[k];
    }

    s->fallbacks = c->fallbacks;
    s->unavailable = c->unavailable;
    s->time_sum_ms = c->time_sum_ms;

    s->time_count = 0;
    for (k = 0; k <= NGX_HTTP_GRAY_NBOUNDS; k++) {
        s->time_bucket[k] = c->time_bucket[k];
        s->time_count += s->time_bucket[k];
    }
}


/* JSON string: quotes, escapes, and \ufffd for bytes that are not UTF-8,
 * so that the answer is always valid JSON. Needs at most 6 * len + 2
 * bytes. */
static u_char *
ngx_http_gray_json_str(u_char *p, u_char *last, u_char *s, size_t len)
{
    size_t      i, k, n;
    ngx_uint_t  c;
    static u_char  hex[] = "0123456789abcdef";

    if (p < last) {
        *p++ = '"';
    }

    for (i = 0; i < len && p + 6 < last; /* void */) {
        c = s[i];

        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (u_char) c;
            i++;
            continue;
        }

        if (c < 0x20 || c == 0x7f) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
            i++;
            continue;
        }

        if (c < 0x80) {
            *p++ = (u_char) c;
            i++;
            continue;
        }

        n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
            : (c & 0xf8) == 0xf0 ? 4 : 0;

        for (k = 1; n && k < n; k++) {
            if (i + k >= len || (s[i + k] & 0xc0) != 0x80) {
                n = 0;
            }
        }

        if (n == 0) {
            p = ngx_cpymem(p, "\\ufffd", 6);
            i++;
            continue;
        }

        p = ngx_cpymem(p, s + i, n);
        i += n;
    }

    if (p < last) {
        *p++ = '"';
    }

    return p;
}


static u_char *
ngx_http_gray_status_json(ngx_http_request_t *r, ngx_http_gray_main_conf_t *mcf,
    ngx_http_gray_shm_t *shm, ngx_uint_t max_workers, ngx_uint_t max_pairs,
    u_char *p, u_char *last)
{
    int64_t                   rev;
    ngx_uint_t                i, k, n, first;
    ngx_atomic_uint_t         cum;
    ngx_http_gray_snap_t      sn;
    ngx_http_gray_worker_t   *w;
    ngx_http_gray_counter_t  *c;

    rev = mcf->policy.set ? gray_policyset_revision(mcf->policy.set) : 0;

    p = ngx_slprintf(p, last, "{\"pid\":%P,\"policy_revision\":%L,"
                     "\"policy_generation\":%ui,\"policies\":%uz,"
                     "\"policy_file\":",
                     ngx_pid, rev, mcf->policy.generation,
                     mcf->policy.set ? gray_policyset_count(mcf->policy.set)
                                     : (size_t) 0);

    if (mcf->policy_path.len) {
        p = ngx_http_gray_json_str(p, last, mcf->policy_path.data,
                                   mcf->policy_path.len);
    } else {
        p = ngx_slprintf(p, last, "null");
    }

    p = ngx_slprintf(p, last, ",\"policy_error\":");

    if (mcf->policy.error_len) {
        p = ngx_http_gray_json_str(p, last, mcf->policy.error,
                                   mcf->policy.error_len);
    } else {
        p = ngx_slprintf(p, last, "null");
    }

    p = ngx_slprintf(p, last, ",\"upstreams_revision\":%L,\"upstreams\":%ui",
                     mcf->upstreams_revision < 0 ? (int64_t) 0
                                                 : mcf->upstreams_revision,
                     mcf->nupstreams);

    if (shm == NULL) {
        return ngx_slprintf(p, last, ",\"workers\":[],\"counters\":[]}\n");
    }

    p = ngx_slprintf(p, last, ",\"requests_without_policy\":%uA,"
                     "\"counters_overflow\":%uA,\"counter_pairs\":%ui,"
                     "\"workers\":[",
                     shm->no_policy, shm->overflow, shm->nslots);

    first = 1;
    n = 0;

    for (i = 0; i < NGX_HTTP_GRAY_WORKERS && n < max_workers; i++) {
        w = &shm->workers[i];

        /* a slot of a worker that is gone (fewer workers after a reload) */
        if (w->pid == 0
            || (kill((ngx_pid_t) w->pid, 0) == -1 && ngx_errno == NGX_ESRCH))
        {
            continue;
        }

        p = ngx_slprintf(p, last, "%s{\"pid\":%uA,\"policy_revision\":%L,"
                         "\"policy_generation\":%uA,\"policy_error\":%s,"
                         "\"upstreams_revision\":%L}",
                         first ? "" : ",", w->pid,
                         (int64_t) w->policy_revision, w->policy_generation,
                         w->policy_failed ? "true" : "false",
                         (int64_t) w->upstreams_revision);
        first = 0;
        n++;
    }

    p = ngx_slprintf(p, last, "],\"counters\":[");
    first = 1;
    n = 0;

    for (i = 0; i < shm->nslots && n < max_pairs; i++) {
        c = &shm->counters[i];

        if (!c->ready) {
            continue;
        }

        n++;

        ngx_http_gray_snap(c, &sn);

        /* names were checked by the policy parser: no escaping needed */
        p = ngx_slprintf(p, last, "%s{\"service\":\"%*s\",\"version\":\"%*s\","
                         "\"requests\":%uA,\"responses\":{\"1xx\":%uA,"
                         "\"2xx\":%uA,\"3xx\":%uA,\"4xx\":%uA,\"5xx\":%uA,"
                         "\"other\":%uA},\"fallbacks\":%uA,\"unavailable\":%uA,"
                         "\"upstream_response_ms\":{\"count\":%uA,\"sum\":%uA,"
                         "\"le\":{",
                         first ? "" : ",", (size_t) c->slen, c->service,
                         (size_t) c->vlen, c->version, sn.requests,
                         sn.status[1], sn.status[2], sn.status[3],
                         sn.status[4], sn.status[5], sn.status[0],
                         sn.fallbacks, sn.unavailable, sn.time_count,
                         sn.time_sum_ms);
        first = 0;
        cum = 0;

        for (k = 0; k <= NGX_HTTP_GRAY_NBOUNDS; k++) {
            cum += sn.time_bucket[k];

            if (k < NGX_HTTP_GRAY_NBOUNDS) {
                p = ngx_slprintf(p, last, "\"%M\":%uA,",
                                 ngx_http_gray_bounds[k], cum);
            } else {
                p = ngx_slprintf(p, last, "\"+Inf\":%uA}}}", cum);
            }
        }
    }

    return ngx_slprintf(p, last, "]}\n");
}


static u_char *
ngx_http_gray_status_prometheus(ngx_http_request_t *r,
    ngx_http_gray_main_conf_t *mcf, ngx_http_gray_shm_t *shm,
    ngx_uint_t max_pairs, u_char *p, u_char *last)
{
    int64_t                   rev;
    ngx_uint_t                i, k, m, n;
    ngx_atomic_uint_t         cum;
    ngx_http_gray_snap_t      sn;
    ngx_http_gray_counter_t  *c;
    static const char        *classes[6] = {
        "other", "1xx", "2xx", "3xx", "4xx", "5xx"
    };

    rev = mcf->policy.set ? gray_policyset_revision(mcf->policy.set) : 0;

    p = ngx_slprintf(p, last,
        "# HELP gray_policy_revision Revision of the policy set the answering"
        " worker runs.\n"
        "# TYPE gray_policy_revision gauge\n"
        "gray_policy_revision %L\n"
        "# HELP gray_policy_reload_error 1 when the last policy file could"
        " not be loaded.\n"
        "# TYPE gray_policy_reload_error gauge\n"
        "gray_policy_reload_error %d\n"
        "# HELP gray_upstreams_revision The gray_upstreams_revision of the"
        " configuration.\n"
        "# TYPE gray_upstreams_revision gauge\n"
        "gray_upstreams_revision %L\n",
        rev, mcf->policy.error_len ? 1 : 0,
        mcf->upstreams_revision < 0 ? (int64_t) 0 : mcf->upstreams_revision);

    if (shm == NULL) {
        return p;
    }

    p = ngx_slprintf(p, last,
        "# HELP gray_requests_without_policy_total Routed requests whose"
        " service had no policy.\n"
        "# TYPE gray_requests_without_policy_total counter\n"
        "gray_requests_without_policy_total %uA\n"
        "# HELP gray_counters_overflow_total Requests not counted: the"
        " counter table is full.\n"
        "# TYPE gray_counters_overflow_total counter\n"
        "gray_counters_overflow_total %uA\n"
        "# HELP gray_counter_pairs Service/version pairs the counter table"
        " holds (gray_status_pairs).\n"
        "# TYPE gray_counter_pairs gauge\n"
        "gray_counter_pairs %ui\n",
        shm->no_policy, shm->overflow, shm->nslots);

    /* One family at a time, as the text format wants. */
    for (m = 0; m < 5; m++) {

        switch (m) {
        case 0:
            p = ngx_slprintf(p, last, "# HELP gray_requests_total Requests"
                             " per service and served version.\n"
                             "# TYPE gray_requests_total counter\n");
            break;
        case 1:
            p = ngx_slprintf(p, last, "# HELP gray_responses_total Responses"
                             " by status class.\n"
                             "# TYPE gray_responses_total counter\n");
            break;
        case 2:
            p = ngx_slprintf(p, last, "# HELP gray_fallbacks_total Requests"
                             " served by the default version because the"
                             " decided one has no upstream.\n"
                             "# TYPE gray_fallbacks_total counter\n");
            break;
        case 3:
            p = ngx_slprintf(p, last, "# HELP gray_unavailable_total Requests"
                             " answered 503: no upstream may serve them.\n"
                             "# TYPE gray_unavailable_total counter\n");
            break;
        default:
            p = ngx_slprintf(p, last, "# HELP gray_upstream_response_seconds"
                             " Time spent in upstreams per request.\n"
                             "# TYPE gray_upstream_response_seconds"
                             " histogram\n");
        }

        n = 0;

        for (i = 0; i < shm->nslots && n < max_pairs; i++) {
            c = &shm->counters[i];

            if (!c->ready) {
                continue;
            }

            n++;
            ngx_http_gray_snap(c, &sn);

            switch (m) {
            case 0:
                p = ngx_slprintf(p, last, "gray_requests_total{service=\"%*s\","
                                 "version=\"%*s\"} %uA\n", (size_t) c->slen,
                                 c->service, (size_t) c->vlen, c->version,
                                 sn.requests);
                break;
            case 1:
                for (k = 1; k <= 6; k++) {
                    p = ngx_slprintf(p, last, "gray_responses_total{service="
                                     "\"%*s\",version=\"%*s\",class=\"%s\"}"
                                     " %uA\n", (size_t) c->slen, c->service,
                                     (size_t) c->vlen, c->version,
                                     classes[k % 6], sn.status[k % 6]);
                }
                break;
            case 2:
                p = ngx_slprintf(p, last, "gray_fallbacks_total{service=\"%*s\","
                                 "version=\"%*s\"} %uA\n", (size_t) c->slen,
                                 c->service, (size_t) c->vlen, c->version,
                                 sn.fallbacks);
                break;
            case 3:
                p = ngx_slprintf(p, last, "gray_unavailable_total{service="
                                 "\"%*s\",version=\"%*s\"} %uA\n",
                                 (size_t) c->slen, c->service,
                                 (size_t) c->vlen, c->version, sn.unavailable);
                break;
            default:
                cum = 0;
                for (k = 0; k <= NGX_HTTP_GRAY_NBOUNDS; k++) {
                    cum += sn.time_bucket[k];
                    p = ngx_slprintf(p, last,
                                     "gray_upstream_response_seconds_bucket{"
                                     "service=\"%*s\",version=\"%*s\","
                                     "le=\"%s\"} %uA\n", (size_t) c->slen,
                                     c->service, (size_t) c->vlen, c->version,
                                     k < NGX_HTTP_GRAY_NBOUNDS
                                         ? ngx_http_gray_bounds_s[k] : "+Inf",
                                     cum);
                }
                p = ngx_slprintf(p, last,
                                 "gray_upstream_response_seconds_sum{service="
                                 "\"%*s\",version=\"%*s\"} %uA.%03uA\n"
                                 "gray_upstream_response_seconds_count{"
                                 "service=\"%*s\",version=\"%*s\"} %uA\n",
                                 (size_t) c->slen, c->service,
                                 (size_t) c->vlen, c->version,
                                 sn.time_sum_ms / 1000, sn.time_sum_ms % 1000,
                                 (size_t) c->slen, c->service,
                                 (size_t) c->vlen, c->version, sn.time_count);
            }
        }
    }

    return p;
}


ngx_int_t
ngx_http_gray_status_handler(ngx_http_request_t *r)
{
    size_t                      size;
    u_char                     *p;
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_str_t                   format;
    ngx_uint_t                  i, used, workers, prom;
    ngx_chain_t                 out;
    ngx_http_gray_shm_t        *shm;
    ngx_http_gray_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    prom = 0;

    if (ngx_http_arg(r, (u_char *) "format", sizeof("format") - 1, &format)
        == NGX_OK)
    {
        if (format.len == sizeof("prometheus") - 1
            && ngx_strncmp(format.data, "prometheus", format.len) == 0)
        {
            prom = 1;

        } else if (!(format.len == sizeof("json") - 1
                     && ngx_strncmp(format.data, "json", format.len) == 0))
        {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_gray_module);
    shm = ngx_http_gray_shm(mcf);

    used = 0;
    workers = 0;

    if (shm) {
        for (i = 0; i < shm->nslots; i++) {
            used += shm->counters[i].ready != 0;
        }

        for (i = 0; i < NGX_HTTP_GRAY_WORKERS; i++) {
            workers += shm->workers[i].pid != 0;
        }
    }

    /* A bound, not a guess: every number is at most 20 digits and every
     * per-pair and per-worker block has a fixed shape. One more of each is
     * allowed for a worker or pair that appears meanwhile; the writers list
     * no more than that, so the answer is always whole (what appears
     * beyond it is in the next answer). */
    workers++;
    used++;

    size = 4096 + 6 * mcf->policy_path.len + 6 * mcf->policy.error_len
           + workers * 256 + used * (prom ? 6144 : 2048);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (prom) {
        p = ngx_http_gray_status_prometheus(r, mcf, shm, used, b->last,
                                            b->end);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
    } else {
        p = ngx_http_gray_status_json(r, mcf, shm, workers, used, b->last,
                                      b->end);
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
