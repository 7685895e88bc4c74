/* libFuzzer target: parse + compile + evaluate + explain.
 * Input: a policy document, optionally followed by "\n#REQ\n" and request
 * material: newline-separated slices used as the values of header, cookie
 * header, query string, ip, tag, path, method and host, in that order. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gray/gray.h"
#include "gray/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSLICES 8

typedef struct fuzz_req {
  gray_str_t slice[NSLICES];
} fuzz_req;

static int lookup(void *ctx, gray_attr_t attr, gray_str_t name, gray_str_t *value, char *scratch,
                  size_t scratch_size) {
  const fuzz_req *r = ctx;
  (void)name;
  switch (attr) {
    case GRAY_ATTR_HEADER:
      if (!r->slice[0].p) return 0;
      *value = r->slice[0];
      return 1;
    case GRAY_ATTR_COOKIE:
      return gray_cookie_find(r->slice[1], name, value);
    case GRAY_ATTR_PARAM:
      return gray_query_find(r->slice[2], name, value, scratch, scratch_size);
    default: {
      int k = attr == GRAY_ATTR_IP ? 3 : attr == GRAY_ATTR_TAG ? 4 : attr == GRAY_ATTR_PATH ? 5
              : attr == GRAY_ATTR_METHOD ? 6 : 7;
      if (!r->slice[k].p) return 0;
      *value = r->slice[k];
      return 1;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  const char *sep = NULL;
  for (size_t i = 0; i + 6 <= size; i++) {
    if (!memcmp(buf + i, "\n#REQ\n", 6)) {
      sep = buf + i;
      break;
    }
  }
  size_t doclen = sep ? (size_t)(sep - buf) : size;
  fuzz_req fr;
  memset(&fr, 0, sizeof fr);
  if (sep) {
    const char *p = sep + 6, *end = buf + size;
    for (int k = 0; k < NSLICES && p <= end; k++) {
      const char *nl = memchr(p, '\n', (size_t)(end - p));
      const char *e = nl ? nl : end;
      fr.slice[k].p = p;
      fr.slice[k].len = (size_t)(e - p);
      if (!nl) break;
      p = nl + 1;
    }
  }
  gray_policyset_t *set = NULL;
  gray_error_t err;
  char line[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX + 8];
  int rc = gray_policyset_parse(buf, doclen, GRAY_PARSE_ANY, &set, &err);
  if (rc != GRAY_OK) {
    /* The error must be well-formed and refer to nothing freed. */
    gray_error_format(&err, line, sizeof line);
    if (set) abort();
    return 0;
  }
  gray_request_t req = {lookup, &fr};
  gray_trace_t *trace = gray_trace_new();
  for (size_t i = 0; i < gray_policyset_count(set); i++) {
    const gray_policy_t *p = gray_policyset_at(set, i);
    gray_decision_t d1, d2;
    gray_decide(p, &req, &d1);
    if (trace && gray_explain(p, &req, &d2, trace) == GRAY_OK) {
      /* explain and decide must agree, always. */
      if (d1.rule_index != d2.rule_index) abort();
      json_t *j = gray_decision_to_json(&d2, trace);
      char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
      free(s);
      json_decref(j);
    }
    const char *svc = gray_policy_service(p);
    if (gray_policyset_find(set, svc, strlen(svc)) == NULL) abort();
  }
  gray_trace_free(trace);
  gray_policyset_release(set);
  return 0;
}
