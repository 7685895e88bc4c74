/* grayctl explain and grayctl audit. */
#include <stdlib.h>
#include <string.h>

#include "grayctl.h"

static const char explain_usage[] =
    "usage: grayctl explain SERVICE [request flags] [--explain-table] [--json]\n"
    "\n"
    "Ask grayd which version of SERVICE serves one request, with its current\n"
    "policy, and why. Prints one JSON line, as grayctl eval --explain does, plus\n"
    "grayd's revision:\n"
    "  {\"service\":\"order\",\"version\":\"v2\",\"tag\":\"beta\",\"rule\":\"testers\",\"trace\":[...],\"revision\":57}\n"
    "\n"
    "Request flags, exactly as grayctl eval takes them (see grayctl eval --help):\n"
    "  --header 'Name: value'  --cookie name=value  --param name=value\n"
    "  --query 'a=1&b=2'  --ip ADDR  --tag T  --path P  --method M  --host H\n"
    "\n"
    "  --explain-table   the decision line without the trace, then the trace as\n"
    "                    an indented table: every rule and condition tried, the\n"
    "                    value seen and the result\n"
    "  --json            grayd's answer exactly as it came\n"
    "\n"
    "Examples:\n"
    "  grayctl explain order --header 'X-Gray: 1'\n"
    "  grayctl explain order --param uid=1019 --ip 10.9.3.4 --explain-table\n"
    "\n"
    "Exit 3 when grayd has no policy for SERVICE.\n";

static const char audit_usage[] =
    "usage: grayctl audit [--limit N] [--before ID] [--json]\n"
    "\n"
    "grayd's audit log, newest first: time (UTC), token name, operation, target,\n"
    "HTTP status and message. Refused attempts (401, 403, 412, ...) are there too.\n"
    "\n"
    "  --limit N     at most N entries (1..1000, grayd's default 100)\n"
    "  --before ID   only entries older than audit entry ID (to page back)\n"
    "  --json        grayd's answer as it is (with each entry's id)\n"
    "\n"
    "Example:\n"
    "  grayctl audit --limit 20\n";

enum { O_JSON = GRAYCTL_O_COMMAND, O_TABLE, O_LIMIT, O_BEFORE };

static int oom(void) {
  fprintf(stderr, "grayctl: out of memory\n");
  return GRAYCTL_EFAIL;
}

/* The trace as a table: results in the first column, conditions indented by
 * their depth. */
static int print_trace(json_t *trace) {
  static const char *const head[] = {"RESULT", "STEP", "SEEN"};
  grayctl_table *t = grayctl_table_new(3, head);
  if (!t) return oom();
  size_t i;
  json_t *e;
  json_array_foreach(trace, i, e) {
    grayctl_buf step = {0}, seen = {0};
    long long depth = json_integer_value(json_object_get(e, "depth"));
    const char *kind = grayctl_jstr(e, "kind", "?");
    for (long long d = 0; d < depth && d < 32; d++) grayctl_buf_add(&step, "  ");
    if (!strcmp(kind, "rule")) {
      grayctl_buf_addf(&step, "rule %s", grayctl_jstr(e, "rule", "?"));
    } else if (!strcmp(kind, "cond")) {
      grayctl_buf_addf(&step, "%s %s", grayctl_jstr(e, "attr", "?"), grayctl_jstr(e, "op", "?"));
      json_t *v = json_object_get(e, "value");
      if (json_is_string(v))
        grayctl_buf_addf(&seen, "\"%s\"", json_string_value(v));
      else
        grayctl_buf_add(&seen, "(absent)");
    } else {
      grayctl_buf_add(&step, kind);
    }
    const char *note = grayctl_jstr(e, "note", NULL);
    if (note) grayctl_buf_addf(&seen, "%s%s", seen.len ? "  " : "", note);
    json_t *res = json_object_get(e, "result");
    const char *cells[] = {json_is_true(res) ? "true" : json_is_false(res) ? "false" : "-",
                           step.p ? step.p : "", seen.p ? seen.p : ""};
    int bad = step.failed || seen.failed || grayctl_table_add(t, cells);
    grayctl_buf_free(&step);
    grayctl_buf_free(&seen);
    if (bad) {
      grayctl_table_free(t);
      return oom();
    }
  }
  grayctl_table_print(t, stdout);
  grayctl_table_free(t);
  return GRAYCTL_OK;
}

int grayctl_explain(grayctl_globals *g, int argc, char **argv) {
  static const struct option opts[] = {GRAYCTL_GLOBAL_OPTIONS,
                                       GRAYCTL_REQUEST_OPTIONS,
                                       {"explain-table", no_argument, NULL, O_TABLE},
                                       {"json", no_argument, NULL, O_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  int json = 0, table = 0, c, taken, rc = GRAYCTL_EUSAGE;
  const char *service = NULL;
  grayctl_req *r = calloc(1, sizeof(*r));
  grayctl_conn *conn = NULL;
  grayctl_resp resp = {0};
  json_t *body = NULL, *ans = NULL;
  char *text = NULL, what[300];
  if (!r) return oom();
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (grayctl_global_option(g, c, optarg)) continue;
    if ((taken = grayctl_req_option(r, c, optarg, "explain")) != 0) {
      if (taken < 0) goto out;
      continue;
    }
    switch (c) {
      case O_JSON: json = 1; break;
      case O_TABLE: table = 1; break;
      case 'h':
        fputs(explain_usage, stdout);
        rc = GRAYCTL_OK;
        goto out;
      default: grayctl_option_error("explain", argv); goto out;
    }
  }
  if (optind < argc) service = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "grayctl explain: unexpected argument \"%s\"\n", argv[optind]);
    grayctl_usage_line(explain_usage);
    goto out;
  }
  if (!service) {
    fprintf(stderr, "grayctl explain: SERVICE is required\n");
    grayctl_usage_line(explain_usage);
    goto out;
  }
  grayctl_req_finish(r);
  json_t *req = grayctl_req_to_json(r);
  body = req ? json_pack("{s:s,s:o}", "service", service, "request", req) : NULL;
  text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  if (!text) {
    fprintf(stderr, "grayctl explain: cannot encode the request as JSON (a value that is not UTF-8?)\n");
    goto out;
  }
  snprintf(what, sizeof what, "explain %s", service);
  if ((rc = grayctl_conn_open(g, &conn)) != GRAYCTL_OK) goto out;
  grayctl_call call = {"POST", "/v1/explain", text, strlen(text), -1, 0, what};
  if ((rc = grayctl_request(conn, &call, &resp)) != GRAYCTL_OK) goto out;
  if (json) {
    rc = grayctl_print_raw(&resp);
    goto out;
  }
  rc = GRAYCTL_EFAIL;
  if (!(ans = grayctl_resp_json(what, &resp))) goto out;
  json_t *trace = json_incref(json_object_get(ans, "trace"));
  if (table) json_object_del(ans, "trace");
  /* One line, as grayctl eval prints its decision. */
  int bad = json_dumpf(ans, stdout, JSON_COMPACT) || putchar('\n') == EOF;
  if (!bad && table && json_is_array(trace)) bad = print_trace(trace) != GRAYCTL_OK;
  json_decref(trace);
  rc = bad || fflush(stdout) ? GRAYCTL_EFAIL : GRAYCTL_OK;
out:
  json_decref(ans);
  json_decref(body);
  free(text);
  grayctl_resp_clear(&resp);
  grayctl_conn_close(conn);
  free(r);
  return rc;
}

int grayctl_audit(grayctl_globals *g, int argc, char **argv) {
  static const struct option opts[] = {GRAYCTL_GLOBAL_OPTIONS,
                                       {"limit", required_argument, NULL, O_LIMIT},
                                       {"before", required_argument, NULL, O_BEFORE},
                                       {"json", no_argument, NULL, O_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  static const char *const head[] = {"TIME", "TOKEN", "OP", "TARGET", "STATUS", "MESSAGE"};
  long long limit = -1, before = -1;
  int json = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (grayctl_global_option(g, c, optarg)) continue;
    switch (c) {
      case O_LIMIT:
        if (grayctl_parse_int(optarg, 1, 1000000, &limit)) {
          fprintf(stderr, "grayctl audit: --limit expects a positive number, got \"%s\"\n", optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_BEFORE:
        if (grayctl_parse_int(optarg, 1, 999999999999999999LL, &before)) {
          fprintf(stderr, "grayctl audit: --before expects an audit entry id, got \"%s\"\n", optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_JSON: json = 1; break;
      case 'h': fputs(audit_usage, stdout); return GRAYCTL_OK;
      default: return grayctl_option_error("audit", argv);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "grayctl audit: unexpected argument \"%s\"\n", argv[optind]);
    grayctl_usage_line(audit_usage);
    return GRAYCTL_EUSAGE;
  }
  char path[96];
  snprintf(path, sizeof path, "/v1/audit");
  if (limit > 0) snprintf(path, sizeof path, "/v1/audit?limit=%lld", limit);
  if (before > 0)
    snprintf(path + strlen(path), sizeof path - strlen(path), "%cbefore=%lld", limit > 0 ? '&' : '?', before);

  grayctl_conn *conn = NULL;
  grayctl_resp resp = {0};
  json_t *ans = NULL;
  grayctl_table *t = NULL;
  int rc = grayctl_conn_open(g, &conn);
  if (rc) return rc;
  grayctl_call call = {"GET", path, NULL, 0, -1, 0, "audit"};
  if ((rc = grayctl_request(conn, &call, &resp)) != GRAYCTL_OK) goto out;
  if (json) {
    rc = grayctl_print_raw(&resp);
    goto out;
  }
  rc = GRAYCTL_EFAIL;
  if (!(ans = grayctl_resp_json("audit", &resp))) goto out;
  json_t *list = json_object_get(ans, "audit"), *e;
  if (!json_is_array(list)) {
    fprintf(stderr, "grayctl: audit: the answer has no \"audit\" list\n");
    goto out;
  }
  if (!(t = grayctl_table_new(6, head))) {
    rc = oom();
    goto out;
  }
  size_t i;
  json_array_foreach(list, i, e) {
    char st[32];
    const char *msg = grayctl_jstr(e, "message", "");
    const char *cells[] = {grayctl_jstr(e, "time", "-"), grayctl_jstr(e, "token", "-"), grayctl_jstr(e, "op", "-"),
                           grayctl_jstr(e, "target", "-"), grayctl_jint(e, "status", st, sizeof st),
                           *msg ? msg : "-"};
    if (grayctl_table_add(t, cells)) {
      rc = oom();
      goto out;
    }
  }
  if (grayctl_table_rows(t) == 0)
    puts("the audit log is empty");
  else
    grayctl_table_print(t, stdout);
  rc = fflush(stdout) ? GRAYCTL_EFAIL : GRAYCTL_OK;
out:
  grayctl_table_free(t);
  json_decref(ans);
  grayctl_resp_clear(&resp);
  grayctl_conn_close(conn);
  return rc;
}
