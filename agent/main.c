/* gray-agent — keeps one Nginx in step with grayd (docs/agent.md).
 *
 * Threads: the SDK's watch thread hands every new state document to the
 * "latest document" slot (mutex + condition variable) and returns; the
 * main thread takes the newest one and applies it — render, nginx -t on
 * the staged files, swap, reload when the upstreams changed, confirm
 * through gray_status, report to grayd. A document that arrives while the
 * main thread is busy replaces the one waiting, so a burst coalesces and
 * the final state always wins. A signal thread turns SIGTERM/SIGINT into a
 * stop and SIGHUP into "try again now". */
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "core/model.h"
#include "gray/client.h"
#include "gray/gray.h"

static const char usage[] =
    "usage: gray-agent --server URL --nginx-dir DIR [options]\n"
    "       gray-agent --init --nginx-dir DIR\n"
    "\n"
    "Keeps one Nginx in step with grayd: renders DIR/gray-upstreams.conf (upstream\n"
    "blocks from the registry) and DIR/gray-policies.json (the policy set the gray\n"
    "module reads), checks them with nginx -t, swaps them in atomically, reloads\n"
    "Nginx only when the upstreams changed, confirms the new revision through the\n"
    "gray_status endpoint and reports to grayd (PUT /v1/agents/ID). See docs/agent.md.\n"
    "\n"
    "  --server URL            grayd, or a comma-separated list (default $GRAYLANE_SERVER)\n"
    "  --token T               bearer token with role agent (default $GRAYLANE_TOKEN;\n"
    "                          the environment keeps it out of ps)\n"
    "  --nginx-dir DIR         where the two files live (required)\n"
    "  --nginx-conf FILE       Nginx's main config (default /etc/nginx/nginx.conf); it\n"
    "                          must name DIR/gray-upstreams.conf and DIR/gray-policies.json\n"
    "  --nginx BIN             the nginx binary for nginx -t (default nginx from PATH)\n"
    "  --nginx-prefix DIR      Nginx's prefix (-p) for nginx -t, when it runs with one\n"
    "  --reload-cmd 'ARGV'     reload command, split on spaces, run without a shell\n"
    "                          (default: SIGHUP to the master in the pid file)\n"
    "  --pid-file FILE         Nginx's pid file (default: the config's pid directive,\n"
    "                          else /run/nginx.pid)\n"
    "  --nginx-status URL      the gray_status location, to confirm each revision\n"
    "                          (e.g. http://127.0.0.1/gray_status)\n"
    "  --id ID                 this agent's id in grayd (default: the host name)\n"
    "  --host NAME             the host name reported (default: gethostname)\n"
    "  --services a,b          follow only these services (default: all)\n"
    "  --ca FILE               CA bundle for an https:// grayd\n"
    "  --cache FILE            last-good state file: a restart while grayd is down\n"
    "                          renders from it\n"
    "  --keepalive N           `keepalive N;` in each upstream (default 16; 0: none)\n"
    "  --min-reload-interval D at most one reload per D (default 1s; D as 500ms, 2s, 1m)\n"
    "  --confirm-timeout D     how long Nginx has to show a revision (default 10s)\n"
    "  --report-interval D     report to grayd at least this often (default 30s)\n"
    "  --init                  write empty files where none exist yet, then exit (so\n"
    "                          Nginx can start before the first snapshot)\n"
    "  -h, --help              this text\n";

typedef struct agent {
  ga_nginx ng;
  ga_reporter rep;
  ga_render_opts ro;
  int min_reload_ms, report_every_ms;
  char host[256], id[GRAY_NAME_LEN_MAX + 1];
  char *reload_argv[33];
  char reload_buf[4096];

  /* the slot (shared with the SDK's watch thread) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *slot;
  size_t slot_len;
  int stop, retry_now;

  /* main thread only */
  char *cur_pol, *cur_up; /* what the live files hold (NULL: unknown) */
  int64_t cur_pol_rev, cur_up_rev;
  int64_t applied, seen, error_rev;
  char last_error[GA_ERROR_MAX];
  int64_t last_reload; /* monotonic ms, 0: none yet */
  int checked_running;
  char *pending;
  size_t pending_len;
  int64_t not_before;
  int failures;
  int report_due, report_failing;
  int64_t next_report;
} agent;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "500ms", "2s", "1m" or seconds as a bare number -> ms in lo..hi. */
static int parse_duration(const char *s, int lo, int hi, int *out) {
  long long v = 0;
  const char *p = s;
  if (*p < '0' || *p > '9') return -1;
  while (*p >= '0' && *p <= '9') {
    v = v * 10 + (*p++ - '0');
    if (v > 100000000) return -1;
  }
  if (!strcmp(p, "ms")) {
  } else if (!strcmp(p, "s") || !*p) {
    v *= 1000;
  } else if (!strcmp(p, "m")) {
    v *= 60000;
  } else {
    return -1;
  }
  if (v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

/* ---- the slot -------------------------------------------------------------- */

static void on_change(void *arg, int64_t revision, const char *doc, size_t len) {
  agent *a = arg;
  char *copy = malloc(len + 1);
  if (!copy) {
    ga_log(GA_ERROR, "out of memory: revision %lld not handed over", (long long)revision);
    return;
  }
  memcpy(copy, doc, len);
  copy[len] = '\0';
  pthread_mutex_lock(&a->mu);
  free(a->slot); /* an older one nobody took yet: the newest wins */
  a->slot = copy;
  a->slot_len = len;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

/* Nginx resolves host names when it loads the config; one that does not
 * resolve would fail every nginx -t, so such an instance is left out. */
static int host_resolves(void *arg, const char *host) {
  (void)arg;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (res) freeaddrinfo(res);
  return rc == 0;
}

static void sdk_log(void *arg, int level, const char *msg) {
  (void)arg;
  if (level >= GA_INFO) ga_log(level, "sdk: %s", msg);
}

static void *signal_thread(void *arg) {
  agent *a = arg;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    pthread_mutex_lock(&a->mu);
    if (sig == SIGHUP) {
      a->retry_now = 1;
    } else {
      a->stop = 1;
    }
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (sig != SIGHUP) {
      ga_log(GA_INFO, "signal %d: stopping", sig);
      return NULL;
    }
  }
}

/* ---- applying ---------------------------------------------------------------- */

static void set_error(agent *a, int64_t rev, const char *msg) {
  snprintf(a->last_error, sizeof a->last_error, "%s", msg);
  a->error_rev = rev;
  a->failures++;
  int backoff = 2000;
  for (int i = 1; i < a->failures && backoff < 60000; i++) backoff *= 2;
  if (backoff > 60000) backoff = 60000;
  a->not_before = mono_ms() + backoff;
  a->report_due = 1;
  ga_log(GA_ERROR, "revision %lld not applied (the last good files stay; retry in %d s or at the next change): %s",
         (long long)rev, backoff / 1000, msg);
}

/* Put the last good files back after a swap that Nginx did not confirm. */
static void roll_back(agent *a, int pol, int up, int reloaded) {
  char *t;
  if (pol && a->cur_pol && (t = ga_policies_file(a->cur_pol, a->cur_pol_rev))) {
    if (ga_write_atomic(a->ng.live_pol, t) != 0)
      ga_log(GA_ERROR, "cannot restore %s: %s", a->ng.live_pol, strerror(errno));
    free(t);
  }
  if (up && a->cur_up && (t = ga_upstreams_file(a->cur_up, a->cur_up_rev))) {
    if (ga_write_atomic(a->ng.live_up, t) != 0)
      ga_log(GA_ERROR, "cannot restore %s: %s", a->ng.live_up, strerror(errno));
    free(t);
  }
  if (reloaded) {
    /* Whatever the failed reload left running, load the restored files. */
    char err[GA_ERROR_MAX];
    if (ga_nginx_reload(&a->ng, err, sizeof err) != 0) ga_log(GA_ERROR, "reload after restoring: %s", err);
    a->last_reload = mono_ms();
  }
  ga_log(GA_WARN, "restored the last good %s%s%s", pol ? "policies" : "", pol && up ? " and " : "",
         up ? "upstreams" : "");
}

/* Test, swap, reload (when asked), confirm. 0 when Nginx shows the new
 * files; -1 (error set) otherwise, the last good files back in place. */
static int apply_files(agent *a, const ga_rendered *rr, int do_pol, int do_up, int do_reload) {
  char err[GA_ERROR_MAX];
  int64_t prev = mono_ms();
  int64_t pol_rev = do_pol ? rr->revision : a->cur_pol_rev, up_rev = do_up ? rr->revision : a->cur_up_rev;
  char *pol_text = ga_policies_file(do_pol ? rr->policies : a->cur_pol, pol_rev);
  char *up_text = ga_upstreams_file(do_up ? rr->upstreams : a->cur_up, up_rev);
  int rc = -1, reloaded = 0;
  if (!pol_text || !up_text) {
    set_error(a, rr->revision, "out of memory");
    goto out;
  }
  if (ga_nginx_test(&a->ng, pol_text, up_text, err, sizeof err) != 0) {
    set_error(a, rr->revision, err);
    goto out;
  }
  if (ga_nginx_swap(&a->ng, do_pol, do_up, err, sizeof err) != 0) {
    set_error(a, rr->revision, err);
    roll_back(a, do_pol, do_up, 0);
    goto out;
  }
  if (do_reload) {
    if (ga_nginx_reload(&a->ng, err, sizeof err) != 0) {
      set_error(a, rr->revision, err);
      roll_back(a, do_pol, do_up, 0);
      goto out;
    }
    reloaded = 1;
    a->last_reload = mono_ms();
  }
  if (ga_nginx_confirm(&a->ng, pol_rev, up_rev, err, sizeof err) != 0) {
    set_error(a, rr->revision, err);
    roll_back(a, do_pol, do_up, reloaded);
    goto out;
  }
  if (do_pol) {
    free(a->cur_pol);
    a->cur_pol = strdup(rr->policies);
    a->cur_pol_rev = pol_rev;
  }
  if (do_up) {
    free(a->cur_up);
    a->cur_up = strdup(rr->upstreams);
    a->cur_up_rev = up_rev;
  }
  if ((do_pol && !a->cur_pol) || (do_up && !a->cur_up)) abort(); /* out of memory */
  ga_log(GA_INFO, "revision %lld: %s%s%s%s in %lld ms%s", (long long)rr->revision, do_pol ? "policies" : "",
         do_pol && do_up ? " and " : "", do_up ? "upstreams" : "", reloaded ? " (reloaded)" : " (no reload)",
         (long long)(mono_ms() - prev), a->ng.status_url ? ", confirmed by gray_status" : "");
  rc = 0;
out:
  free(pol_text);
  free(up_text);
  return rc;
}

/* Apply a document: 0 done, 1 waiting for the reload interval (the policy
 * part is applied meanwhile), -1 failed. */
static int apply(agent *a, const char *doc, size_t len) {
  ga_rendered rr;
  char err[GA_ERROR_MAX];
  if (ga_render(doc, len, &a->ro, &rr, err, sizeof err) != 0) {
    set_error(a, a->seen, err);
    return -1;
  }
  int rc = -1;
  a->seen = rr.revision;
  int pol_changed = !a->cur_pol || strcmp(rr.policies, a->cur_pol);
  int up_changed = !a->cur_up || strcmp(rr.upstreams, a->cur_up);
  int force_reload = 0;
  if (!a->checked_running && a->ng.status_url) {
    /* After a restart: is Nginx running the upstream file on disk? (A
     * previous agent may have died between the swap and the reload.) */
    ga_status st;
    if (ga_nginx_status(&a->ng, &st, err, sizeof err) == 0) {
      a->checked_running = 1;
      if (a->cur_up && st.upstreams_revision != a->cur_up_rev) {
        ga_log(GA_WARN, "Nginx runs upstreams revision %lld but the file holds %lld: reloading",
               (long long)st.upstreams_revision, (long long)a->cur_up_rev);
        force_reload = 1;
      }
    }
  }
  int reload = up_changed || force_reload;
  if (!pol_changed && !reload) {
    if (a->applied != rr.revision || a->last_error[0]) a->report_due = 1;
    a->applied = rr.revision;
    a->last_error[0] = '\0';
    a->error_rev = -1;
    a->failures = 0;
    rc = 0;
    goto out;
  }
  int64_t now = mono_ms();
  if (reload && a->last_reload && now < a->last_reload + a->min_reload_ms) {
    /* Too soon for another reload: policies need none, so they go now. */
    if (pol_changed && apply_files(a, &rr, 1, 0, 0) != 0) goto out;
    a->not_before = a->last_reload + a->min_reload_ms;
    rc = 1;
    goto out;
  }
  if (apply_files(a, &rr, pol_changed, up_changed, reload) != 0) goto out;
  a->applied = rr.revision;
  a->last_error[0] = '\0';
  a->error_rev = -1;
  a->failures = 0;
  a->report_due = 1;
  rc = 0;
out:
  ga_rendered_clear(&rr);
  return rc;
}

static void report(agent *a) {
  ga_report r = {
      .host = a->host,
      .revision = a->applied,
      .seen_revision = a->seen,
      .error_revision = a->last_error[0] ? a->error_rev : -1,
      .policy_revision = a->cur_pol ? a->cur_pol_rev : -1,
      .upstreams_revision = a->cur_up ? a->cur_up_rev : -1,
      .last_error = a->last_error,
      .nginx_pid = ga_nginx_pid(&a->ng),
  };
  char err[1024];
  int64_t now = mono_ms();
  if (ga_report_send(&a->rep, &r, err, sizeof err) == 0) {
    if (a->report_failing) ga_log(GA_INFO, "reporting to grayd again");
    a->report_failing = 0;
    a->report_due = 0;
    a->next_report = now + a->report_every_ms;
    return;
  }
  if (!a->report_failing) ga_log(GA_WARN, "cannot report to grayd (retrying every 5 s): %s", err);
  a->report_failing = 1;
  a->next_report = now + 5000;
}

/* ---- start-up ------------------------------------------------------------------ */

/* What the live files hold now; missing files are created empty (revision
 * 0) so that Nginx can start before the first snapshot. */
static int load_live(agent *a) {
  char *text = NULL, err[512];
  size_t len = 0;
  if (ga_read_file(a->ng.live_pol, GA_DOC_MAX, &text, &len) == 0) {
    if (ga_parse_policies_file(text, len, &a->cur_pol_rev, &a->cur_pol, err, sizeof err) != 0)
      ga_log(GA_WARN, "%s: %s; the first snapshot replaces it", a->ng.live_pol, err);
    free(text);
  } else if (errno == ENOENT) {
    if (ga_write_atomic(a->ng.live_pol, "{\"revision\":0,\"policies\":[]}\n") != 0) {
      ga_log(GA_ERROR, "cannot write %s: %s", a->ng.live_pol, strerror(errno));
      return -1;
    }
    a->cur_pol = strdup("[]");
    a->cur_pol_rev = 0;
    ga_log(GA_INFO, "wrote an empty %s", a->ng.live_pol);
  } else {
    ga_log(GA_ERROR, "cannot read %s: %s", a->ng.live_pol, strerror(errno));
    return -1;
  }
  text = NULL;
  if (ga_read_file(a->ng.live_up, GA_DOC_MAX, &text, &len) == 0) {
    if (ga_parse_upstreams_file(text, len, &a->cur_up_rev, &a->cur_up, err, sizeof err) != 0)
      ga_log(GA_WARN, "%s: %s; the first snapshot replaces it", a->ng.live_up, err);
    free(text);
  } else if (errno == ENOENT) {
    char *t = ga_upstreams_file(GA_UPSTREAMS_HEAD, 0);
    if (!t || ga_write_atomic(a->ng.live_up, t) != 0) {
      ga_log(GA_ERROR, "cannot write %s: %s", a->ng.live_up, strerror(errno));
      free(t);
      return -1;
    }
    free(t);
    a->cur_up = strdup(GA_UPSTREAMS_HEAD);
    a->cur_up_rev = 0;
    ga_log(GA_INFO, "wrote an empty %s", a->ng.live_up);
  } else {
    ga_log(GA_ERROR, "cannot read %s: %s", a->ng.live_up, strerror(errno));
    return -1;
  }
  return 0;
}

static int name_ok(const char *s) {
  char msg[GRAY_ERROR_TEXT_MAX];
  gray_str_t v = {s, strlen(s)};
  return gray__check_name(v, msg, sizeof msg) == GRAY_OK;
}

/* "--name value" or "--name=value": 1 matched (value in *val), 2 matched
 * without a value, 0 not this flag. */
static int flag(int argc, char **argv, int *i, const char *name, const char **val) {
  const char *s = argv[*i];
  size_t n = strlen(name);
  if (strncmp(s, name, n)) return 0;
  if (s[n] == '=') {
    *val = s + n + 1;
    return 1;
  }
  if (s[n]) return 0;
  if (*i + 1 >= argc) return 2;
  *val = argv[++*i];
  return 1;
}

int main(int argc, char **argv) {
  static agent A;
  agent *a = &A;
  const char *server = getenv("GRAYLANE_SERVER"), *token = getenv("GRAYLANE_TOKEN"), *dir = NULL,
             *conf = "/etc/nginx/nginx.conf", *bin = "nginx", *prefix = NULL, *reload = NULL, *pid = NULL,
             *status = NULL, *id = NULL, *host = NULL, *services = NULL, *ca = NULL, *cache = NULL,
             *keepalive = "16", *min_reload = "1s", *confirm = "10s", *report_every = "30s";
  int init_only = 0;
  for (int i = 1; i < argc; i++) {
    struct {
      const char *name;
      const char **dst;
    } flags[] = {{"--server", &server},       {"--token", &token},
                 {"--nginx-dir", &dir},       {"--nginx-conf", &conf},
                 {"--nginx", &bin},           {"--nginx-prefix", &prefix},
                 {"--reload-cmd", &reload},   {"--pid-file", &pid},
                 {"--nginx-status", &status}, {"--id", &id},
                 {"--host", &host},           {"--services", &services},
                 {"--ca", &ca},               {"--cache", &cache},
                 {"--keepalive", &keepalive}, {"--min-reload-interval", &min_reload},
                 {"--confirm-timeout", &confirm}, {"--report-interval", &report_every}};
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(usage, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--init")) {
      init_only = 1;
      continue;
    }
    size_t k, nflags = sizeof flags / sizeof flags[0];
    int r = 0;
    for (k = 0; k < nflags && !(r = flag(argc, argv, &i, flags[k].name, flags[k].dst)); k++) {
    }
    if (r == 2) {
      fprintf(stderr, "gray-agent: %s needs a value\n", argv[i]);
      return 64;
    }
    if (k == nflags) {
      fprintf(stderr, "gray-agent: unknown argument \"%s\" (try --help)\n", argv[i]);
      return 64;
    }
  }
  if (!dir || !*dir) {
    fprintf(stderr, "gray-agent: --nginx-dir DIR is required (try --help)\n");
    return 64;
  }
  if (!init_only && (!server || !*server)) {
    fprintf(stderr, "gray-agent: --server URL (or $GRAYLANE_SERVER) is required\n");
    return 64;
  }
  char dirbuf[4096];
  snprintf(dirbuf, sizeof dirbuf, "%s", dir);
  for (size_t n = strlen(dirbuf); n > 1 && dirbuf[n - 1] == '/';) dirbuf[--n] = '\0';
  int ka = 0;
  if (parse_duration(min_reload, 0, 3600000, &a->min_reload_ms) ||
      parse_duration(confirm, 100, 600000, &a->ng.confirm_timeout_ms) ||
      parse_duration(report_every, 1000, 3600000, &a->report_every_ms)) {
    fprintf(stderr, "gray-agent: durations are like 500ms, 2s or 1m (interval up to 1h, confirm 100ms..10m)\n");
    return 64;
  }
  for (const char *p = keepalive; *p; p++) {
    if (*p < '0' || *p > '9' || ka > 100000) {
      ka = -1;
      break;
    }
    ka = ka * 10 + (*p - '0');
  }
  if (ka < 0 || ka > 100000 || !*keepalive) {
    fprintf(stderr, "gray-agent: --keepalive wants a number (0: none)\n");
    return 64;
  }
  a->ro.keepalive = ka;
  a->ro.resolves = host_resolves;

  /* Identity: the host name, made a valid name if it is not one. */
  if (!host) {
    if (gethostname(a->host, sizeof a->host - 1) != 0) snprintf(a->host, sizeof a->host, "localhost");
  } else {
    snprintf(a->host, sizeof a->host, "%s", host);
  }
  if (!gray__host_valid(a->host)) {
    if (host) {
      fprintf(stderr, "gray-agent: --host \"%s\" is not a host name\n", host);
      return 64;
    }
    for (char *p = a->host; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.'))
        *p = '-';
    if (!gray__host_valid(a->host)) snprintf(a->host, sizeof a->host, "localhost");
  }
  {
    const char *src = id ? id : a->host;
    size_t n = strlen(src);
    if (id && n >= sizeof a->id) n = 0; /* too long: refused below */
    if (n >= sizeof a->id) n = sizeof a->id - 1;
    memcpy(a->id, src, n);
    a->id[n] = '\0';
  }
  if (!name_ok(a->id)) {
    if (id) {
      fprintf(stderr, "gray-agent: --id \"%s\" is not a valid name (letters, digits, '.', '_', '-')\n", id);
      return 64;
    }
    snprintf(a->id, sizeof a->id, "gray-agent");
  }

  if (reload) {
    snprintf(a->reload_buf, sizeof a->reload_buf, "%s", reload);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(a->reload_buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
      if (n == 32) {
        fprintf(stderr, "gray-agent: --reload-cmd has more than 32 words\n");
        return 64;
      }
      a->reload_argv[n++] = t;
    }
    if (!n) {
      fprintf(stderr, "gray-agent: --reload-cmd is empty\n");
      return 64;
    }
    a->reload_argv[n] = NULL;
    a->ng.reload_argv = a->reload_argv;
  }
  a->ng.dir = dirbuf;
  a->ng.conf = conf;
  a->ng.bin = bin;
  a->ng.prefix = prefix;
  a->ng.pid_file = pid;
  a->ng.status_url = status;
  char err[GA_ERROR_MAX];
  if (!init_only && ga_nginx_init(&a->ng, err, sizeof err) != 0) {
    fprintf(stderr, "gray-agent: %s\n", err);
    return 2;
  }
  if (init_only) {
    snprintf(a->ng.live_pol, sizeof a->ng.live_pol, "%s/gray-policies.json", dirbuf);
    snprintf(a->ng.live_up, sizeof a->ng.live_up, "%s/gray-upstreams.conf", dirbuf);
  }
  a->cur_pol_rev = a->cur_up_rev = -1;
  a->error_rev = -1;
  if (load_live(a) != 0) return 1;
  if (init_only) return 0;

  /* Signals go to the signal thread only; SDK threads inherit the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  pthread_condattr_t ca_attr;
  pthread_condattr_init(&ca_attr);
  pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, &ca_attr);
  pthread_condattr_destroy(&ca_attr);
  pthread_t sigth;
  if (pthread_create(&sigth, NULL, signal_thread, a) != 0) {
    fprintf(stderr, "gray-agent: cannot start a thread\n");
    return 1;
  }

  a->rep.servers = server;
  a->rep.token = token;
  a->rep.ca_file = ca;
  a->rep.id = a->id;

  gray_client_options_t o;
  gray_client_options_init(&o);
  o.servers = server;
  o.token = token;
  o.ca_file = ca;
  o.services = services;
  o.cache_path = cache;
  o.log = sdk_log;
  o.on_change = on_change;
  o.on_change_arg = a;
  gray_client_t *c = NULL;
  gray_error_t gerr;
  if (gray_client_new(&o, &c, &gerr) != GRAY_OK || gray_client_start(c, &gerr) != GRAY_OK) {
    char buf[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX + 4];
    fprintf(stderr, "gray-agent: %s\n", gray_error_format(&gerr, buf, sizeof buf));
    gray_client_free(c);
    return 1;
  }
  ga_log(GA_INFO, "gray-agent %s: id %s, grayd %s, files in %s, config %s, reload by %s%s", GRAY_VERSION_STRING,
         a->id, server, dirbuf, conf, reload ? "command" : "SIGHUP to ", reload ? "" : a->ng.pid_path);
  if (!status)
    ga_log(GA_WARN, "no --nginx-status: a revision counts as applied after nginx -t and the reload, unconfirmed");
  a->report_due = 1;

  for (;;) {
    pthread_mutex_lock(&a->mu);
    for (;;) {
      if (a->stop || a->slot || a->retry_now) break;
      int64_t now = mono_ms(), wake = a->next_report;
      if (a->pending && a->not_before < wake) wake = a->not_before;
      if (a->report_due && !a->report_failing) wake = now;
      if (wake <= now) break;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t ns = (int64_t)ts.tv_nsec + (wake - now) * 1000000;
      ts.tv_sec += (time_t)(ns / 1000000000);
      ts.tv_nsec = (long)(ns % 1000000000);
      pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    int stop = a->stop;
    if (a->slot) {
      free(a->pending);
      a->pending = a->slot;
      a->pending_len = a->slot_len;
      a->slot = NULL;
      a->not_before = 0; /* a new state is tried at once */
    }
    if (a->retry_now) {
      a->retry_now = 0;
      a->not_before = 0;
    }
    pthread_mutex_unlock(&a->mu);
    if (stop) break;
    if (a->pending && mono_ms() >= a->not_before) {
      int r = apply(a, a->pending, a->pending_len);
      if (r == 0) {
        free(a->pending);
        a->pending = NULL;
      }
    }
    if ((a->report_due && !a->report_failing) || mono_ms() >= a->next_report) report(a);
  }

  gray_client_free(c);
  pthread_join(sigth, NULL);
  free(a->slot);
  free(a->pending);
  free(a->cur_pol);
  free(a->cur_up);
  curl_global_cleanup();
  ga_log(GA_INFO, "stopped");
  return 0;
}
