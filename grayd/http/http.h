/* grayd's HTTP/1.1 server: a small adapter over libevent bufferevents.
 *
 * Why not evhttp: grayd must bound everything a client controls — bytes and
 * count of headers, body size, connections, and the time a request may take
 * to arrive (a client sending one byte per second must not hold a slot) —
 * and must notice a long-poll client that hangs up. libevent 2.1's evhttp
 * has no connection cap and only per-read timeouts, so a slow client evades
 * it. This adapter does exactly what grayd needs and nothing else:
 * origin-form requests, Content-Length bodies (chunked request bodies get
 * 411), keep-alive, one request at a time per connection, deferred replies,
 * optional TLS (OpenSSL). Everything else in grayd sees only gd_req.
 *
 * Threads: all calls on the event loop's thread. */
#ifndef GRAYD_HTTP_H
#define GRAYD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "gray/err.h"

typedef struct gd_http gd_http;
typedef struct gd_req gd_req;

typedef struct gd_http_limits {
  size_t max_head;       /* bytes of request line + headers (default 16 KiB) */
  size_t max_headers;    /* number of header lines (default 100) */
  size_t max_body;       /* bytes of body (default 1 MiB) */
  int max_conns;         /* open connections (default 4096) */
  int request_timeout_ms; /* first byte of a request to its last (default 10 s) */
  int idle_timeout_ms;   /* keep-alive connection with no request (default 60 s) */
  int write_timeout_ms;  /* a reply that cannot be written (default 30 s) */
} gd_http_limits;

/* Defaults above. */
void gd_http_limits_default(gd_http_limits *l);

/* Called once per complete request. The handler either replies before it
 * returns or keeps `req` and replies later (long poll); a kept request must
 * register an abort callback, called if the client goes away first (then the
 * request is freed after the callback and must not be used). */
typedef void (*gd_http_handler)(gd_req *req, void *arg);

/* New server on `base`. tls: NULL for plain HTTP, else a server SSL_CTX (not
 * owned). Returns NULL on out of memory. */
gd_http *gd_http_new(struct event_base *base, const gd_http_limits *lim, SSL_CTX *tls,
                     gd_http_handler handler, void *arg);
/* Listen on host:port (port 0: any free port; *bound gets the port). */
int gd_http_listen(gd_http *h, const char *host, int port, int *bound, gray_error_t *err);
/* Close every connection and the listener. Pending requests are dropped
 * (their abort callbacks run). Accepts NULL. */
void gd_http_free(gd_http *h);

/* Counters for /metrics. */
typedef struct gd_http_stats {
  uint64_t accepted, refused_over_cap, timed_out, bad_requests;
  int open_conns;
} gd_http_stats;
void gd_http_get_stats(const gd_http *h, gd_http_stats *out);

/* Request accessors; strings are NUL-terminated and live as long as req. */
const char *gd_req_method(const gd_req *r);
const char *gd_req_path(const gd_req *r);  /* raw path, without the query */
const char *gd_req_query(const gd_req *r); /* raw query without '?', "" if none */
/* First header with that name (case-insensitive), or NULL. */
const char *gd_req_header(const gd_req *r, const char *name);
const char *gd_req_body(const gd_req *r, size_t *len);
const char *gd_req_peer(const gd_req *r); /* "127.0.0.1:5555" */
int gd_req_peer_is_loopback(const gd_req *r);

/* Reply. extra_headers: NULL or complete "Name: value\r\n" lines built by
 * grayd (never from client input). After this call req is gone. */
void gd_req_reply(gd_req *r, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers);

/* Abort callback for a kept (deferred) request. */
void gd_req_on_abort(gd_req *r, void (*cb)(gd_req *r, void *arg), void *arg);

/* Decode one query parameter (first occurrence) into buf; 1 found, 0 not. */
int gd_req_query_param(const gd_req *r, const char *name, char *buf, size_t size);

const char *gd_http_reason(int status);

#endif
