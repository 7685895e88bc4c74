/* grayctl — the graylane command line. */
#include <stdio.h>
#include <string.h>

#include "gray/gray.h"
#include "grayctl.h"

static const char usage[] =
    "usage: grayctl COMMAND [ARGS]\n"
    "\n"
    "graylane's command line: check and evaluate gray-release policies.\n"
    "\n"
    "Offline commands (no server needed):\n"
    "  check FILE        validate a policy file; prints \"ok: N policies\"\n"
    "  eval  ...         decide which version serves a request, as every\n"
    "                    graylane executor would (see grayctl eval --help)\n"
    "\n"
    "Other:\n"
    "  help [COMMAND]    this text, or a command's help\n"
    "  version           print the version\n"
    "\n"
    "Examples:\n"
    "  grayctl check policies.json\n"
    "  grayctl eval --policies policies.json --service order \\\n"
    "      --header 'X-Gray: 1' --cookie uid=42 --param uid=1234 --ip 10.9.1.2\n"
    "\n"
    "Exit codes: 0 ok, 1 failure (I/O), 2 invalid policy file,\n"
    "3 no policy for the service, 64 bad command line.\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return GRAYCTL_EUSAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    if (argc > 2 && strcmp(cmd, "help") == 0) {
      char *sub[] = {argv[2], "--help", NULL};
      if (!strcmp(argv[2], "check")) return grayctl_check(2, sub);
      if (!strcmp(argv[2], "eval")) return grayctl_eval(2, sub);
      fprintf(stderr, "grayctl: unknown command \"%s\"\n", argv[2]);
      return GRAYCTL_EUSAGE;
    }
    fputs(usage, stdout);
    return GRAYCTL_OK;
  }
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
    printf("grayctl %s\n", GRAY_VERSION_STRING);
    return GRAYCTL_OK;
  }
  if (!strcmp(cmd, "check")) return grayctl_check(argc - 1, argv + 1);
  if (!strcmp(cmd, "eval")) return grayctl_eval(argc - 1, argv + 1);
  fprintf(stderr, "grayctl: unknown command \"%s\" (try grayctl --help)\n", cmd);
  return GRAYCTL_EUSAGE;
}
