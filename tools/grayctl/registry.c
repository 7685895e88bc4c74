/* grayctl instances|register|deregister|heartbeat: grayd's service registry. */
#include <stdlib.h>
#include <string.h>

#include "grayctl.h"

static const char instances_usage[] =
    "usage: grayctl instances [SERVICE] [--version V] [--json]\n"
    "\n"
    "Without SERVICE: every service with live instances, and how many run each\n"
    "version. With SERVICE: its instances (id, address:port, version, and the\n"
    "milliseconds until the instance expires unless it heartbeats), optionally\n"
    "only those of version V.\n"
    "\n"
    "Examples:\n"
    "  grayctl instances\n"
    "  grayctl instances order --version v2\n";

static const char register_usage[] =
    "usage: grayctl register SERVICE ID --address A --port P --version V [--ttl S] [--meta k=v]... [--json]\n"
    "\n"
    "Register (or update) instance ID of SERVICE. Instances are ephemeral: grayd\n"
    "evicts one when no heartbeat (grayctl heartbeat, or the SDK) arrives within\n"
    "its TTL. Registering the same content again only renews the TTL.\n"
    "\n"
    "  --address A   IP address or host name\n"
    "  --port P      1..65535\n"
    "  --version V   the version the instance runs (v1, v2, ...)\n"
    "  --ttl S       seconds, 1..3600 (grayd's default: 15)\n"
    "  --meta k=v    metadata; repeatable\n"
    "\n"
    "Example:\n"
    "  grayctl register order i-1 --address 10.0.0.7 --port 8080 --version v2 --ttl 30 --meta zone=a\n";

static const char deregister_usage[] =
    "usage: grayctl deregister SERVICE ID [--json]\n"
    "\n"
    "Remove instance ID of SERVICE from the registry now. Exit 3 when unknown.\n"
    "\n"
    "Example:\n"
    "  grayctl deregister order i-1\n";

static const char heartbeat_usage[] =
    "usage: grayctl heartbeat SERVICE ID [--json]\n"
    "\n"
    "Renew the TTL of instance ID of SERVICE once. Exit 3 when grayd does not\n"
    "know the instance (it expired, or was never registered): register it again.\n"
    "\n"
    "Example:\n"
    "  while grayctl heartbeat order i-1 >/dev/null; do sleep 5; done\n";

enum { O_JSON = GRAYCTL_O_COMMAND, O_VERSION, O_ADDRESS, O_PORT, O_TTL, O_META };

#define MAX_META 64

typedef struct args {
  const char *pos[2];
  int npos, json;
  const char *version, *address;
  long long port, ttl;
  const char *meta[MAX_META];
  int nmeta;
} args;

static int parse(grayctl_globals *g, const char *cmd, const char *usage, int argc, char **argv, args *a,
                 int max_pos, int registering) {
  static const struct option opts[] = {GRAYCTL_GLOBAL_OPTIONS,
                                       {"json", no_argument, NULL, O_JSON},
                                       {"version", required_argument, NULL, O_VERSION},
                                       {"address", required_argument, NULL, O_ADDRESS},
                                       {"port", required_argument, NULL, O_PORT},
                                       {"ttl", required_argument, NULL, O_TTL},
                                       {"meta", required_argument, NULL, O_META},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  int c, li = -1;
  memset(a, 0, sizeof *a);
  a->port = a->ttl = -1;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
    if (grayctl_global_option(g, c, optarg)) continue;
    switch (c) {
      case O_JSON: a->json = 1; break;
      case 'h': fputs(usage, stdout); return GRAYCTL_OK;
      case O_VERSION:
        if (!strcmp(cmd, "instances") || registering) {
          a->version = optarg;
          break;
        }
        goto unknown;
      case O_ADDRESS:
      case O_PORT:
      case O_TTL:
      case O_META:
        if (!registering) goto unknown;
        if (c == O_ADDRESS) {
          a->address = optarg;
        } else if (c == O_PORT) {
          if (grayctl_parse_int(optarg, 1, 65535, &a->port)) {
            fprintf(stderr, "grayctl register: --port expects 1..65535, got \"%s\"\n", optarg);
            return GRAYCTL_EUSAGE;
          }
        } else if (c == O_TTL) {
          if (grayctl_parse_int(optarg, 1, 3600, &a->ttl)) {
            fprintf(stderr, "grayctl register: --ttl expects seconds, 1..3600, got \"%s\"\n", optarg);
            return GRAYCTL_EUSAGE;
          }
        } else {
          const char *eq = strchr(optarg, '=');
          if (!eq || eq == optarg) {
            fprintf(stderr, "grayctl register: --meta expects key=value, got \"%s\"\n", optarg);
            return GRAYCTL_EUSAGE;
          }
          if (a->nmeta == MAX_META) {
            fprintf(stderr, "grayctl register: more than %d --meta flags\n", MAX_META);
            return GRAYCTL_EUSAGE;
          }
          a->meta[a->nmeta++] = optarg;
        }
        break;
      unknown:
        /* An option of a sibling command, not of this one. */
        fprintf(stderr, "grayctl %s: --%s is not an option of %s (try grayctl %s --help)\n", cmd,
                opts[li].name, cmd, cmd);
        return GRAYCTL_EUSAGE;
      default: return grayctl_option_error(cmd, argv);
    }
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

static int oom(void) {
  fprintf(stderr, "grayctl: out of memory\n");
  return GRAYCTL_EFAIL;
}

/* "/v1/services/SERVICE/instances[/ID]" + suffix, escaped. */
static char *instance_path(const char *service, const char *id, const char *suffix) {
  grayctl_buf b = {0};
  grayctl_buf_add(&b, "/v1/services");
  if (service) {
    grayctl_buf_add(&b, "/");
    grayctl_buf_add_escaped(&b, service);
    grayctl_buf_add(&b, "/instances");
  }
  if (id) {
    grayctl_buf_add(&b, "/");
    grayctl_buf_add_escaped(&b, id);
  }
  if (suffix) grayctl_buf_add(&b, suffix);
  if (b.failed) {
    grayctl_buf_free(&b);
    return NULL;
  }
  return b.p;
}

/* One call, then the answer raw (--json) or as `show` prints it. */
static int run(grayctl_globals *g, const grayctl_call *call, int json,
               int (*show)(const char *what, json_t *j, const args *a), const args *a) {
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
  rc = j ? show(call->what, j, a) : GRAYCTL_EFAIL;
  if (rc == GRAYCTL_OK && fflush(stdout)) rc = GRAYCTL_EFAIL;
out:
  json_decref(j);
  grayctl_resp_clear(&resp);
  grayctl_conn_close(c);
  return rc;
}

static int print_table(grayctl_table *t, const char *empty) {
  if (!t) return oom();
  if (grayctl_table_rows(t) == 0)
    puts(empty);
  else
    grayctl_table_print(t, stdout);
  grayctl_table_free(t);
  return GRAYCTL_OK;
}

static int show_services(const char *what, json_t *j, const args *a) {
  static const char *const head[] = {"SERVICE", "INSTANCES", "VERSIONS"};
  json_t *svcs = json_object_get(j, "services"), *s;
  size_t i;
  if (!json_is_array(svcs)) {
    fprintf(stderr, "grayctl: %s: the answer has no \"services\" list\n", what);
    return GRAYCTL_EFAIL;
  }
  grayctl_table *t = grayctl_table_new(3, head);
  if (!t) return oom();
  json_array_foreach(svcs, i, s) {
    char n[32];
    grayctl_buf v = {0};
    const char *ver;
    json_t *cnt;
    json_object_foreach(json_object_get(s, "versions"), ver, cnt) {
      grayctl_buf_addf(&v, "%s%s=%lld", v.len ? " " : "", ver, (long long)json_integer_value(cnt));
    }
    const char *cells[] = {grayctl_jstr(s, "service", "?"), grayctl_jint(s, "instances", n, sizeof n),
                           v.p && !v.failed ? v.p : "-"};
    int bad = v.failed || grayctl_table_add(t, cells);
    grayctl_buf_free(&v);
    if (bad) {
      grayctl_table_free(t);
      return oom();
    }
  }
  return print_table(t, "no instances registered");
}

static int show_instances(const char *what, json_t *j, const args *a) {
  static const char *const head[] = {"ID", "ADDRESS", "VERSION", "EXPIRES_IN_MS"};
  json_t *ins = json_object_get(j, "instances"), *x;
  size_t i;
  if (!json_is_array(ins)) {
    fprintf(stderr, "grayctl: %s: the answer has no \"instances\" list\n", what);
    return GRAYCTL_EFAIL;
  }
  grayctl_table *t = grayctl_table_new(4, head);
  if (!t) return oom();
  json_array_foreach(ins, i, x) {
    char addr[300], port[32], exp[32];
    const char *host = grayctl_jstr(x, "address", "?");
    /* An IPv6 address goes in brackets, as in a URL. */
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
             grayctl_jint(x, "port", port, sizeof port));
    const char *cells[] = {grayctl_jstr(x, "id", "?"), addr, grayctl_jstr(x, "version", "-"),
                           grayctl_jint(x, "expires_in_ms", exp, sizeof exp)};
    if (grayctl_table_add(t, cells)) {
      grayctl_table_free(t);
      return oom();
    }
  }
  char empty[300], clean[256];
  snprintf(empty, sizeof empty, "no instances of %s%s%s", grayctl_clean(a->pos[0], clean, sizeof clean),
           a->version ? " at version " : "", a->version ? a->version : "");
  return print_table(t, grayctl_clean(empty, empty, sizeof empty));
}

int grayctl_instances(grayctl_globals *g, int argc, char **argv) {
  args a;
  int rc = parse(g, "instances", instances_usage, argc, argv, &a, 1, 0);
  if (rc >= 0) return rc;
  if (a.version && !a.npos) {
    fprintf(stderr, "grayctl instances: --version needs a SERVICE\n");
    grayctl_usage_line(instances_usage);
    return GRAYCTL_EUSAGE;
  }
  grayctl_buf q = {0};
  if (a.version) {
    grayctl_buf_add(&q, "?version=");
    grayctl_buf_add_escaped(&q, a.version);
  }
  char *path = q.failed ? NULL : instance_path(a.npos ? a.pos[0] : NULL, NULL, q.p);
  grayctl_buf_free(&q);
  if (!path) return oom();
  char what[300];
  snprintf(what, sizeof what, "instances%s%s", a.npos ? " " : "", a.npos ? a.pos[0] : "");
  grayctl_call call = {"GET", path, NULL, 0, -1, 0, what};
  rc = run(g, &call, a.json, a.npos ? show_instances : show_services, &a);
  free(path);
  return rc;
}

static int show_register(const char *what, json_t *j, const args *a) {
  char rev[32], ttl[32], s[256], id[256];
  printf("%s/%s: registered, revision %s, ttl %s s\n", grayctl_clean(a->pos[0], s, sizeof s),
         grayctl_clean(a->pos[1], id, sizeof id), grayctl_jint(j, "revision", rev, sizeof rev),
         grayctl_jint(j, "ttl_s", ttl, sizeof ttl));
  return GRAYCTL_OK;
}

static json_t *register_body(const args *a) {
  json_t *meta = json_object(), *o = NULL;
  if (!meta) return NULL;
  for (int i = 0; i < a->nmeta; i++) {
    const char *eq = strchr(a->meta[i], '=');
    json_t *v = json_string(eq + 1);
    char key[256];
    size_t kl = (size_t)(eq - a->meta[i]);
    if (!v || kl >= sizeof key) goto fail;
    memcpy(key, a->meta[i], kl);
    key[kl] = '\0';
    if (json_object_set_new(meta, key, v)) goto fail;
  }
  o = json_pack("{s:s,s:I,s:s,s:O}", "address", a->address, "port", (json_int_t)a->port, "version", a->version,
                "metadata", meta);
  if (o && a->ttl > 0 && json_object_set_new(o, "ttl_s", json_integer(a->ttl))) {
    json_decref(o);
    o = NULL;
  }
fail:
  json_decref(meta);
  return o;
}

int grayctl_register(grayctl_globals *g, int argc, char **argv) {
  args a;
  int rc = parse(g, "register", register_usage, argc, argv, &a, 2, 1);
  if (rc >= 0) return rc;
  const char *need = a.npos < 1 ? "SERVICE" : a.npos < 2 ? "ID" : !a.address ? "--address A"
                     : a.port < 0 ? "--port P" : !a.version ? "--version V" : NULL;
  if (need) {
    fprintf(stderr, "grayctl register: %s is required\n", need);
    grayctl_usage_line(register_usage);
    return GRAYCTL_EUSAGE;
  }
  json_t *body = register_body(&a);
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (!text) {
    fprintf(stderr, "grayctl register: cannot encode the instance as JSON (a value that is not UTF-8, or a "
                    "--meta key over 255 bytes?)\n");
    return GRAYCTL_EUSAGE;
  }
  char *path = instance_path(a.pos[0], a.pos[1], NULL);
  if (!path) {
    free(text);
    return oom();
  }
  char what[600];
  snprintf(what, sizeof what, "register %s/%s", a.pos[0], a.pos[1]);
  grayctl_call call = {"PUT", path, text, strlen(text), -1, 0, what};
  rc = run(g, &call, a.json, show_register, &a);
  free(path);
  free(text);
  return rc;
}

static int show_deregister(const char *what, json_t *j, const args *a) {
  char rev[32], s[256], id[256];
  printf("%s/%s: deregistered, revision %s\n", grayctl_clean(a->pos[0], s, sizeof s),
         grayctl_clean(a->pos[1], id, sizeof id), grayctl_jint(j, "revision", rev, sizeof rev));
  return GRAYCTL_OK;
}

static int show_heartbeat(const char *what, json_t *j, const args *a) {
  char ttl[32], s[256], id[256];
  printf("%s/%s: alive, ttl %s s\n", grayctl_clean(a->pos[0], s, sizeof s), grayctl_clean(a->pos[1], id, sizeof id),
         grayctl_jint(j, "ttl_s", ttl, sizeof ttl));
  return GRAYCTL_OK;
}

static int instance_call(grayctl_globals *g, const char *cmd, const char *usage, const char *method,
                         const char *suffix, int (*show)(const char *, json_t *, const args *), int argc,
                         char **argv) {
  args a;
  int rc = parse(g, cmd, usage, argc, argv, &a, 2, 0);
  if (rc >= 0) return rc;
  if (a.npos < 2) {
    fprintf(stderr, "grayctl %s: %s is required\n", cmd, a.npos ? "ID" : "SERVICE");
    grayctl_usage_line(usage);
    return GRAYCTL_EUSAGE;
  }
  char *path = instance_path(a.pos[0], a.pos[1], suffix);
  if (!path) return oom();
  char what[600];
  snprintf(what, sizeof what, "%s %s/%s", cmd, a.pos[0], a.pos[1]);
  grayctl_call call = {method, path, NULL, 0, -1, 0, what};
  rc = run(g, &call, a.json, show, &a);
  free(path);
  return rc;
}

int grayctl_deregister(grayctl_globals *g, int argc, char **argv) {
  return instance_call(g, "deregister", deregister_usage, "DELETE", NULL, show_deregister, argc, argv);
}

int grayctl_heartbeat(grayctl_globals *g, int argc, char **argv) {
  return instance_call(g, "heartbeat", heartbeat_usage, "PUT", "/heartbeat", show_heartbeat, argc, argv);
}
