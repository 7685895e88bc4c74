/* The grayd client of grayctl: one libcurl handle, capped answers, and
 * messages a user can act on. The token is never printed. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "gray/gray.h"
#include "grayctl.h"

#define BODY_CAP ((size_t)16 << 20) /* largest answer grayctl takes */
#define CONNECT_TIMEOUT_MS 5000L
#define REQUEST_TIMEOUT_MS 30000L

struct grayctl_conn {
  CURL *curl;
  char *base;      /* the server URL without a trailing '/' */
  int has_token;
  struct curl_slist *auth; /* "Authorization: Bearer ..." alone */
  volatile sig_atomic_t *stop;
};

/* Where the answer goes while libcurl receives it. */
typedef struct sink {
  grayctl_resp *resp;
  size_t cap;   /* the most we take */
  size_t alloc; /* the size of resp->body */
  int too_big;
} sink;

static int is_loopback(const char *host) {
  char h[256];
  size_t n = strlen(host);
  if (n >= sizeof h) return 0;
  if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
    memcpy(h, host + 1, n - 2);
    h[n - 2] = '\0';
  } else {
    memcpy(h, host, n + 1);
  }
  if (!strcasecmp(h, "localhost")) return 1;
  struct in_addr a4;
  if (inet_pton(AF_INET, h, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  struct in6_addr a6;
  if (inet_pton(AF_INET6, h, &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return 0;
}

/* A token goes into a header: printable ASCII without spaces only, so it
 * can never end the header or add another. */
static int token_ok(const char *t) {
  if (!*t) return 0;
  for (; *t; t++)
    if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) return 0;
  return 1;
}

static int check_server(const grayctl_globals *g, const char *server, int *https, char *host, size_t hostn) {
  char shown[512];
  int plain = !strncasecmp(server, "http://", 7);
  *https = !strncasecmp(server, "https://", 8);
  if (!plain && !*https) {
    fprintf(stderr, "grayctl: --server must be an http:// or https:// URL, got \"%s\"\n",
            grayctl_clean(server, shown, sizeof shown));
    return GRAYCTL_EUSAGE;
  }
  CURLU *u = curl_url();
  char *h = NULL, *q = NULL, *frag = NULL, *user = NULL;
  int rc = GRAYCTL_EUSAGE;
  if (!u) {
    fprintf(stderr, "grayctl: out of memory\n");
    return GRAYCTL_EFAIL;
  }
  if (curl_url_set(u, CURLUPART_URL, server, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK || !h || !*h) {
    fprintf(stderr, "grayctl: --server \"%s\" is not a valid URL (example: http://127.0.0.1:7070)\n",
            grayctl_clean(server, shown, sizeof shown));
    goto out;
  }
  if (curl_url_get(u, CURLUPART_QUERY, &q, 0) == CURLUE_OK ||
      curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK ||
      curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
    fprintf(stderr, "grayctl: --server takes a base URL without user, query or fragment "
                    "(example: https://grayd.example:7070)\n");
    goto out;
  }
  snprintf(host, hostn, "%s", h);
  if (plain && g->token && !g->insecure_plain && !is_loopback(h)) {
    fprintf(stderr,
            "grayctl: refusing to send the token in clear text to %s: it is not a loopback address, and\n"
            "anyone on the path could read the token and act with its role. Use an https:// server\n"
            "(--ca FILE to trust its certificate), or pass --insecure-plain if the network is trusted.\n",
            grayctl_clean(server, shown, sizeof shown));
    goto out;
  }
  if (g->ca && !*https) {
    fprintf(stderr, "grayctl: --ca verifies an https:// server, but --server is %s\n",
            grayctl_clean(server, shown, sizeof shown));
    goto out;
  }
  rc = GRAYCTL_OK;
out:
  curl_free(h);
  curl_free(q);
  curl_free(frag);
  curl_free(user);
  curl_url_cleanup(u);
  return rc;
}

int grayctl_conn_open(const grayctl_globals *gin, grayctl_conn **out) {
  grayctl_globals g = *gin;
  char host[256];
  int https = 0, rc;
  *out = NULL;
  if (!g.server || !*g.server) g.server = getenv("GRAYLANE_SERVER");
  if (!g.token) g.token = getenv("GRAYLANE_TOKEN");
  if (g.token && !*g.token) g.token = NULL;
  if (!g.server || !*g.server) {
    fprintf(stderr, "grayctl: no server given: pass --server URL before the command "
                    "(for example grayctl --server http://127.0.0.1:7070 policy get) or set GRAYLANE_SERVER\n");
    return GRAYCTL_EUSAGE;
  }
  if (g.token && !token_ok(g.token)) {
    fprintf(stderr, "grayctl: the token contains spaces or control characters; check --token or GRAYLANE_TOKEN\n");
    return GRAYCTL_EUSAGE;
  }
  if ((rc = check_server(&g, g.server, &https, host, sizeof host)) != GRAYCTL_OK) return rc;
  if (g.ca) {
    FILE *f = fopen(g.ca, "rb");
    if (!f) {
      char shown[512];
      fprintf(stderr, "grayctl: cannot read --ca %s: %s\n", grayctl_clean(g.ca, shown, sizeof shown),
              strerror(errno));
      return GRAYCTL_EUSAGE;
    }
    fclose(f);
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "grayctl: cannot initialise libcurl\n");
    return GRAYCTL_EFAIL;
  }
  grayctl_conn *c = calloc(1, sizeof(*c));
  if (!c) goto oom;
  size_t n = strlen(g.server);
  while (n > 0 && g.server[n - 1] == '/') n--;
  c->base = malloc(n + 1);
  c->curl = curl_easy_init();
  if (!c->base || !c->curl) goto oom;
  memcpy(c->base, g.server, n);
  c->base[n] = '\0';
  if (g.token) {
    grayctl_buf b = {0};
    grayctl_buf_addf(&b, "Authorization: Bearer %s", g.token);
    c->auth = b.failed ? NULL : curl_slist_append(NULL, b.p);
    /* Wipe our copy; libcurl keeps its own in the list. */
    if (b.p) memset(b.p, 0, b.len);
    grayctl_buf_free(&b);
    if (!c->auth) goto oom;
    c->has_token = 1;
  }
  CURL *h = c->curl;
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "grayctl/" GRAY_VERSION_STRING);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  if (g.ca) curl_easy_setopt(h, CURLOPT_CAINFO, g.ca);
  *out = c;
  return GRAYCTL_OK;
oom:
  fprintf(stderr, "grayctl: out of memory\n");
  grayctl_conn_close(c);
  return GRAYCTL_EFAIL;
}

void grayctl_conn_close(grayctl_conn *c) {
  if (!c) return;
  if (c->curl) curl_easy_cleanup(c->curl);
  curl_slist_free_all(c->auth);
  free(c->base);
  free(c);
}

void grayctl_conn_stop_on(grayctl_conn *c, volatile sig_atomic_t *flag) {
  c->stop = flag;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  sink *s = ud;
  grayctl_resp *r = s->resp;
  size_t n = size * nmemb;
  if (n > s->cap - r->len) {
    s->too_big = 1;
    return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
  }
  if (r->len + n + 1 > s->alloc) {
    size_t alloc = s->alloc ? s->alloc : 16384;
    while (alloc < r->len + n + 1) alloc *= 2;
    char *q = realloc(r->body, alloc);
    if (!q) return 0;
    r->body = q;
    s->alloc = alloc;
  }
  memcpy(r->body + r->len, p, n);
  r->len += n;
  r->body[r->len] = '\0';
  return n;
}

/* A header's value as a revision: digits, optionally in double quotes. */
static long long header_rev(const char *v, size_t n) {
  while (n && (*v == ' ' || *v == '\t')) v++, n--;
  while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
  if (n >= 2 && v[0] == '"' && v[n - 1] == '"') v++, n -= 2;
  if (!n || n > 18) return -1;
  long long r = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    r = r * 10 + (v[i] - '0');
  }
  return r;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
  grayctl_resp *r = ud;
  size_t n = size * nmemb;
  if (n >= 5 && !strncmp(p, "HTTP/", 5)) {
    r->revision = r->etag = -1; /* a new answer (after a 100 Continue) */
  } else if (n > 16 && !strncasecmp(p, "X-Gray-Revision:", 16)) {
    r->revision = header_rev(p + 16, n - 16);
  } else if (n > 5 && !strncasecmp(p, "ETag:", 5)) {
    r->etag = header_rev(p + 5, n - 5);
  }
  return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  const grayctl_conn *c = ud;
  return c->stop && *c->stop;
}

void grayctl_resp_clear(grayctl_resp *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
  r->revision = r->etag = -1;
}

static int transport_error(const grayctl_conn *c, CURLcode code, const char *errbuf, long os_errno,
                           int in_connect, long timeout_ms) {
  char shown[512];
  const char *base = grayctl_clean(c->base, shown, sizeof shown);
  const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(code);
  switch (code) {
    case CURLE_COULDNT_CONNECT:
      fprintf(stderr, "grayctl: cannot connect to %s: %s (is grayd running? set --server or GRAYLANE_SERVER)\n",
              base, os_errno ? strerror((int)os_errno) : detail);
      break;
    case CURLE_COULDNT_RESOLVE_HOST:
      fprintf(stderr, "grayctl: cannot resolve the host of %s (check --server or GRAYLANE_SERVER)\n", base);
      break;
    case CURLE_OPERATION_TIMEDOUT:
      if (in_connect && !strncasecmp(c->base, "https:", 6))
        fprintf(stderr, "grayctl: cannot connect to %s within %ld s: no TCP connection or no TLS handshake "
                        "(is the address right? does the server speak TLS?)\n", base, CONNECT_TIMEOUT_MS / 1000);
      else if (in_connect)
        fprintf(stderr, "grayctl: cannot connect to %s within %ld s (is the address right? is a firewall in the "
                        "way?)\n", base, CONNECT_TIMEOUT_MS / 1000);
      else
        fprintf(stderr, "grayctl: %s did not answer within %ld s\n", base, timeout_ms / 1000);
      break;
    case CURLE_PEER_FAILED_VERIFICATION:
      fprintf(stderr, "grayctl: the certificate of %s is not trusted: %s (pass --ca FILE with the CA that "
                      "signed it)\n", base, detail);
      break;
    case CURLE_SSL_CACERT_BADFILE:
      fprintf(stderr, "grayctl: cannot use the --ca file: %s\n", detail);
      break;
    case CURLE_SSL_CONNECT_ERROR:
      fprintf(stderr, "grayctl: TLS with %s failed: %s (is the server https://? is --server right?)\n", base,
              detail);
      break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: /* "Received HTTP/0.9": TLS bytes read as HTTP */
      fprintf(stderr, "grayctl: %s did not answer properly: %s (is it grayd? does it speak %s?)\n", base, detail,
              strncasecmp(c->base, "https:", 6) ? "plain HTTP, not TLS" : "TLS");
      break;
    default:
      fprintf(stderr, "grayctl: request to %s failed: %s\n", base, detail);
  }
  return GRAYCTL_EFAIL;
}

int grayctl_send(grayctl_conn *c, const grayctl_call *call, grayctl_resp *resp) {
  CURL *h = c->curl;
  char errbuf[CURL_ERROR_SIZE];
  grayctl_buf url = {0};
  struct curl_slist *hdrs = NULL, *tail = NULL;
  sink s = {resp, BODY_CAP, 0, 0};
  long timeout_ms = call->timeout_ms > 0 ? call->timeout_ms : REQUEST_TIMEOUT_MS;
  int rc = GRAYCTL_EFAIL;

  memset(resp, 0, sizeof *resp);
  resp->revision = resp->etag = -1;
  grayctl_buf_add(&url, c->base);
  grayctl_buf_add(&url, call->path);
  if (url.failed) goto oom;

  /* Our per-call headers, then the connection's Authorization header: the
   * token's list is linked behind them for this call only (and unlinked
   * after), so the token is never copied again. */
  if (call->body) {
    if (!(hdrs = curl_slist_append(NULL, "Content-Type: application/json"))) goto oom;
    /* No "Expect: 100-continue" round trip for larger bodies. */
    if (!curl_slist_append(hdrs, "Expect:")) goto oom;
  } else if (strcmp(call->method, "GET")) {
    /* An empty body is sent below; it is not a form. */
    if (!(hdrs = curl_slist_append(NULL, "Content-Type:"))) goto oom;
  }
  if (call->if_match >= 0) {
    char im[48];
    snprintf(im, sizeof im, "If-Match: \"%lld\"", call->if_match);
    struct curl_slist *x = curl_slist_append(hdrs, im);
    if (!x) goto oom;
    hdrs = x;
  }
  if (hdrs) {
    for (tail = hdrs; tail->next; tail = tail->next) {}
    tail->next = c->auth;
  }

  errbuf[0] = '\0';
  curl_easy_setopt(h, CURLOPT_URL, url.p);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs ? hdrs : c->auth);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, c->stop ? 0L : 1L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
  if (!strcmp(call->method, "GET")) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
  } else {
    /* A body (possibly empty) gives the request a Content-Length, which
     * PUT and POST need even when they carry nothing. */
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body ? call->body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(call->body ? call->body_len : 0));
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, call->method);
  }

  CURLcode code = curl_easy_perform(h);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
  if (code == CURLE_ABORTED_BY_CALLBACK && c->stop && *c->stop) {
    rc = GRAYCTL_STOPPED;
    goto out;
  }
  if (code == CURLE_WRITE_ERROR && s.too_big) {
    char shown[512], what[512];
    fprintf(stderr, "grayctl: %s: the answer of %s is larger than %zu MiB; not taken\n",
            grayctl_clean(call->what, what, sizeof what), grayctl_clean(c->base, shown, sizeof shown),
            BODY_CAP >> 20);
    goto out;
  }
  if (code == CURLE_WRITE_ERROR) goto oom;
  if (code != CURLE_OK) {
    long os_errno = 0;
    curl_off_t total_us = 0;
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &total_us);
    /* A timeout well before the request's own limit is the connect limit
     * (which covers the TLS handshake too). */
    int in_connect = total_us < (curl_off_t)(timeout_ms - 1000) * 1000;
    rc = transport_error(c, code, errbuf, os_errno, in_connect, timeout_ms);
    goto out;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
  if (!resp->body) {
    resp->body = calloc(1, 1);
    if (!resp->body) goto oom;
  }
  rc = GRAYCTL_OK;
  goto out;
oom:
  fprintf(stderr, "grayctl: out of memory\n");
out:
  if (tail) tail->next = NULL;
  curl_slist_free_all(hdrs);
  grayctl_buf_free(&url);
  return rc;
}

int grayctl_http_error(const grayctl_conn *c, const char *what, const grayctl_resp *resp) {
  long st = resp->status;
  char code[64], path[256], msg[1024];
  json_t *j = resp->body ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
  json_t *e = json_object_get(j, "error");
  int is_error = json_is_object(e) && json_is_string(json_object_get(e, "code"));
  if (is_error) {
    grayctl_clean(grayctl_jstr(e, "code", ""), code, sizeof code);
    grayctl_clean(grayctl_jstr(e, "path", ""), path, sizeof path);
    grayctl_clean(grayctl_jstr(e, "message", ""), msg, sizeof msg);
  } else {
    /* Not grayd's error shape (a proxy in between?): show the start of it. */
    size_t n = resp->len < 200 ? resp->len : 200;
    char head[201];
    memcpy(head, resp->body ? resp->body : "", n);
    head[n] = '\0';
    snprintf(code, sizeof code, "HTTP");
    path[0] = '\0';
    grayctl_clean(head, msg, sizeof msg);
    if (!msg[0]) snprintf(msg, sizeof msg, "(no error body; is %s grayd?)", c->base);
  }
  json_decref(j);
  char shown[512];
  grayctl_clean(what, shown, sizeof shown);
  if (st == 401) {
    if (!c->has_token)
      fprintf(stderr, "grayctl: %s: no token given, and grayd needs one (401 %s): pass --token TOKEN or set "
                      "GRAYLANE_TOKEN\n", shown, code);
    else
      fprintf(stderr, "grayctl: %s: grayd does not accept the token (401 %s: %s); check --token or "
                      "GRAYLANE_TOKEN\n", shown, code, msg);
    return GRAYCTL_EAUTH;
  }
  if (st == 403) {
    fprintf(stderr, "grayctl: %s: the token's role does not allow this (403 %s: %s)\n", shown, code, msg);
    return GRAYCTL_EAUTH;
  }
  if (path[0])
    fprintf(stderr, "grayctl: %s: %ld %s at %s: %s\n", shown, st, code, path, msg);
  else
    fprintf(stderr, "grayctl: %s: %ld %s: %s\n", shown, st, code, msg);
  switch (st) {
    case 400:
    case 413: return GRAYCTL_EINVALID;
    case 404: return GRAYCTL_ENOTFOUND;
    case 412: return GRAYCTL_ECONFLICT;
    default: return GRAYCTL_EFAIL;
  }
}

int grayctl_request(grayctl_conn *c, const grayctl_call *call, grayctl_resp *resp) {
  int rc = grayctl_send(c, call, resp);
  if (rc != GRAYCTL_OK) return rc;
  if (resp->status >= 200 && resp->status < 300) return GRAYCTL_OK;
  return grayctl_http_error(c, call->what, resp);
}

json_t *grayctl_resp_json(const char *what, const grayctl_resp *resp) {
  json_error_t err;
  json_t *j = json_loadb(resp->body, resp->len, 0, &err);
  if (!j) {
    char shown[256], text[256];
    fprintf(stderr, "grayctl: %s: the answer is not JSON (%s at byte %d); is the server grayd?\n",
            grayctl_clean(what, shown, sizeof shown), grayctl_clean(err.text, text, sizeof text), err.position);
  }
  return j;
}

int grayctl_print_raw(const grayctl_resp *resp) {
  if (resp->len && fwrite(resp->body, 1, resp->len, stdout) != resp->len) return GRAYCTL_EFAIL;
  if (!resp->len || resp->body[resp->len - 1] != '\n') putchar('\n');
  return fflush(stdout) == 0 ? GRAYCTL_OK : GRAYCTL_EFAIL;
}
