/* grayctl check / eval: offline policy validation and evaluation. */
#include <getopt.h>
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

#define MAX_PAIRS 256

typedef struct pairs {
  gray_kv_t kv[MAX_PAIRS];
  size_t n;
} pairs;

static gray_str_t str(const char *s) {
  gray_str_t r = {s, strlen(s)};
  return r;
}

static int add_pair(pairs *p, const char *arg, char sep, const char *flag) {
  const char *at = strchr(arg, sep);
  if (!at || at == arg) {
    fprintf(stderr, "grayctl eval: %s expects %s, got \"%s\"\n", flag,
            sep == ':' ? "'Name: value'" : "name=value", arg);
    return -1;
  }
  if (p->n == MAX_PAIRS) {
    fprintf(stderr, "grayctl eval: more than %d %s flags\n", MAX_PAIRS, flag);
    return -1;
  }
  const char *v = at + 1;
  size_t vlen = strlen(v);
  if (sep == ':') {
    /* Header values lose optional white space around them, as on the wire. */
    while (*v == ' ' || *v == '\t') v++, vlen--;
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
  }
  p->kv[p->n].name.p = arg;
  p->kv[p->n].name.len = (size_t)(at - arg);
  p->kv[p->n].value.p = v;
  p->kv[p->n].value.len = vlen;
  p->n++;
  return 0;
}

int grayctl_eval(int argc, char **argv) {
  enum { O_POLICIES = 256, O_SERVICE, O_HEADER, O_COOKIE, O_PARAM, O_QUERY, O_IP, O_TAG, O_PATH,
         O_METHOD, O_HOST, O_EXPLAIN };
  static const struct option opts[] = {
      {"policies", required_argument, NULL, O_POLICIES}, {"service", required_argument, NULL, O_SERVICE},
      {"header", required_argument, NULL, O_HEADER},     {"cookie", required_argument, NULL, O_COOKIE},
      {"param", required_argument, NULL, O_PARAM},       {"query", required_argument, NULL, O_QUERY},
      {"ip", required_argument, NULL, O_IP},             {"tag", required_argument, NULL, O_TAG},
      {"path", required_argument, NULL, O_PATH},         {"method", required_argument, NULL, O_METHOD},
      {"host", required_argument, NULL, O_HOST},         {"explain", no_argument, NULL, O_EXPLAIN},
      {"help", no_argument, NULL, 'h'},                  {NULL, 0, NULL, 0}};
  static pairs headers, cookies, params;
  const char *file = NULL, *service = NULL;
  gray_kv_request_t kv;
  int explain = 0, c;
  memset(&kv, 0, sizeof kv);
  headers.n = cookies.n = params.n = 0;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
      case O_POLICIES: file = optarg; break;
      case O_SERVICE: service = optarg; break;
      case O_HEADER: if (add_pair(&headers, optarg, ':', "--header")) return GRAYCTL_EUSAGE; break;
      case O_COOKIE: if (add_pair(&cookies, optarg, '=', "--cookie")) return GRAYCTL_EUSAGE; break;
      case O_PARAM: if (add_pair(&params, optarg, '=', "--param")) return GRAYCTL_EUSAGE; break;
      case O_QUERY: kv.query = str(optarg); break;
      case O_IP: kv.ip = str(optarg); break;
      case O_TAG: kv.tag = str(optarg); break;
      case O_PATH: {
        const char *q = strchr(optarg, '?');
        kv.path.p = optarg;
        kv.path.len = q ? (size_t)(q - optarg) : strlen(optarg);
        if (q && !kv.query.p) kv.query = str(q + 1);
        break;
      }
      case O_METHOD: kv.method = str(optarg); break;
      case O_HOST: kv.host = str(optarg); break;
      case O_EXPLAIN: explain = 1; break;
      case 'h': fputs(eval_usage, stdout); return GRAYCTL_OK;
      default:
        if (optopt >= O_POLICIES)
          fprintf(stderr, "grayctl eval: %s needs a value\n", argv[optind - 1]);
        else
          fprintf(stderr, "grayctl eval: unknown option \"%s\" (try grayctl eval --help)\n",
                  argv[optind - 1]);
        return GRAYCTL_EUSAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "grayctl eval: unexpected argument \"%s\" (try grayctl eval --help)\n", argv[optind]);
    return GRAYCTL_EUSAGE;
  }
  if (!file || !service) {
    fprintf(stderr, "grayctl eval: %s is required (try grayctl eval --help)\n",
            !file ? "--policies FILE" : "--service NAME");
    return GRAYCTL_EUSAGE;
  }
  kv.headers = headers.kv;
  kv.nheaders = headers.n;
  if (cookies.n) {
    kv.cookies = cookies.kv;
    kv.ncookies = cookies.n;
  }
  if (params.n) {
    kv.params = params.kv;
    kv.nparams = params.n;
  }

  gray_policyset_t *set = NULL;
  int rc = load(file, &set);
  if (rc) return rc;
  const gray_policy_t *pol = gray_policyset_find(set, service, strlen(service));
  if (!pol) {
    fprintf(stderr, "grayctl eval: %s has no policy for service \"%s\" (%zu %s)\n", file, service,
            gray_policyset_count(set), gray_policyset_count(set) == 1 ? "policy" : "policies");
    gray_policyset_release(set);
    return GRAYCTL_ENOPOLICY;
  }
  gray_request_t req = {gray_kv_lookup, &kv};
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
  return rc;
}
