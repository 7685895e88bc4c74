/* Registration: gray_client_register, and the registry thread that keeps
 * registrations alive.
 *
 * The registry thread is separate from the watch thread so a long poll
 * never delays a heartbeat. It sleeps on a condition variable until the
 * next heartbeat is due (TTL/3 after the last success), a registration
 * arrives, or _stop. A heartbeat answered 404 (grayd restarted, or the
 * instance was evicted or deleted) registers again at once; a failed
 * attempt is retried after the backoff, capped at TTL/3 for a live
 * registration. Requests are bounded by the connect timeout plus 3 s, and
 * _stop interrupts one in flight. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/internal.h"
#include "core/model.h"

#define REQUEST_EXTRA_MS 3000

static int check_name(const char *what, const char *v, gray_error_t *err) {
  char msg[GRAY_ERROR_TEXT_MAX];
  if (!v) return gray__seterr(err, GRAY_EINVAL, what, "is required");
  gray_str_t s = {v, strlen(v)};
  if (gray__check_name(s, msg, sizeof msg) != GRAY_OK) return gray__seterr(err, GRAY_EINVAL, what, "%s", msg);
  return GRAY_OK;
}

/* The PUT body, validated: GRAY_OK and *out (gray__json_free), or an error
 * with *err. */
static int make_body(const gray_instance_t *in, int ttl_s, char **out, gray_error_t *err) {
  json_t *meta = json_object(), *doc = NULL;
  size_t bytes = 0, keys = 0;
  int rc = GRAY_OK;
  *out = NULL;
  if (!meta) goto nomem;
  for (const char *const *kv = in->metadata; kv && kv[0]; kv += 2) {
    if (!kv[1]) {
      rc = gray__seterr(err, GRAY_EINVAL, "metadata", "key \"%.64s\" has no value (pairs, then NULL)", kv[0]);
      goto out;
    }
    if (!kv[0][0]) {
      rc = gray__seterr(err, GRAY_EINVAL, "metadata", "keys must not be empty");
      goto out;
    }
    bytes += strlen(kv[0]) + strlen(kv[1]);
    if (++keys > GRAY__META_KEYS_MAX || bytes > GRAY__META_BYTES_MAX) {
      rc = gray__seterr(err, GRAY_EINVAL, "metadata", "at most %d keys and %d bytes", GRAY__META_KEYS_MAX,
                        GRAY__META_BYTES_MAX);
      goto out;
    }
    json_t *v = json_string(kv[1]);
    if (!v || json_object_set_new(meta, kv[0], v) != 0) {
      /* jansson refuses invalid UTF-8 (and fails the same way on memory). */
      rc = gray__seterr(err, GRAY_EINVAL, "metadata", "keys and values must be UTF-8 text");
      goto out;
    }
  }
  doc = json_pack("{s:s,s:i,s:s,s:i,s:O}", "address", in->address, "port", in->port, "version", in->version,
                  "ttl_s", ttl_s, "metadata", meta);
  if (!doc || !(*out = json_dumps(doc, JSON_COMPACT))) goto nomem;
  goto out;
nomem:
  rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
out:
  json_decref(meta);
  json_decref(doc);
  return rc;
}

static gray__reg *find_reg(gray_client_t *c, const char *service, const char *id) {
  for (size_t i = 0; i < c->nregs; i++)
    if (!strcmp(c->regs[i].service, service) && !strcmp(c->regs[i].id, id)) return &c->regs[i];
  return NULL;
}

static void drop_reg(gray_client_t *c, gray__reg *r) {
  size_t i = (size_t)(r - c->regs);
  gray__free(r->body);
  memmove(&c->regs[i], &c->regs[i + 1], (c->nregs - i - 1) * sizeof(*r));
  c->nregs--;
}

typedef struct call {
  long status;
  char why[CURL_ERROR_SIZE + 64];
} call;

/* One request to one server. 0 with call->status, or -1 (network). */
static int request(gray_client_t *c, CURL *h, size_t server, const char *method, const char *service,
                   const char *id, const char *suffix, const char *body, long timeout_ms, atomic_int *abort_flag,
                   call *out) {
  char url[2048];
  gray__buf sink = {NULL, 0, 0, GRAY__SMALL_BODY_MAX, 0};
  snprintf(url, sizeof url, "%s/v1/services/%s/instances/%s%s", c->servers[server], service, id, suffix);
  gray__http_setup(c, h, method, url, body, &sink, timeout_ms, abort_flag);
  int rc = gray__http_perform(h, &out->status, out->why, sizeof out->why);
  if (rc == 0 && out->status != 200) {
    char text[200];
    gray__http_error_text(&sink, text, sizeof text);
    snprintf(out->why, sizeof out->why, "HTTP %ld%s%s", out->status, text[0] ? ": " : "", text);
  }
  gray__buf_free(&sink);
  return rc;
}

/* PUT the registration, trying each server once from the current one
 * (all of them when `all`). 0 with the status of the server that answered,
 * -1 when none did. */
static int put_register(gray_client_t *c, CURL *h, const char *service, const char *id, const char *body, int all,
                        atomic_int *abort_flag, call *out) {
  size_t n = all ? c->nservers : 1;
  for (size_t k = 0; k < n; k++) {
    size_t s = atomic_load(&c->reg_server) % c->nservers;
    if (request(c, h, s, "PUT", service, id, "", body, c->connect_timeout_ms + REQUEST_EXTRA_MS, abort_flag, out) == 0 &&
        out->status < 500)
      return 0;
    if (abort_flag && atomic_load(abort_flag)) break;
    atomic_store(&c->reg_server, (unsigned)((s + 1) % c->nservers));
  }
  return -1;
}

int gray_client_register(gray_client_t *c, const gray_instance_t *in, gray_error_t *err) {
  int rc, ttl_s;
  char *text;
  if (!c || !in) return gray__seterr(err, GRAY_EINVAL, "", "client and instance are required");
  if ((rc = check_name("service", in->service, err)) != GRAY_OK || (rc = check_name("id", in->id, err)) != GRAY_OK ||
      (rc = check_name("version", in->version, err)) != GRAY_OK)
    return rc;
  if (!in->address || !gray__host_valid(in->address))
    return gray__seterr(err, GRAY_EINVAL, "address", "must be an IP address or a host name");
  if (in->port < 1 || in->port > 65535) return gray__seterr(err, GRAY_EINVAL, "port", "must be 1..65535");
  if (in->ttl_s < 0 || in->ttl_s > 3600) return gray__seterr(err, GRAY_EINVAL, "ttl_s", "must be 1..3600 (0: 15)");
  ttl_s = in->ttl_s ? in->ttl_s : 15;
  if (c->state == 2) return gray__seterr(err, GRAY_EINVAL, "", "the client is stopped");
  if ((rc = make_body(in, ttl_s, &text, err)) != GRAY_OK) return rc;

  /* Record it first, so the registry thread retries whatever happens. */
  pthread_mutex_lock(&c->reg_mu);
  gray__reg *r = find_reg(c, in->service, in->id);
  if (!r) {
    if (c->nregs == GRAY__REGS_MAX) {
      pthread_mutex_unlock(&c->reg_mu);
      gray__json_free(text);
      return gray__seterr(err, GRAY_ELIMIT, "", "at most %d registrations per client", GRAY__REGS_MAX);
    }
    r = &c->regs[c->nregs++];
    memset(r, 0, sizeof(*r));
    snprintf(r->service, sizeof r->service, "%s", in->service);
    snprintf(r->id, sizeof r->id, "%s", in->id);
  }
  gray__free(r->body);
  r->body = gray__malloc(strlen(text) + 1);
  if (!r->body) {
    drop_reg(c, r);
    pthread_mutex_unlock(&c->reg_mu);
    gray__json_free(text);
    return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  }
  memcpy(r->body, text, strlen(text) + 1);
  r->ttl_s = ttl_s;
  r->registered = 0;
  r->backoff_ms = c->backoff_min_ms;
  r->next_ms = INT64_MAX; /* ours until the synchronous attempt is done */
  unsigned gen = ++r->gen;
  pthread_mutex_unlock(&c->reg_mu);

  call res;
  CURL *h = gray__http_new(c);
  int net = h ? put_register(c, h, in->service, in->id, text, 1, NULL, &res) : -1;
  if (!h) snprintf(res.why, sizeof res.why, "cannot create a libcurl handle");
  if (h) curl_easy_cleanup(h);
  gray__json_free(text);

  pthread_mutex_lock(&c->reg_mu);
  r = find_reg(c, in->service, in->id);
  if (r && r->gen != gen) r = NULL; /* registered again meanwhile: that call owns it */
  int64_t now = gray__mono_ms();
  if (net == 0 && res.status == 200) {
    rc = GRAY_OK;
    if (r) {
      r->registered = 1;
      r->failing = 0;
      r->next_ms = now + (int64_t)ttl_s * 1000 / 3;
    }
    gray__log(&c->lg, GRAY__INFO, "registered %s/%s (%s at %s:%d, ttl %d s)", in->service, in->id, in->version,
              in->address, in->port, ttl_s);
  } else if (net == 0 && res.status >= 400 && res.status < 500 && res.status != 401 && res.status != 403 &&
             res.status != 404) {
    /* grayd refuses the content: retrying cannot help. */
    rc = gray__seterr(err, GRAY_EINVAL, "", "grayd refused the registration: %s", res.why);
    if (r) drop_reg(c, r);
  } else {
    rc = gray__seterr(err, GRAY_EIO, "", "cannot register %s/%s now (%s); retrying in the background", in->service,
                      in->id, res.why);
    gray__log(&c->lg, GRAY__WARN, "cannot register %s/%s now (%s); retrying in the background", in->service, in->id,
              res.why);
    if (r) {
      r->failing = 1;
      r->next_ms = now + r->backoff_ms;
    }
  }
  pthread_cond_broadcast(&c->reg_cv);
  pthread_mutex_unlock(&c->reg_mu);
  return rc;
}

static void deadline(struct timespec *ts, int64_t at_ms) {
  int64_t now = gray__mono_ms();
  struct timespec cur;
  clock_gettime(CLOCK_MONOTONIC, &cur);
  int64_t d = at_ms - now;
  if (d < 0) d = 0;
  ts->tv_sec = cur.tv_sec + (time_t)(d / 1000);
  ts->tv_nsec = cur.tv_nsec + (long)(d % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* One heartbeat or registration for the entry (copied out of the lock). */
static void keep_alive(gray_client_t *c, CURL *h, const gray__reg *r, const char *body, int *ok, int *registered,
                       char *why, size_t whysz) {
  call res;
  size_t s = atomic_load(&c->reg_server) % c->nservers;
  *ok = 0;
  *registered = r->registered;
  if (r->registered) {
    if (request(c, h, s, "PUT", r->service, r->id, "/heartbeat", NULL, c->connect_timeout_ms + REQUEST_EXTRA_MS,
                &c->reg_abort, &res) != 0) {
      snprintf(why, whysz, "%s", res.why);
      atomic_store(&c->reg_server, (unsigned)((s + 1) % c->nservers));
      return;
    }
    if (res.status == 200) {
      *ok = 1;
      return;
    }
    if (res.status != 404) {
      snprintf(why, whysz, "%s", res.why);
      if (res.status >= 500) atomic_store(&c->reg_server, (unsigned)((s + 1) % c->nservers));
      return;
    }
    gray__log(&c->lg, GRAY__INFO, "grayd does not know %s/%s (restarted, evicted or deleted): registering again",
              r->service, r->id);
    *registered = 0;
  }
  if (put_register(c, h, r->service, r->id, body, 0, &c->reg_abort, &res) == 0 && res.status == 200) {
    *ok = 1;
    *registered = 1;
    return;
  }
  snprintf(why, whysz, "%s", res.why);
}

void gray__registry_poke(gray_client_t *c) {
  pthread_mutex_lock(&c->reg_mu);
  int64_t now = gray__mono_ms();
  for (size_t i = 0; i < c->nregs; i++)
    if (c->regs[i].next_ms != INT64_MAX && c->regs[i].next_ms > now) c->regs[i].next_ms = now;
  pthread_cond_broadcast(&c->reg_cv);
  pthread_mutex_unlock(&c->reg_mu);
}

void *gray__registry_main(void *arg) {
  gray_client_t *c = arg;
  CURL *h = gray__http_new(c);
  if (!h) {
    gray__log(&c->lg, GRAY__ERROR, "registry: cannot create a libcurl handle; no heartbeats");
    return NULL;
  }
  pthread_mutex_lock(&c->reg_mu);
  while (!c->reg_stop) {
    gray__reg *due = NULL;
    for (size_t i = 0; i < c->nregs; i++)
      if (!due || c->regs[i].next_ms < due->next_ms) due = &c->regs[i];
    int64_t now = gray__mono_ms();
    if (!due || due->next_ms == INT64_MAX) {
      pthread_cond_wait(&c->reg_cv, &c->reg_mu);
      continue;
    }
    if (due->next_ms > now) {
      struct timespec ts;
      deadline(&ts, due->next_ms);
      pthread_cond_timedwait(&c->reg_cv, &c->reg_mu, &ts);
      continue;
    }
    gray__reg copy = *due;
    char *body = gray__malloc(strlen(due->body) + 1);
    if (!body) {
      due->next_ms = now + 1000;
      continue;
    }
    memcpy(body, due->body, strlen(due->body) + 1);
    copy.body = body;
    due->next_ms = INT64_MAX; /* in flight */
    pthread_mutex_unlock(&c->reg_mu);

    int ok, registered;
    char why[CURL_ERROR_SIZE + 64] = "";
    keep_alive(c, h, &copy, body, &ok, &registered, why, sizeof why);
    gray__free(body);

    pthread_mutex_lock(&c->reg_mu);
    gray__reg *r = find_reg(c, copy.service, copy.id);
    if (!r || r->gen != copy.gen) continue; /* registered again meanwhile */
    now = gray__mono_ms();
    int beat = r->ttl_s * 1000 / 3;
    if (beat < 1) beat = 1;
    r->registered = registered;
    if (ok) {
      if (!copy.registered)
        gray__log(&c->lg, GRAY__INFO, "registered %s/%s (ttl %d s)", r->service, r->id, r->ttl_s);
      else if (r->failing)
        gray__log(&c->lg, GRAY__INFO, "heartbeats of %s/%s reach grayd again", r->service, r->id);
      r->failing = 0;
      r->backoff_ms = c->backoff_min_ms;
      r->next_ms = now + beat;
    } else if (!c->reg_stop) {
      if (!r->failing)
        gray__log(&c->lg, GRAY__WARN, "registry: cannot %s %s/%s: %s; retrying", registered ? "renew" : "register",
                  r->service, r->id, why);
      r->failing = 1;
      int wait = r->backoff_ms;
      if (registered && wait > beat) wait = beat;
      r->next_ms = now + wait;
      r->backoff_ms = r->backoff_ms > c->backoff_max_ms / 2 ? c->backoff_max_ms : r->backoff_ms * 2;
    }
  }
  pthread_mutex_unlock(&c->reg_mu);
  curl_easy_cleanup(h);
  return NULL;
}

void gray__registry_deregister_all(gray_client_t *c) {
  CURL *h = NULL;
  pthread_mutex_lock(&c->reg_mu);
  for (size_t i = 0; i < c->nregs; i++) {
    gray__reg *r = &c->regs[i];
    call res;
    if (!h && !(h = gray__http_new(c))) break;
    size_t s = atomic_load(&c->reg_server) % c->nservers;
    /* Bounded by the connect timeout: stopping must not hang on grayd. */
    if (request(c, h, s, "DELETE", r->service, r->id, "", NULL, c->connect_timeout_ms, NULL, &res) != 0) {
      gray__log(&c->lg, GRAY__WARN, "cannot deregister %s/%s (%s): grayd evicts it after its TTL", r->service, r->id,
                res.why);
      break; /* unreachable: do not wait once per instance */
    }
    if (res.status == 200 || res.status == 404)
      gray__log(&c->lg, GRAY__INFO, "deregistered %s/%s", r->service, r->id);
    else
      gray__log(&c->lg, GRAY__WARN, "cannot deregister %s/%s: %s", r->service, r->id, res.why);
  }
  for (size_t i = 0; i < c->nregs; i++) gray__free(c->regs[i].body);
  c->nregs = 0;
  pthread_mutex_unlock(&c->reg_mu);
  if (h) curl_easy_cleanup(h);
}

void gray__registry_free(gray_client_t *c) {
  for (size_t i = 0; i < c->nregs; i++) gray__free(c->regs[i].body);
  c->nregs = 0;
}
