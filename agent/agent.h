/* gray-agent: follows grayd with the client SDK and keeps one Nginx's
 * gray files in step — DIR/gray-upstreams.conf (upstream blocks from the
 * registry) and DIR/gray-policies.json (the policy set the module reads).
 * See docs/agent.md. Internal header: render.c is pure (unit-tested),
 * nginx.c talks to Nginx (files, nginx -t, reload, status), report.c to
 * grayd, main.c ties them together. */
#ifndef GRAY_AGENT_H
#define GRAY_AGENT_H

#include <stddef.h>
#include <stdint.h>

/* Caps: what one render may hold. */
#define GA_MAX_UPSTREAMS 4096      /* upstream blocks */
#define GA_MAX_SERVERS 1024        /* servers in one upstream */
#define GA_DOC_MAX (64u << 20)     /* a state document from the SDK */
#define GA_ERROR_MAX 2048          /* an error text kept and reported */

/* Log levels, as the SDK's. */
enum { GA_DEBUG = 0, GA_INFO = 1, GA_WARN = 2, GA_ERROR = 3 };

/* Log one line to stderr ("time level message"). Thread-safe. */
void ga_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write a printable, bounded quotation of len bytes of p into buf (bytes
 * outside printable ASCII as \xNN, quotes and backslashes escaped, cut
 * after 64 bytes with "..."), for log lines about refused values. */
const char *ga_quote(const char *p, size_t len, char *buf, size_t size);

/* ---- render.c: state document -> file contents (pure) ------------------- */

/* The first line of every upstream file's body: an empty registry renders
 * just this. */
#define GA_UPSTREAMS_HEAD "# Written by gray-agent from grayd's registry; do not edit: the next change replaces it.\n"

typedef struct ga_render_opts {
  int keepalive; /* `keepalive N;` in each upstream with servers; 0: none */
  /* Optional: 1 when a host name resolves (IP literals are not asked).
   * NULL: every valid host name is rendered. */
  int (*resolves)(void *arg, const char *host);
  void *resolves_arg;
} ga_render_opts;

typedef struct ga_rendered {
  int64_t revision; /* the document's revision */
  char *policies;   /* canonical JSON array of the policies, sorted by service */
  char *upstreams;  /* the upstream file's body, without its revision line */
  size_t nupstreams, nservers;
  size_t skipped; /* values refused (each logged) */
} ga_rendered;

/* Render the SDK's state document ({"store_id", "revision", "policies":
 * {"revision", "policies": [...]}, "services": [{"service", "instances":
 * [{"id", "address", "port", "version"}]}]}). Only typed, validated fields
 * reach the output: names per the policy name rule, addresses that are IP
 * literals or host names (gray__host_valid), integer ports 1..65535;
 * anything else is skipped with a log line. The policy set is checked with
 * the core parser. Returns 0, or -1 with a reason in err (the document as a
 * whole is unusable). out is filled on success; clear it with
 * ga_rendered_clear. */
int ga_render(const char *doc, size_t len, const ga_render_opts *o, ga_rendered *out, char *err, size_t errsz);
void ga_rendered_clear(ga_rendered *r);

/* The files' contents (new strings, NUL-terminated, NULL on out of memory):
 * {"revision": rev, "policies": ARRAY}\n and
 * "gray_upstreams_revision rev;\n" + body. */
char *ga_policies_file(const char *policies, int64_t rev);
char *ga_upstreams_file(const char *body, int64_t rev);

/* Read back a file written by the agent: the revision and the canonical
 * array (policies) or the body (upstreams) as new strings. 0 ok, -1 when
 * the text is not one the agent wrote (err says why). */
int ga_parse_policies_file(const char *text, size_t len, int64_t *rev, char **policies, char *err, size_t errsz);
int ga_parse_upstreams_file(const char *text, size_t len, int64_t *rev, char **body, char *err, size_t errsz);

/* Check a policies file's text with the core parser (what the module will
 * do). 0 ok, -1 with the path-qualified reason in err. */
int ga_check_policies(const char *text, char *err, size_t errsz);

/* ---- nginx.c: files, nginx -t, reload, status ---------------------------- */

typedef struct ga_nginx {
  const char *dir;        /* --nginx-dir, without a trailing slash */
  const char *conf;       /* --nginx-conf: the main config file */
  const char *bin;        /* --nginx */
  const char *prefix;     /* --nginx-prefix, or NULL */
  char *const *reload_argv; /* --reload-cmd split into argv, or NULL */
  const char *pid_file;   /* --pid-file, or NULL: the conf's pid, else /run/nginx.pid */
  const char *status_url; /* --nginx-status, or NULL */
  int confirm_timeout_ms;
  /* derived paths */
  char live_pol[4200], live_up[4200];
  char stage_dir[4200], stage_pol[4200], stage_up[4200];
  char test_conf[4200];
  char pid_path[4200];
} ga_nginx;

/* Fill the derived paths and check the main config references the two
 * live files by their full path (so the test copy can point at the staged
 * ones). 0, or -1 with the reason in err. */
int ga_nginx_init(ga_nginx *n, char *err, size_t errsz);

/* Write `text` to `path` (temp file in the same directory, fsync, rename,
 * directory fsync). 0, or -1 with errno. */
int ga_write_atomic(const char *path, const char *text);
/* Read a whole file (at most max bytes) into a new string. 0, -1 with
 * errno (ENOENT when missing, EFBIG when over max). */
int ga_read_file(const char *path, size_t max, char **out, size_t *len);

/* Stage both files (the staging directory next to the live ones) and run
 * `nginx -t` on a copy of the main config that includes the staged files
 * instead of the live ones. 0 ok; -1 with nginx's own words in err. */
int ga_nginx_test(ga_nginx *n, const char *pol_text, const char *up_text, char *err, size_t errsz);
/* Move the staged file(s) over the live ones (rename: atomic per file).
 * 0, or -1 with the reason. */
int ga_nginx_swap(ga_nginx *n, int pol, int up, char *err, size_t errsz);
/* Reload the master: the reload command, else SIGHUP to the pid file's
 * process. 0, or -1 with the reason. */
int ga_nginx_reload(ga_nginx *n, char *err, size_t errsz);
/* The master's pid from the pid file, 0 when unknown. */
long ga_nginx_pid(ga_nginx *n);

/* What gray_status says. */
#define GA_STATUS_WORKERS 1024 /* nginx allows at most 1024 worker processes */
typedef struct ga_status {
  int64_t policy_revision, upstreams_revision; /* of the worker that answered; -1: absent */
  char policy_error[512];                      /* "" when none */
  /* The module's per-worker view ("workers": [{"pid", "policy_revision",
   * "upstreams_revision"}]), when it gives one: old workers still draining
   * after a reload are listed too. */
  size_t nworkers;
  struct {
    long pid;
    int64_t policy_revision, upstreams_revision;
  } workers[GA_STATUS_WORKERS];
} ga_status;
/* One GET of the status URL (a new connection, 2 s at most). 0, or -1 with
 * the reason. */
int ga_nginx_status(ga_nginx *n, ga_status *st, char *err, size_t errsz);
/* Poll the status until it shows both revisions (or the timeout): the
 * worker that answers, and — when the module lists its workers — every
 * worker of the new generation (those at upstreams revision up_rev) at
 * policy revision pol_rev. 0, or -1 with what it showed last. With no
 * status URL: 0 at once. */
int ga_nginx_confirm(ga_nginx *n, int64_t pol_rev, int64_t up_rev, char *err, size_t errsz);

/* Run argv (no shell) with stdin /dev/null, stdout and stderr captured into
 * out (cut to size), killed after timeout_ms. Returns the exit status
 * (0..255), 128+signal when killed, or -1 when it could not be started (out
 * says why). */
int ga_run(char *const argv[], int timeout_ms, char *out, size_t size);

/* ---- report.c: PUT /v1/agents/{id} --------------------------------------- */

typedef struct ga_report {
  const char *host;
  int64_t revision, seen_revision, error_revision; /* error_revision -1: none */
  int64_t policy_revision, upstreams_revision;     /* -1: none */
  const char *last_error;                          /* NULL or "": none */
  long nginx_pid;                                  /* 0: unknown */
} ga_report;

typedef struct ga_reporter {
  const char *servers; /* comma-separated grayd URLs */
  const char *token;
  const char *ca_file;
  const char *id;
} ga_reporter;

/* Send one report to the first server that answers (3 s each). 0 on 200;
 * -1 with the reason (network, or grayd's error answer). */
int ga_report_send(const ga_reporter *r, const ga_report *rep, char *err, size_t errsz);

#endif
