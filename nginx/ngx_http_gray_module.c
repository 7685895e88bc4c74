/* graylane — ngx_http_gray_module: directives, variables and the decision.
 *
 * A request is decided once, lazily: by whichever $gray_* variable is read
 * first, or by the preaccess check of a gray_route location. The decision
 * is the core evaluator's (lib/core) on the policy set the worker runs at
 * that moment; the request keeps a reference to that set until its pool is
 * freed. $gray_upstream is SERVICE.VERSION when the configuration has an
 * upstream of that name, else SERVICE.DEFAULT (policy "fallback": "default"),
 * else the request cannot be served: a gray_route location answers 503
 * (gray_upstream_check). See docs/nginx.md. */
#include "ngx_http_gray_module.h"

#include "core/model.h" /* gray__check_name */

#define NGX_HTTP_GRAY_VAR_VERSION   0
#define NGX_HTTP_GRAY_VAR_TAG       1
#define NGX_HTTP_GRAY_VAR_RULE      2
#define NGX_HTTP_GRAY_VAR_UPSTREAM  3

static ngx_int_t ngx_http_gray_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_gray_init(ngx_conf_t *cf);
static void *ngx_http_gray_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_gray_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_gray_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_gray_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_gray_init_process(ngx_cycle_t *cycle);

static char *ngx_http_gray_policies(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gray_upstreams_revision(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_gray_compile_thread(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gray_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gray_trusted_proxies(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gray_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

static ngx_conf_num_bounds_t  ngx_http_gray_interval_bounds = {
    ngx_conf_check_num_bounds, 1, 3600000
};

static ngx_conf_num_bounds_t  ngx_http_gray_pairs_bounds = {
    ngx_conf_check_num_bounds, 16, NGX_HTTP_GRAY_PAIRS_MAX
};


static ngx_command_t  ngx_http_gray_commands[] = {

    { ngx_string("gray_policies"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_gray_policies,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gray_policies_check_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gray_main_conf_t, check_interval),
      &ngx_http_gray_interval_bounds },

    { ngx_string("gray_policies_compile_thread"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_gray_compile_thread,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gray_status_pairs"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gray_main_conf_t, status_pairs),
      &ngx_http_gray_pairs_bounds },

    { ngx_string("gray_upstreams_revision"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_gray_upstreams_revision,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gray_route"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_gray_route,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gray_upstream_check"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_gray_loc_conf_t, upstream_check),
      NULL },

    { ngx_string("gray_trusted_proxies"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_gray_trusted_proxies,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gray_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gray_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_gray_module_ctx = {
    ngx_http_gray_add_variables,           /* preconfiguration */
    ngx_http_gray_init,                    /* postconfiguration */

    ngx_http_gray_create_main_conf,        /* create main configuration */
    ngx_http_gray_init_main_conf,          /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_gray_create_loc_conf,         /* create location configuration */
    ngx_http_gray_merge_loc_conf           /* merge location configuration */
};


ngx_module_t  ngx_http_gray_module = {
    NGX_MODULE_V1,
    &ngx_http_gray_module_ctx,             /* module context */
    ngx_http_gray_commands,                /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_gray_init_process,            /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_gray_policy_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t ngx_http_gray_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_http_variable_t  ngx_http_gray_vars[] = {

    { ngx_string("gray_version"), NULL, ngx_http_gray_variable,
      NGX_HTTP_GRAY_VAR_VERSION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("gray_tag"), NULL, ngx_http_gray_variable,
      NGX_HTTP_GRAY_VAR_TAG, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("gray_rule"), NULL, ngx_http_gray_variable,
      NGX_HTTP_GRAY_VAR_RULE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("gray_upstream"), NULL, ngx_http_gray_variable,
      NGX_HTTP_GRAY_VAR_UPSTREAM, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* ---- the request's context ------------------------------------------------ */

static void
ngx_http_gray_ctx_cleanup(void *data)
{
    ngx_http_gray_ctx_t  *ctx = data;

    gray_policyset_release(ctx->set);
    ctx->set = NULL;
}


ngx_http_gray_ctx_t *
ngx_http_gray_get_ctx(ngx_http_request_t *r, ngx_uint_t create)
{
    ngx_pool_cleanup_t   *cln;
    ngx_http_gray_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_gray_module);
    if (ctx) {
        return ctx;
    }

    /* An internal redirect clears r->ctx; the pool cleanup that holds the
     * set's reference also finds the context again (as realip does). */
    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_gray_ctx_cleanup) {
            ctx = cln->data;
            if (ctx->r == r) {
                ngx_http_set_ctx(r, ctx, ngx_http_gray_module);
                return ctx;
            }
        }
    }

    if (!create) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_gray_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, offsetof(ngx_http_gray_ctx_t, sval));
    ctx->r = r;
    cln->handler = ngx_http_gray_ctx_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_gray_module);

    return ctx;
}


/* ---- the decision ---------------------------------------------------------- */

static ngx_int_t
ngx_http_gray_name_cmp(const void *one, const void *two)
{
    const ngx_str_t  *a = one, *b = two;
    ngx_int_t         rc;

    rc = ngx_memcmp(a->data, b->data, ngx_min(a->len, b->len));

    if (rc) {
        return rc;
    }

    return (ngx_int_t) a->len - (ngx_int_t) b->len;
}


/* Is there an `upstream SERVICE.VERSION` block (compared as nginx does:
 * without case)? */
static ngx_uint_t
ngx_http_gray_upstream_exists(ngx_http_gray_main_conf_t *mcf,
    gray_str_t service, gray_str_t version)
{
    u_char      buf[2 * GRAY_NAME_LEN_MAX + 2];
    ngx_str_t   key;
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    if (service.len + 1 + version.len > sizeof(buf)) {
        return 0;
    }

    ngx_strlow(buf, (u_char *) service.p, service.len);
    buf[service.len] = '.';
    ngx_strlow(buf + service.len + 1, (u_char *) version.p, version.len);

    key.data = buf;
    key.len = service.len + 1 + version.len;

    lo = 0;
    hi = mcf->nupstreams;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_http_gray_name_cmp(&key, &mcf->upstreams[mid]);

        if (rc == 0) {
            return 1;
        }

        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return 0;
}


/* ngx_http_gray_upstream_exists for a version string of the set the
 * worker holds now, remembered: a decision's version is one of a few
 * strings of the compiled policy (and of no other policy). */
static ngx_uint_t
ngx_http_gray_version_served(ngx_http_gray_main_conf_t *mcf,
    ngx_http_gray_ctx_t *ctx, gray_str_t version)
{
    gray_str_t               service;
    ngx_uint_t               gen;
    ngx_http_gray_exists_t  *e;

    service.p = (const char *) ctx->service.data;
    service.len = ctx->service.len;

    gen = ngx_http_gray_current(mcf, ctx->set);

    if (gen == 0) {
        /* a request that began before the worker swapped its set */
        return ngx_http_gray_upstream_exists(mcf, service, version);
    }

    e = &mcf->exists[((uintptr_t) version.p / 8) % NGX_HTTP_GRAY_EXISTS_CACHE];

    if (e->generation != gen || e->version != version.p) {
        e->generation = gen;
        e->version = version.p;
        e->exists = ngx_http_gray_upstream_exists(mcf, service, version);
    }

    return e->exists;
}


/* The policy of the location's service in the request's set, remembered
 * per location for the set the worker holds now. */
static const gray_policy_t *
ngx_http_gray_find_policy(ngx_http_gray_main_conf_t *mcf,
    ngx_http_gray_loc_conf_t *lcf, gray_policyset_t *set)
{
    ngx_uint_t            gen;
    const gray_policy_t  *p;

    gen = ngx_http_gray_current(mcf, set);

    if (gen && lcf->policy_generation == gen) {
        return lcf->policy;
    }

    p = gray_policyset_find(set, (const char *) lcf->service.data,
                            lcf->service.len);

    if (gen) {
        lcf->policy_generation = gen;
        lcf->policy = p;
    }

    return p;
}


/* $gray_upstream: SERVICE.VERSION of the version that serves (or, when
 * none may, of the decided one), made when first asked for. */
static ngx_int_t
ngx_http_gray_upstream_name(ngx_http_request_t *r, ngx_http_gray_ctx_t *ctx)
{
    u_char      *p;
    gray_str_t   version;

    if (ctx->upstream.len) {
        return NGX_OK;
    }

    if (ctx->served.len) {
        version.p = (const char *) ctx->served.data;
        version.len = ctx->served.len;

    } else {
        version = ctx->d.version;
    }

    p = ngx_pnalloc(r->pool, ctx->service.len + 1 + version.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->upstream.data = p;
    p = ngx_cpymem(p, ctx->service.data, ctx->service.len);
    *p++ = '.';
    p = ngx_cpymem(p, version.p, version.len);
    ctx->upstream.len = p - ctx->upstream.data;

    return NGX_OK;
}


/* Decide the request for the service of its location (once per request and
 * service). NULL on out of memory. */
static ngx_http_gray_ctx_t *
ngx_http_gray_decide(ngx_http_request_t *r, ngx_http_gray_loc_conf_t *lcf)
{
    gray_str_t                  def;
    const gray_policy_t        *p;
    ngx_http_gray_ctx_t        *ctx;
    ngx_http_gray_main_conf_t  *mcf;

    /* Decided already: every $gray_* read after the first one (the
     * variables are not cacheable, for internal redirects) comes here. */
    ctx = ngx_http_get_module_ctx(r, ngx_http_gray_module);

    if (ctx != NULL && ctx->decided && ctx->lcf == lcf) {
        return ctx;
    }

    ctx = ngx_http_gray_get_ctx(r, 1);
    if (ctx == NULL) {
        return NULL;
    }

    /* (after an internal redirect: the context found again, and the
     * location another of the same service) */
    if (ctx->decided
        && (ctx->lcf == lcf
            || (ctx->service.len == lcf->service.len
                && ngx_memcmp(ctx->service.data, lcf->service.data,
                              lcf->service.len) == 0)))
    {
        return ctx;
    }

    ctx->decided = 0;
    ctx->has_policy = 0;
    ctx->fallback = 0;
    ctx->unavailable = 0;
    ctx->upstream.len = 0;
    ctx->served.len = 0;
    ctx->service = lcf->service;
    ctx->lcf = lcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_gray_module);

    if (ctx->set == NULL && mcf->policy.set) {
        ctx->set = gray_policyset_ref(mcf->policy.set);
    }

    ctx->decided = 1;

    p = ngx_http_gray_find_policy(mcf, lcf, ctx->set);

    if (p == NULL) {
        return ctx;
    }

    ctx->has_policy = 1;
    ctx->policy = p;
    ctx->slot_found = 0;
    ctx->slot_headers = 0;
    ctx->slot_cookies = 0;

    ngx_http_gray_evaluate(ctx, p, &ctx->d);

    if (ngx_http_gray_version_served(mcf, ctx, ctx->d.version)) {
        ctx->served.data = (u_char *) ctx->d.version.p;
        ctx->served.len = ctx->d.version.len;
        return ctx;
    }

    def.p = gray_policy_default(p);
    def.len = ngx_strlen(def.p);

    if (!ctx->d.fallback_fail && ngx_http_gray_version_served(mcf, ctx, def)) {
        ctx->fallback = 1;
        ctx->served.data = (u_char *) def.p;
        ctx->served.len = def.len;
        return ctx;
    }

    /* Nothing may serve it. $gray_upstream still names the decided
     * version, which has no upstream block: a proxy_pass to it fails
     * (502) when gray_upstream_check is off. */
    ctx->unavailable = 1;

    return ctx;
}


static ngx_int_t
ngx_http_gray_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t                  s;
    ngx_http_gray_ctx_t       *ctx;
    ngx_http_gray_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_gray_module);

    s.len = 0;
    s.data = NULL;

    ctx = NULL;

    if (lcf->service.len) {
        ctx = ngx_http_gray_decide(r, lcf);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    if (ctx == NULL || !ctx->has_policy) {
        /* No decision: only the incoming tag passes through. */
        if (data == NGX_HTTP_GRAY_VAR_TAG) {
            (void) ngx_http_gray_incoming_tag(r, &s);
        }

    } else {
        switch (data) {

        case NGX_HTTP_GRAY_VAR_VERSION:
            s.data = (u_char *) ctx->d.version.p;
            s.len = ctx->d.version.len;
            break;

        case NGX_HTTP_GRAY_VAR_TAG:
            s.data = (u_char *) ctx->d.tag.p;
            s.len = ctx->d.tag.len;
            break;

        case NGX_HTTP_GRAY_VAR_RULE:
            s.data = (u_char *) ctx->d.rule.p;
            s.len = ctx->d.rule.len;
            break;

        default: /* NGX_HTTP_GRAY_VAR_UPSTREAM */
            if (ngx_http_gray_upstream_name(r, ctx) != NGX_OK) {
                return NGX_ERROR;
            }
            s = ctx->upstream;
        }
    }

    if (s.data == NULL || s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = s.data;
    v->len = s.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* In a gray_route location, answer 503 at once when nothing may serve the
 * request, rather than letting proxy_pass fail on a missing upstream. */
static ngx_int_t
ngx_http_gray_preaccess_handler(ngx_http_request_t *r)
{
    const char                *def, *why;
    ngx_http_gray_ctx_t       *ctx;
    ngx_http_gray_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_gray_module);

    if (lcf->service.len == 0 || !lcf->upstream_check || lcf->status) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_gray_decide(r, lcf);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ctx->has_policy) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gray_route \"%V\": no policy for this service, "
                      "answering 503", &lcf->service);
        ctx->refused = 1;
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ctx->unavailable) {
        def = gray_policy_default(gray_policyset_find(ctx->set,
                  (const char *) lcf->service.data, lcf->service.len));

        if (ngx_strlen(def) == ctx->d.version.len
            && ngx_strncmp(def, ctx->d.version.p, ctx->d.version.len) == 0)
        {
            why = "";

        } else if (ctx->d.fallback_fail) {
            why = " and the policy says \"fallback\": \"fail\"";

        } else {
            why = " nor one for the default version";
        }

        if (ngx_http_gray_upstream_name(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gray_route \"%V\": no upstream \"%V\"%s, answering 503",
                      &lcf->service, &ctx->upstream, why);
        ctx->refused = 1;
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    return NGX_DECLINED;
}


/* ---- directives ------------------------------------------------------------- */

static char *
ngx_http_gray_policies(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gray_main_conf_t  *mcf = conf;

    ngx_int_t            rc;
    ngx_str_t           *value, path;
    ngx_pool_cleanup_t  *cln;

    if (mcf->policy_path.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (path.len == 0) {
        return "needs a file name";
    }

    /* relative to the configuration's directory, as include is */
    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_gray_policy_release;
    cln->data = &mcf->policy;

    mcf->policy_path = path;

    rc = ngx_http_gray_policy_load(&mcf->policy, &path, cf->log,
                                   NGX_MAX_SIZE_T_VALUE);

    if (rc == NGX_AGAIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gray_policies \"%V\": the file changed while "
                           "it was read", &path);
        return NGX_CONF_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "gray_policies \"%V\": %*s",
                           &path, mcf->policy.error_len, mcf->policy.error);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* gray_policies_compile_thread SIZE | off; */
static char *
ngx_http_gray_compile_thread(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gray_main_conf_t  *mcf = conf;

    ssize_t     n;
    ngx_str_t  *value;

    if (mcf->compile_thread != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        mcf->compile_thread = NGX_HTTP_GRAY_THREAD_OFF;
        return NGX_CONF_OK;
    }

    n = ngx_parse_size(&value[1]);

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gray_policies_compile_thread: \"%V\" is neither "
                           "a size (such as 64k) nor \"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* any size over the largest policy file is "off" */
    mcf->compile_thread = ngx_min((size_t) n, NGX_HTTP_GRAY_THREAD_OFF);

    return NGX_CONF_OK;
}


static char *
ngx_http_gray_upstreams_revision(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gray_main_conf_t  *mcf = conf;

    off_t       n;
    ngx_str_t  *value;

    if (mcf->upstreams_revision != -1) {
        return "is duplicate";
    }

    value = cf->args->elts;
    n = ngx_atoof(value[1].data, value[1].len);

    if (n == NGX_ERROR) {
        return "needs a non-negative integer";
    }

    mcf->upstreams_revision = (int64_t) n;

    return NGX_CONF_OK;
}


static char *
ngx_http_gray_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gray_loc_conf_t  *lcf = conf;

    char         msg[GRAY_ERROR_TEXT_MAX];
    gray_str_t   s;
    ngx_str_t   *value;

    if (lcf->service.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    s.p = (const char *) value[1].data;
    s.len = value[1].len;

    if (gray__check_name(s, msg, sizeof msg) != GRAY_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gray_route: invalid service name \"%V\": %s",
                           &value[1], msg);
        return NGX_CONF_ERROR;
    }

    lcf->service = value[1];

    return NGX_CONF_OK;
}


/* The prefix length of a net mask of n bytes (its set bits). */
static ngx_uint_t
ngx_http_gray_mask_bits(const u_char *mask, size_t n)
{
    ngx_uint_t  b, bits;

    bits = 0;

    for (b = 0; b < n * 8; b++) {
        if (mask[b / 8] & (0x80 >> (b % 8))) {
            bits++;
        }
    }

    return bits;
}


static char *
ngx_http_gray_trusted_proxies(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gray_loc_conf_t  *lcf = conf;

    ngx_int_t    rc;
    ngx_str_t   *value;
    ngx_uint_t   i;
    ngx_cidr_t  *cidr;
    gray__cidr  *ip;

    if (lcf->trusted != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    lcf->trusted = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                    sizeof(ngx_cidr_t));
    lcf->trusted_ip = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                       sizeof(gray__cidr));
    if (lcf->trusted == NULL || lcf->trusted_ip == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        cidr = ngx_array_push(lcf->trusted);
        if (cidr == NULL) {
            return NGX_CONF_ERROR;
        }

        rc = ngx_ptocidr(&value[i], cidr);

        if (rc == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gray_trusted_proxies: invalid address or "
                               "network \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_DONE) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "gray_trusted_proxies: low address bits of "
                               "%V are meaningless", &value[i]);
        }

        /* X-Forwarded-For elements are checked in the core's form (an IPv4
         * net as its IPv4-mapped IPv6 net), parsed by the core as the `ip`
         * attribute is: no sockaddr to build per element */
        if (cidr->family != AF_INET
#if (NGX_HAVE_INET6)
            && cidr->family != AF_INET6
#endif
           )
        {
            continue;   /* unix: matches the peer only */
        }

        ip = ngx_array_push(lcf->trusted_ip);
        if (ip == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(ip, sizeof(gray__cidr));

        if (cidr->family == AF_INET) {
            ip->addr[10] = 0xff;
            ip->addr[11] = 0xff;
            ngx_memcpy(&ip->addr[12], &cidr->u.in.addr, 4);
            ip->bits = (uint8_t) (96 + ngx_http_gray_mask_bits(
                                           (u_char *) &cidr->u.in.mask, 4));

#if (NGX_HAVE_INET6)
        } else {
            ngx_memcpy(ip->addr, cidr->u.in6.addr.s6_addr, 16);
            ip->bits = (uint8_t) ngx_http_gray_mask_bits(
                                           cidr->u.in6.mask.s6_addr, 16);
#endif
        }

        gray__cidr_finish(ip);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_gray_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gray_loc_conf_t  *lcf = conf;

    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_gray_main_conf_t  *mcf;

    if (lcf->status) {
        return "is duplicate";
    }

    lcf->status = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_gray_status_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_gray_module);
    mcf->status_used = 1;

    return NGX_CONF_OK;
}


/* ---- configuration ---------------------------------------------------------- */

static void *
ngx_http_gray_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_gray_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_gray_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /* policy_path, policy, upstreams, zone: zeroed */
    mcf->check_interval = NGX_CONF_UNSET_MSEC;
    mcf->compile_thread = NGX_CONF_UNSET_SIZE;
    mcf->status_pairs = NGX_CONF_UNSET;
    mcf->upstreams_revision = -1;

    return mcf;
}


static char *
ngx_http_gray_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_gray_main_conf_t  *mcf = conf;

    ngx_conf_init_msec_value(mcf->check_interval,
                             NGX_HTTP_GRAY_INTERVAL_DEFAULT);
    ngx_conf_init_value(mcf->status_pairs, NGX_HTTP_GRAY_PAIRS_DEFAULT);
    ngx_conf_init_size_value(mcf->compile_thread,
                             NGX_HTTP_GRAY_THREAD_DEFAULT);

    return NGX_CONF_OK;
}


static void *
ngx_http_gray_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_gray_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_gray_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /* service: { 0, NULL } (unset); status: 0 */
    lcf->upstream_check = NGX_CONF_UNSET;
    lcf->trusted = NGX_CONF_UNSET_PTR;
    lcf->trusted_ip = NGX_CONF_UNSET_PTR;

    return lcf;
}


static char *
ngx_http_gray_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_gray_loc_conf_t  *prev = parent;
    ngx_http_gray_loc_conf_t  *conf = child;

    ngx_http_gray_main_conf_t  *mcf;

    if (conf->service.data == NULL) {
        conf->service = prev->service;
    }

    ngx_conf_merge_value(conf->upstream_check, prev->upstream_check, 1);
    ngx_conf_merge_ptr_value(conf->trusted, prev->trusted, NULL);
    ngx_conf_merge_ptr_value(conf->trusted_ip, prev->trusted_ip, NULL);

    if (conf->service.len) {
        mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_gray_module);

        if (mcf->policy_path.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gray_route \"%V\" needs gray_policies in the "
                               "http block", &conf->service);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_gray_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_gray_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* The names of the configuration's upstreams, lower-cased and sorted: what
 * $gray_upstream may name. Fixed until the next reload, as upstreams are. */
static ngx_int_t
ngx_http_gray_collect_upstreams(ngx_conf_t *cf, ngx_http_gray_main_conf_t *mcf)
{
    ngx_uint_t                      i, n;
    ngx_str_t                      *names;
    ngx_http_upstream_main_conf_t  *umcf;
    ngx_http_upstream_srv_conf_t  **uscfp;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);

    if (umcf == NULL || umcf->upstreams.nelts == 0) {
        return NGX_OK;
    }

    uscfp = umcf->upstreams.elts;
    names = ngx_palloc(cf->pool, umcf->upstreams.nelts * sizeof(ngx_str_t));
    if (names == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if (uscfp[i]->host.len == 0) {
            continue;
        }

        names[n].data = ngx_pnalloc(cf->pool, uscfp[i]->host.len);
        if (names[n].data == NULL) {
            return NGX_ERROR;
        }

        ngx_strlow(names[n].data, uscfp[i]->host.data, uscfp[i]->host.len);
        names[n].len = uscfp[i]->host.len;
        n++;
    }

    ngx_sort(names, n, sizeof(ngx_str_t), ngx_http_gray_name_cmp);

    mcf->upstreams = names;
    mcf->nupstreams = n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gray_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;
    ngx_http_gray_main_conf_t  *mcf;

    ngx_http_gray_request_init();

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_gray_module);

    if (mcf->policy_path.len == 0 && !mcf->status_used) {
        return NGX_OK;
    }

    if (ngx_http_gray_status_zone(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->policy_path.len == 0) {
        return NGX_OK;
    }

    if (ngx_http_gray_collect_upstreams(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_gray_preaccess_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_gray_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gray_init_process(ngx_cycle_t *cycle)
{
    ngx_http_gray_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_gray_module);

    if (mcf == NULL) {
        return NGX_OK;
    }

    ngx_http_gray_status_worker(mcf);

    return ngx_http_gray_policy_init_process(cycle, mcf);
}
