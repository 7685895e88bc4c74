/* grayd: revisions, audit and registry-save buffering, logging, clocks. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grayd.h"

#define RESERVE_BLOCK 1000

void gd_log(const char *level, const char *fmt, ...) {
  /* The formatted second is cached: a wake-up logs thousands of lines. */
  static char when[32];
  static time_t when_sec = -1;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (ts.tv_sec != when_sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    when_sec = ts.tv_sec;
  }
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s.%03ldZ %-5s ", when, ts.tv_nsec / 1000000, level);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  /* stderr is block-buffered (a wake-up of 10,000 watchers is 10,000 access
   * lines); warnings and errors go out at once, the rest within 250 ms. */
  if (level[0] == 'e' || level[0] == 'w') fflush(stderr);
}

int64_t gd_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gd_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int gd_next_revision(gd_state *s, int64_t *rev, gray_error_t *err) {
  int64_t next = s->revision + 1;
  if (next > s->reserved) {
    /* Registry revisions are not stored one by one; reserving a block keeps
     * revisions monotonic across restarts with one write per block. */
    int64_t upto = next + RESERVE_BLOCK;
    if (s->store->ops->reserve(s->store, upto, err) != GRAY_OK) return -1;
    s->reserved = upto;
  }
  s->revision = next;
  *rev = next;
  return 0;
}

static char *dup_or(const char *s, const char *dflt) {
  const char *v = s ? s : dflt;
  size_t n = strlen(v);
  char *p = malloc(n + 1);
  if (!p) abort(); /* daemons may abort on out of memory (STYLE.md) */
  memcpy(p, v, n + 1);
  return p;
}

void gd_audit_flush(gd_state *s) {
  if (!s->naudit) return;
  gray_error_t err;
  if (s->store->ops->audit_append(s->store, s->audit_buf, s->naudit, &err) != GRAY_OK)
    gd_log("error", "audit: cannot store %zu entries: %s", s->naudit, err.message);
  for (size_t i = 0; i < s->naudit; i++) gd_audit_rec_clear(&s->audit_buf[i]);
  s->naudit = 0;
}

static void batch_timer(gd_state *s) {
  if (s->audit_timer && !evtimer_pending(s->audit_timer, NULL)) {
    struct timeval tv = {0, 100000};
    evtimer_add(s->audit_timer, &tv);
  }
}

void gd_instance_flush(gd_state *s) {
  if (!s->ninst) return;
  gd_instance_rec *recs = calloc(s->ninst, sizeof *recs);
  if (!recs) abort();
  for (size_t i = 0; i < s->ninst; i++) {
    struct gd_inst_save *q = &s->inst_buf[i];
    recs[i] = (gd_instance_rec){q->service, q->id, q->revision, q->body, q->body_len};
  }
  gray_error_t err;
  if (s->store->ops->instance_save(s->store, recs, s->ninst, &err) != GRAY_OK)
    gd_log("error", "registry: cannot save %zu changes (a restart would not restore them): %s", s->ninst,
           err.message);
  free(recs);
  for (size_t i = 0; i < s->ninst; i++) {
    free(s->inst_buf[i].service);
    free(s->inst_buf[i].id);
    free(s->inst_buf[i].body);
  }
  s->ninst = 0;
}

void gd_instance_save(gd_state *s, const char *service, const char *id, int64_t revision, char *body) {
  if (s->ninst == s->cap_inst) {
    size_t cap = s->cap_inst ? s->cap_inst * 2 : 64;
    struct gd_inst_save *n = realloc(s->inst_buf, cap * sizeof(*n));
    if (!n) abort();
    s->inst_buf = n;
    s->cap_inst = cap;
  }
  struct gd_inst_save *q = &s->inst_buf[s->ninst++];
  q->service = dup_or(service, "");
  q->id = dup_or(id, "");
  q->body = body;
  q->body_len = body ? strlen(body) : 0;
  q->revision = revision;
  if (s->ninst >= 4096)
    gd_instance_flush(s);
  else
    batch_timer(s);
}

void gd_batch_flush(gd_state *s) {
  gd_audit_flush(s);
  gd_instance_flush(s);
}

void gd_audit(gd_state *s, const char *token, const char *op, const char *target, int status,
              const char *message, int flush) {
  if (s->naudit == s->cap_audit) {
    size_t cap = s->cap_audit ? s->cap_audit * 2 : 64;
    gd_audit_rec *n = realloc(s->audit_buf, cap * sizeof(*n));
    if (!n) abort();
    s->audit_buf = n;
    s->cap_audit = cap;
  }
  gd_audit_rec *r = &s->audit_buf[s->naudit++];
  memset(r, 0, sizeof *r);
  r->time_ms = gd_now_ms();
  r->token = dup_or(token, "-");
  r->op = dup_or(op, "");
  r->target = dup_or(target, "");
  r->status = status;
  r->message = dup_or(message, "");
  if (flush || s->naudit >= 512)
    gd_audit_flush(s);
  else
    batch_timer(s);
}
