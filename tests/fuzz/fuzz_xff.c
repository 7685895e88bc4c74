/* libFuzzer target: the X-Forwarded-For walk the Nginx module uses for the
 * `ip` attribute (gray__xff_client). The input is up to 8 header values,
 * one per line; an element is a trusted proxy when it parses as an address
 * in 10.0.0.0/8 or fd00::/8. The walk must never crash or read out of
 * bounds, and its answer must be one trimmed, non-empty element of one of
 * the values — or nothing, exactly when no value holds an element. Each
 * element the walk parses is also checked against inet_pton, and its
 * matches against four nets against a bit-by-bit prefix compare. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_VALUES 8

/* The core's address parser against inet_pton, and its prefix match
 * against a bit-by-bit one, on every element the walk looks at. */
static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits) {
  for (unsigned i = 0; i < bits; i++)
    if ((a[i / 8] ^ b[i / 8]) & (0x80u >> (i % 8))) return 0;
  return 1;
}

static void check_parse(const char *p, size_t len, int ok, const uint8_t ip[16]) {
  char buf[64];
  uint8_t want[16] = {0};
  if (len >= sizeof buf || memchr(p, '\0', len)) {
    if (ok) abort();
    return;
  }
  memcpy(buf, p, len);
  buf[len] = '\0';
  int v4 = inet_pton(AF_INET, buf, want + 12) == 1;
  if (v4) want[10] = want[11] = 0xff;
  int v6 = !v4 && inet_pton(AF_INET6, buf, want) == 1;
  if (ok != (v4 || v6)) abort();
  if (!ok) return;
  if (memcmp(ip, want, 16)) abort();
  static const struct { const char *net; unsigned bits; } nets[] = {
      {"10.0.0.0/13", 109}, {"fd00::/77", 77}, {"0.0.0.0/0", 96}, {"::/0", 0}};
  for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
    gray__cidr c;
    char msg[128];
    gray_str_t t = {nets[i].net, strlen(nets[i].net)};
    if (gray__cidr_parse(t, &c, msg, sizeof msg) != GRAY_OK) abort();
    if (gray__cidr_match(&c, ip) != prefix_equal(c.addr, ip, nets[i].bits)) abort();
  }
}

static int trusted(void *ctx, const char *p, size_t len) {
  (void)ctx;
  uint8_t ip[16];
  int ok = gray__ip_parse(p, len, ip);
  check_parse(p, len, ok, ip);
  if (!ok) return 0;
  static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (!memcmp(ip, v4mapped, 12)) return ip[12] == 10;
  return ip[0] == 0xfd;
}

static int separator(char c) { return c == ' ' || c == '\t' || c == ','; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* each value in its own allocation, so a read past one is caught */
  gray_str_t vals[MAX_VALUES];
  char *bufs[MAX_VALUES];
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= size && n < MAX_VALUES; i++) {
    if (i == size || data[i] == '\n') {
      size_t len = i - start;
      bufs[n] = malloc(len ? len : 1);
      if (!bufs[n]) break;
      memcpy(bufs[n], data + start, len);
      vals[n].p = bufs[n];
      vals[n].len = len;
      n++;
      start = i + 1;
    }
  }
  int any = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < vals[i].len; k++)
      if (!separator(vals[i].p[k])) any = 1;
  gray_str_t out = {NULL, 0};
  int found = gray__xff_client(vals, n, trusted, NULL, &out);
  if (found != any) abort();
  if (found) {
    int inside = 0;
    for (size_t i = 0; i < n; i++)
      if (out.p >= vals[i].p && out.p + out.len <= vals[i].p + vals[i].len) inside = 1;
    if (!inside || out.len == 0) abort();
    if (separator(out.p[0]) || separator(out.p[out.len - 1])) abort();
    if (memchr(out.p, ',', out.len)) abort();
  }
  for (size_t i = 0; i < n; i++) free(bufs[i]);
  return 0;
}
