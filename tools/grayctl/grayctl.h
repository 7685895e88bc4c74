/* grayctl internals: one function per command, and the pieces they share
 * (request flags, the grayd client, tables). Nothing here is public API. */
#ifndef GRAYCTL_H
#define GRAYCTL_H

#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "gray/policy.h"

/* Exit codes, the same for every command (also listed in grayctl --help). */
#define GRAYCTL_OK 0
#define GRAYCTL_EFAIL 1     /* failure: I/O, network, out of memory, a 5xx answer */
#define GRAYCTL_EINVALID 2  /* invalid input: a bad policy file, or grayd refused the input (400, 413) */
#define GRAYCTL_ENOPOLICY 3 /* eval: the file has no policy for the service */
#define GRAYCTL_ENOTFOUND 3 /* grayd has no such policy, instance or revision (404) */
#define GRAYCTL_ECONFLICT 4 /* If-Match did not hold: someone else wrote first (412) */
#define GRAYCTL_EAUTH 5     /* the token is missing or invalid (401) or its role may not (403) */
#define GRAYCTL_EUSAGE 64   /* bad command line */

/* Long-option values shared by several commands (above any character). */
enum {
  GRAYCTL_O_SERVER = 0x200, /* global options */
  GRAYCTL_O_TOKEN,
  GRAYCTL_O_CA,
  GRAYCTL_O_INSECURE_PLAIN,
  GRAYCTL_O_HEADER, /* request flags of eval and explain */
  GRAYCTL_O_COOKIE,
  GRAYCTL_O_PARAM,
  GRAYCTL_O_QUERY,
  GRAYCTL_O_IP,
  GRAYCTL_O_TAG,
  GRAYCTL_O_PATH,
  GRAYCTL_O_METHOD,
  GRAYCTL_O_HOST,
  GRAYCTL_O_COMMAND /* first value free for a command's own options */
};

/* ---- Offline commands ---------------------------------------------------- */

int grayctl_check(int argc, char **argv);
int grayctl_eval(int argc, char **argv);

/* ---- Request flags (--header, --cookie, ... as grayctl eval takes them) --- */

#define GRAYCTL_MAX_PAIRS 256

/* One request described on the command line. Strings are borrowed from argv. */
typedef struct grayctl_req {
  gray_kv_t headers[GRAYCTL_MAX_PAIRS], cookies[GRAYCTL_MAX_PAIRS], params[GRAYCTL_MAX_PAIRS];
  size_t nheaders, ncookies, nparams;
  gray_kv_request_t kv; /* complete after grayctl_req_finish() */
} grayctl_req;

#define GRAYCTL_REQUEST_OPTIONS                                                                 \
  {"header", required_argument, NULL, GRAYCTL_O_HEADER},                                        \
      {"cookie", required_argument, NULL, GRAYCTL_O_COOKIE},                                    \
      {"param", required_argument, NULL, GRAYCTL_O_PARAM},                                      \
      {"query", required_argument, NULL, GRAYCTL_O_QUERY}, {"ip", required_argument, NULL, GRAYCTL_O_IP}, \
      {"tag", required_argument, NULL, GRAYCTL_O_TAG}, {"path", required_argument, NULL, GRAYCTL_O_PATH}, \
      {"method", required_argument, NULL, GRAYCTL_O_METHOD},                                    \
      {"host", required_argument, NULL, GRAYCTL_O_HOST}

/* Take one request flag. Returns 1 when `opt` was one and it is taken, 0 when
 * `opt` is not a request flag, -1 after printing why the value is wrong
 * ("grayctl CMD: --header expects ..."). */
int grayctl_req_option(grayctl_req *r, int opt, const char *arg, const char *cmd);
/* Point r->kv at the collected pairs. */
void grayctl_req_finish(grayctl_req *r);
/* The request as grayd's explain takes it: {"headers": [[n, v], ...], ...}.
 * New reference, or NULL on out of memory. */
json_t *grayctl_req_to_json(const grayctl_req *r);

/* ---- Global options and the grayd client -------------------------------- */

/* Where grayd is and how to talk to it. Strings are borrowed (argv or the
 * environment); the environment is consulted when a flag is absent. */
typedef struct grayctl_globals {
  const char *server, *token, *ca;
  int insecure_plain;
} grayctl_globals;

#define GRAYCTL_GLOBAL_OPTIONS                                                      \
  {"server", required_argument, NULL, GRAYCTL_O_SERVER},                            \
      {"token", required_argument, NULL, GRAYCTL_O_TOKEN},                          \
      {"ca", required_argument, NULL, GRAYCTL_O_CA},                                \
      {"insecure-plain", no_argument, NULL, GRAYCTL_O_INSECURE_PLAIN}

/* Take one global option; returns 1 when `opt` was one, else 0. */
int grayctl_global_option(grayctl_globals *g, int opt, const char *arg);

/* Print the getopt failure of command `cmd` ("needs a value" or "unknown
 * option") and return GRAYCTL_EUSAGE. */
int grayctl_option_error(const char *cmd, char **argv);

/* Print the first line of a command's usage text ("usage: ...") on stderr. */
void grayctl_usage_line(const char *usage);

/* Parse a decimal integer in [min, max] from the whole of `s`; 0 or -1. */
int grayctl_parse_int(const char *s, long long min, long long max, long long *out);

/* A connection to grayd (one libcurl handle, kept alive across calls). */
typedef struct grayctl_conn grayctl_conn;

/* Check the server URL, the token and the TLS options and make a handle.
 * On failure prints why and returns the exit code (GRAYCTL_EUSAGE for a
 * missing or refused --server). */
int grayctl_conn_open(const grayctl_globals *g, grayctl_conn **out);
void grayctl_conn_close(grayctl_conn *c);
/* Make calls on `c` return GRAYCTL_STOPPED soon after *flag becomes
 * non-zero (set from a signal handler). */
void grayctl_conn_stop_on(grayctl_conn *c, volatile sig_atomic_t *flag);

#define GRAYCTL_STOPPED (-1) /* not an exit code: the call was cut short on purpose */

typedef struct grayctl_call {
  const char *method;  /* GET, PUT, POST, DELETE */
  const char *path;    /* from /v1/..., with user strings already escaped */
  const char *body;    /* NULL: none */
  size_t body_len;
  long long if_match;  /* < 0: no If-Match */
  long timeout_ms;     /* 0: the default, 30 s */
  const char *what;    /* the command, for messages: "policy put order" */
} grayctl_call;

typedef struct grayctl_resp {
  long status;
  char *body; /* NUL-terminated, owned */
  size_t len;
  long long revision; /* X-Gray-Revision, -1 when absent */
  long long etag;     /* ETag as a revision, -1 when absent */
} grayctl_resp;

/* Run one call. Transport failures (refused, timeout, TLS, oversized answer)
 * are printed and their exit code returned; any HTTP answer returns 0 with
 * *resp filled (free it with grayctl_resp_clear, also after a failure). */
int grayctl_send(grayctl_conn *c, const grayctl_call *call, grayctl_resp *resp);
/* grayctl_send, then a non-2xx answer is printed (with grayd's error code,
 * path and message) and mapped to its exit code. */
int grayctl_request(grayctl_conn *c, const grayctl_call *call, grayctl_resp *resp);
/* Print a non-2xx answer for `what` and return its exit code. */
int grayctl_http_error(const grayctl_conn *c, const char *what, const grayctl_resp *resp);
void grayctl_resp_clear(grayctl_resp *r);

/* Parse an answer's JSON; on failure prints and returns NULL. New reference. */
json_t *grayctl_resp_json(const char *what, const grayctl_resp *resp);
/* Write the answer unchanged, ending in one newline. */
int grayctl_print_raw(const grayctl_resp *resp);

/* ---- Small helpers ---------------------------------------------------------- */

/* A growing string with a cap; on failure `failed` is set and adds are no-ops. */
typedef struct grayctl_buf {
  char *p;
  size_t len, cap;
  int failed;
} grayctl_buf;

void grayctl_buf_add(grayctl_buf *b, const char *s);
void grayctl_buf_addf(grayctl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append `s` percent-encoded for a URL path segment or query value. */
void grayctl_buf_add_escaped(grayctl_buf *b, const char *s);
void grayctl_buf_free(grayctl_buf *b);

/* Read a whole file ("-": standard input) of at most `cap` bytes into a
 * NUL-terminated malloc'd buffer. Prints why and returns an exit code. */
int grayctl_read_file(const char *what, const char *file, size_t cap, char **out, size_t *len);

/* Copy `s` into dst (size n), replacing control characters with '?', so a
 * string from the network or the command line cannot drive the terminal. */
const char *grayctl_clean(const char *s, char *dst, size_t n);

/* A text table: a header row, then rows; columns padded to their widest cell. */
typedef struct grayctl_table grayctl_table;
grayctl_table *grayctl_table_new(size_t ncols, const char *const *header);
/* Copy one row of ncols cells (NULL cell: "-"). 0 or -1 on out of memory. */
int grayctl_table_add(grayctl_table *t, const char *const *cells);
size_t grayctl_table_rows(const grayctl_table *t);
void grayctl_table_print(const grayctl_table *t, FILE *f);
void grayctl_table_free(grayctl_table *t);

/* Convenience getters on JSON objects: a string member or `dflt`; an integer
 * member (or a real with no fraction) formatted into buf, or "-". */
const char *grayctl_jstr(json_t *o, const char *key, const char *dflt);
const char *grayctl_jint(json_t *o, const char *key, char *buf, size_t n);

/* ---- Commands that talk to grayd ----------------------------------------- */

int grayctl_policy(grayctl_globals *g, int argc, char **argv);
int grayctl_explain(grayctl_globals *g, int argc, char **argv);
int grayctl_instances(grayctl_globals *g, int argc, char **argv);
int grayctl_register(grayctl_globals *g, int argc, char **argv);
int grayctl_deregister(grayctl_globals *g, int argc, char **argv);
int grayctl_heartbeat(grayctl_globals *g, int argc, char **argv);
int grayctl_watch(grayctl_globals *g, int argc, char **argv);
int grayctl_audit(grayctl_globals *g, int argc, char **argv);
int grayctl_agents(grayctl_globals *g, int argc, char **argv);

#endif
