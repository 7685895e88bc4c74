/* Matching primitives: IP/CIDR, numbers, mod, string sets. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"

/* Dotted-quad IPv4 as inet_pton reads it: four decimal octets of 1-3
 * digits, no leading zeros ("010" is refused). This is the hot path of
 * `cidr` and of the trusted-proxy checks, so it is one pass with no copy.
 * Returns 1 and out (IPv4-mapped IPv6), 0 not an IP address, -1 when the
 * text is no IPv4 address but has a ':' (an IPv6 candidate). */
static int ip4_parse(const char *p, size_t len, uint8_t out[16]) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  uint8_t v4[4];
  const unsigned char *q = (const unsigned char *)p, *e = q + len;
  /* each part: 1-3 digits, no leading zero, at most 255; the digits one by
   * one, unrolled (this runs for every X-Forwarded-For element) */
  for (int part = 0; part < 4; part++) {
    unsigned d, v;
    if (q == e || (v = (unsigned)(*q - '0')) > 9) goto not4;
    q++;
    if (q < e && (d = (unsigned)(*q - '0')) <= 9) {
      if (v == 0) goto not4;
      v = v * 10 + d;
      q++;
      if (q < e && (d = (unsigned)(*q - '0')) <= 9) {
        v = v * 10 + d;
        q++;
        if (v > 255) goto not4;
      }
    }
    v4[part] = (uint8_t)v;
    if (part < 3) {
      if (q == e || *q != '.') goto not4;
      q++;
    }
  }
  if (q != e) goto not4;
  memcpy(out, mapped, sizeof mapped);
  memcpy(out + 12, v4, 4);
  return 1;
not4:
  return memchr(p, ':', len) ? -1 : 0;
}

/* IPv6 (with an embedded IPv4 tail, if any), out of the IPv4 path's way.
 * Zone ids ("fe80::1%eth0") are refused by inet_pton: they are not
 * addresses we can route by. */
static __attribute__((noinline)) int ip6_parse(const char *p, size_t len, uint8_t out[16]) {
  char buf[64];
  if (len >= sizeof buf) return 0;
  memcpy(buf, p, len);
  buf[len] = '\0';
  if (memchr(buf, '\0', len)) return 0;
  return inet_pton(AF_INET6, buf, out) == 1;
}

int gray__ip_parse(const char *p, size_t len, uint8_t out[16]) {
  if (len == 0 || len >= 64) return 0;
  int r = ip4_parse(p, len, out);
  return r >= 0 ? r : ip6_parse(p, len, out);
}

int gray__cidr_parse(gray_str_t text, gray__cidr *out, char *msg, size_t msgsz) {
  char q[96];
  const char *slash = memchr(text.p, '/', text.len);
  size_t alen = slash ? (size_t)(slash - text.p) : text.len;
  int v6 = memchr(text.p, ':', alen) != NULL;
  unsigned bits = v6 ? 128 : 32;
  gray__quote(text.p, text.len, q, sizeof q);
  if (!gray__ip_parse(text.p, alen, out->addr)) {
    gray__msg(msg, msgsz, "invalid CIDR %s: not an IPv4 or IPv6 address", q);
    return GRAY_ESCHEMA;
  }
  if (slash) {
    const char *d = slash + 1;
    size_t dl = text.len - alen - 1;
    unsigned v = 0;
    if (dl == 0 || dl > 3) goto bad_len;
    for (size_t i = 0; i < dl; i++) {
      if (d[i] < '0' || d[i] > '9') goto bad_len;
      v = v * 10 + (unsigned)(d[i] - '0');
    }
    if (dl > 1 && d[0] == '0') goto bad_len;
    if (v > bits) goto bad_len;
    bits = v;
  }
  out->bits = (uint8_t)(v6 ? bits : bits + 96);
  /* Host bits set ("10.1.2.3/8") are almost always a typo for a wider or
   * narrower net; refuse rather than guess. */
  for (unsigned b = out->bits; b < 128; b++) {
    if (out->addr[b / 8] & (0x80u >> (b % 8))) {
      gray__msg(msg, msgsz, "invalid CIDR %s: host bits are set after the /%u prefix", q,
                v6 ? out->bits : out->bits - 96u);
      return GRAY_ESCHEMA;
    }
  }
  gray__cidr_finish(out);
  return GRAY_OK;
bad_len:
  gray__msg(msg, msgsz, "invalid CIDR %s: prefix length must be 0..%u", q, v6 ? 128u : 32u);
  return GRAY_ESCHEMA;
}

void gray__cidr_finish(gray__cidr *c) {
  uint8_t m[16];
  for (unsigned b = 0; b < 16; b++) {
    unsigned left = c->bits > b * 8 ? c->bits - b * 8 : 0;
    m[b] = left >= 8 ? 0xff : (uint8_t)(0xff00u >> left);
  }
  memcpy(c->mask, m, sizeof m);
  memcpy(c->net, c->addr, sizeof c->net);
  c->net[0] &= c->mask[0];
  c->net[1] &= c->mask[1];
}

/* Decimal text ("-12", "3.5", "+.5") to the nearest double, the same value
 * jansson gives the policy's number, so equal text compares equal. Short
 * inputs take Clinger's exact fast path (mantissa below 2^53, one exact
 * power of ten); the rest go through strtod on an exponent form
 * ("123456e-3"), which no locale's decimal point can change. */
int gray__parse_number(const char *p, size_t len, double *out) {
  static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  char buf[GRAY__NUMBER_TEXT_MAX + 16];
  size_t i = 0, o = 0, nd = 0, frac = 0;
  int neg = 0;
  uint64_t mant = 0;
  if (len > GRAY__NUMBER_TEXT_MAX) return 0;
  if (i < len && (p[i] == '-' || p[i] == '+')) neg = p[i++] == '-';
  for (; i < len && p[i] >= '0' && p[i] <= '9'; i++, nd++) {
    mant = mant * 10 + (uint64_t)(p[i] - '0');
    buf[o++] = p[i];
  }
  if (i < len && p[i] == '.') {
    for (i++; i < len && p[i] >= '0' && p[i] <= '9'; i++, nd++, frac++) {
      mant = mant * 10 + (uint64_t)(p[i] - '0');
      buf[o++] = p[i];
    }
  }
  if (!nd || i != len) return 0;
  double v;
  if (nd <= 15 && frac <= 22) {
    /* Fewer than 16 digits: mant < 10^15 < 2^53 is exact. */
    v = (double)mant / pow10[frac];
  } else {
    int n = snprintf(buf + o, sizeof buf - o, "e-%zu", frac);
    if (n < 0 || (size_t)n >= sizeof buf - o) return 0;
    v = strtod(buf, NULL);
  }
  *out = neg ? -v : v;
  return 1;
}

int gray__parse_mod(const char *p, size_t len, uint64_t divisor, uint64_t *rem) {
  uint64_t r = 0;
  if (len == 0 || divisor == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    if (p[i] < '0' || p[i] > '9') return 0;
    r = r * 10 + (uint64_t)(p[i] - '0');
    /* Reduce only when the next step could overflow: the divisor is at
     * most 2^32, so a reduced r times 10 plus 9 stays far below 2^63 and a
     * typical id needs a single division. */
    if (r >= (UINT64_C(1) << 59)) r %= divisor;
  }
  *rem = r % divisor;
  return 1;
}

/* The `in` set's own hash: it never leaves the compiled policy (unlike the
 * percent bucket's murmur3, which every executor must agree on), so it is
 * built for the short values sets hold (ids, regions, tokens): up to 16
 * bytes in two overlapping 8-byte (or 4-byte) reads, longer ones 8 bytes at
 * a time, each word folded in by a 64x64->128 multiply. */
static inline uint64_t strset_load64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
static inline uint64_t strset_load32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t strset_mix(uint64_t a, uint64_t b) {
  a ^= 0xa0761d6478bd642full;
  b ^= 0xe7037ed1a0b428dbull;
#ifdef __SIZEOF_INT128__
  unsigned __int128 m = (unsigned __int128)a * b;
  return (uint64_t)m ^ (uint64_t)(m >> 64);
#else
  uint64_t m = (a ^ (b >> 29)) * 0xbf58476d1ce4e5b9ull;
  m ^= b * 0x94d049bb133111ebull;
  return m ^ (m >> 31);
#endif
}
static uint32_t strset_hash(const char *text, size_t len) {
  const unsigned char *p = (const unsigned char *)text;
  uint64_t a, b, h = 0x8ebc6af09c88c6e3ull ^ len;
  if (len <= 16) {
    if (len >= 8) {
      a = strset_load64(p);
      b = strset_load64(p + len - 8);
    } else if (len >= 4) {
      a = strset_load32(p);
      b = strset_load32(p + len - 4);
    } else if (len > 0) {
      a = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
      b = 0;
    } else {
      a = b = 0;
    }
  } else {
    size_t i = 0;
    for (; i + 16 < len; i += 16) h = strset_mix(strset_load64(p + i) ^ h, strset_load64(p + i + 8));
    a = strset_load64(p + len - 16);
    b = strset_load64(p + len - 8);
  }
  h = strset_mix(a ^ h, b ^ 0x589965cc75374cc3ull);
  return (uint32_t)(h ^ h >> 32);
}

int gray__strset_build(gray__arena *a, gray__node *n, const gray_str_t *values, size_t count) {
  uint32_t slots = 8;
  while (slots < count * 2) slots <<= 1;
  gray__strset *s = gray__arena_alloc(a, sizeof(*s));
  if (!s) return GRAY_ENOMEM;
  s->slots = gray__arena_alloc(a, slots * sizeof(*s->slots));
  if (!s->slots) return GRAY_ENOMEM; /* zeroed: every slot empty */
  s->mask = slots - 1;
  s->count = 0;
  for (size_t i = 0; i < count; i++) {
    uint32_t h = strset_hash(values[i].p, values[i].len);
    uint32_t k = h & s->mask;
    for (;;) {
      gray__strset_slot *e = &s->slots[k];
      if (!e->p) {
        e->hash = h;
        e->len = (uint32_t)values[i].len;
        /* an empty value still needs a non-NULL address */
        e->p = values[i].p ? values[i].p : "";
        s->count++;
        break;
      }
      if (e->hash == h && e->len == values[i].len &&
          (values[i].len == 0 || !memcmp(e->p, values[i].p, values[i].len)))
        break;
      k = (k + 1) & s->mask;
    }
  }
  n->set = s;
  return GRAY_OK;
}

int gray__strset_has(const gray__strset *s, const char *p, size_t len) {
  uint32_t h = strset_hash(p, len);
  uint32_t k = h & s->mask;
  for (;;) {
    const gray__strset_slot *e = &s->slots[k];
    if (!e->p) return 0;
    if (e->hash == h && e->len == len && (len == 0 || !memcmp(e->p, p, len))) return 1;
    k = (k + 1) & s->mask;
  }
}
