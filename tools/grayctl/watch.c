/* grayctl watch: follow grayd's changes through the /v1/watch long poll. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grayctl.h"

static const char watch_usage[] =
    "usage: grayctl watch [--since REV] [--services a,b] [--wait S] [--count N] [--json]\n"
    "\n"
    "Print grayd's changes as they happen, one line each:\n"
    "  REV TYPE SERVICE [ID]      for example: 57 instance.expire order i-3\n"
    "TYPE is policy.put, policy.delete, instance.put, instance.delete or\n"
    "instance.expire. When grayd cannot give the events after REV (REV is 0 or too\n"
    "old, or grayd's store changed) it sends a full snapshot instead, and watch\n"
    "prints one line\n"
    "  REV reset snapshot (N policies, M services, store ID)\n"
    "and goes on from there. Without --since, watch starts with such a reset.\n"
    "Stops cleanly on Ctrl-C (SIGINT) or SIGTERM.\n"
    "\n"
    "  --since REV      print the changes after revision REV\n"
    "  --services a,b   only changes of these services\n"
    "  --wait S         seconds grayd holds each poll open (1..60, default 30)\n"
    "  --count N        stop after N events (resets do not count)\n"
    "  --json           one JSON object per line: each event as grayd sends it, and\n"
    "                   a reset as grayd's whole answer (\"reset\": true, \"snapshot\")\n"
    "\n"
    "Examples:\n"
    "  grayctl watch\n"
    "  grayctl watch --since 120 --services order,payment --json\n";

enum { O_SINCE = GRAYCTL_O_COMMAND, O_SERVICES, O_WAIT, O_COUNT, O_JSON };

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
  stop_flag = 1;
}

static int oom(void) {
  fprintf(stderr, "grayctl: out of memory\n");
  return GRAYCTL_EFAIL;
}

static long long jll(json_t *o, const char *key, long long dflt) {
  json_t *v = json_object_get(o, key);
  return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

static int print_reset(json_t *j, int json, long long *since) {
  json_t *snap = json_object_get(j, "snapshot");
  long long rev = jll(j, "revision", jll(snap, "revision", -1));
  if (rev < 0) {
    fprintf(stderr, "grayctl: watch: a reset without a revision; is the server grayd?\n");
    return GRAYCTL_EFAIL;
  }
  *since = rev;
  if (json) {
    if (json_dumpf(j, stdout, JSON_COMPACT) || putchar('\n') == EOF) return GRAYCTL_EFAIL;
    return GRAYCTL_OK;
  }
  json_t *pols = json_object_get(json_object_get(snap, "policies"), "policies");
  json_t *svcs = json_object_get(snap, "services");
  char store[128];
  const char *sid = grayctl_jstr(j, "store_id", grayctl_jstr(snap, "store_id", "?"));
  printf("%lld reset snapshot (%zu policies, %zu services, store %s)\n", rev, json_array_size(pols),
         json_array_size(svcs), grayctl_clean(sid, store, sizeof store));
  return GRAYCTL_OK;
}

static int print_event(json_t *e, int json) {
  if (json) {
    if (json_dumpf(e, stdout, JSON_COMPACT) || putchar('\n') == EOF) return GRAYCTL_EFAIL;
    return GRAYCTL_OK;
  }
  char type[64], svc[256], id[256];
  const char *i = grayctl_jstr(e, "id", NULL);
  printf("%lld %s %s%s%s\n", jll(e, "revision", -1), grayctl_clean(grayctl_jstr(e, "type", "?"), type, sizeof type),
         grayctl_clean(grayctl_jstr(e, "service", "-"), svc, sizeof svc), i ? " " : "",
         i ? grayctl_clean(i, id, sizeof id) : "");
  return GRAYCTL_OK;
}

int grayctl_watch(grayctl_globals *g, int argc, char **argv) {
  static const struct option opts[] = {GRAYCTL_GLOBAL_OPTIONS,
                                       {"since", required_argument, NULL, O_SINCE},
                                       {"services", required_argument, NULL, O_SERVICES},
                                       {"wait", required_argument, NULL, O_WAIT},
                                       {"count", required_argument, NULL, O_COUNT},
                                       {"json", no_argument, NULL, O_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  long long since = 0, wait_s = 30, count = -1, seen = 0;
  const char *services = NULL;
  int json = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (grayctl_global_option(g, c, optarg)) continue;
    switch (c) {
      case O_SINCE:
        if (grayctl_parse_int(optarg, 0, 999999999999999999LL, &since)) {
          fprintf(stderr, "grayctl watch: --since expects a revision number, got \"%s\"\n", optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_SERVICES: services = optarg; break;
      case O_WAIT:
        if (grayctl_parse_int(optarg, 1, 60, &wait_s)) {
          fprintf(stderr, "grayctl watch: --wait expects seconds, 1..60, got \"%s\"\n", optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_COUNT:
        if (grayctl_parse_int(optarg, 1, 999999999999LL, &count)) {
          fprintf(stderr, "grayctl watch: --count expects a positive number, got \"%s\"\n", optarg);
          return GRAYCTL_EUSAGE;
        }
        break;
      case O_JSON: json = 1; break;
      case 'h': fputs(watch_usage, stdout); return GRAYCTL_OK;
      default: return grayctl_option_error("watch", argv);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "grayctl watch: unexpected argument \"%s\"\n", argv[optind]);
    grayctl_usage_line(watch_usage);
    return GRAYCTL_EUSAGE;
  }

  grayctl_conn *conn = NULL;
  int rc = grayctl_conn_open(g, &conn);
  if (rc) return rc;

  /* No SA_RESTART: the signal interrupts libcurl's wait, and the progress
   * callback sees the flag and ends the poll at once. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  grayctl_conn_stop_on(conn, &stop_flag);

  char *store = NULL;
  while (!stop_flag && (count < 0 || seen < count)) {
    grayctl_buf path = {0};
    grayctl_resp resp = {0};
    json_t *j = NULL;
    grayctl_buf_addf(&path, "/v1/watch?since=%lld&wait=%llds", since, wait_s);
    if (services) {
      grayctl_buf_add(&path, "&services=");
      /* Names are escaped one by one; the commas between them stay. */
      const char *p = services;
      while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char name[256];
        if (n >= sizeof name) {
          fprintf(stderr, "grayctl watch: a service name in --services is over 255 bytes\n");
          grayctl_buf_free(&path);
          rc = GRAYCTL_EUSAGE;
          goto out;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        grayctl_buf_add_escaped(&path, name);
        if (!comma) break;
        grayctl_buf_add(&path, ",");
        p = comma + 1;
      }
    }
    if (store) {
      grayctl_buf_add(&path, "&store=");
      grayctl_buf_add_escaped(&path, store);
    }
    if (path.failed) {
      grayctl_buf_free(&path);
      rc = oom();
      goto out;
    }
    grayctl_call call = {"GET", path.p, NULL, 0, -1, (wait_s + 15) * 1000L, "watch"};
    rc = grayctl_request(conn, &call, &resp);
    grayctl_buf_free(&path);
    if (rc == GRAYCTL_STOPPED) {
      grayctl_resp_clear(&resp);
      rc = GRAYCTL_OK;
      break;
    }
    if (rc == GRAYCTL_OK && !(j = grayctl_resp_json("watch", &resp))) rc = GRAYCTL_EFAIL;
    grayctl_resp_clear(&resp);
    if (rc) goto out;

    const char *sid = grayctl_jstr(j, "store_id", grayctl_jstr(json_object_get(j, "snapshot"), "store_id", NULL));
    int same_store = sid && store && !strcmp(store, sid);
    if (sid && !same_store) {
      free(store);
      if (!(store = strdup(sid))) {
        json_decref(j);
        rc = oom();
        goto out;
      }
    }
    if (json_is_true(json_object_get(j, "reset"))) {
      long long rev = jll(j, "revision", -1);
      if (same_store && rev == since) {
        /* Nothing new: a store still at revision 0 answers every since=0
         * with a reset. Do not print it again or poll in a tight loop. */
        json_decref(j);
        struct timespec pause = {1, 0};
        nanosleep(&pause, NULL); /* a signal cuts it short */
        continue;
      }
      rc = print_reset(j, json, &since);
    } else {
      json_t *events = json_object_get(j, "events"), *e;
      size_t i;
      json_array_foreach(events, i, e) {
        if (count >= 0 && seen >= count) break;
        long long r = jll(e, "revision", -1);
        /* Never print an event twice, whatever the server sends. */
        if (r >= 0 && r <= since) continue;
        if ((rc = print_event(e, json)) != GRAYCTL_OK) break;
        seen++;
        if (r > since) since = r;
      }
      long long cur = jll(j, "revision", -1);
      if (cur > since && (count < 0 || seen < count)) since = cur;
    }
    json_decref(j);
    if (rc == GRAYCTL_OK && fflush(stdout)) rc = GRAYCTL_EFAIL;
    if (rc) goto out;
  }
out:
  free(store);
  grayctl_conn_close(conn);
  return rc;
}
