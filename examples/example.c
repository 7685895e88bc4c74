/* graylane examples — shared plumbing (see example.h). */
#include "example.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/keyvalq_struct.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define EX_BODY_MAX (64 * 1024)  /* bytes of a callee's answer */
#define EX_CALL_TIMEOUT_S 5      /* a callee that takes longer is a failure */
#define EX_CHAIN_HEAD "{\"chain\": [\n  "
#define EX_CHAIN_SEP ",\n  "
#define EX_CHAIN_TAIL "\n]}\n"

/* ------------------------------------------------------------------ flags */

static void usage(FILE *f, const char *service) {
  fprintf(f,
          "usage: %s [--listen HOST:PORT] [--grayd URL] [--token TOKEN] [--version V]\n"
          "       %*s [--cache FILE] [--id ID] [--address IP] [--ttl S]\n"
          "\n"
          "graylane example service `%s`: registers itself in grayd and follows its\n"
          "policies with the client SDK (see examples/README.md).\n"
          "\n"
          "  --listen HOST:PORT  address to serve (default 127.0.0.1:0, a free port);\n"
          "                      prints \"%s: listening on http://HOST:PORT\"\n"
          "  --grayd URL         grayd, or a comma-separated list tried in turn\n"
          "                      (default $GRAYLANE_SERVER, else http://127.0.0.1:7070)\n"
          "  --token TOKEN       bearer token with role agent (default $GRAYLANE_TOKEN;\n"
          "                      the environment keeps it out of `ps`)\n"
          "  --version V         this instance's version (default v1)\n"
          "  --cache FILE        last-good snapshot file: with it, a restart while grayd\n"
          "                      is down still routes\n"
          "  --id ID             instance id (default SERVICE-VERSION-PORT)\n"
          "  --address IP        address to register (default the --listen host)\n"
          "  --ttl S             registration TTL in seconds (default 15)\n"
          "  --help              this text\n",
          service, (int)strlen(service), "", service, service);
}

/* "--name value" or "--name=value". Returns 1 and sets *val when argv[*i]
 * is `name`; 2 when it is but the value is missing. */
static int flag(int argc, char **argv, int *i, const char *name, const char **val) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return 0;
  if (a[n] == '=') {
    *val = a + n + 1;
    return 1;
  }
  if (a[n] != '\0') return 0;
  if (*i + 1 >= argc) return 2;
  *val = argv[++*i];
  return 1;
}

static int parse_int(const char *s, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

/* Split "HOST:PORT" or "[V6]:PORT". */
static int parse_listen(const char *s, char *host, size_t size, int *port) {
  const char *colon = strrchr(s, ':');
  const char *h = s, *he;
  if (!colon) return -1;
  he = colon;
  if (s[0] == '[') {
    if (colon == s || colon[-1] != ']') return -1;
    h = s + 1;
    he = colon - 1;
  }
  if (he <= h || (size_t)(he - h) >= size) return -1;
  memcpy(host, h, (size_t)(he - h));
  host[he - h] = '\0';
  return parse_int(colon + 1, 0, 65535, port);
}

static int parse_flags(ex_app_t *app, int argc, char **argv) {
  const char *ttl = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int r;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout, app->service);
      exit(0);
    }
#define EX_FLAG(name, field)                          \
  if ((r = flag(argc, argv, &i, name, &app->field))) { \
    if (r == 2) goto missing;                         \
    continue;                                         \
  }
    EX_FLAG("--listen", listen)
    EX_FLAG("--grayd", grayd)
    EX_FLAG("--token", token)
    EX_FLAG("--version", version)
    EX_FLAG("--cache", cache)
    EX_FLAG("--id", id)
    EX_FLAG("--address", address)
#undef EX_FLAG
    if ((r = flag(argc, argv, &i, "--ttl", &ttl))) {
      if (r == 2) goto missing;
      if (parse_int(ttl, 1, 3600, &app->ttl_s)) {
        fprintf(stderr, "%s: --ttl wants seconds, 1..3600\n", app->service);
        return 64;
      }
      continue;
    }
    fprintf(stderr, "%s: unknown argument \"%s\" (try --help)\n", app->service, a);
    return 64;
  missing:
    fprintf(stderr, "%s: %s needs a value\n", app->service, a);
    return 64;
  }
  if (parse_listen(app->listen, app->host, sizeof app->host, &app->port)) {
    fprintf(stderr, "%s: --listen wants HOST:PORT, for example 127.0.0.1:0\n", app->service);
    return 64;
  }
  return 0;
}

/* ----------------------------------------------------------------- start */

static void sdk_log(void *arg, int level, const char *msg) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  if (level < 1) return;
  fprintf(stderr, "%s: sdk %s: %s\n", (const char *)arg, names[level > 3 ? 3 : level], msg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  event_base_loopexit(arg, NULL);
}

int ex_start(ex_app_t *app, const char *service, const char *follow, int argc, char **argv,
             void (*handler)(struct evhttp_request *req, void *arg)) {
  gray_client_options_t o;
  gray_instance_t in;
  gray_error_t err;
  struct evhttp_bound_socket *bound;
  struct sockaddr_storage ss;
  socklen_t sslen = sizeof ss;
  char buf[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX + 4];
  const char *env;
  int rc;

  memset(app, 0, sizeof *app);
  memset(&err, 0, sizeof err);
  app->service = service;
  app->follow = follow;
  app->listen = "127.0.0.1:0";
  app->grayd = (env = getenv("GRAYLANE_SERVER")) && *env ? env : "http://127.0.0.1:7070";
  app->token = getenv("GRAYLANE_TOKEN");
  app->version = "v1";
  app->ttl_s = 15;
  if ((rc = parse_flags(app, argc, argv)) != 0) return rc;
  if (!gray_tag_valid(app->version, strlen(app->version))) {
    fprintf(stderr, "%s: --version \"%s\" is not a valid name\n", service, app->version);
    return 64;
  }

  /* A peer that hangs up while we write must not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  app->base = event_base_new();
  app->http = app->base ? evhttp_new(app->base) : NULL;
  /* SIGTERM and SIGINT stop the loop, so ex_run deregisters; installed
   * before anything is announced. */
  app->sigterm = app->base ? evsignal_new(app->base, SIGTERM, on_signal, app->base) : NULL;
  app->sigint = app->base ? evsignal_new(app->base, SIGINT, on_signal, app->base) : NULL;
  if (!app->http || !app->sigterm || !app->sigint || event_add(app->sigterm, NULL) ||
      event_add(app->sigint, NULL)) {
    fprintf(stderr, "%s: out of memory\n", service);
    return 1;
  }
  evhttp_set_allowed_methods(app->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  evhttp_set_max_headers_size(app->http, 16 * 1024);
  evhttp_set_max_body_size(app->http, 0);
  evhttp_set_timeout(app->http, 10);
  evhttp_set_gencb(app->http, handler, app);
  bound = evhttp_bind_socket_with_handle(app->http, app->host, (ev_uint16_t)app->port);
  if (!bound) {
    fprintf(stderr, "%s: cannot listen on %s: %s\n", service, app->listen, strerror(errno));
    return 1;
  }
  if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0)
    app->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
  if (app->id) {
    snprintf(app->self_id, sizeof app->self_id, "%s", app->id);
  } else {
    snprintf(app->self_id, sizeof app->self_id, "%s-%s-%d", service, app->version, app->port);
  }

  gray_client_options_init(&o);
  o.servers = app->grayd;
  o.token = app->token;
  o.services = follow;
  o.cache_path = app->cache;
  o.log = sdk_log;
  o.log_arg = (void *)service;
  if (gray_client_new(&o, &app->client, &err) != GRAY_OK ||
      gray_client_start(app->client, &err) != GRAY_OK) {
    fprintf(stderr, "%s: %s\n", service, gray_error_format(&err, buf, sizeof buf));
    return 1;
  }

  memset(&in, 0, sizeof in);
  in.service = service;
  in.id = app->self_id;
  in.address = app->address ? app->address : app->host;
  in.port = app->port;
  in.version = app->version;
  in.ttl_s = app->ttl_s;
  rc = gray_client_register(app->client, &in, &err);
  if (rc == GRAY_EIO) {
    /* grayd is down: the SDK keeps trying in the background, and the
     * cache file (if any) lets this instance route meanwhile. */
    fprintf(stderr, "%s: grayd unreachable, registering in the background\n", service);
  } else if (rc != GRAY_OK) {
    fprintf(stderr, "%s: cannot register: %s\n", service, gray_error_format(&err, buf, sizeof buf));
    return 1;
  }

  if (strchr(app->host, ':'))
    fprintf(stderr, "%s: listening on http://[%s]:%d\n", service, app->host, app->port);
  else
    fprintf(stderr, "%s: listening on http://%s:%d\n", service, app->host, app->port);
  fprintf(stderr, "%s: %s %s, grayd %s\n", service, app->self_id, app->version, app->grayd);
  return 0;
}

int ex_run(ex_app_t *app) {
  int rc = event_base_dispatch(app->base) < 0 ? 1 : 0;
  fprintf(stderr, "%s: stopping\n", app->service);
  /* Deregisters, so callers stop picking this instance right away. */
  gray_client_stop(app->client);
  gray_client_free(app->client);
  event_free(app->sigterm);
  event_free(app->sigint);
  evhttp_free(app->http);
  event_base_free(app->base);
  return rc;
}

/* --------------------------------------------------------------- request */

static gray_str_t str(const char *s) {
  gray_str_t r = {s, s ? strlen(s) : 0};
  return r;
}

static const char *method_name(enum evhttp_cmd_type m) {
  switch (m) {
  case EVHTTP_REQ_GET: return "GET";
  case EVHTTP_REQ_HEAD: return "HEAD";
  case EVHTTP_REQ_POST: return "POST";
  case EVHTTP_REQ_PUT: return "PUT";
  case EVHTTP_REQ_DELETE: return "DELETE";
  default: return NULL;
  }
}

const char *ex_tag_in(struct evhttp_request *req) {
  const char *t = evhttp_find_header(evhttp_request_get_input_headers(req), GRAY_TAG_HEADER);
  return t ? t : "";
}

void ex_view_init(ex_view_t *v, struct evhttp_request *req) {
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  struct evkeyvalq *h = evhttp_request_get_input_headers(req);
  struct evkeyval *kv;
  char *peer = NULL;
  ev_uint16_t peer_port = 0;
  const char *tag;

  memset(v, 0, sizeof *v);
  for (kv = h->tqh_first; kv; kv = kv->next.tqe_next) {
    if (v->kv.nheaders == EX_HEADERS_MAX) break;
    v->headers[v->kv.nheaders].name = str(kv->key);
    v->headers[v->kv.nheaders].value = str(kv->value);
    v->kv.nheaders++;
  }
  v->kv.headers = v->headers;
  /* Cookies come from the Cookie header (gray_kv_lookup reads it); params
   * from the raw query string, decoded on lookup. */
  v->kv.query = str(uri ? evhttp_uri_get_query(uri) : NULL);
  if (!v->kv.query.p) v->kv.query = str("");
  evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &peer_port);
  v->kv.ip = str(peer);
  v->kv.path = str(uri ? evhttp_uri_get_path(uri) : NULL);
  v->kv.method = str(method_name(evhttp_request_get_command(req)));
  v->kv.host = str(evhttp_request_get_host(req));
  tag = ex_tag_in(req);
  v->kv.tag = *tag ? str(tag) : str(NULL);
  v->req.lookup = gray_kv_lookup;
  v->req.ctx = &v->kv;
}

void ex_view_set_tag(ex_view_t *v, const char *tag) {
  v->kv.tag = tag && *tag ? str(tag) : str(NULL);
}

/* ------------------------------------------------------------------ hops */

static void json_str(struct evbuffer *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  evbuffer_add(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\') {
      char e[2] = {'\\', (char)*p};
      evbuffer_add(b, e, 2);
    } else if (*p < 0x20 || *p == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
      evbuffer_add(b, e, 6);
    } else {
      evbuffer_add(b, p, 1);
    }
  }
  evbuffer_add(b, "\"", 1);
}

static void json_field(struct evbuffer *b, const char *sep, const char *key, const char *val) {
  evbuffer_add_printf(b, "%s\"%s\": ", sep, key);
  json_str(b, val);
}

void ex_hop_begin(struct evbuffer *b, const ex_app_t *app, const char *tag_in) {
  json_field(b, "{", "service", app->service);
  json_field(b, ", ", "version", app->version);
  json_field(b, ", ", "id", app->self_id);
  json_field(b, ", ", "tag", tag_in);
}

void ex_hop_lane(struct evbuffer *b, const gray_client_decision_t *d) {
  json_field(b, ", \"lane\": {", "rule", d->rule);
  json_field(b, ", ", "tag", d->tag);
  evbuffer_add(b, "}", 1);
}

void ex_hop_call(struct evbuffer *b, const char *service, const gray_client_decision_t *d,
                 const gray_endpoint_t *ep) {
  json_field(b, ", \"call\": {", "service", service);
  json_field(b, ", ", "policy", d->service);
  json_field(b, ", ", "rule", d->rule);
  json_field(b, ", ", "decided", d->version);
  if (ep) {
    json_field(b, ", ", "version", ep->version);
    json_field(b, ", ", "instance", ep->id);
    evbuffer_add_printf(b, ", \"fell_back\": %s", ep->fell_back ? "true" : "false");
  }
  json_field(b, ", ", "tag", d->tag);
  evbuffer_add_printf(b, ", \"revision\": %lld}", (long long)d->revision);
}

void ex_hop_error(struct evbuffer *b, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_field(b, ", ", "error", msg);
}

void ex_hop_no_policy(struct evbuffer *b, ex_app_t *app, const char *policy) {
  if (gray_client_revision(app->client) > 0)
    ex_hop_error(b, "no policy for %s", policy);
  else
    ex_hop_error(b, "no snapshot yet (grayd unreachable and no cache file)");
}

void ex_hop_end(struct evbuffer *b) { evbuffer_add(b, "}", 1); }

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  default: return "Error";
  }
}

static void send_chain(struct evhttp_request *req, int status, struct evbuffer *hop,
                       struct evbuffer *rest) {
  struct evbuffer *out = evhttp_request_get_output_buffer(req);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
  evbuffer_add(out, EX_CHAIN_HEAD, strlen(EX_CHAIN_HEAD));
  evbuffer_add_buffer(out, hop);
  if (rest && evbuffer_get_length(rest)) {
    evbuffer_add(out, EX_CHAIN_SEP, strlen(EX_CHAIN_SEP));
    evbuffer_add_buffer(out, rest);
  }
  evbuffer_add(out, EX_CHAIN_TAIL, strlen(EX_CHAIN_TAIL));
  evhttp_send_reply(req, status, reason(status), NULL);
  evbuffer_free(hop);
}

void ex_reply(struct evhttp_request *req, int status, struct evbuffer *hop) {
  send_chain(req, status, hop, NULL);
}

/* ------------------------------------------------------------------ call */

typedef struct ex_call_s {
  struct event_base *base;
  struct evhttp_connection *conn;
  struct evhttp_request *in; /* the request we answer when the call ends */
  struct evbuffer *hop;      /* our hop, not yet closed */
  char target[400];          /* "order-dal-v2-4242 at 127.0.0.1:4242" */
} ex_call_t;

/* The callee's hops: the body between EX_CHAIN_HEAD and EX_CHAIN_TAIL.
 * Anything else is not an example service's answer. */
static int callee_hops(struct evbuffer *body, struct evbuffer *hops) {
  size_t n = evbuffer_get_length(body), hn = strlen(EX_CHAIN_HEAD), tn = strlen(EX_CHAIN_TAIL);
  const char *p;
  if (n < hn + tn) return -1;
  p = (const char *)evbuffer_pullup(body, -1);
  if (!p || memcmp(p, EX_CHAIN_HEAD, hn) != 0 || memcmp(p + n - tn, EX_CHAIN_TAIL, tn) != 0) return -1;
  return evbuffer_add(hops, p + hn, n - hn - tn);
}

static void free_conn(evutil_socket_t fd, short what, void *arg) { evhttp_connection_free(arg); }

static void on_callee(struct evhttp_request *resp, void *arg) {
  ex_call_t *call = arg;
  struct evbuffer *hops = evbuffer_new();
  int status = resp ? evhttp_request_get_response_code(resp) : 0;

  /* libevent 2.1 frees a free-on-completion connection after a complete
   * answer, but not after a failure (no answer: refused, reset, timed
   * out), and may still use it when this callback returns; so it is freed
   * from the next loop iteration. */
  if (status == 0) event_base_once(call->base, -1, EV_TIMEOUT, free_conn, call->conn, NULL);

  if (!hops) {
    ex_hop_error(call->hop, "out of memory");
    ex_hop_end(call->hop);
    send_chain(call->in, 502, call->hop, NULL);
  } else if (status == 0) {
    ex_hop_error(call->hop, "%s did not answer", call->target);
    ex_hop_end(call->hop);
    send_chain(call->in, 502, call->hop, NULL);
  } else if (callee_hops(evhttp_request_get_input_buffer(resp), hops) != 0) {
    ex_hop_error(call->hop, "%s answered %d with a body that is not a chain", call->target, status);
    ex_hop_end(call->hop);
    send_chain(call->in, 502, call->hop, NULL);
  } else {
    /* The callee's status goes up the chain: a 503 two hops down is a
     * 503 at the gateway, and the hop that failed says why. */
    ex_hop_end(call->hop);
    send_chain(call->in, status, call->hop, hops);
  }
  if (hops) evbuffer_free(hops);
  free(call);
}

void ex_call(ex_app_t *app, struct evhttp_request *req, const gray_endpoint_t *ep, const char *tag,
             struct evbuffer *hop) {
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
  struct evhttp_connection *conn = NULL;
  struct evhttp_request *out = NULL;
  struct evbuffer *target = NULL;
  struct evkeyvalq *h;
  char host[300];
  ex_call_t *call = calloc(1, sizeof *call);

  if (!call || !(target = evbuffer_new())) goto fail;
  call->base = app->base;
  call->in = req;
  call->hop = hop;
  snprintf(call->target, sizeof call->target, "%s at %s:%d", ep->id, ep->address, ep->port);
  /* The same path and query the caller sent: each hop sees the request. */
  evbuffer_add_printf(target, "%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
  if (evbuffer_add(target, "", 1)) goto fail;

  /* No DNS base: registered addresses are IP literals, which need no
   * lookup; a host name would be resolved here, blocking the loop. */
  conn = evhttp_connection_base_new(app->base, NULL, ep->address, (ev_uint16_t)ep->port);
  if (!conn) goto fail;
  evhttp_connection_set_timeout(conn, EX_CALL_TIMEOUT_S);
  evhttp_connection_set_max_body_size(conn, EX_BODY_MAX);
  evhttp_connection_free_on_completion(conn);
  call->conn = conn;
  out = evhttp_request_new(on_callee, call);
  if (!out) goto fail;
  h = evhttp_request_get_output_headers(out);
  snprintf(host, sizeof host, strchr(ep->address, ':') ? "[%s]:%d" : "%s:%d", ep->address, ep->port);
  evhttp_add_header(h, "Host", host);
  /* One connection per call, closed (and freed) when the answer is in. */
  evhttp_add_header(h, "Connection", "close");
  if (tag && *tag) evhttp_add_header(h, GRAY_TAG_HEADER, tag);
  /* evhttp_make_request owns `out` from here, failed or not. */
  if (evhttp_make_request(conn, out, EVHTTP_REQ_GET, (const char *)evbuffer_pullup(target, -1)) != 0) {
    out = NULL;
    goto fail;
  }
  evbuffer_free(target);
  return;

fail:
  if (out) evhttp_request_free(out);
  if (conn) evhttp_connection_free(conn);
  if (target) evbuffer_free(target);
  free(call);
  ex_hop_error(hop, "cannot call %s at %s:%d", ep->id, ep->address, ep->port);
  ex_hop_end(hop);
  send_chain(req, 502, hop, NULL);
}
