/* grayctl agents: what each gray-agent last reported (GET /v1/agents). */
#include <stdio.h>
#include <string.h>

#include "grayctl.h"

static const char agents_usage[] =
    "usage: grayctl agents [--json]\n"
    "\n"
    "The gray-agents (one per Nginx) that reported to grayd since it started:\n"
    "id, host, the revision each has applied, the newest it has seen, seconds\n"
    "since its last report (agents report at least every 30 s) and its last\n"
    "error. grayd keeps these in memory only.\n"
    "\n"
    "  --json   grayd's answer as it is\n"
    "\n"
    "Example:\n"
    "  grayctl agents\n";

enum { O_JSON = GRAYCTL_O_COMMAND };

int grayctl_agents(grayctl_globals *g, int argc, char **argv) {
  static const struct option opts[] = {GRAYCTL_GLOBAL_OPTIONS,
                                       {"json", no_argument, NULL, O_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  static const char *const head[] = {"ID", "HOST", "APPLIED", "SEEN", "AGO", "ERROR"};
  int json = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (grayctl_global_option(g, c, optarg)) continue;
    switch (c) {
      case O_JSON: json = 1; break;
      case 'h': fputs(agents_usage, stdout); return GRAYCTL_OK;
      default: return grayctl_option_error("agents", argv);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "grayctl agents: unexpected argument \"%s\"\n", argv[optind]);
    grayctl_usage_line(agents_usage);
    return GRAYCTL_EUSAGE;
  }
  grayctl_conn *conn = NULL;
  grayctl_resp resp = {0};
  json_t *ans = NULL;
  grayctl_table *t = NULL;
  int rc = grayctl_conn_open(g, &conn);
  if (rc) return rc;
  grayctl_call call = {"GET", "/v1/agents", NULL, 0, -1, 0, "agents"};
  if ((rc = grayctl_request(conn, &call, &resp)) != GRAYCTL_OK) goto out;
  if (json) {
    rc = grayctl_print_raw(&resp);
    goto out;
  }
  rc = GRAYCTL_EFAIL;
  if (!(ans = grayctl_resp_json("agents", &resp))) goto out;
  json_t *list = json_object_get(ans, "agents"), *e;
  if (!json_is_array(list)) {
    fprintf(stderr, "grayctl: agents: the answer has no \"agents\" list\n");
    goto out;
  }
  if (!(t = grayctl_table_new(6, head))) {
    fprintf(stderr, "grayctl: out of memory\n");
    goto out;
  }
  size_t i;
  json_array_foreach(list, i, e) {
    char applied[32], seen[32], ago[40], err[160], id[80], host[270];
    const char *le = grayctl_jstr(e, "last_error", NULL);
    /* One line of the error, control characters replaced. */
    if (le) {
      size_t n = strcspn(le, "\n");
      char first[160];
      snprintf(first, sizeof first, "%.*s%s", (int)(n < 150 ? n : 150), le, le[n] || n > 150 ? " ..." : "");
      grayctl_clean(first, err, sizeof err);
    }
    snprintf(ago, sizeof ago, "%ss", grayctl_jint(e, "seconds_since_report", applied, sizeof applied));
    const char *cells[] = {grayctl_clean(grayctl_jstr(e, "id", "-"), id, sizeof id),
                           grayctl_clean(grayctl_jstr(e, "host", "-"), host, sizeof host),
                           grayctl_jint(e, "revision", applied, sizeof applied),
                           grayctl_jint(e, "seen_revision", seen, sizeof seen), ago, le ? err : "-"};
    if (grayctl_table_add(t, cells)) {
      fprintf(stderr, "grayctl: out of memory\n");
      goto out;
    }
  }
  if (grayctl_table_rows(t) == 0)
    puts("no agent has reported since grayd started");
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
