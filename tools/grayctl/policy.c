/* grayctl policy put|get|history|rollback|delete: policies on grayd. */
#include <stdlib.h>
#include <string.h>

#include "grayctl.h"

#define POLICY_FILE_CAP ((size_t)16 << 20) /* grayd refuses over 1 MiB (413) itself */

static const char policy_usage[] =
    "usage: grayctl [--server URL --token TOKEN] policy SUBCOMMAND [ARGS]\n"
    "\n"
    "Policies on grayd. Every write makes a new revision and is kept in the history.\n"
    "\n"
    "  policy put SERVICE FILE [--if-match REV]   store FILE ('-': standard input)\n"
    "  policy get [SERVICE] [--json]              the list, or one policy document\n"
    "  policy history SERVICE [--limit N] [--before REV] [--json]\n"
    "  policy rollback SERVICE REV [--if-match REV]\n"
    "                                             store the policy as it was at REV\n"
    "  policy delete SERVICE [--if-match REV]\n"
    "\n"
    "--if-match REV makes a write conditional: it happens only when the policy's\n"
    "current revision is REV (0: only when the service has no policy); otherwise\n"
    "grayd refuses with 412 and grayctl exits 4. See grayctl policy SUBCOMMAND --help.\n"
    "\n"
    "Examples:\n"
    "  grayctl --server http://127.0.0.1:7070 --token $T policy put order order.json\n"
    "  grayctl policy get\n"
    "  grayctl policy history order --limit 5\n"
    "  grayctl policy rollback order 12 --if-match 15\n";

static const char put_usage[] =
    "usage: grayctl policy put SERVICE FILE [--if-match REV] [--json]\n"
    "\n"
    "Validate and store one policy document (FILE '-': standard input) as\n"
    "SERVICE's policy; its \"service\" must be SERVICE. Prints the new revision.\n"
    "A refused policy prints grayd's error with its JSON path and exits 2:\n"
    "  grayctl: policy put order: 400 ESCHEMA at rules[0].when.op: unknown operator ...\n"
    "\n"
    "  --if-match REV   only if the policy's current revision is REV (0: only if\n"
    "                   there is none); exit 4 when someone else wrote first\n"
    "  --json           print grayd's answer as it is\n"
    "\n"
    "Examples:\n"
    "  grayctl policy put order order.json\n"
    "  grayctl policy get order | jq '.default = \"v2\"' | grayctl policy put order - --if-match 12\n";

static const char get_usage[] =
    "usage: grayctl policy get [SERVICE] [--json]\n"
    "\n"
    "Without SERVICE: a table of every policy (service, revision of its last\n"
    "write, default version, number of rules); with --json the whole policy set\n"
    "document, which grayctl check and grayctl eval accept as it is.\n"
    "With SERVICE: that policy document (exit 3 when there is none).\n"
    "\n"
    "Examples:\n"
    "  grayctl policy get\n"
    "  grayctl policy get --json > policies.json && grayctl eval --policies policies.json --service order\n"
    "  grayctl policy get order > order.json\n";

static const char history_usage[] =
    "usage: grayctl policy history SERVICE [--limit N] [--before REV] [--json]\n"
    "\n"
    "The revisions of SERVICE's policy, newest first: revision, op (put, delete,\n"
    "rollback), actor (the token's name) and time (UTC).\n"
    "\n"
    "  --limit N      at most N entries (1..1000, grayd's default 100)\n"
    "  --before REV   only revisions older than REV (to page back)\n"
    "  --json         grayd's answer as it is, with every policy document\n"
    "\n"
    "Example:\n"
    "  grayctl policy history order --limit 10\n";

static const char rollback_usage[] =
    "usage: grayctl policy rollback SERVICE REV [--if-match REV] [--json]\n"
    "\n"
    "Store SERVICE's policy as it was at revision REV (a put or rollback from\n"
    "grayctl policy history) as a new revision. Exit 3 when REV is not a stored\n"
    "version of this policy.\n"
    "\n"
    "Example:\n"
    "  grayctl policy rollback order 12\n";

static const char delete_usage[] =
    "usage: grayctl policy delete SERVICE [--if-match REV] [--json]\n"
    "\n"
    "Remove SERVICE's policy (its history stays). Exit 3 when there is none.\n"
    "\n"
    "Example:\n"
    "  grayctl policy delete order --if-match 14\n";

enum { O_IF_MATCH = GRAYCTL_O_COMMAND, O_JSON, O_LIMIT, O_BEFORE };

typedef struct args {
  const char *pos[3];
  int npos;
  long long if_match, limit, before;
  int json;
} args;

/* Parse the options of `policy SUB`; positional arguments go to a->pos.
 * Returns -1 to go on, or the exit code (help, usage). */
static int parse(grayctl_globals *g, const char *sub, const char *usage, int argc, char **argv, args *a,
                 int max_pos) {
  static const struct option opts[] = {GRAYCTL_GLOBAL_OPTIONS,
                                       {"if-match", required_argument, NULL, O_IF_MATCH},
                                       {"json", no_argument, NULL, O_JSON},
                                       {"limit", required_argument, NULL, O_LIMIT},
                                       {"before", required_argument, NULL, O_BEFORE},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  char cmd[32];
  int c;
  snprintf(cmd, sizeof cmd, "policy %s", sub);
  memset(a, 0, sizeof *a);
  a->if_match = a->limit = a->before = -1;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (grayctl_global_option(g, c, optarg)) continue;
    switch (c) {
      case O_IF_MATCH:
        if (grayctl_parse_int(optarg, 0, 999999999999999999LL, &a->if_match)) {
          fprintf(stderr, "grayctl %s: --if-match expects a revision number, got \"%s\"\n", cmd, optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_LIMIT:
        if (grayctl_parse_int(optarg, 1, 1000000, &a->limit)) {
          fprintf(stderr, "grayctl %s: --limit expects a positive number, got \"%s\"\n", cmd, optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_BEFORE:
        if (grayctl_parse_int(optarg, 1, 999999999999999999LL, &a->before)) {
          fprintf(stderr, "grayctl %s: --before expects a revision number, got \"%s\"\n", cmd, optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_JSON: a->json = 1; break;
      case 'h': fputs(usage, stdout); return GRAYCTL_OK;
      default: return grayctl_option_error(cmd, argv);
    }
  }
  /* Each option where it means something. */
  int history = !strcmp(sub, "history"), writes = !strcmp(sub, "put") || !strcmp(sub, "rollback") ||
                                                   !strcmp(sub, "delete");
  const char *stray = a->if_match >= 0 && !writes ? "--if-match"
                      : a->limit >= 0 && !history ? "--limit"
                      : a->before >= 0 && !history ? "--before"
                                                   : NULL;
  if (stray) {
    fprintf(stderr, "grayctl %s: %s is not an option of %s (try grayctl %s --help)\n", cmd, stray, cmd, cmd);
    return GRAYCTL_EUSAGE;
  }
  for (; optind < argc; optind++) {
    if (a->npos == max_pos) {
      fprintf(stderr, "grayctl %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
      grayctl_usage_line(usage);
      return GRAYCTL_EUSAGE;
    }
    a->pos[a->npos++] = argv[optind];
  }
  return -1;
}

static int missing(const char *usage, const char *sub, const char *what) {
  fprintf(stderr, "grayctl policy %s: %s is required\n", sub, what);
  grayctl_usage_line(usage);
  return GRAYCTL_EUSAGE;
}

/* "/v1/policies/SERVICE" + suffix; NULL on out of memory. */
static char *policy_path(const char *service, const char *suffix) {
  grayctl_buf b = {0};
  grayctl_buf_add(&b, "/v1/policies");
  if (service) {
    grayctl_buf_add(&b, "/");
    grayctl_buf_add_escaped(&b, service);
  }
  if (suffix) grayctl_buf_add(&b, suffix);
  if (b.failed) {
    grayctl_buf_free(&b);
    return NULL;
  }
  return b.p;
}

static int oom(void) {
  fprintf(stderr, "grayctl: out of memory\n");
  return GRAYCTL_EFAIL;
}

/* Run one call built by the caller and print the answer: raw with --json,
 * else through `show`. */
typedef int (*show_fn)(grayctl_conn *c, const char *what, json_t *answer, const grayctl_resp *resp, void *ctx);

static int run(grayctl_globals *g, grayctl_call *call, int json, show_fn show, void *ctx) {
  grayctl_conn *c = NULL;
  grayctl_resp resp = {0};
  json_t *j = NULL;
  int rc = grayctl_conn_open(g, &c);
  if (rc) return rc;
  rc = grayctl_request(c, call, &resp);
  if (rc) goto out;
  if (json) {
    rc = grayctl_print_raw(&resp);
    goto out;
  }
  j = grayctl_resp_json(call->what, &resp);
  rc = j ? show(c, call->what, j, &resp, ctx) : GRAYCTL_EFAIL;
  if (rc == GRAYCTL_OK && fflush(stdout)) rc = GRAYCTL_EFAIL;
out:
  json_decref(j);
  grayctl_resp_clear(&resp);
  grayctl_conn_close(c);
  return rc;
}

static int show_put(grayctl_conn *c, const char *what, json_t *j, const grayctl_resp *resp, void *ctx) {
  char rev[32], clean[256];
  json_t *created = json_object_get(j, "created");
  printf("%s: revision %s (%s)\n", grayctl_clean(grayctl_jstr(j, "service", ctx), clean, sizeof clean),
         grayctl_jint(j, "revision", rev, sizeof rev), json_is_true(created) ? "created" : "updated");
  return GRAYCTL_OK;
}

static int policy_put(grayctl_globals *g, int argc, char **argv) {
  args a;
  int rc = parse(g, "put", put_usage, argc, argv, &a, 2);
  if (rc >= 0) return rc;
  if (a.npos < 2) return missing(put_usage, "put", a.npos ? "FILE" : "SERVICE");
  char what[300], *body = NULL, *path = NULL;
  size_t len;
  snprintf(what, sizeof what, "policy put %s", a.pos[0]);
  rc = grayctl_read_file(what, a.pos[1], POLICY_FILE_CAP, &body, &len);
  if (rc) return rc;
  if (!(path = policy_path(a.pos[0], NULL))) {
    free(body);
    return oom();
  }
  grayctl_call call = {"PUT", path, body, len, a.if_match, 0, what};
  rc = run(g, &call, a.json, show_put, (void *)a.pos[0]);
  free(path);
  free(body);
  return rc;
}

static int count_rules(json_t *pol, char *buf, size_t n) {
  json_t *r = json_object_get(pol, "rules");
  snprintf(buf, n, "%zu", json_is_array(r) ? json_array_size(r) : (size_t)0);
  return 0;
}

static int show_list(grayctl_conn *c, const char *what, json_t *j, const grayctl_resp *resp, void *ctx) {
  static const char *const head[] = {"SERVICE", "REVISION", "DEFAULT", "RULES"};
  json_t *pols = json_object_get(j, "policies");
  char setrev[32];
  if (!json_is_array(pols)) {
    fprintf(stderr, "grayctl: %s: the answer has no \"policies\" list\n", what);
    return GRAYCTL_EFAIL;
  }
  if (json_array_size(pols) == 0) {
    printf("no policies (revision %s)\n", grayctl_jint(j, "revision", setrev, sizeof setrev));
    return GRAYCTL_OK;
  }
  grayctl_table *t = grayctl_table_new(4, head);
  if (!t) return oom();
  int rc = GRAYCTL_OK;
  size_t i;
  json_t *p;
  json_array_foreach(pols, i, p) {
    const char *svc = grayctl_jstr(p, "service", "?");
    char rev[32] = "-", rules[32];
    /* The set document carries one revision for the whole set; each
     * policy's own (mod) revision is its ETag, one small GET each. */
    char *path = policy_path(svc, NULL);
    if (!path) {
      rc = oom();
      break;
    }
    grayctl_resp r = {0};
    grayctl_call call = {"GET", path, NULL, 0, -1, 0, what};
    rc = grayctl_send(c, &call, &r);
    free(path);
    if (rc == GRAYCTL_OK && r.status >= 200 && r.status < 300 && r.etag >= 0)
      snprintf(rev, sizeof rev, "%lld", r.etag);
    else if (rc == GRAYCTL_OK && r.status != 404 && (r.status < 200 || r.status >= 300))
      rc = grayctl_http_error(c, what, &r); /* 404: deleted meanwhile, shown as "-" */
    grayctl_resp_clear(&r);
    if (rc) break;
    count_rules(p, rules, sizeof rules);
    const char *cells[] = {svc, rev, grayctl_jstr(p, "default", "-"), rules};
    if (grayctl_table_add(t, cells)) {
      rc = oom();
      break;
    }
  }
  if (rc == GRAYCTL_OK) grayctl_table_print(t, stdout);
  grayctl_table_free(t);
  return rc;
}

static int show_doc(grayctl_conn *c, const char *what, json_t *j, const grayctl_resp *resp, void *ctx) {
  /* Indented for people; still one valid policy document for put and check. */
  if (json_dumpf(j, stdout, JSON_INDENT(2)) || putchar('\n') == EOF) return GRAYCTL_EFAIL;
  return GRAYCTL_OK;
}

static int policy_get(grayctl_globals *g, int argc, char **argv) {
  args a;
  int rc = parse(g, "get", get_usage, argc, argv, &a, 1);
  if (rc >= 0) return rc;
  char what[300];
  snprintf(what, sizeof what, "policy get%s%s", a.npos ? " " : "", a.npos ? a.pos[0] : "");
  char *path = policy_path(a.npos ? a.pos[0] : NULL, NULL);
  if (!path) return oom();
  grayctl_call call = {"GET", path, NULL, 0, -1, 0, what};
  rc = run(g, &call, a.json, a.npos ? show_doc : show_list, NULL);
  free(path);
  return rc;
}

static int show_history(grayctl_conn *c, const char *what, json_t *j, const grayctl_resp *resp, void *ctx) {
  static const char *const head[] = {"REVISION", "OP", "ACTOR", "TIME"};
  json_t *h = json_object_get(j, "history");
  if (!json_is_array(h)) {
    fprintf(stderr, "grayctl: %s: the answer has no \"history\" list\n", what);
    return GRAYCTL_EFAIL;
  }
  if (json_array_size(h) == 0) {
    char clean[256];
    printf("no history for %s\n", grayctl_clean(ctx, clean, sizeof clean));
    return GRAYCTL_OK;
  }
  grayctl_table *t = grayctl_table_new(4, head);
  if (!t) return oom();
  size_t i;
  json_t *e;
  json_array_foreach(h, i, e) {
    char rev[32];
    const char *cells[] = {grayctl_jint(e, "revision", rev, sizeof rev), grayctl_jstr(e, "op", "-"),
                           grayctl_jstr(e, "actor", "-"), grayctl_jstr(e, "time", "-")};
    if (grayctl_table_add(t, cells)) {
      grayctl_table_free(t);
      return oom();
    }
  }
  grayctl_table_print(t, stdout);
  grayctl_table_free(t);
  return GRAYCTL_OK;
}

static int policy_history(grayctl_globals *g, int argc, char **argv) {
  args a;
  int rc = parse(g, "history", history_usage, argc, argv, &a, 1);
  if (rc >= 0) return rc;
  if (a.npos < 1) return missing(history_usage, "history", "SERVICE");
  char what[300];
  snprintf(what, sizeof what, "policy history %s", a.pos[0]);
  grayctl_buf q = {0};
  grayctl_buf_add(&q, "/history");
  if (a.limit > 0) grayctl_buf_addf(&q, "?limit=%lld", a.limit);
  if (a.before > 0) grayctl_buf_addf(&q, "%sbefore=%lld", a.limit > 0 ? "&" : "?", a.before);
  char *path = q.failed ? NULL : policy_path(a.pos[0], q.p);
  grayctl_buf_free(&q);
  if (!path) return oom();
  grayctl_call call = {"GET", path, NULL, 0, -1, 0, what};
  rc = run(g, &call, a.json, show_history, (void *)a.pos[0]);
  free(path);
  return rc;
}

static int show_rollback(grayctl_conn *c, const char *what, json_t *j, const grayctl_resp *resp, void *ctx) {
  char rev[32], to[32], clean[256];
  printf("%s: revision %s (rolled back to revision %s)\n",
         grayctl_clean(grayctl_jstr(j, "service", ctx), clean, sizeof clean),
         grayctl_jint(j, "revision", rev, sizeof rev), grayctl_jint(j, "rolled_back_to", to, sizeof to));
  return GRAYCTL_OK;
}

static int policy_rollback(grayctl_globals *g, int argc, char **argv) {
  args a;
  long long to;
  int rc = parse(g, "rollback", rollback_usage, argc, argv, &a, 2);
  if (rc >= 0) return rc;
  if (a.npos < 2) return missing(rollback_usage, "rollback", a.npos ? "REV" : "SERVICE");
  if (grayctl_parse_int(a.pos[1], 1, 999999999999999999LL, &to)) {
    fprintf(stderr, "grayctl policy rollback: REV must be a revision number, got \"%s\"\n", a.pos[1]);
    return GRAYCTL_EUSAGE;
  }
  char what[300], suffix[64];
  snprintf(what, sizeof what, "policy rollback %s", a.pos[0]);
  snprintf(suffix, sizeof suffix, "/rollback?to=%lld", to);
  char *path = policy_path(a.pos[0], suffix);
  if (!path) return oom();
  grayctl_call call = {"POST", path, NULL, 0, a.if_match, 0, what};
  rc = run(g, &call, a.json, show_rollback, (void *)a.pos[0]);
  free(path);
  return rc;
}

static int show_delete(grayctl_conn *c, const char *what, json_t *j, const grayctl_resp *resp, void *ctx) {
  char rev[32], clean[256];
  printf("%s: deleted at revision %s\n", grayctl_clean(grayctl_jstr(j, "service", ctx), clean, sizeof clean),
         grayctl_jint(j, "revision", rev, sizeof rev));
  return GRAYCTL_OK;
}

static int policy_delete(grayctl_globals *g, int argc, char **argv) {
  args a;
  int rc = parse(g, "delete", delete_usage, argc, argv, &a, 1);
  if (rc >= 0) return rc;
  if (a.npos < 1) return missing(delete_usage, "delete", "SERVICE");
  char what[300];
  snprintf(what, sizeof what, "policy delete %s", a.pos[0]);
  char *path = policy_path(a.pos[0], NULL);
  if (!path) return oom();
  grayctl_call call = {"DELETE", path, NULL, 0, a.if_match, 0, what};
  rc = run(g, &call, a.json, show_delete, (void *)a.pos[0]);
  free(path);
  return rc;
}

int grayctl_policy(grayctl_globals *g, int argc, char **argv) {
  static const struct {
    const char *name;
    int (*fn)(grayctl_globals *, int, char **);
  } subs[] = {{"put", policy_put},
              {"get", policy_get},
              {"history", policy_history},
              {"rollback", policy_rollback},
              {"delete", policy_delete}};
  if (argc < 2) {
    fputs(policy_usage, stderr);
    return GRAYCTL_EUSAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(policy_usage, stdout);
    return GRAYCTL_OK;
  }
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(g, argc - 1, argv + 1);
  fprintf(stderr, "grayctl policy: unknown subcommand \"%s\" (put, get, history, rollback, delete)\n", argv[1]);
  return GRAYCTL_EUSAGE;
}
