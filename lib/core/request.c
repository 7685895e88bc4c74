/* Request helpers: the array-backed request, Cookie and query parsing. */
#include <string.h>

#include "core/model.h"

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

static int ieq(gray_str_t a, gray_str_t b) {
  if (a.len != b.len) return 0;
  for (size_t i = 0; i < a.len; i++)
    if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i])) return 0;
  return 1;
}

/* Names are short: a plain loop beats a call into memcmp. */
static int eq(gray_str_t a, gray_str_t b) {
  if (a.len != b.len) return 0;
  for (size_t i = 0; i < a.len; i++)
    if (a.p[i] != b.p[i]) return 0;
  return 1;
}

int gray_cookie_find(gray_str_t header, gray_str_t name, gray_str_t *value) {
  size_t pos = 0;
  gray_str_t k, v;
  while (gray__cookie_next(header, &pos, &k, &v)) {
    if (eq(k, name)) {
      *value = v;
      return 1;
    }
  }
  return 0;
}

int gray__xff_client(const gray_str_t *values, size_t n,
                     int (*trusted)(void *ctx, const char *p, size_t len), void *ctx,
                     gray_str_t *out) {
  int found = 0;
  for (size_t i = n; i-- > 0;) {
    const char *p = values[i].p;
    size_t end = p ? values[i].len : 0;
    /* elements right to left; `end` strictly decreases */
    while (end > 0) {
      size_t e = end;
      while (e > 0 && (gray__is_ows(p[e - 1]) || p[e - 1] == ',')) e--;
      if (e == 0) break;
      size_t s = e - 1;
      while (s > 0 && p[s - 1] != ',') s--;
      size_t b = s;
      while (b < e && gray__is_ows(p[b])) b++;
      out->p = p + b;
      out->len = e - b;
      found = 1;
      if (!trusted(ctx, p + b, e - b)) return 1;
      end = s;
    }
  }
  /* every element a trusted proxy: the leftmost one (the last seen) */
  return found;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Decode src into dst (capacity cap). Returns decoded length, or (size_t)-1
 * when it does not fit. A '%' not followed by two hex digits stays as is. */
static size_t url_decode(const char *src, size_t len, char *dst, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char c = src[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < len && hexval((unsigned char)src[i + 1]) >= 0 && hexval((unsigned char)src[i + 2]) >= 0) {
      c = (char)(hexval((unsigned char)src[i + 1]) * 16 + hexval((unsigned char)src[i + 2]));
      i += 2;
    }
    if (o >= cap) return (size_t)-1;
    dst[o++] = c;
  }
  return o;
}

/* Does the raw (encoded) key decode to name? Compared without a buffer. */
static int key_matches(const char *k, size_t klen, gray_str_t name) {
  size_t o = 0;
  for (size_t i = 0; i < klen; i++) {
    char c = k[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < klen && hexval((unsigned char)k[i + 1]) >= 0 &&
               hexval((unsigned char)k[i + 2]) >= 0) {
      c = (char)(hexval((unsigned char)k[i + 1]) * 16 + hexval((unsigned char)k[i + 2]));
      i += 2;
    }
    if (o >= name.len || name.p[o] != c) return 0;
    o++;
  }
  return o == name.len;
}

int gray_query_find(gray_str_t query, gray_str_t name, gray_str_t *value, char *scratch,
                    size_t scratch_size) {
  if (!query.p) return 0;
  const char *p = query.p, *end = query.p + query.len;
  if (p < end && *p == '?') p++;
  while (p < end) {
    const char *k = p;
    while (p < end && *p != '&' && *p != '=') p++;
    const char *kend = p, *v = p, *vend = p;
    if (p < end && *p == '=') {
      v = ++p;
      while (p < end && *p != '&') p++;
      vend = p;
    }
    if (p < end) p++; /* skip '&' */
    if (kend == k) continue;
    if (!key_matches(k, (size_t)(kend - k), name)) continue;
    size_t vlen = (size_t)(vend - v);
    if (vlen <= scratch_size && !memchr(v, '%', vlen) && !memchr(v, '+', vlen)) {
      value->p = v; /* nothing to decode */
      value->len = vlen;
      return 1;
    }
    size_t n = url_decode(v, vlen, scratch, scratch_size);
    if (n == (size_t)-1) return 0;
    value->p = scratch;
    value->len = n;
    return 1;
  }
  return 0;
}

static int find_kv(const gray_kv_t *kv, size_t n, gray_str_t name, int icase, gray_str_t *value) {
  for (size_t i = 0; i < n; i++) {
    if (icase ? ieq(kv[i].name, name) : eq(kv[i].name, name)) {
      *value = kv[i].value;
      return 1;
    }
  }
  return 0;
}

static int present(gray_str_t s, gray_str_t *value) {
  if (!s.p) return 0;
  *value = s;
  return 1;
}

int gray_kv_lookup(void *ctx, gray_attr_t attr, gray_str_t name, gray_str_t *value,
                   char *scratch, size_t scratch_size) {
  const gray_kv_request_t *r = ctx;
  static const gray_str_t cookie = {"cookie", 6};
  gray_str_t hdr;
  switch (attr) {
    case GRAY_ATTR_HEADER:
      return find_kv(r->headers, r->nheaders, name, 1, value);
    case GRAY_ATTR_COOKIE:
      if (r->cookies) return find_kv(r->cookies, r->ncookies, name, 0, value);
      if (find_kv(r->headers, r->nheaders, cookie, 1, &hdr)) return gray_cookie_find(hdr, name, value);
      return 0;
    case GRAY_ATTR_PARAM:
      if (r->params) return find_kv(r->params, r->nparams, name, 0, value);
      return gray_query_find(r->query, name, value, scratch, scratch_size);
    case GRAY_ATTR_IP:
      return present(r->ip, value);
    case GRAY_ATTR_TAG:
      return present(r->tag, value);
    case GRAY_ATTR_PATH:
      return present(r->path, value);
    case GRAY_ATTR_METHOD:
      return present(r->method, value);
    case GRAY_ATTR_HOST:
      return present(r->host, value);
  }
  return 0;
}
