/* grayd's HTTP/1.1 server over bufferevents. See http.h for the why. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "core/model.h"
#include "gray/policy.h"
#include "http/parse.h"

typedef struct conn conn;

struct gd_req {
  conn *c;
  gd_http_head head;
  char *body;
  size_t body_len;
  void (*abort_cb)(gd_req *, void *);
  void *abort_arg;
};

typedef enum { C_READ_HEAD, C_READ_BODY, C_HANDLING, C_WRITING, C_LINGER } cstate;

/* After an error reply on a connection that still has request bytes coming
 * (a refused 10 MiB upload), close only the sending side and read away what
 * arrives for a while: closing with unread data would reset the connection
 * and the client might never see the answer. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (64u << 20)

struct conn {
  gd_http *h;
  conn *prev, *next;
  struct bufferevent *bev;
  struct event *deadline; /* request_timeout while a request arrives */
  cstate state;
  gd_req *req;            /* current request (HANDLING) */
  size_t body_need;
  size_t lingered;
  int keep_alive;
  int close_after_write;
  char peer[64];
  int loopback;
};

struct gd_http {
  struct event_base *base;
  gd_http_limits lim;
  SSL_CTX *tls;
  gd_http_handler handler;
  void *arg;
  struct evconnlistener *listener;
  conn *conns;
  gd_http_stats stats;
};

void gd_http_limits_default(gd_http_limits *l) {
  l->max_head = 16 * 1024;
  l->max_headers = 100;
  l->max_body = GRAY_POLICY_FILE_MAX;
  l->max_conns = 4096;
  l->request_timeout_ms = 10000;
  l->idle_timeout_ms = 60000;
  l->write_timeout_ms = 30000;
}

const char *gd_http_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
  }
  return "Unknown";
}

static void conn_free(conn *c) {
  gd_http *h = c->h;
  if (c->req) {
    gd_req *r = c->req;
    c->req = NULL;
    if (r->abort_cb) r->abort_cb(r, r->abort_arg);
    free(r->body);
    gd_http_head_clear(&r->head);
    free(r);
  }
  if (c->deadline) event_free(c->deadline);
  if (c->bev) bufferevent_free(c->bev);
  if (c->prev) c->prev->next = c->next;
  else h->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  h->stats.open_conns--;
  free(c);
}

/* A reply we make ourselves (errors before a handler saw the request). */
static void conn_error(conn *c, int status, const char *code, const char *msg) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  char body[512];
  int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"path\":\"\",\"message\":\"%s\"}}\n",
                   code, msg);
  if (n < 0 || (size_t)n >= sizeof body) n = 0;
  evbuffer_add_printf(out,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n",
                      status, gd_http_reason(status), n);
  evbuffer_add(out, body, (size_t)n);
  c->h->stats.bad_requests++;
  c->state = C_WRITING;
  c->close_after_write = 1;
  if (c->deadline) event_del(c->deadline);
  bufferevent_disable(c->bev, EV_READ);
  bufferevent_enable(c->bev, EV_WRITE);
}

static void arm_deadline(conn *c) {
  struct timeval tv = {c->h->lim.request_timeout_ms / 1000, (c->h->lim.request_timeout_ms % 1000) * 1000};
  event_add(c->deadline, &tv);
}

static void set_idle_timeouts(conn *c) {
  struct timeval rd = {c->h->lim.idle_timeout_ms / 1000, (c->h->lim.idle_timeout_ms % 1000) * 1000};
  struct timeval wr = {c->h->lim.write_timeout_ms / 1000, (c->h->lim.write_timeout_ms % 1000) * 1000};
  bufferevent_set_timeouts(c->bev, &rd, &wr);
}

static void dispatch(conn *c);

/* Try to make progress on the input; called on every read and after a
 * keep-alive reply. */
static void process(conn *c) {
  gd_http *h = c->h;
  struct evbuffer *in = bufferevent_get_input(c->bev);
  for (;;) {
    size_t avail = evbuffer_get_length(in);
    if (c->state == C_READ_HEAD) {
      if (avail == 0) return;
      /* A request starts with a method (token characters). Anything else —
       * a TLS ClientHello on the plain port, say — is answered at once
       * instead of waiting for a head that will never come. */
      unsigned char first;
      evbuffer_copyout(in, &first, 1);
      if (!(first >= 'A' && first <= 'Z') && !(first >= 'a' && first <= 'z')) {
        conn_error(c, 400, "EINVAL", "not an HTTP/1.x request (a TLS client on a plain-HTTP port?)");
        return;
      }
      if (!event_pending(c->deadline, EV_TIMEOUT, NULL)) arm_deadline(c);
      struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
      if (end.pos < 0) {
        if (avail > h->lim.max_head) conn_error(c, 431, "ELIMIT", "request head too large");
        return;
      }
      size_t head_len = (size_t)end.pos + 4;
      if (head_len > h->lim.max_head) {
        conn_error(c, 431, "ELIMIT", "request head too large");
        return;
      }
      gd_req *r = calloc(1, sizeof(*r));
      if (!r) {
        conn_error(c, 503, "ENOMEM", "out of memory");
        return;
      }
      r->c = c;
      const char *bytes = (const char *)evbuffer_pullup(in, (ev_ssize_t)head_len);
      int status = gd_http_parse_head(bytes, head_len, h->lim.max_headers, &r->head);
      evbuffer_drain(in, head_len);
      if (status != 0) {
        const char *why = r->head.error ? r->head.error : "malformed request";
        gd_http_head_clear(&r->head);
        free(r);
        conn_error(c, status, status == 431 ? "ELIMIT" : "EINVAL", why);
        return;
      }
      if (r->head.content_length > h->lim.max_body) {
        gd_http_head_clear(&r->head);
        free(r);
        conn_error(c, 413, "ETOOBIG", "request body over the 1 MiB limit");
        return;
      }
      c->req = r;
      c->keep_alive = r->head.keep_alive;
      c->body_need = r->head.content_length;
      c->state = C_READ_BODY;
      continue;
    }
    if (c->state == C_READ_BODY) {
      if (avail < c->body_need) return;
      gd_req *r = c->req;
      r->body = malloc(c->body_need + 1);
      if (!r->body) {
        conn_error(c, 503, "ENOMEM", "out of memory");
        return;
      }
      if (c->body_need) evbuffer_remove(in, r->body, c->body_need);
      r->body[c->body_need] = '\0';
      r->body_len = c->body_need;
      event_del(c->deadline);
      c->state = C_HANDLING;
      dispatch(c);
      return;
    }
    return; /* HANDLING or WRITING: leave further bytes for later */
  }
}

static void dispatch(conn *c) {
  /* Bytes beyond this request stay buffered (bounded by the watermark);
   * reading stays on so a hang-up is noticed while the request is kept.
   * No idle timeout while the handler holds the request (a long poll is
   * silent by design); the write timeout stays. */
  struct timeval wr = {c->h->lim.write_timeout_ms / 1000, (c->h->lim.write_timeout_ms % 1000) * 1000};
  bufferevent_set_timeouts(c->bev, NULL, &wr);
  bufferevent_setwatermark(c->bev, EV_READ, 0, c->h->lim.max_head);
  c->h->handler(c->req, c->h->arg);
}

static void on_read(struct bufferevent *bev, void *arg) {
  conn *c = arg;
  if (c->state == C_LINGER) {
    struct evbuffer *in = bufferevent_get_input(bev);
    c->lingered += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->lingered > LINGER_MAX_BYTES) conn_free(c);
    return;
  }
  process(c);
}

static void start_linger(conn *c) {
  evutil_socket_t fd = bufferevent_getfd(c->bev);
  if (c->h->tls || fd < 0 || shutdown(fd, SHUT_WR) != 0) {
    conn_free(c);
    return;
  }
  c->state = C_LINGER;
  struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
  bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
  bufferevent_set_timeouts(c->bev, NULL, NULL);
  bufferevent_enable(c->bev, EV_READ);
  event_add(c->deadline, &tv);
  /* Whatever is already buffered is discarded too. */
  on_read(c->bev, c);
}

static void on_write(struct bufferevent *bev, void *arg) {
  conn *c = arg;
  (void)bev;
  if (c->state != C_WRITING) return;
  if (evbuffer_get_length(bufferevent_get_output(c->bev))) return;
  if (c->close_after_write) {
    start_linger(c);
    return;
  }
  if (!c->keep_alive) {
    conn_free(c);
    return;
  }
  c->state = C_READ_HEAD;
  set_idle_timeouts(c);
  bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
  bufferevent_enable(c->bev, EV_READ);
  process(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  conn *c = arg;
  (void)bev;
  if (what & BEV_EVENT_TIMEOUT) {
    /* Idle keep-alive connection or a reply nobody reads. */
    c->h->stats.timed_out++;
    conn_free(c);
    return;
  }
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    /* A request being handled when the client leaves is aborted; the
     * handler's abort callback runs from conn_free. */
    conn_free(c);
  }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  (void)fd;
  (void)what;
  if (c->state == C_LINGER) {
    conn_free(c);
    return;
  }
  c->h->stats.timed_out++;
  if (c->state == C_READ_HEAD || c->state == C_READ_BODY) {
    if (c->req) {
      gd_http_head_clear(&c->req->head);
      free(c->req);
      c->req = NULL;
    }
    conn_error(c, 408, "ETIMEDOUT", "request not received in time");
  }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg) {
  gd_http *h = arg;
  (void)l;
  (void)salen;
  if (h->stats.open_conns >= h->lim.max_conns) {
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 74\r\n"
        "Connection: close\r\n\r\n{\"error\":{\"code\":\"EBUSY\",\"path\":\"\",\"message\":\"too many connections\"}}\n";
    /* Best effort, never blocks: the socket is non-blocking. */
    if (!h->tls) (void)!send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    evutil_closesocket(fd);
    h->stats.refused_over_cap++;
    return;
  }
  conn *c = calloc(1, sizeof(*c));
  if (!c) {
    evutil_closesocket(fd);
    return;
  }
  c->h = h;
  if (h->tls) {
    SSL *ssl = SSL_new(h->tls);
    if (!ssl) {
      free(c);
      evutil_closesocket(fd);
      return;
    }
    c->bev = bufferevent_openssl_socket_new(h->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
  } else {
    c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
  }
  c->deadline = evtimer_new(h->base, on_deadline, c);
  if (!c->bev || !c->deadline) {
    if (c->bev) bufferevent_free(c->bev);
    else evutil_closesocket(fd);
    if (c->deadline) event_free(c->deadline);
    free(c);
    return;
  }
  if (sa->sa_family == AF_INET) {
    struct sockaddr_in *in4 = (struct sockaddr_in *)sa;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u", ip, ntohs(in4->sin_port));
    c->loopback = (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
  } else if (sa->sa_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip, ntohs(in6->sin6_port));
    c->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
  }
  c->next = h->conns;
  if (h->conns) h->conns->prev = c;
  h->conns = c;
  h->stats.open_conns++;
  h->stats.accepted++;
  c->state = C_READ_HEAD;
  bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
  set_idle_timeouts(c);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

gd_http *gd_http_new(struct event_base *base, const gd_http_limits *lim, SSL_CTX *tls,
                     gd_http_handler handler, void *arg) {
  gd_http *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->base = base;
  if (lim)
    h->lim = *lim;
  else
    gd_http_limits_default(&h->lim);
  h->tls = tls;
  h->handler = handler;
  h->arg = arg;
  return h;
}

int gd_http_listen(gd_http *h, const char *host, int port, int *bound, gray_error_t *err) {
  struct sockaddr_storage ss;
  int sslen;
  char spec[400];
  char msg[GRAY_ERROR_TEXT_MAX];
  snprintf(spec, sizeof spec, strchr(host, ':') ? "[%.300s]:%d" : "%.300s:%d", host, port);
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (!strcmp(host, "localhost")) host = "127.0.0.1";
  if (port >= 0 && port <= 65535 && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    sslen = sizeof *in4;
  } else if (port >= 0 && port <= 65535 && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    sslen = sizeof *in6;
  } else {
    snprintf(msg, sizeof msg, "invalid listen address %.200s: give an IP address and a port", spec);
    gray__error_set(err, GRAY_EINVAL, "", msg);
    return GRAY_EINVAL;
  }
  h->listener = evconnlistener_new_bind(h->base, on_accept, h,
                                        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                        1024, (struct sockaddr *)&ss, sslen);
  if (!h->listener) {
    snprintf(msg, sizeof msg, "cannot listen on %.200s: %.80s", spec, strerror(errno));
    gray__error_set(err, GRAY_EIO, "", msg);
    return GRAY_EIO;
  }
  if (bound) {
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    evutil_socket_t fd = evconnlistener_get_fd(h->listener);
    *bound = port;
    if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0) {
      if (got.ss_family == AF_INET) *bound = ntohs(((struct sockaddr_in *)&got)->sin_port);
      if (got.ss_family == AF_INET6) *bound = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
    }
  }
  return GRAY_OK;
}

void gd_http_free(gd_http *h) {
  if (!h) return;
  if (h->listener) evconnlistener_free(h->listener);
  while (h->conns) conn_free(h->conns);
  free(h);
}

void gd_http_get_stats(const gd_http *h, gd_http_stats *out) { *out = h->stats; }

const char *gd_req_method(const gd_req *r) { return r->head.method; }
const char *gd_req_path(const gd_req *r) { return r->head.path; }
const char *gd_req_query(const gd_req *r) { return r->head.query; }
const char *gd_req_peer(const gd_req *r) { return r->c->peer; }
int gd_req_peer_is_loopback(const gd_req *r) { return r->c->loopback; }

const char *gd_req_header(const gd_req *r, const char *name) {
  for (size_t i = 0; i < r->head.nheaders; i++)
    if (!strcasecmp(r->head.names[i], name)) return r->head.values[i];
  return NULL;
}

const char *gd_req_body(const gd_req *r, size_t *len) {
  *len = r->body_len;
  return r->body ? r->body : "";
}

int gd_req_query_param(const gd_req *r, const char *name, char *buf, size_t size) {
  gray_str_t q = {r->head.query, strlen(r->head.query)};
  gray_str_t n = {name, strlen(name)}, v;
  if (size == 0 || !gray_query_find(q, n, &v, buf, size - 1)) return 0;
  if (v.p != buf) memmove(buf, v.p, v.len); /* borrowed: nothing was decoded */
  buf[v.len] = '\0';
  if (memchr(buf, '\0', v.len)) return 0; /* an encoded NUL is never a valid value */
  return 1;
}

void gd_req_on_abort(gd_req *r, void (*cb)(gd_req *, void *), void *arg) {
  r->abort_cb = cb;
  r->abort_arg = arg;
}

void gd_req_reply(gd_req *r, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers) {
  conn *c = r->c;
  struct evbuffer *out = bufferevent_get_output(c->bev);
  char head[1024];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n%s\r\n",
                    status, gd_http_reason(status), content_type ? content_type : "application/json", len,
                    c->keep_alive ? "keep-alive" : "close", extra_headers ? extra_headers : "");
  if (hl < 0 || (size_t)hl >= sizeof head) abort(); /* headers are ours and short */
  size_t done = 0, total = (size_t)hl + len;
  /* Fast path: write at once on a plain socket with nothing queued. A wake-up
   * of thousands of long polls then costs one writev each, with no buffer
   * copies, no write-event registration and no extra loop turn; whatever the
   * socket does not take goes through the bufferevent as usual. */
  if (!c->h->tls && evbuffer_get_length(out) == 0) {
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, len}};
    ssize_t n = fd >= 0 ? writev(fd, iov, len ? 2 : 1) : -1;
    if (n > 0) done = (size_t)n;
  }
  if (done < (size_t)hl) {
    evbuffer_add(out, head + done, (size_t)hl - done);
    if (len) evbuffer_add(out, body, len);
  } else if (done < total) {
    evbuffer_add(out, body + (done - (size_t)hl), total - done);
  }
  c->req = NULL;
  free(r->body);
  gd_http_head_clear(&r->head);
  free(r);
  /* EV_WRITE stays enabled from accept: the bufferevent registers for
   * writability only while its output holds data. Enabling it again here
   * would register (and at once unregister) the socket for every reply. */
  c->state = C_WRITING;
  /* Written already: run the after-write step from the loop, not from
   * inside the handler (no recursion into the next pipelined request). */
  if (evbuffer_get_length(out) == 0) bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}
