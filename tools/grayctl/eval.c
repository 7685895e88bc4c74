/* grayctl check / eval: offline policy validation and evaluation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gray/gray.h"
#include "gray/json.h"
#include "grayctl.h"

static const char check_usage[] =
    "usage: grayctl check FILE\n"
    "\n"
    "Validate a policy file (one policy object, or a set\n"
    "{\"revision\": N, \"policies\": [...]}) exactly as grayd and the executors do.\n"
    "Prints \"ok: N policies\" and exits 0, or prints the fault with its JSON path\n"
    "on stderr and exits 2, for example:\n"
    "  policies[0].rules[2].when.any[1].op: unknown operator \"equals\" ...\n"
    "\n"
    "Example:\n"
    "  grayctl check policies.json\n";

static int load(const char *file, gray_policyset_t **set) {
  gray_error_t err;
  char line[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX + 8];
  int rc = gray_policyset_load_file(file, GRAY_PARSE_ANY, set, &err);
  if (rc == GRAY_OK) return GRAYCTL_OK;
  fprintf(stderr, "grayctl: %s: %s\n", file, gray_error_format(&err, line, sizeof line));
  if (rc == GRAY_EIO || rc == GRAY_ENOMEM) return GRAYCTL_EFAIL;
  return GRAYCTL_EINVALID;
}

int grayctl_check(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    fputs(check_usage, stdout);
    return GRAYCTL_OK;
  }
  if (argc != 2 || argv[1][0] == '-') {
    fputs(check_usage, stderr);
    return GRAYCTL_EUSAGE;
  }
  gray_policyset_t *set = NULL;
  int rc = load(argv[1], &set);
  if (rc) return rc;
  size_t n = gray_policyset_count(set);
  printf("ok: %zu policies\n", n);
  gray_policyset_release(set);
  return GRAYCTL_OK;
}

static const char eval_usage[] =
    "usage: grayctl eval --policies FILE --service NAME [request flags] [--explain]\n"
    "\n"
    "Decide which version of a service serves one request, offline, with the same\n"
    "evaluator as grayd, the Nginx module and the SDK. Prints one JSON object:\n"
    "  {\"service\":\"order\",\"version\":\"v2\",\"tag\":\"beta\",\"rule\":\"testers\"}\n"
    "\"rule\" is null when no rule matched and the policy's default decided; \"tag\" is\n"
    "the tag to forward downstream: the matching rule's tag, else the incoming --tag\n"
    "(when it is a valid name), else null.\n"
    "\n"
    "  --policies FILE        policy file (one policy, or a set with \"policies\")\n"
    "  --service NAME         the service whose policy decides\n"
    "  --header 'Name: value' a request header; repeatable. Names are matched\n"
    "                         case-insensitively; when a name is given more than\n"
    "                         once, the FIRST value counts (as in Nginx's lookup)\n"
    "  --cookie name=value    a cookie; repeatable, first one counts. Without any\n"
    "                         --cookie, cookies are read from a 'Cookie:' header\n"
    "  --param name=value     a query parameter, already decoded; repeatable,\n"
    "                         first one counts\n"
    "  --query 'a=1&b=x%20y'  the raw query string, URL-decoded on lookup (used\n"
    "                         when no --param is given); a '?' in --path also\n"
    "                         sets it\n"
    "  --ip ADDR              client address, IPv4 or IPv6\n"
    "  --tag T                incoming gray tag (the X-Gray-Tag header)\n"
    "  --path P               request path, for example /api/v2/orders\n"
    "  --method M             request method, for example GET\n"
    "  --host H               Host, without port\n"
    "  --explain              add \"trace\": every rule and condition tried, with the\n"
    "                         attribute value seen and the result\n"
    "  -h, --help             this text\n"
    "\n"
    "Examples:\n"
    "  grayctl eval --policies p.json --service order --header 'X-Gray: 1'\n"
    "  grayctl eval --policies p.json --service order --param uid=1019 --ip 10.9.3.4\n"
    "  grayctl eval --policies p.json --service order --cookie uid=42 --explain\n"
    "\n"
    "Exit codes: 0 decided, 1 I/O failure, 2 invalid policy file, 3 no policy for\n"
    "the service, 64 bad command line.\n";

int grayctl_eval(int argc, char **argv) {
  enum { O_POLICIES = GRAYCTL_O_COMMAND, O_SERVICE, O_EXPLAIN };
  static const struct option opts[] = {{"policies", required_argument, NULL, O_POLICIES},
                                       {"service", required_argument, NULL, O_SERVICE},
                                       GRAYCTL_REQUEST_OPTIONS,
                                       {"explain", no_argument, NULL, O_EXPLAIN},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *file = NULL, *service = NULL;
  int explain = 0, c, taken;
  grayctl_req *r = calloc(1, sizeof(*r));
  if (!r) {
    fprintf(stderr, "grayctl eval: out of memory\n");
    return GRAYCTL_EFAIL;
  }
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if ((taken = grayctl_req_option(r, c, optarg, "eval")) != 0) {
      if (taken < 0) goto usage;
      continue;
    }
    switch (c) {
      case O_POLICIES: file = optarg; break;
      case O_SERVICE: service = optarg; break;
      case O_EXPLAIN: explain = 1; break;
      case 'h':
        fputs(eval_usage, stdout);
        free(r);
        return GRAYCTL_OK;
      default: grayctl_option_error("eval", argv); goto usage;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "grayctl eval: unexpected argument \"%s\" (try grayctl eval --help)\n", argv[optind]);
    goto usage;
  }
  if (!file || !service) {
    fprintf(stderr, "grayctl eval: %s is required (try grayctl eval --help)\n",
            !file ? "--policies FILE" : "--service NAME");
    goto usage;
  }
  grayctl_req_finish(r);

  gray_policyset_t *set = NULL;
  int rc = load(file, &set);
  if (rc) {
    free(r);
    return rc;
  }
  const gray_policy_t *pol = gray_policyset_find(set, service, strlen(service));
  if (!pol) {
    fprintf(stderr, "grayctl eval: %s has no policy for service \"%s\" (%zu %s)\n", file, service,
            gray_policyset_count(set), gray_policyset_count(set) == 1 ? "policy" : "policies");
    gray_policyset_release(set);
    free(r);
    return GRAYCTL_ENOPOLICY;
  }
  gray_request_t req = {gray_kv_lookup, &r->kv};
  gray_decision_t d;
  gray_trace_t *trace = NULL;
  rc = GRAYCTL_EFAIL;
  if (explain) {
    trace = gray_trace_new();
    if (!trace || gray_explain(pol, &req, &d, trace) != GRAY_OK) goto oom;
  } else {
    gray_decide(pol, &req, &d);
  }
  json_t *out = gray_decision_to_json(&d, trace);
  if (!out) goto oom;
  char *text = json_dumps(out, JSON_COMPACT);
  json_decref(out);
  if (!text) goto oom;
  puts(text);
  free(text);
  rc = fflush(stdout) == 0 ? GRAYCTL_OK : GRAYCTL_EFAIL;
  goto done;
oom:
  fprintf(stderr, "grayctl eval: out of memory\n");
done:
  gray_trace_free(trace);
  gray_policyset_release(set);
  free(r);
  return rc;
usage:
  free(r);
  return GRAYCTL_EUSAGE;
}
