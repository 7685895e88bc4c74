/* graylane — ngx_http_gray_module: the request as the evaluator sees it.
 *
 * Every attribute is read from what nginx already parsed: the headers list,
 * the first Cookie header, r->args, r->uri, r->method_name,
 * r->headers_in.server. Nothing is copied; a URL-encoded parameter is
 * decoded into the evaluator's scratch buffer by gray_query_find. */
#include "ngx_http_gray_module.h"

#include "core/model.h" /* gray__check_name: the one name rule of the core */

/* The lookups of cookies, parameters and the client address are kept out of
 * ngx_http_gray_lookup, so that its common cases (a header, the tag, the
 * path) do not pay for their stack frames on every call. */
#if (defined __GNUC__ || defined __clang__)
#define ngx_http_gray_noinline  __attribute__((noinline))
#else
#define ngx_http_gray_noinline
#endif

static ngx_uint_t  ngx_http_gray_hash_cookie;
static ngx_uint_t  ngx_http_gray_hash_tag;
static ngx_uint_t  ngx_http_gray_hash_xff;


void
ngx_http_gray_request_init(void)
{
    ngx_http_gray_hash_cookie = ngx_hash_key((u_char *) "cookie",
                                             sizeof("cookie") - 1);
    ngx_http_gray_hash_tag = ngx_hash_key((u_char *) "x-gray-tag",
                                          sizeof("x-gray-tag") - 1);
    ngx_http_gray_hash_xff = ngx_hash_key((u_char *) "x-forwarded-for",
                                          sizeof("x-forwarded-for") - 1);
}


/* nginx keeps, for every request header, the hash of its lower-cased name
 * (ngx_hash_key over lowcase_key; HTTP/2 names are lower-case already), and
 * marks a header it dropped with hash 0: compare the hash, then the name. */
#define ngx_http_gray_header_is(h, hk, lname, n)                             \
    ((h)->hash == (hk) && (h)->key.len == (n)                                \
     && ngx_memcmp((h)->lowcase_key, lname, n) == 0)


ngx_table_elt_t *
ngx_http_gray_find_header(ngx_http_request_t *r, ngx_uint_t hash,
    const u_char *lname, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;

            if (part->nelts == 0) {
                continue;
            }
        }

        if (hash != 0) {
            if (ngx_http_gray_header_is(&h[i], hash, lname, len)) {
                return &h[i];
            }

        } else if (h[i].hash != 0 && h[i].key.len == len
                   && ngx_memcmp(h[i].lowcase_key, lname, len) == 0)
        {
            return &h[i];
        }
    }
}


/* One walk over the headers for the ones the module reads itself: the
 * first Cookie, the first X-Gray-Tag and the X-Forwarded-For headers. */
static void
ngx_http_gray_scan_headers(ngx_http_gray_ctx_t *ctx)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ctx->headers_done = 1;
    ctx->cookie = NULL;
    ctx->tag = NULL;
    ctx->nxff = 0;

    part = &ctx->r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;

            if (part->nelts == 0) {
                continue;
            }
        }

        if (ctx->cookie == NULL
            && ngx_http_gray_header_is(&h[i], ngx_http_gray_hash_cookie,
                                       "cookie", sizeof("cookie") - 1))
        {
            ctx->cookie = &h[i];

        } else if (ctx->tag == NULL
                   && ngx_http_gray_header_is(&h[i], ngx_http_gray_hash_tag,
                                              "x-gray-tag",
                                              sizeof("x-gray-tag") - 1))
        {
            ctx->tag = &h[i];

        } else if (ngx_http_gray_header_is(&h[i], ngx_http_gray_hash_xff,
                                           "x-forwarded-for",
                                           sizeof("x-forwarded-for") - 1))
        {
            ctx->xff[ctx->nxff % NGX_HTTP_GRAY_XFF_HEADERS] = &h[i];
            ctx->nxff++;
        }
    }
}


ngx_int_t
ngx_http_gray_incoming_tag(ngx_http_request_t *r, ngx_str_t *tag)
{
    char              msg[GRAY_ERROR_TEXT_MAX];
    gray_str_t        s;
    ngx_table_elt_t  *h;

    h = ngx_http_gray_find_header(r, ngx_http_gray_hash_tag,
                                  (u_char *) "x-gray-tag",
                                  sizeof("x-gray-tag") - 1);
    if (h == NULL) {
        return 0;
    }

    s.p = (const char *) h->value.data;
    s.len = h->value.len;

    if (gray__check_name(s, msg, sizeof msg) != GRAY_OK) {
        return 0;
    }

    *tag = h->value;
    return 1;
}


/* cookie:NAME. The first Cookie header (as every executor does) is parsed
 * once per request into ctx->cookies; a header with more cookies than that
 * array holds is searched again past it. The same rules as
 * gray_cookie_find: the first cookie of that name. */
static ngx_http_gray_noinline int
ngx_http_gray_cookie(ngx_http_gray_ctx_t *ctx, gray_str_t name,
    gray_str_t *value)
{
    size_t            pos;
    gray_str_t        s, k, v;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (!ctx->headers_done) {
        ngx_http_gray_scan_headers(ctx);
    }

    h = ctx->cookie;
    if (h == NULL) {
        return 0;
    }

    s.p = (const char *) h->value.data;
    s.len = h->value.len;

    if (!ctx->cookies_done) {
        ctx->cookies_done = 1;
        ctx->ncookies = 0;
        pos = 0;

        while (ctx->ncookies < NGX_HTTP_GRAY_COOKIES
               && gray__cookie_next(s, &pos, &k, &v))
        {
            ctx->cookies[ctx->ncookies].name = k;
            ctx->cookies[ctx->ncookies].value = v;
            ctx->ncookies++;
        }

        ctx->cookies_more = ctx->ncookies == NGX_HTTP_GRAY_COOKIES
                            && gray__cookie_next(s, &pos, &k, &v);
    }

    for (i = 0; i < ctx->ncookies; i++) {
        if (ctx->cookies[i].name.len == name.len
            && ngx_memcmp(ctx->cookies[i].name.p, name.p, name.len) == 0)
        {
            *value = ctx->cookies[i].value;
            return 1;
        }
    }

    if (!ctx->cookies_more) {
        return 0;
    }

    /* not among the first ones: the rest of the header decides */
    return gray_cookie_find(s, name, value);
}


/* param:NAME, through a memo of the last one: the same name in the same
 * query string (rewrites may change r->args between two decisions) gives
 * the same answer without parsing the query string again. */
static ngx_http_gray_noinline int
ngx_http_gray_param(ngx_http_gray_ctx_t *ctx, gray_str_t name,
    gray_str_t *value, char *scratch, size_t scratch_size)
{
    int                  found;
    gray_str_t           s;
    ngx_http_request_t  *r;

    r = ctx->r;

    if (r->args.len == 0) {
        return 0;
    }

    if (ctx->param_memo
        && ctx->param_args.data == r->args.data
        && ctx->param_args.len == r->args.len
        && ctx->param_name_len == name.len
        && ngx_memcmp(ctx->param_name, name.p, name.len) == 0)
    {
        value->p = ctx->param_value;
        value->len = ctx->param_len;
        return ctx->param_found;
    }

    s.p = (const char *) r->args.data;
    s.len = r->args.len;
    found = gray_query_find(s, name, value, scratch, scratch_size);

    if (name.len > sizeof(ctx->param_name)
        || (found && value->len > sizeof(ctx->param_value)))
    {
        ctx->param_memo = 0;
        return found;
    }

    ctx->param_memo = 1;
    ctx->param_found = found ? 1 : 0;
    ctx->param_args = r->args;
    ctx->param_name_len = name.len;
    ngx_memcpy(ctx->param_name, name.p, name.len);
    ctx->param_len = found ? value->len : 0;

    if (ctx->param_len) {
        ngx_memcpy(ctx->param_value, value->p, value->len);
    }

    return found;
}


static ngx_uint_t
ngx_http_gray_trusted_text(u_char *p, size_t len, ngx_array_t *trusted)
{
    in_addr_t             a;
    struct sockaddr_in    sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6   sin6;
#endif

    a = ngx_inet_addr(p, len);

    if (a != INADDR_NONE) {
        ngx_memzero(&sin, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = a;
        return ngx_cidr_match((struct sockaddr *) &sin, trusted) == NGX_OK;
    }

#if (NGX_HAVE_INET6)
    ngx_memzero(&sin6, sizeof(sin6));

    if (ngx_inet6_addr(p, len, sin6.sin6_addr.s6_addr) == NGX_OK) {
        sin6.sin6_family = AF_INET6;
        return ngx_cidr_match((struct sockaddr *) &sin6, trusted) == NGX_OK;
    }
#endif

    return 0;
}


static int
ngx_http_gray_trusted_cb(void *data, const char *p, size_t len)
{
    return ngx_http_gray_trusted_text((u_char *) p, len, data) ? 1 : 0;
}


/* The `ip` attribute. The connection's address, unless the peer is a
 * trusted proxy that sent X-Forwarded-For: then the rightmost address of
 * that list which is not itself a trusted proxy (the leftmost when all
 * are), taken as it is written — a value that is no address makes `ip`
 * conditions false, it never falls back to the proxy's own address. A
 * list with no element at all leaves the attribute absent. */
static ngx_http_gray_noinline int
ngx_http_gray_client_ip(ngx_http_gray_ctx_t *ctx, gray_str_t *value)
{
    ngx_uint_t           i, n, total;
    gray_str_t           vals[NGX_HTTP_GRAY_XFF_HEADERS];
    ngx_table_elt_t     *h;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (ctx->ip_done) {
        *value = ctx->ip;
        return ctx->ip_found;
    }

    ctx->ip_done = 1;
    ctx->ip_found = 0;

    r = ctx->r;
    c = r->connection;

    ctx->ip.p = (const char *) c->addr_text.data;
    ctx->ip.len = c->addr_text.len;
    ctx->ip_found = c->addr_text.data != NULL;

    if (ctx->lcf == NULL || ctx->lcf->trusted == NULL
        || ngx_cidr_match(c->sockaddr, ctx->lcf->trusted) != NGX_OK)
    {
        *value = ctx->ip;
        return ctx->ip_found;
    }

    if (!ctx->headers_done) {
        ngx_http_gray_scan_headers(ctx);
    }

    total = ctx->nxff;

    if (total == 0) {
        *value = ctx->ip;
        return ctx->ip_found;
    }

    /* the headers in order, the oldest of the last ones first */
    n = total < NGX_HTTP_GRAY_XFF_HEADERS ? total : NGX_HTTP_GRAY_XFF_HEADERS;

    for (i = 0; i < n; i++) {
        h = ctx->xff[(total - n + i) % NGX_HTTP_GRAY_XFF_HEADERS];
        vals[i].p = (const char *) h->value.data;
        vals[i].len = h->value.len;
    }

    ctx->ip_found = gray__xff_client(vals, n, ngx_http_gray_trusted_cb,
                                     ctx->lcf->trusted, &ctx->ip) ? 1 : 0;
    *value = ctx->ip;
    return ctx->ip_found;
}


int
ngx_http_gray_lookup(void *data, gray_attr_t attr, gray_str_t name,
    gray_str_t *value, char *scratch, size_t scratch_size)
{
    size_t                i;
    u_char                c;
    ngx_uint_t            hash;
    ngx_table_elt_t      *h;
    ngx_http_request_t   *r;
    ngx_http_gray_ctx_t  *ctx;

    ctx = data;
    r = ctx->r;

    switch (attr) {

    case GRAY_ATTR_HEADER:
        /* nginx's hash of a name, as its HTTP/1 parser computes it, covers
         * only a-z, 0-9 and '-' (and '_' with underscores_in_headers on);
         * a name with any other character is compared by name alone */
        hash = 0;
        for (i = 0; i < name.len; i++) {
            c = (u_char) name.p[i];

            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
                hash = 0;
                break;
            }

            hash = ngx_hash(hash, c); /* as ngx_hash_key */
        }

        h = ngx_http_gray_find_header(r, hash, (const u_char *) name.p,
                                      name.len);
        if (h == NULL) {
            return 0;
        }
        value->p = (const char *) h->value.data;
        value->len = h->value.len;
        return 1;

    case GRAY_ATTR_COOKIE:
        return ngx_http_gray_cookie(ctx, name, value);

    case GRAY_ATTR_PARAM:
        return ngx_http_gray_param(ctx, name, value, scratch, scratch_size);

    case GRAY_ATTR_IP:
        return ngx_http_gray_client_ip(ctx, value);

    case GRAY_ATTR_TAG:
        if (!ctx->headers_done) {
            ngx_http_gray_scan_headers(ctx);
        }
        h = ctx->tag;
        if (h == NULL) {
            return 0;
        }
        value->p = (const char *) h->value.data;
        value->len = h->value.len;
        return 1;

    case GRAY_ATTR_PATH:
        if (r->uri.data == NULL) {
            return 0;
        }
        value->p = (const char *) r->uri.data;
        value->len = r->uri.len;
        return 1;

    case GRAY_ATTR_METHOD:
        if (r->method_name.data == NULL) {
            return 0;
        }
        value->p = (const char *) r->method_name.data;
        value->len = r->method_name.len;
        return 1;

    case GRAY_ATTR_HOST:
        if (r->headers_in.server.len == 0) {
            return 0;
        }
        value->p = (const char *) r->headers_in.server.data;
        value->len = r->headers_in.server.len;
        return 1;
    }

    return 0;
}
