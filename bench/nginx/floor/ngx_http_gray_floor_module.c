/* graylane bench/nginx — ngx_http_gray_floor_module: the floor under any
 * per-request decision made the way ngx_http_gray_module makes it.
 *
 * It has what the real module has around its decision and nothing else:
 * $gray_version and $gray_tag as non-cacheable variables (a request reads
 * them through nginx's script engine, as proxy_set_header does), a
 * preaccess handler and a log-phase handler. The variables answer
 * constants, and the handlers return at once: no context, no policy, no
 * counters. What this costs over stock nginx is what nginx charges any
 * module reached through variables and phases; the real module's own work
 * comes on top (docs/benchmarks.md, "bench/nginx"). Not for production. */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

static ngx_int_t ngx_http_gray_floor_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_gray_floor_init(ngx_conf_t *cf);

static ngx_http_module_t  ngx_http_gray_floor_module_ctx = {
    ngx_http_gray_floor_add_variables,     /* preconfiguration */
    ngx_http_gray_floor_init,              /* postconfiguration */
    NULL, NULL,                            /* main conf */
    NULL, NULL,                            /* server conf */
    NULL, NULL                             /* location conf */
};

ngx_module_t  ngx_http_gray_floor_module = {
    NGX_MODULE_V1,
    &ngx_http_gray_floor_module_ctx,       /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_gray_floor_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t  *s = (ngx_str_t *) data;

    if (s == NULL) {
        /* as the real module's $gray_tag for a request with no tag (most
         * of the reference mix): proxy_set_header then sends no header */
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = s->data;
    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_str_t  ngx_http_gray_floor_version = ngx_string("v1");

static ngx_http_variable_t  ngx_http_gray_floor_vars[] = {

    { ngx_string("gray_version"), NULL, ngx_http_gray_floor_variable,
      (uintptr_t) &ngx_http_gray_floor_version, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("gray_tag"), NULL, ngx_http_gray_floor_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_gray_floor_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_gray_floor_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gray_floor_preaccess(ngx_http_request_t *r)
{
    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_gray_floor_log(ngx_http_request_t *r)
{
    return NGX_OK;
}


static ngx_int_t
ngx_http_gray_floor_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_gray_floor_preaccess;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_gray_floor_log;

    return NGX_OK;
}
