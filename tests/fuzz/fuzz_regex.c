/* libFuzzer target: a regex condition's required literal
 * (gray__regex_literal, lib/core/rxlit.c), which lets the evaluator answer
 * "no match" without running PCRE2 when a value lacks it. The input is a
 * pattern, a newline, and a subject. The pattern is compiled as a policy's
 * regex is (gray__regex_compile); whenever PCRE2 matches the subject, the
 * subject must contain the literal — else the shortcut would have turned a
 * match into a miss. The literal must also be no longer than the pattern. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *in = (const char *)data;
  const char *nl = memchr(in, '\n', size);
  size_t plen = nl ? (size_t)(nl - in) : size;
  if (plen > 512) return 0;
  const char *subj = nl ? nl + 1 : "";
  size_t slen = nl ? size - plen - 1 : 0;

  gray_policyset_t *set = gray__set_new();
  if (!set) return 0;
  gray__node n;
  memset(&n, 0, sizeof n);
  char msg[256];
  gray_str_t pat = {in, plen};
  if (gray__regex_compile(set, &n, pat, msg, sizeof msg) == GRAY_OK && n.lit.len) {
    if (n.lit.len > plen || n.lit.len > GRAY__REGEX_LITERAL_MAX) abort();
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(n.re, NULL);
    if (md) {
      int rc = pcre2_match(n.re, (PCRE2_SPTR)subj, slen, 0, 0, md, n.mctx);
      if (rc >= 0 && !memmem(subj, slen, n.lit.p, n.lit.len)) abort();
      pcre2_match_data_free(md);
    }
  }
  gray_policyset_release(set);
  return 0;
}
