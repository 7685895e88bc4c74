/* Data-driven test runner.
 *   run_case rule DIR     DIR/policy.json, DIR/request.json, DIR/expected.json
 *   run_case invalid DIR  DIR/input must be refused with exactly DIR/error
 * request.json: {"service": S (optional when the file has one policy),
 *                "request": {headers, cookies, params, query, ip, tag, path,
 *                            method, host}}
 * expected.json: {"version": V, "tag": T|null, "rule": R|null}
 *             or {"error": "no policy"} when S has no policy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gray/gray.h"
#include "gray/json.h"

static char *slurp(const char *dir, const char *name, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (!buf) return NULL;
  buf[n < cap ? n : cap - 1] = '\0';
  *len = n;
  return buf;
}

static int str_matches(json_t *want, gray_str_t got, const char *what) {
  if (json_is_null(want)) {
    if (got.p) {
      fprintf(stderr, "%s: expected null, got \"%.*s\"\n", what, (int)got.len, got.p);
      return 0;
    }
    return 1;
  }
  if (!json_is_string(want)) {
    fprintf(stderr, "%s: expected.json must give a string or null\n", what);
    return 0;
  }
  if (!got.p || got.len != json_string_length(want) || memcmp(got.p, json_string_value(want), got.len)) {
    fprintf(stderr, "%s: expected \"%s\", got %s%.*s%s\n", what, json_string_value(want),
            got.p ? "\"" : "null", got.p ? (int)got.len : 0, got.p ? got.p : "", got.p ? "\"" : "");
    return 0;
  }
  return 1;
}

static int same(gray_str_t a, gray_str_t b) {
  return (!a.p && !b.p) || (a.p && b.p && a.len == b.len && !memcmp(a.p, b.p, a.len));
}

static int run_rule(const char *dir) {
  size_t len;
  gray_error_t err;
  json_error_t jerr;
  char line[1024];
  int ok = 0;
  gray_policyset_t *set = NULL;
  json_t *reqdoc = NULL, *exp = NULL;
  gray_json_request_t *jr = NULL;
  gray_trace_t *trace = NULL;
  char *pol = slurp(dir, "policy.json", &len);
  if (!pol) return 1;
  if (gray_policyset_parse(pol, len, GRAY_PARSE_ANY, &set, &err)) {
    fprintf(stderr, "policy.json refused: %s\n", gray_error_format(&err, line, sizeof line));
    goto out;
  }
  snprintf(line, sizeof line, "%s/request.json", dir);
  reqdoc = json_load_file(line, JSON_REJECT_DUPLICATES, &jerr);
  snprintf(line, sizeof line, "%s/expected.json", dir);
  exp = json_load_file(line, JSON_REJECT_DUPLICATES, &jerr);
  if (!reqdoc || !exp) {
    fprintf(stderr, "bad request.json or expected.json: %s\n", jerr.text);
    goto out;
  }
  json_t *svc = json_object_get(reqdoc, "service");
  const gray_policy_t *p;
  if (svc)
    p = gray_policyset_find(set, json_string_value(svc), json_string_length(svc));
  else
    p = gray_policyset_count(set) == 1 ? gray_policyset_at(set, 0) : NULL;
  json_t *want_err = json_object_get(exp, "error");
  if (!p) {
    ok = want_err != NULL;
    if (!ok) fprintf(stderr, "no policy for the requested service\n");
    goto out;
  }
  if (want_err) {
    fprintf(stderr, "expected no policy, but found one\n");
    goto out;
  }
  json_t *rq = json_object_get(reqdoc, "request");
  if (!rq) rq = json_object();
  else json_incref(rq);
  int rc = gray_json_request_new(rq, &jr, &err);
  json_decref(rq);
  if (rc) {
    fprintf(stderr, "request.json: %s\n", gray_error_format(&err, line, sizeof line));
    goto out;
  }
  gray_decision_t d, d2;
  gray_decide(p, gray_json_request_get(jr), &d);
  ok = str_matches(json_object_get(exp, "version"), d.version, "version");
  ok &= str_matches(json_object_get(exp, "tag"), d.tag, "tag");
  ok &= str_matches(json_object_get(exp, "rule"), d.rule, "rule");
  /* Explain must reach the same decision as the fast path. */
  trace = gray_trace_new();
  if (!trace || gray_explain(p, gray_json_request_get(jr), &d2, trace)) {
    fprintf(stderr, "explain failed\n");
    ok = 0;
  } else if (!same(d.version, d2.version) || !same(d.tag, d2.tag) || !same(d.rule, d2.rule)) {
    fprintf(stderr, "explain decided differently from decide\n");
    ok = 0;
  }
  if (!ok) {
    json_t *j = gray_decision_to_json(&d2, trace);
    char *s = j ? json_dumps(j, JSON_INDENT(1)) : NULL;
    fprintf(stderr, "decision with trace:\n%s\n", s ? s : "?");
    free(s);
    json_decref(j);
  }
out:
  gray_trace_free(trace);
  gray_json_request_free(jr);
  json_decref(reqdoc);
  json_decref(exp);
  gray_policyset_release(set);
  free(pol);
  return ok ? 0 : 1;
}

static int run_invalid(const char *dir) {
  size_t len, elen;
  gray_error_t err;
  char line[1024];
  gray_policyset_t *set = NULL;
  char *in = slurp(dir, "input", &len);
  char *want = slurp(dir, "error", &elen);
  int ok = 0;
  if (!in || !want) goto out;
  while (elen && (want[elen - 1] == '\n' || want[elen - 1] == '\r')) want[--elen] = '\0';
  int rc = gray_policyset_parse(in, len, GRAY_PARSE_ANY, &set, &err);
  if (rc == GRAY_OK) {
    fprintf(stderr, "input was accepted; expected: %s\n", want);
    goto out;
  }
  if (set) {
    fprintf(stderr, "a refused parse returned a set\n");
    goto out;
  }
  gray_error_format(&err, line, sizeof line);
  if (strcmp(line, want)) {
    fprintf(stderr, "wrong error\n  expected: %s\n  got:      %s\n", want, line);
    goto out;
  }
  ok = 1;
out:
  gray_policyset_release(set);
  free(in);
  free(want);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: run_case rule|invalid DIR\n");
    return 2;
  }
  if (!strcmp(argv[1], "rule")) return run_rule(argv[2]);
  if (!strcmp(argv[1], "invalid")) return run_invalid(argv[2]);
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
