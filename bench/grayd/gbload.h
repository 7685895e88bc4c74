/* bench/grayd: a small HTTP/1.1 load client over libevent, shared by
 * bench_grayd_watch and bench_grayd_registry.
 *
 * One thread, one event base, raw non-blocking sockets (one read event and
 * one on-demand write event each). Every connection goes to 127.0.0.1 only,
 * carries one request at a time (no pipelining) and parses the answers
 * itself: Content-Length bodies, and chunked streams split into
 * newline-delimited messages (etcd's gRPC gateway). Not thread-safe. */
#ifndef GB_LOAD_H
#define GB_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

typedef struct gb_loop gb_loop;
typedef struct gb_conn gb_conn;

/* Called once per complete answer (Content-Length or a finished chunked
 * body) and, for a chunked stream, once per newline-terminated message
 * (`msg` set, body excludes the newline). `t_ns` is the monotonic time
 * right after the read() that completed it. `body` is borrowed. */
typedef void (*gb_msg_cb)(gb_conn *c, int status, const char *body, size_t len, int64_t t_ns, int msg);
/* The connection failed or the peer closed it; it is closed already. */
typedef void (*gb_close_cb)(gb_conn *c, const char *why);

struct gb_conn {
  gb_loop *loop;
  int fd;                 /* -1 when closed */
  unsigned gen;           /* bumped by every close: a callback may close */
  int connected;
  int queued;             /* waiting for a connect slot */
  int counting;           /* holds one of the loop's connect slots */
  int closing;            /* the answer said Connection: close */
  struct event *rev, *wev;
  char *wbuf;
  size_t wlen, woff, wcap;
  char *rbuf;
  size_t rlen, rcap;
  /* answer parsing */
  int in_body;            /* head parsed */
  int status;
  int chunked;
  size_t clen;            /* Content-Length */
  char *acc;              /* chunked: decoded payload not yet split */
  size_t acclen, acccap;
  size_t chunk_left;      /* bytes left in the current chunk, +2 for CRLF */
  int in_chunk;
  gb_msg_cb on_msg;
  gb_close_cb on_close;
  void *user;
  size_t idx;
  gb_conn *next_wait;
};

/* The loop: owns the event base and the connect throttle. */
gb_loop *gb_loop_new(int port, int max_connecting);
void gb_loop_free(gb_loop *l);
struct event_base *gb_loop_base(gb_loop *l);

/* Monotonic nanoseconds. */
int64_t gb_now_ns(void);

/* Raises RLIMIT_NOFILE to at least `need` descriptors (soft and hard; the
 * hard limit needs root). Prints what happened on stderr when it cannot.
 * Returns 0 when the limit is now high enough. */
int gb_raise_nofile(size_t need);

/* Initialises `c` (memset by the caller is not needed) for the loop. */
void gb_conn_init(gb_conn *c, gb_loop *l, gb_msg_cb on_msg, gb_close_cb on_close, void *user, size_t idx);
/* Starts connecting (or queues the connect when too many are in
 * progress). Returns -1 when no socket can be made. */
int gb_conn_open(gb_conn *c);
/* Queues `len` bytes to send (copied); sends as soon as connected. */
int gb_conn_send(gb_conn *c, const char *data, size_t len);
void gb_conn_close(gb_conn *c);
/* Frees the buffers too. */
void gb_conn_destroy(gb_conn *c);

/* Runs the loop until done(arg) returns non-zero or `deadline_ns` passes
 * (checked at least every 5 ms). Returns 0 when done, -1 on the deadline. */
int gb_run_until(gb_loop *l, int (*done)(void *), void *arg, int64_t deadline_ns);
/* Runs the loop for `ms` milliseconds. */
void gb_run_for(gb_loop *l, int ms);

/* A blocking-style call on `c` through the loop: sends `req`, waits up to
 * `timeout_ms` for the whole answer. Returns the status (body copied into
 * *body, NUL-terminated, caller frees) or -1. `c` must have been opened
 * with gb_sync_cb as its message callback. */
void gb_sync_cb(gb_conn *c, int status, const char *body, size_t len, int64_t t_ns, int msg);
int gb_sync_call(gb_conn *c, const char *req, size_t len, int timeout_ms, char **body);

/* One gauge or counter from grayd's GET /metrics through the control
 * connection `ctl` (opened with gb_sync_cb), e.g. "grayd_watchers".
 * Returns the value or -1. */
long gb_grayd_metric(gb_conn *ctl, const char *token, const char *name);

/* Percentile by nearest rank over `n` sorted values (p in 0..100). */
double gb_percentile(const double *sorted, size_t n, double p);
void gb_sort(double *v, size_t n);

/* The first decimal integer after `key` in s[0..len) (e.g. "\"revision\":"),
 * skipping spaces and one optional quote. Returns 1 and sets *out, else 0. */
int gb_find_int(const char *s, size_t len, const char *key, int64_t *out);
/* memmem over a bounded haystack. */
const char *gb_find(const char *s, size_t len, const char *needle);
/* Parses a whole decimal argument; exits with a message if it is not one
 * within [lo, hi]. */
long gb_arg_long(const char *flag, const char *v, long lo, long hi);

/* Peak and current resident memory of a process in KiB, from
 * /proc/PID/status. Returns 0 on success. */
int gb_proc_rss_kib(long pid, long *hwm, long *rss);
/* utime + stime of a process in clock ticks, from /proc/PID/stat. */
int gb_proc_cpu_ticks(long pid, long long *ticks);

#endif
