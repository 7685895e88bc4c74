#define _GNU_SOURCE
/* HTTP/1.1 request head parsing (RFC 9112), strict: anything ambiguous is
 * refused rather than guessed (obsolete line folding, bare LF, conflicting
 * Content-Length, Transfer-Encoding on requests). */
#include "http/parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int fail(gd_http_head *h, int status, const char *why) {
  h->error = why;
  return status;
}

void gd_http_head_clear(gd_http_head *h) {
  free(h->buf);
  free(h->names);
  free(h->values);
  h->buf = NULL;
  h->names = h->values = NULL;
  h->nheaders = 0;
}

int gd_http_parse_head(const char *bytes, size_t len, size_t max_headers, gd_http_head *h) {
  memset(h, 0, sizeof *h);
  if (len < 4 || memcmp(bytes + len - 4, "\r\n\r\n", 4)) return fail(h, 400, "incomplete request head");
  /* One copy we can cut into NUL-terminated pieces. */
  /* Size the header arrays by the lines actually present: thousands of
   * parked long polls each keep their head. */
  size_t lines = 0;
  for (size_t i = 0; i + 1 < len; i++)
    if (bytes[i] == '\r' && bytes[i + 1] == '\n') lines++;
  size_t slots = lines < max_headers ? lines : max_headers;
  h->buf = malloc(len + 1);
  h->names = calloc(slots ? slots : 1, sizeof(char *));
  h->values = calloc(slots ? slots : 1, sizeof(char *));
  if (!h->buf || !h->names || !h->values) return fail(h, 503, "out of memory");
  memcpy(h->buf, bytes, len);
  h->buf[len] = '\0';
  char *p = h->buf, *end = h->buf + len - 2; /* the final CRLF */

  /* Request line: method SP target SP HTTP/1.x CRLF */
  char *eol = strstr(p, "\r\n");
  if (!eol) return fail(h, 400, "malformed request line");
  *eol = '\0';
  char *sp1 = strchr(p, ' ');
  if (!sp1 || sp1 == p) return fail(h, 400, "malformed request line");
  *sp1 = '\0';
  for (char *m = p; *m; m++)
    if (!is_tchar((unsigned char)*m)) return fail(h, 400, "malformed method");
  h->method = p;
  char *target = sp1 + 1;
  char *sp2 = strchr(target, ' ');
  if (!sp2) return fail(h, 400, "malformed request line");
  *sp2 = '\0';
  const char *ver = sp2 + 1;
  if (strncmp(ver, "HTTP/1.", 7) || (ver[7] != '0' && ver[7] != '1') || ver[8])
    return fail(h, 505, "only HTTP/1.0 and HTTP/1.1 are served");
  h->minor = ver[7] - '0';
  if (target[0] != '/') return fail(h, 400, "request target must be a path (origin form)");
  for (char *t = target; *t; t++) {
    unsigned char c = (unsigned char)*t;
    if (c <= 0x20 || c >= 0x7f) return fail(h, 400, "invalid character in request target");
  }
  char *q = strchr(target, '?');
  if (q) {
    *q = '\0';
    h->query = q + 1;
  } else {
    h->query = "";
  }
  h->path = target;
  h->keep_alive = h->minor == 1;

  /* Header fields. */
  int have_cl = 0;
  p = eol + 2;
  while (p < end) {
    eol = strstr(p, "\r\n");
    if (!eol) return fail(h, 400, "malformed header line");
    *eol = '\0';
    if (*p == ' ' || *p == '\t') return fail(h, 400, "obsolete header line folding is not accepted");
    char *colon = strchr(p, ':');
    if (!colon || colon == p) return fail(h, 400, "malformed header line");
    *colon = '\0';
    for (char *n = p; *n; n++)
      if (!is_tchar((unsigned char)*n)) return fail(h, 400, "invalid character in header name");
    char *v = colon + 1, *ve = eol;
    while (*v == ' ' || *v == '\t') v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) *--ve = '\0';
    for (char *x = v; *x; x++) {
      unsigned char c = (unsigned char)*x;
      if ((c < 0x20 && c != '\t') || c == 0x7f) return fail(h, 400, "invalid character in header value");
    }
    if (h->nheaders >= slots) return fail(h, 431, "too many header fields");
    h->names[h->nheaders] = p;
    h->values[h->nheaders] = v;
    h->nheaders++;
    if (!strcasecmp(p, "content-length")) {
      size_t n = 0;
      if (!*v) return fail(h, 400, "invalid Content-Length");
      for (char *d = v; *d; d++) {
        if (*d < '0' || *d > '9' || n > (size_t)1 << 40) return fail(h, 400, "invalid Content-Length");
        n = n * 10 + (size_t)(*d - '0');
      }
      if (have_cl && n != h->content_length) return fail(h, 400, "conflicting Content-Length");
      have_cl = 1;
      h->content_length = n;
    } else if (!strcasecmp(p, "transfer-encoding")) {
      return fail(h, 411, "chunked request bodies are not accepted: send Content-Length");
    } else if (!strcasecmp(p, "connection")) {
      if (strcasestr(v, "close")) h->keep_alive = 0;
      else if (strcasestr(v, "keep-alive")) h->keep_alive = 1;
    }
    p = eol + 2;
  }
  return 0;
}
