/* graylane — ngx_http_gray_module: the request as the evaluator sees it.
 *
 * Every attribute is read from what nginx already parsed: the headers list,
 * the first Cookie header, r->args, r->uri, r->method_name,
 * r->headers_in.server. Nothing is copied; a URL-encoded parameter is
 * decoded into the evaluator's scratch buffer by gray_query_find. */
#include "ngx_http_gray_module.h"

/* the compiled policy's attribute slots, gray__check_name, the cookie and
 * X-Forwarded-For parsers: the core's own, so both read requests alike */
#include "core/model.h"

/* The lookups of cookies and the client address are kept out of
 * ngx_http_gray_lookup, so that its common cases (a header, the tag, the
 * path) do not pay for their stack frames on every call. */
#if (defined __GNUC__ || defined __clang__)
#define ngx_http_gray_noinline  __attribute__((noinline))
#define ngx_http_gray_inline    inline __attribute__((always_inline))
#else
#define ngx_http_gray_noinline
#define ngx_http_gray_inline    ngx_inline
#endif

static ngx_uint_t  ngx_http_gray_hash_cookie;
static ngx_uint_t  ngx_http_gray_hash_tag;
static ngx_uint_t  ngx_http_gray_hash_xff;
/* the three by hash % 64, as gray_policy_t's header_owner: 1 cookie,
 * 2 x-gray-tag, 3 x-forwarded-for, 255 more than one */
static uint8_t     ngx_http_gray_owner[64];


void
ngx_http_gray_request_init(void)
{
    ngx_http_gray_hash_cookie = ngx_hash_key((u_char *) "cookie",
                                             sizeof("cookie") - 1);
    ngx_http_gray_hash_tag = ngx_hash_key((u_char *) "x-gray-tag",
                                          sizeof("x-gray-tag") - 1);
    ngx_http_gray_hash_xff = ngx_hash_key((u_char *) "x-forwarded-for",
                                          sizeof("x-forwarded-for") - 1);
    ngx_memzero(ngx_http_gray_owner, sizeof(ngx_http_gray_owner));
    gray__owner_mark(&ngx_http_gray_owner[ngx_http_gray_hash_cookie % 64], 0);
    gray__owner_mark(&ngx_http_gray_owner[ngx_http_gray_hash_tag % 64], 1);
    gray__owner_mark(&ngx_http_gray_owner[ngx_http_gray_hash_xff % 64], 2);
}


/* nginx keeps, for every request header, the hash of its lower-cased name
 * (ngx_hash_key over lowcase_key; HTTP/2 names are lower-case already), and
 * marks a header it dropped with hash 0: compare the hash, then the name. */
#define ngx_http_gray_header_is(h, hk, lname, n)                             \
    ((h)->hash == (hk) && (h)->key.len == (n)                                \
     && ngx_memcmp((h)->lowcase_key, lname, n) == 0)

/* The same with hash 0 for a name nginx leaves out of its hash (a
 * character outside a-z, 0-9 and '-'): then by the name alone, among the
 * headers nginx kept. */
#define ngx_http_gray_header_named(h, hk, lname, n)                          \
    ((hk) ? ngx_http_gray_header_is(h, hk, lname, n)                         \
          : ((h)->hash != 0 && (h)->key.len == (n)                           \
             && ngx_memcmp((h)->lowcase_key, lname, n) == 0))


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

        if (ngx_http_gray_header_named(&h[i], hash, lname, len)) {
            return &h[i];
        }
    }
}


/* Is h the first header named as header slot j of the policy (one of the
 * first NGX_HTTP_GRAY_ATTR_SLOTS)? Then it is that slot's value. */
static ngx_http_gray_inline void
ngx_http_gray_header_slot(ngx_http_gray_ctx_t *ctx, ngx_table_elt_t *h,
    uint32_t j)
{
    uint32_t           bit;
    const gray__slot  *sl;

    if (j >= NGX_HTTP_GRAY_ATTR_SLOTS) {
        return;
    }

    bit = (uint32_t) 1 << j;
    sl = &ctx->policy->slots[j];

    if (!(ctx->slot_found & bit)
        && ngx_http_gray_header_named(h, (ngx_uint_t) sl->hash31, sl->name.p,
                                      sl->name.len))
    {
        ctx->slot_found |= bit;
        ctx->sval[j].p = (const char *) h->value.data;
        ctx->sval[j].len = h->value.len;
    }
}


/* One walk over the headers for the ones the module reads itself (the
 * first Cookie, the first X-Gray-Tag, the X-Forwarded-For headers) and,
 * when a policy is being decided with, the first header of each name its
 * conditions read (the first NGX_HTTP_GRAY_ATTR_SLOTS of its attributes; the
 * others are looked for one by one). */
static void
ngx_http_gray_scan_headers(ngx_http_gray_ctx_t *ctx)
{
    uint8_t              po, mo;
    uint32_t             k, nslots;
    ngx_uint_t           i, all;
    const uint8_t       *owner;
    const uint32_t      *slots;
    ngx_list_part_t     *part;
    ngx_table_elt_t     *h;
    const gray_policy_t *p;

    static const uint8_t  none[64];

    ctx->headers_done = 1;
    ctx->cookie = NULL;
    ctx->tag = NULL;
    ctx->nxff = 0;

    p = ctx->policy;
    slots = NULL;
    nslots = 0;
    owner = none;
    all = 0;

    if (p != NULL) {
        ctx->slot_headers = 1;
        slots = p->header_slots;
        nslots = p->nheader_slots;

        while (nslots && slots[nslots - 1] >= NGX_HTTP_GRAY_ATTR_SLOTS) {
            nslots--;   /* the list is in slot order */
        }

        owner = p->header_owner;
        /* a name nginx does not hash is compared with every header */
        all = p->header_by_name;
    }

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

        /* which of the names looked for this header's hash may be */
        po = all ? 255 : owner[h[i].hash % 64];
        mo = all ? 255 : ngx_http_gray_owner[h[i].hash % 64];

        if (po == 0 && mo == 0) {
            continue;
        }

        if (po == 255) {
            for (k = 0; k < nslots; k++) {
                ngx_http_gray_header_slot(ctx, &h[i], slots[k]);
            }

        } else if (po) {
            ngx_http_gray_header_slot(ctx, &h[i], po - 1);
        }

        if (mo == 0) {
            continue;
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


/* cookie:NAME, from the first Cookie header (as every executor reads
 * it): one pass over it finds the first cookie of each name the policy
 * reads among its first NGX_HTTP_GRAY_ATTR_SLOTS attributes; the others are
 * looked for one by one, by the same rules (gray_cookie_find). */
static ngx_http_gray_noinline int
ngx_http_gray_cookie(ngx_http_gray_ctx_t *ctx, uint32_t slot,
    gray_str_t *value)
{
    size_t               pos;
    uint8_t              o;
    uint32_t             bit, i, j, n, left;
    gray_str_t           s, k, v;
    const gray__slot    *sl;
    const gray_policy_t *p;

    if (!ctx->headers_done) {
        ngx_http_gray_scan_headers(ctx);
    }

    if (ctx->cookie == NULL) {
        return 0;
    }

    s.p = (const char *) ctx->cookie->value.data;
    s.len = ctx->cookie->value.len;
    p = ctx->policy;

    if (slot >= NGX_HTTP_GRAY_ATTR_SLOTS) {
        return gray_cookie_find(s, p->slots[slot].name, value);
    }

    if (!ctx->slot_cookies) {
        ctx->slot_cookies = 1;

        n = p->ncookie_slots;
        while (n && p->cookie_slots[n - 1] >= NGX_HTTP_GRAY_ATTR_SLOTS) {
            n--;
        }

        left = 0;
        for (i = 0; i < n; i++) {
            left |= (uint32_t) 1 << p->cookie_slots[i];
        }

        pos = 0;

        while (left && gray__cookie_next(s, &pos, &k, &v)) {
            /* the name's length picks the slot it may be */
            o = p->cookie_owner[k.len < 63 ? k.len : 63];

            if (o == 0) {
                continue;
            }

            for (i = 0; i < n; i++) {
                j = o == 255 ? p->cookie_slots[i] : (uint32_t) o - 1;
                bit = (uint32_t) 1 << j;
                sl = &p->slots[j];

                if (j < NGX_HTTP_GRAY_ATTR_SLOTS && (left & bit)
                    && sl->name.len == k.len
                    && ngx_memcmp(sl->name.p, k.p, k.len) == 0)
                {
                    left &= ~bit;
                    ctx->slot_found |= bit;
                    ctx->sval[j] = v;
                    break;
                }

                if (o != 255) {
                    break;
                }
            }
        }
    }

    if (ctx->slot_found & ((uint32_t) 1 << slot)) {
        *value = ctx->sval[slot];
        return 1;
    }

    return 0;
}


/* gray__ip_parse, remembering the last address parsed for the request: the
 * `ip` attribute is parsed once by the trusted-proxy check and read again
 * by a `cidr` condition. */
static int
ngx_http_gray_ip_parse(ngx_http_gray_ctx_t *ctx, const char *p, size_t len,
    uint8_t out[16])
{
    if (ctx->ip_text != p || ctx->ip_len != len) {
        ctx->ip_text = p;
        ctx->ip_len = len;
        ctx->ip_ok = gray__ip_parse(p, len, ctx->ip_bin) ? 1 : 0;
    }

    ngx_memcpy(out, ctx->ip_bin, 16);

    return ctx->ip_ok;
}


/* Is this X-Forwarded-For element a trusted proxy's address? */
static int
ngx_http_gray_trusted_cb(void *data, const char *p, size_t len)
{
    uint8_t               ip[16];
    ngx_uint_t            i;
    gray__cidr           *c;
    ngx_array_t          *trusted;
    ngx_http_gray_ctx_t  *ctx = data;

    trusted = ctx->lcf->trusted_ip;

    if (trusted == NULL || !ngx_http_gray_ip_parse(ctx, p, len, ip)) {
        return 0;
    }

    c = trusted->elts;

    for (i = 0; i < trusted->nelts; i++) {
        if (gray__cidr_match(&c[i], ip)) {
            return 1;
        }
    }

    return 0;
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

    r = ctx->r;
    c = r->connection;

    value->p = (const char *) c->addr_text.data;
    value->len = c->addr_text.len;

    if (ctx->lcf == NULL || ctx->lcf->trusted == NULL
        || ngx_cidr_match(c->sockaddr, ctx->lcf->trusted) != NGX_OK)
    {
        return c->addr_text.data != NULL;
    }

    if (!ctx->headers_done) {
        ngx_http_gray_scan_headers(ctx);
    }

    total = ctx->nxff;

    if (total == 0) {
        return c->addr_text.data != NULL;
    }

    /* the headers in order, the oldest of the last ones first */
    n = total < NGX_HTTP_GRAY_XFF_HEADERS ? total : NGX_HTTP_GRAY_XFF_HEADERS;

    for (i = 0; i < n; i++) {
        h = ctx->xff[(total - n + i) % NGX_HTTP_GRAY_XFF_HEADERS];
        vals[i].p = (const char *) h->value.data;
        vals[i].len = h->value.len;
    }

    return gray__xff_client(vals, n, ngx_http_gray_trusted_cb, ctx, value);
}


/* One attribute of the policy being decided with, for the evaluator
 * below (inlined into it). */
static ngx_http_gray_inline int
ngx_http_gray_lookup(void *data, const gray_policy_t *p, uint32_t slot,
    gray_str_t *value, char *scratch, size_t scratch_size)
{
    gray_str_t            args;
    ngx_table_elt_t      *h;
    ngx_http_request_t   *r;
    const gray__slot     *sl;
    ngx_http_gray_ctx_t  *ctx;

    ctx = data;
    r = ctx->r;
    sl = &p->slots[slot];

    switch (sl->attr) {

    case GRAY_ATTR_HEADER:
        if (slot < NGX_HTTP_GRAY_ATTR_SLOTS) {
            if (!ctx->slot_headers) {
                ngx_http_gray_scan_headers(ctx);
            }

            if (!(ctx->slot_found & ((uint32_t) 1 << slot))) {
                return 0;
            }

            *value = ctx->sval[slot];
            return 1;
        }

        h = ngx_http_gray_find_header(r, (ngx_uint_t) sl->hash31,
                                      (const u_char *) sl->name.p,
                                      sl->name.len);
        if (h == NULL) {
            return 0;
        }
        value->p = (const char *) h->value.data;
        value->len = h->value.len;
        return 1;

    case GRAY_ATTR_COOKIE:
        return ngx_http_gray_cookie(ctx, slot, value);

    case GRAY_ATTR_PARAM:
        if (r->args.len == 0) {
            return 0;
        }
        args.p = (const char *) r->args.data;
        args.len = r->args.len;
        return gray_query_find(args, sl->name, value, scratch, scratch_size);

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


/* ---- the evaluator, with the lookup above ------------------------------- */

/* A worker is one thread: one match data serves all its regex matches. */
static pcre2_match_data *
ngx_http_gray_match_data(void)
{
    static pcre2_match_data  *md;

    if (md == NULL) {
        md = pcre2_match_data_create(1, NULL);
    }

    return md;
}

#define GRAY_EVAL_TRACE 0
#define GRAY_EVAL_EXTRA
#define GRAY_EVAL_MATCH_DATA() ngx_http_gray_match_data()
#define GRAY_EVAL_IP_PARSE(x, p, len, out)                                    \
    ngx_http_gray_ip_parse((x)->ctx, p, len, out)
#define GRAY_EVAL_LOOKUP(x, slot, value)                                      \
    ngx_http_gray_lookup((x)->ctx, (x)->p, slot, value, (x)->scratch,        \
                         sizeof (x)->scratch)
#include "core/eval_impl.h"


void
ngx_http_gray_evaluate(ngx_http_gray_ctx_t *ctx, const gray_policy_t *p,
    gray_decision_t *out)
{
    ectx  x;

    ectx_init(&x, p, ctx);
    eval_run(p, &x, out);
}
