/* The client: options, lifecycle, the snapshot swap, decide and pick, tag
 * helpers.
 *
 * Reading a snapshot (decide, pick). The fast path publishes the current
 * snapshot pointer in this thread's hazard slot (hazard.c) and re-reads the
 * current pointer: when it is unchanged, the writer has not swapped it out
 * before the hazard became visible, and it will not free it while the slot
 * holds it. No lock, no reference count, no allocation; the first call on a
 * thread claims its slot. The slow path (no free slot, or a nested call
 * from inside a request lookup callback) takes a reference under swap_mu,
 * which the writer holds only for the pointer exchange.
 *
 * Writing (the watch thread, or _start loading the cache): exchange the
 * pointer under swap_mu, put the old snapshot on the retired list, and
 * release every retired snapshot that no hazard slot holds. What is still
 * held is retried on the next swap and at least once a second. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "client/internal.h"
#include "core/model.h"
#include "gray/json.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_WATCH_WAIT_S 30
#define WATCH_WAIT_MAX_S 60
#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
#define SERVER_URL_MAX 1024

/* ---- small shared helpers ----------------------------------------------- */

void gray__log(const gray__logger *lg, int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  if (!lg || !lg->fn) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lg->fn(lg->arg, level, msg);
}

int gray__seterr(gray_error_t *err, int code, const char *path, const char *fmt, ...) {
  va_list ap;
  if (!err) return code;
  err->code = (gray_err_t)code;
  snprintf(err->path, sizeof err->path, "%s", path ? path : "");
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  return code;
}

void gray__json_free(void *p) {
  json_malloc_t m;
  json_free_t f;
  if (!p) return;
  json_get_alloc_funcs(&m, &f);
  f(p);
}

int64_t gray__mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dupstr(const char *s, size_t n) {
  char *p = gray__malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* ---- options ------------------------------------------------------------- */

void gray_client_options_init(gray_client_options_t *o) {
  if (o) memset(o, 0, sizeof(*o));
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static int g_curl_ok;
static void curl_init_once(void) { g_curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }

/* A token goes into a header: printable ASCII without spaces only. */
static int token_ok(const char *t) {
  if (!*t) return 0;
  for (; *t; t++)
    if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) return 0;
  return 1;
}

/* Host part of an http(s) base URL, into buf. */
static void url_host(const char *url, char *buf, size_t size) {
  const char *p = strstr(url, "://");
  size_t n = 0;
  p = p ? p + 3 : url;
  if (*p == '[') {
    p++;
    while (p[n] && p[n] != ']') n++;
  } else {
    while (p[n] && p[n] != ':' && p[n] != '/') n++;
  }
  if (n >= size) n = size - 1;
  memcpy(buf, p, n);
  buf[n] = '\0';
}

static int is_loopback(const char *host) {
  struct in_addr a4;
  struct in6_addr a6;
  if (!strcasecmp(host, "localhost")) return 1;
  if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
  return 0;
}

static int add_server(gray_client_t *c, const char *s, size_t n, gray_error_t *err) {
  while (n && (s[0] == ' ' || s[0] == '\t')) s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  while (n && s[n - 1] == '/') n--;
  int http = n > 7 && !strncasecmp(s, "http://", 7), https = n > 8 && !strncasecmp(s, "https://", 8);
  if (!http && !https)
    return gray__seterr(err, GRAY_EINVAL, "servers", "each server must be an http:// or https:// URL");
  if (n > SERVER_URL_MAX) return gray__seterr(err, GRAY_EINVAL, "servers", "a server URL is too long");
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '?' || s[i] == '#' || s[i] == '@')
      return gray__seterr(err, GRAY_EINVAL, "servers",
                          "a server is a base URL without spaces, user, query or fragment "
                          "(example: http://127.0.0.1:7070)");
  if (c->nservers == GRAY__SERVERS_MAX)
    return gray__seterr(err, GRAY_EINVAL, "servers", "at most %d servers", GRAY__SERVERS_MAX);
  if (!(c->servers[c->nservers] = dupstr(s, n))) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  c->nservers++;
  return GRAY_OK;
}

static int parse_follow(gray_client_t *c, const char *text, gray_error_t *err) {
  size_t n = strlen(text), i = 0, k = 0;
  char msg[GRAY_ERROR_TEXT_MAX];
  if (n > GRAY__FOLLOW_TEXT_MAX)
    return gray__seterr(err, GRAY_EINVAL, "services", "longer than %d bytes", GRAY__FOLLOW_TEXT_MAX);
  if (!(c->follow_text = gray__malloc(n + 1))) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  while (i <= n) {
    size_t j = i;
    while (j < n && text[j] != ',') j++;
    size_t a = i, b = j;
    while (a < b && text[a] == ' ') a++;
    while (b > a && text[b - 1] == ' ') b--;
    gray_str_t name = {text + a, b - a};
    if (gray__check_name(name, msg, sizeof msg) != GRAY_OK)
      return gray__seterr(err, GRAY_EINVAL, "services", "service %zu: %s", c->nfollow + 1, msg);
    if (c->nfollow == GRAY__FOLLOW_MAX)
      return gray__seterr(err, GRAY_EINVAL, "services", "at most %d services", GRAY__FOLLOW_MAX);
    if (!(c->follow[c->nfollow] = dupstr(name.p, name.len))) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    c->nfollow++;
    if (k) c->follow_text[k++] = ',';
    memcpy(c->follow_text + k, name.p, name.len);
    k += name.len;
    i = j + 1;
  }
  c->follow_text[k] = '\0';
  return GRAY_OK;
}

static int make_headers(gray_client_t *c, gray_error_t *err) {
  struct curl_slist *a = NULL, *b = NULL, *t;
  if (c->token) {
    size_t n = strlen(c->token) + 32;
    char *line = gray__malloc(n);
    if (!line) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    snprintf(line, n, "Authorization: Bearer %s", c->token);
    a = curl_slist_append(NULL, line);
    b = a ? curl_slist_append(NULL, line) : NULL;
    memset(line, 0, n);
    gray__free(line);
    if (!a || !b) goto nomem;
  }
  /* No "Expect: 100-continue" round trip for small bodies. */
  if (!(t = curl_slist_append(a, "Expect:"))) goto nomem;
  a = t;
  if (!(t = curl_slist_append(b, "Expect:"))) goto nomem;
  b = t;
  if (!(t = curl_slist_append(b, "Content-Type: application/json"))) goto nomem;
  b = t;
  c->hdrs = a;
  c->json_hdrs = b;
  return GRAY_OK;
nomem:
  curl_slist_free_all(a);
  curl_slist_free_all(b);
  return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
}

static int init_cond(pthread_cond_t *cv) {
  pthread_condattr_t at;
  int rc = pthread_condattr_init(&at);
  if (rc) return rc;
  rc = pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
  if (!rc) rc = pthread_cond_init(cv, &at);
  pthread_condattr_destroy(&at);
  return rc;
}

int gray_client_new(const gray_client_options_t *o, gray_client_t **out, gray_error_t *err) {
  gray_client_t *c = NULL;
  int rc = GRAY_OK;
  if (out) *out = NULL;
  if (!o || !out) return gray__seterr(err, GRAY_EINVAL, "", "options and out are required");
  if (!o->servers || !*o->servers) return gray__seterr(err, GRAY_EINVAL, "servers", "at least one grayd URL is required");
  if (o->connect_timeout_ms < 0 || o->watch_wait_s < 0 || o->backoff_min_ms < 0 || o->backoff_max_ms < 0)
    return gray__seterr(err, GRAY_EINVAL, "", "timeouts must not be negative (0 means the default)");
  if (o->token && !token_ok(o->token))
    return gray__seterr(err, GRAY_EINVAL, "token", "a token is printable ASCII without spaces");
  pthread_once(&g_curl_once, curl_init_once);
  if (!g_curl_ok) return gray__seterr(err, GRAY_EIO, "", "libcurl failed to initialize");

  c = gray__calloc(1, sizeof(*c));
  if (!c) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  c->watch_wait_s = o->watch_wait_s ? o->watch_wait_s : DEFAULT_WATCH_WAIT_S;
  if (c->watch_wait_s > WATCH_WAIT_MAX_S) c->watch_wait_s = WATCH_WAIT_MAX_S;
  c->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
  c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
  if (c->backoff_max_ms < c->backoff_min_ms) {
    if (o->backoff_max_ms) {
      gray_client_free(c);
      return gray__seterr(err, GRAY_EINVAL, "backoff_max_ms", "must not be below backoff_min_ms");
    }
    c->backoff_max_ms = c->backoff_min_ms;
  }
  c->lg.fn = o->log;
  c->lg.arg = o->log_arg;
  c->on_change = o->on_change;
  c->on_change_arg = o->on_change_arg;
  atomic_init(&c->cur, NULL);
  atomic_init(&c->revision, 0);
  atomic_init(&c->stopping, 0);
  atomic_init(&c->reg_abort, 0);
  atomic_init(&c->reg_server, 0);
  for (size_t i = 0; i < GRAY__RR_SLOTS; i++) atomic_init(&c->rr[i], 0);
  pthread_mutex_init(&c->swap_mu, NULL);
  pthread_mutex_init(&c->write_mu, NULL);
  pthread_mutex_init(&c->ready_mu, NULL);
  pthread_mutex_init(&c->reg_mu, NULL);
  if (init_cond(&c->ready_cv) || init_cond(&c->reg_cv)) {
    /* Only fails on resources; nothing else to undo but what free does. */
    gray__free(c);
    return gray__seterr(err, GRAY_ENOMEM, "", "out of resources for a condition variable");
  }

  for (const char *s = o->servers;;) {
    const char *comma = strchr(s, ',');
    size_t n = comma ? (size_t)(comma - s) : strlen(s);
    if ((rc = add_server(c, s, n, err)) != GRAY_OK) goto fail;
    if (!comma) break;
    s = comma + 1;
  }
  if (o->token && !(c->token = dupstr(o->token, strlen(o->token)))) goto nomem;
  if (o->ca_file && !(c->ca_file = dupstr(o->ca_file, strlen(o->ca_file)))) goto nomem;
  if (o->cache_path && *o->cache_path && !(c->cache_path = dupstr(o->cache_path, strlen(o->cache_path)))) goto nomem;
  if (o->services && *o->services && (rc = parse_follow(c, o->services, err)) != GRAY_OK) goto fail;
  if ((rc = make_headers(c, err)) != GRAY_OK) goto fail;
  c->model = gray__model_new(c->follow_text ? c->follow : NULL, c->nfollow, &c->lg);
  if (!c->model) goto nomem;
  *out = c;
  return GRAY_OK;
nomem:
  rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
fail:
  gray_client_free(c);
  return rc;
}

/* ---- the swap ------------------------------------------------------------ */

static void reclaim_locked(gray_client_t *c) {
  size_t k = 0;
  for (size_t i = 0; i < c->nretired; i++) {
    if (gray__hp_protected(c->retired[i])) c->retired[k++] = c->retired[i];
    else gray__snapshot_release(c->retired[i]);
  }
  c->nretired = k;
}

void gray__client_reclaim(gray_client_t *c) {
  pthread_mutex_lock(&c->write_mu);
  reclaim_locked(c);
  pthread_mutex_unlock(&c->write_mu);
}

void gray__client_publish(gray_client_t *c, gray__snapshot *s) {
  pthread_mutex_lock(&c->write_mu);
  pthread_mutex_lock(&c->swap_mu);
  gray__snapshot *old = atomic_exchange_explicit(&c->cur, s, memory_order_seq_cst);
  pthread_mutex_unlock(&c->swap_mu);
  atomic_store_explicit(&c->revision, s ? s->revision : 0, memory_order_release);
  if (old) {
    if (c->nretired == c->cap_retired) {
      size_t cap = c->cap_retired ? c->cap_retired * 2 : 8;
      gray__snapshot **r = gray__realloc(c->retired, cap * sizeof(*r));
      if (r) {
        c->retired = r;
        c->cap_retired = cap;
      }
    }
    if (c->nretired < c->cap_retired) {
      c->retired[c->nretired++] = old;
    } else {
      /* No memory for the list: wait the readers out (they hold a hazard
       * for one decision, well under a microsecond). */
      while (gray__hp_protected(old)) sched_yield();
      gray__snapshot_release(old);
    }
  }
  reclaim_locked(c);
  pthread_mutex_unlock(&c->write_mu);
  if (s) {
    pthread_mutex_lock(&c->ready_mu);
    c->ready = 1;
    pthread_cond_broadcast(&c->ready_cv);
    pthread_mutex_unlock(&c->ready_mu);
  }
}

int gray__client_publish_model(gray_client_t *c, gray_error_t *err) {
  gray__snapshot *s;
  int rc = gray__model_snapshot(c->model, &s, err);
  if (rc != GRAY_OK) return rc;
  gray__client_publish(c, s);
  if (c->on_change) {
    size_t len = 0;
    char *doc = gray__model_dump(c->model, &len);
    if (doc)
      c->on_change(c->on_change_arg, c->model->revision, doc, len);
    else
      gray__log(&c->lg, GRAY__ERROR, "out of memory: the change hook missed revision %lld",
                (long long)c->model->revision);
    gray__json_free(doc);
  }
  return rc;
}

/* Enter: the current snapshot (NULL when none) and how it is held. */
static gray__snapshot *enter(gray_client_t *c, gray__hp_slot **slot) {
  gray__hp_slot *h = gray__hp_slot_get();
  gray__snapshot *s;
  if (h && !atomic_load_explicit(&h->ptr, memory_order_relaxed)) {
    *slot = h;
    s = atomic_load_explicit(&c->cur, memory_order_acquire);
    for (;;) {
      if (!s) {
        atomic_store_explicit(&h->ptr, NULL, memory_order_release);
        return NULL;
      }
      atomic_store_explicit(&h->ptr, s, memory_order_seq_cst);
      gray__snapshot *again = atomic_load_explicit(&c->cur, memory_order_seq_cst);
      if (again == s) return s;
      s = again;
    }
  }
  /* Slow path: no slot for this thread, or a nested call (a request
   * lookup callback deciding again) whose slot is busy. */
  *slot = NULL;
  pthread_mutex_lock(&c->swap_mu);
  s = gray__snapshot_ref(atomic_load_explicit(&c->cur, memory_order_acquire));
  pthread_mutex_unlock(&c->swap_mu);
  return s;
}

static void leave(gray__snapshot *s, gray__hp_slot *slot) {
  if (slot) atomic_store_explicit(&slot->ptr, NULL, memory_order_release);
  else gray__snapshot_release(s);
}

/* ---- cache ---------------------------------------------------------------- */

int gray__client_load_cache(gray_client_t *c) {
  char *payload = NULL;
  size_t len = 0;
  gray_error_t e;
  json_t *doc = NULL;
  int loaded = 0, rc;
  if (!c->cache_path) return 0;
  rc = gray__cache_read(c->cache_path, &payload, &len, &e);
  if (rc == GRAY_ENOTFOUND) {
    gray__log(&c->lg, GRAY__INFO, "no cache file at %s yet", c->cache_path);
    goto out;
  }
  if (rc != GRAY_OK) {
    gray__log(&c->lg, GRAY__WARN, "ignoring the cache file: %s", e.message);
    goto out;
  }
  json_error_t jerr;
  doc = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!doc) {
    gray__log(&c->lg, GRAY__WARN, "ignoring the cache file %s: not JSON (%s)", c->cache_path, jerr.text);
    goto out;
  }
  if ((rc = gray__model_reset(c->model, doc, &e)) != GRAY_OK ||
      (rc = gray__client_publish_model(c, &e)) != GRAY_OK) {
    char msg[GRAY_ERROR_PATH_MAX + GRAY_ERROR_TEXT_MAX];
    gray__log(&c->lg, GRAY__WARN, "ignoring the cache file %s: %s", c->cache_path,
              gray_error_format(&e, msg, sizeof msg));
    goto out;
  }
  gray__log(&c->lg, GRAY__INFO, "loaded revision %lld (store %s) from the cache file %s",
            (long long)c->model->revision, c->model->store_id, c->cache_path);
  loaded = 1;
out:
  json_decref(doc);
  gray__free(payload);
  return loaded;
}

void gray__client_write_cache(gray_client_t *c) {
  size_t len = 0;
  gray_error_t e;
  if (!c->cache_path) return;
  char *text = gray__model_dump(c->model, &len);
  if (!text) {
    gray__log(&c->lg, GRAY__WARN, "cache: out of memory; will retry");
    return;
  }
  if (gray__cache_write(c->cache_path, text, len, &e) != GRAY_OK) {
    gray__log(&c->lg, GRAY__WARN, "cache: %s; will retry", e.message);
  } else {
    gray__log(&c->lg, GRAY__DEBUG, "cache: wrote revision %lld to %s", (long long)c->model->revision,
              c->cache_path);
    c->cache_dirty = 0;
  }
  c->cache_written_ms = gray__mono_ms();
  gray__json_free(text);
}

/* ---- lifecycle ------------------------------------------------------------ */

int gray_client_start(gray_client_t *c, gray_error_t *err) {
  if (!c) return gray__seterr(err, GRAY_EINVAL, "", "no client");
  if (c->state != 0)
    return gray__seterr(err, GRAY_EINVAL, "", "%s", c->state == 1 ? "already started" : "stopped; make a new client");
  if (c->token) {
    for (size_t i = 0; i < c->nservers; i++) {
      char host[256];
      url_host(c->servers[i], host, sizeof host);
      if (!strncasecmp(c->servers[i], "http://", 7) && !is_loopback(host))
        gray__log(&c->lg, GRAY__WARN,
                  "%s is plain http and not loopback: the token travels in clear text (use https://)",
                  c->servers[i]);
    }
  }
  gray__client_load_cache(c);
  c->multi = curl_multi_init();
  if (!c->multi) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  if (pthread_create(&c->watch_thread, NULL, gray__watch_main, c) != 0) {
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    return gray__seterr(err, GRAY_EIO, "", "cannot start the watch thread: %s", strerror(errno));
  }
  c->watch_running = 1;
  if (pthread_create(&c->reg_thread, NULL, gray__registry_main, c) != 0) {
    gray_client_stop(c);
    return gray__seterr(err, GRAY_EIO, "", "cannot start the registry thread: %s", strerror(errno));
  }
  c->reg_running = 1;
  c->state = 1;
  return GRAY_OK;
}

int gray_client_wait_ready(gray_client_t *c, int timeout_ms) {
  struct timespec dl;
  int ready;
  if (!c) return GRAY_EINVAL;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  if (timeout_ms > 0) {
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&c->ready_mu);
  while (!c->ready && timeout_ms != 0) {
    int rc = timeout_ms < 0 ? pthread_cond_wait(&c->ready_cv, &c->ready_mu)
                            : pthread_cond_timedwait(&c->ready_cv, &c->ready_mu, &dl);
    if (rc == ETIMEDOUT) break;
  }
  ready = c->ready;
  pthread_mutex_unlock(&c->ready_mu);
  return ready ? GRAY_OK : GRAY_ENOTFOUND;
}

void gray_client_stop(gray_client_t *c) {
  if (!c || c->state == 2) return;
  atomic_store(&c->stopping, 1);
  atomic_store(&c->reg_abort, 1);
  if (c->watch_running) {
    curl_multi_wakeup(c->multi);
    pthread_join(c->watch_thread, NULL);
    c->watch_running = 0;
  }
  pthread_mutex_lock(&c->reg_mu);
  c->reg_stop = 1;
  pthread_cond_broadcast(&c->reg_cv);
  pthread_mutex_unlock(&c->reg_mu);
  if (c->reg_running) {
    pthread_join(c->reg_thread, NULL);
    c->reg_running = 0;
  }
  atomic_store(&c->reg_abort, 0);
  gray__registry_deregister_all(c);
  if (c->multi) {
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
  }
  c->state = 2;
}

void gray_client_free(gray_client_t *c) {
  if (!c) return;
  gray_client_stop(c);
  /* No reader may run now (the contract), so nothing is under a hazard
   * but, possibly, a slot a thread left between calls: none. */
  gray__snapshot *s = atomic_exchange(&c->cur, NULL);
  pthread_mutex_lock(&c->write_mu);
  for (size_t i = 0; i < c->nretired; i++) gray__snapshot_release(c->retired[i]);
  gray__free(c->retired);
  pthread_mutex_unlock(&c->write_mu);
  gray__snapshot_release(s);
  gray__registry_free(c);
  gray__model_free(c->model);
  curl_slist_free_all(c->hdrs);
  curl_slist_free_all(c->json_hdrs);
  for (size_t i = 0; i < c->nservers; i++) gray__free(c->servers[i]);
  for (size_t i = 0; i < c->nfollow; i++) gray__free(c->follow[i]);
  if (c->token) {
    memset(c->token, 0, strlen(c->token));
    gray__free(c->token);
  }
  gray__free(c->ca_file);
  gray__free(c->cache_path);
  gray__free(c->follow_text);
  pthread_mutex_destroy(&c->swap_mu);
  pthread_mutex_destroy(&c->write_mu);
  pthread_mutex_destroy(&c->ready_mu);
  pthread_mutex_destroy(&c->reg_mu);
  pthread_cond_destroy(&c->ready_cv);
  pthread_cond_destroy(&c->reg_cv);
  gray__free(c);
}

int64_t gray_client_revision(gray_client_t *c) {
  return c ? (int64_t)atomic_load_explicit(&c->revision, memory_order_acquire) : 0;
}

/* ---- decide and pick ------------------------------------------------------ */

static void copy_name(char dst[64], gray_str_t s) {
  size_t n = s.p ? s.len : 0;
  if (n > 63) n = 63;
  if (n) memcpy(dst, s.p, n);
  dst[n] = '\0';
}

static void copy_cstr(char *dst, size_t size, const char *s) {
  size_t n = strlen(s);
  if (n >= size) n = size - 1;
  memcpy(dst, s, n);
  dst[n] = '\0';
}

static const gray_kv_request_t g_empty_kv;

int gray_client_decide(gray_client_t *c, const char *service, const gray_request_t *req,
                       gray_client_decision_t *out) {
  gray__hp_slot *slot;
  gray_decision_t d;
  gray_request_t empty;
  if (!out) return GRAY_EINVAL;
  out->service[0] = out->version[0] = out->tag[0] = out->rule[0] = '\0';
  out->fallback_fail = 0;
  out->revision = 0;
  if (!c || !service) return GRAY_EINVAL;
  if (!req) {
    empty.lookup = gray_kv_lookup;
    empty.ctx = (void *)&g_empty_kv;
    req = &empty;
  }
  gray__snapshot *s = enter(c, &slot);
  if (!s) return GRAY_ENOTFOUND;
  const gray_policy_t *p = gray__snapshot_policy(s, service);
  int rc = GRAY_ENOTFOUND;
  if (p) {
    gray_decide(p, req, &d);
    copy_name(out->service, d.service);
    copy_name(out->version, d.version);
    copy_name(out->tag, d.tag);
    copy_name(out->rule, d.rule);
    out->fallback_fail = d.fallback_fail;
    out->revision = s->revision;
    rc = GRAY_OK;
  }
  leave(s, slot);
  return rc;
}

int gray_client_pick(gray_client_t *c, const char *service, const char *version, gray_endpoint_t *out) {
  gray__hp_slot *slot;
  if (!out) return GRAY_EINVAL;
  out->id[0] = out->address[0] = out->version[0] = '\0';
  out->port = 0;
  out->fell_back = 0;
  if (!c || !service || !version) return GRAY_EINVAL;
  gray__snapshot *s = enter(c, &slot);
  if (!s) return GRAY_ENOTFOUND;
  int rc = GRAY_ENOTFOUND, fell_back = 0;
  const gray__vgroup *g = gray__registry_find(s->reg, service, version);
  if (!g) {
    /* The version has no live instance: the policy's default, unless it
     * says "fallback": "fail". No policy, no default. */
    const gray_policy_t *p = gray__snapshot_policy(s, service);
    if (p && !gray_policy_fallback_fail(p) && strcmp(gray_policy_default(p), version)) {
      g = gray__registry_find(s->reg, service, gray_policy_default(p));
      fell_back = 1;
    }
  }
  if (g && g->count) {
    unsigned n = atomic_fetch_add_explicit(&c->rr[g->rr], 1u, memory_order_relaxed);
    const gray__inst *in = &s->reg->insts[g->first + n % g->count];
    copy_cstr(out->id, sizeof out->id, in->id);
    copy_cstr(out->address, sizeof out->address, in->address);
    copy_cstr(out->version, sizeof out->version, in->version);
    out->port = in->port;
    out->fell_back = fell_back;
    rc = GRAY_OK;
  }
  leave(s, slot);
  return rc;
}

/* ---- tags ----------------------------------------------------------------- */

int gray_tag_valid(const char *tag, size_t len) {
  char msg[GRAY_ERROR_TEXT_MAX];
  if (!tag) return 0;
  gray_str_t s = {tag, len};
  return gray__check_name(s, msg, sizeof msg) == GRAY_OK;
}

size_t gray_tag_header_line(const gray_client_decision_t *d, char *buf, size_t size) {
  static const char prefix[] = GRAY_TAG_HEADER ": ";
  if (!d || !buf) return 0;
  size_t n = strnlen(d->tag, sizeof d->tag);
  if (n == 0 || n == sizeof d->tag || !gray_tag_valid(d->tag, n)) {
    if (size) buf[0] = '\0';
    return 0;
  }
  size_t total = sizeof(prefix) - 1 + n;
  if (total + 1 > size) {
    if (size) buf[0] = '\0';
    return 0;
  }
  memcpy(buf, prefix, sizeof(prefix) - 1);
  memcpy(buf + sizeof(prefix) - 1, d->tag, n);
  buf[total] = '\0';
  return total;
}
