/* libFuzzer target: grayd's HTTP/1.1 request-head parser. The input is
 * treated as a head; the parser must never crash, leak or read out of
 * bounds, and a parsed head must be self-consistent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The server hands the parser a head that ends in CRLF CRLF. */
  char *buf = malloc(size + 4);
  if (!buf) return 0;
  memcpy(buf, data, size);
  memcpy(buf + size, "\r\n\r\n", 4);
  gd_http_head h;
  int status = gd_http_parse_head(buf, size + 4, 100, &h);
  if (status == 0) {
    if (!h.method || !h.path || !h.query || h.path[0] != '/') abort();
    if (h.nheaders > 100) abort();
    for (size_t i = 0; i < h.nheaders; i++)
      if (!h.names[i] || !h.values[i] || !h.names[i][0]) abort();
  } else if (!h.error) {
    abort();
  }
  gd_http_head_clear(&h);
  free(buf);
  return 0;
}
