/* MurmurHash3 x86_32 (public domain algorithm by Austin Appleby), written
 * for streaming so the percent bucket of salt ":" value needs no copy. */
#include <string.h>

#include "gray/policy.h"

typedef struct {
  uint32_t h;
  uint32_t tail;   /* pending bytes, little-endian */
  uint32_t ntail;  /* 0..3 */
  uint32_t total;
} mm3;

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline uint32_t mix_k(uint32_t k) {
  k *= 0xcc9e2d51u;
  k = rotl32(k, 15);
  return k * 0x1b873593u;
}

/* One 4-byte block into the running hash. */
static inline uint32_t mm3_round(uint32_t h, uint32_t k) {
  h ^= mix_k(k);
  h = rotl32(h, 13);
  return h * 5 + 0xe6546b64u;
}

static inline void mm3_block(mm3 *s, uint32_t k) { s->h = mm3_round(s->h, k); }

static void mm3_feed(mm3 *s, const unsigned char *p, size_t len) {
  s->total += (uint32_t)len;
  while (len && s->ntail) {
    s->tail |= (uint32_t)*p++ << (8 * s->ntail);
    len--;
    if (++s->ntail == 4) {
      mm3_block(s, s->tail);
      s->tail = 0;
      s->ntail = 0;
    }
  }
  while (len >= 4) {
    uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    mm3_block(s, k);
    p += 4;
    len -= 4;
  }
  while (len--) {
    s->tail |= (uint32_t)*p++ << (8 * s->ntail);
    s->ntail++;
  }
}

static uint32_t fmix(uint32_t h);

static uint32_t mm3_final(mm3 *s) {
  uint32_t h = s->h;
  if (s->ntail) h ^= mix_k(s->tail);
  return fmix(h ^ s->total);
}

static uint32_t fmix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

/* One piece: the blocks, then the tail (the streaming form above for
 * keys in parts). */
uint32_t gray_murmur3_32(const void *data, size_t len, uint32_t seed) {
  const unsigned char *p = data;
  uint32_t h = seed, k = 0;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    k = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 |
        (uint32_t)p[i + 3] << 24;
    h = mm3_round(h, k);
  }
  k = 0;
  switch (len & 3) {
    case 3:
      k ^= (uint32_t)p[i + 2] << 16;
      /* fall through */
    case 2:
      k ^= (uint32_t)p[i + 1] << 8;
      /* fall through */
    case 1:
      k ^= p[i];
      h ^= mix_k(k);
  }
  return fmix(h ^ (uint32_t)len);
}

uint32_t gray_percent_bucket(gray_str_t salt, gray_str_t value) {
  /* The usual short key in one piece: whole blocks, no pending bytes to
   * carry between the three parts. */
  unsigned char buf[128];
  if (salt.len < sizeof buf && value.len < sizeof buf - salt.len) {
    if (salt.len) memcpy(buf, salt.p, salt.len);
    buf[salt.len] = ':';
    if (value.len) memcpy(buf + salt.len + 1, value.p, value.len);
    return gray_murmur3_32(buf, salt.len + 1 + value.len, 0) % 10000u;
  }
  mm3 s = {0, 0, 0, 0};
  mm3_feed(&s, (const unsigned char *)salt.p, salt.len);
  mm3_feed(&s, (const unsigned char *)":", 1);
  mm3_feed(&s, (const unsigned char *)value.p, value.len);
  return mm3_final(&s) % 10000u;
}
