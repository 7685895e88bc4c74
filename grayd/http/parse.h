/* HTTP/1.1 request-head parser (request line + headers). Pure: no I/O, no
 * libevent; fuzzed by tests/fuzz/fuzz_http.c. */
#ifndef GRAYD_HTTP_PARSE_H
#define GRAYD_HTTP_PARSE_H

#include <stddef.h>

typedef struct gd_http_head {
  char *buf;          /* one allocation holding every string below */
  const char *method; /* "GET" */
  const char *path;   /* "/v1/policies/order" */
  const char *query;  /* "a=1" or "" */
  int minor;          /* HTTP/1.minor */
  size_t nheaders;
  const char **names; /* as sent */
  const char **values; /* trimmed of surrounding white space */
  size_t content_length;
  int keep_alive;
  const char *error; /* static text when parsing failed */
} gd_http_head;

/* Parse `len` bytes ending in "\r\n\r\n". Returns 0, or the HTTP status to
 * answer (400, 411, 431, 501, 505) with head->error set. Allocates; call
 * gd_http_head_clear either way. */
int gd_http_parse_head(const char *bytes, size_t len, size_t max_headers, gd_http_head *head);
void gd_http_head_clear(gd_http_head *head);

#endif
