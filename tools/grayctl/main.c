/* grayctl — the graylane command line. */
#include <stdio.h>
#include <string.h>

#include "gray/gray.h"
#include "grayctl.h"

static const char usage[] =
    "usage: grayctl [--server URL] [--token TOKEN] [--ca FILE] [--insecure-plain] COMMAND [ARGS]\n"
    "\n"
    "graylane's command line: gray-release policies, offline and on grayd.\n"
    "\n"
    "Offline commands (no server needed):\n"
    "  check FILE          validate a policy file; prints \"ok: N policies\"\n"
    "  eval  ...           decide which version serves a request, as every\n"
    "                      graylane executor would (see grayctl eval --help)\n"
    "\n"
    "Commands on grayd:\n"
    "  policy put SERVICE FILE        store a policy (FILE '-': standard input)\n"
    "  policy get [SERVICE]           the policies, or one policy document\n"
    "  policy history SERVICE         a policy's revisions\n"
    "  policy rollback SERVICE REV    store the policy as it was at REV\n"
    "  policy delete SERVICE          remove a policy\n"
    "  explain SERVICE [flags]        grayd's decision for a request, and why\n"
    "  instances [SERVICE]            registered services, or a service's instances\n"
    "  register SERVICE ID ...        register an instance (--address --port --version)\n"
    "  deregister SERVICE ID          remove an instance\n"
    "  heartbeat SERVICE ID           renew an instance's TTL once\n"
    "  watch                          print changes as they happen\n"
    "  audit                          the audit log\n"
    "  agents                         what each gray-agent (Nginx) last reported\n"
    "Each takes --json to print grayd's answer unchanged; policy writes take\n"
    "--if-match REV. Every command has --help with an example.\n"
    "\n"
    "Global options (before the command, or after it):\n"
    "  --server URL        grayd's URL, for example http://127.0.0.1:7070\n"
    "                      (default: $GRAYLANE_SERVER)\n"
    "  --token TOKEN       bearer token (default: $GRAYLANE_TOKEN); never printed.\n"
    "                      Over plain http:// it is only sent to a loopback address\n"
    "  --ca FILE           verify an https:// server's certificate against this CA\n"
    "  --insecure-plain    allow sending the token over http:// to another host\n"
    "\n"
    "Other:\n"
    "  help [COMMAND]      this text, or a command's help\n"
    "  version             print the version\n"
    "\n"
    "Examples:\n"
    "  grayctl check policies.json\n"
    "  grayctl eval --policies policies.json --service order \\\n"
    "      --header 'X-Gray: 1' --cookie uid=42 --param uid=1234 --ip 10.9.1.2\n"
    "  export GRAYLANE_SERVER=http://127.0.0.1:7070 GRAYLANE_TOKEN=...\n"
    "  grayctl policy put order order.json\n"
    "  grayctl --server https://grayd.example:7070 --ca ca.pem policy get\n"
    "  grayctl watch --services order\n"
    "\n"
    "Exit codes:\n"
    "  0   ok\n"
    "  1   failure: I/O, network, out of memory, a 5xx answer\n"
    "  2   invalid input: a bad policy file, or grayd refused the input (400, 413)\n"
    "  3   not found: no policy for the service (eval), or grayd has no such\n"
    "      policy, instance or revision (404)\n"
    "  4   conflict: --if-match did not hold (412)\n"
    "  5   auth: the token is missing or invalid (401), or its role may not (403)\n"
    "  64  bad command line\n";

typedef struct command {
  const char *name;
  int (*offline)(int argc, char **argv);
  int (*online)(grayctl_globals *g, int argc, char **argv);
} command;

static const command commands[] = {
    {"check", grayctl_check, NULL},          {"eval", grayctl_eval, NULL},
    {"policy", NULL, grayctl_policy},        {"explain", NULL, grayctl_explain},
    {"instances", NULL, grayctl_instances},  {"register", NULL, grayctl_register},
    {"deregister", NULL, grayctl_deregister}, {"heartbeat", NULL, grayctl_heartbeat},
    {"watch", NULL, grayctl_watch},          {"audit", NULL, grayctl_audit},
    {"agents", NULL, grayctl_agents},
};

static const command *find(const char *name) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(commands[i].name, name)) return &commands[i];
  return NULL;
}

/* The global options before the command: "--server URL" or "--server=URL".
 * Returns the index of the command, or -1 after printing a usage error. */
static int parse_globals(grayctl_globals *g, int argc, char **argv) {
  static const struct {
    const char *name;
    int opt, has_value;
  } globals[] = {{"--server", GRAYCTL_O_SERVER, 1},
                 {"--token", GRAYCTL_O_TOKEN, 1},
                 {"--ca", GRAYCTL_O_CA, 1},
                 {"--insecure-plain", GRAYCTL_O_INSECURE_PLAIN, 0}};
  int i = 1;
  while (i < argc && !strncmp(argv[i], "--", 2) && argv[i][2]) {
    size_t k, n = sizeof globals / sizeof globals[0];
    for (k = 0; k < n; k++) {
      size_t len = strlen(globals[k].name);
      if (strncmp(argv[i], globals[k].name, len) || (argv[i][len] && argv[i][len] != '=')) continue;
      const char *value = NULL;
      if (globals[k].has_value) {
        if (argv[i][len] == '=') {
          value = argv[i] + len + 1;
        } else if (i + 1 < argc) {
          value = argv[++i];
        } else {
          fprintf(stderr, "grayctl: %s needs a value\n", globals[k].name);
          return -1;
        }
      } else if (argv[i][len] == '=') {
        fprintf(stderr, "grayctl: %s takes no value\n", globals[k].name);
        return -1;
      }
      grayctl_global_option(g, globals[k].opt, value);
      break;
    }
    if (k == n) break; /* --help, --version, or an unknown option: handled below */
    i++;
  }
  return i;
}

int main(int argc, char **argv) {
  grayctl_globals g;
  memset(&g, 0, sizeof g);
  int at = parse_globals(&g, argc, argv);
  if (at < 0) return GRAYCTL_EUSAGE;
  if (at >= argc) {
    fputs(usage, stderr);
    return GRAYCTL_EUSAGE;
  }
  argc -= at - 1;
  argv += at - 1; /* argv[1] is the command; argv[0] stays unused */
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    if (argc > 2 && strcmp(cmd, "help") == 0) {
      const command *c = find(argv[2]);
      if (!c) {
        fprintf(stderr, "grayctl: unknown command \"%s\"\n", argv[2]);
        return GRAYCTL_EUSAGE;
      }
      char *sub[] = {argv[2], "--help", NULL};
      return c->offline ? c->offline(2, sub) : c->online(&g, 2, sub);
    }
    fputs(usage, stdout);
    return GRAYCTL_OK;
  }
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
    printf("grayctl %s\n", GRAY_VERSION_STRING);
    return GRAYCTL_OK;
  }
  const command *c = find(cmd);
  if (!c) {
    if (cmd[0] == '-')
      fprintf(stderr, "grayctl: unknown option \"%s\" (try grayctl --help)\n", cmd);
    else
      fprintf(stderr, "grayctl: unknown command \"%s\" (try grayctl --help)\n", cmd);
    return GRAYCTL_EUSAGE;
  }
  return c->offline ? c->offline(argc - 1, argv + 1) : c->online(&g, argc - 1, argv + 1);
}
