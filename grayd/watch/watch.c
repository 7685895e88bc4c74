/* Watch: a window of recent events and the long-poll watchers parked on it.
 * Each event is serialized once; a wake-up builds one answer per distinct
 * (since, filter) and sends it to every watcher that shares it. */
#include "watch/watch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/model.h"
#include "registry/registry.h"

#define MAX_FILTER 64
#define WAIT_DEFAULT_MS 30000
#define WAIT_MAX_MS 60000

typedef struct wevent {
  int64_t rev;
  char *service;
  char *json; /* the event object, compact */
  size_t len;
} wevent;

typedef struct watcher {
  struct watcher *prev, *next;
  gd_watch *w;
  gd_req *req;
  int64_t since;
  char **services; /* NULL: all */
  size_t nservices;
  struct event *timer;
} watcher;

struct gd_watch {
  gd_state *s;
  wevent *ring;
  size_t cap, start, count;
  int64_t floor; /* events after floor are all in the ring */
  watcher *head;
  int nwatchers, max_watchers;
};

gd_watch *gd_watch_new(gd_state *s, size_t window, int max_watchers) {
  gd_watch *w = calloc(1, sizeof(*w));
  if (!w) abort();
  w->s = s;
  w->cap = window ? window : 10000;
  w->ring = calloc(w->cap, sizeof(*w->ring));
  if (!w->ring) abort();
  w->floor = s->revision;
  w->max_watchers = max_watchers;
  return w;
}

static void watcher_free(watcher *x) {
  gd_watch *w = x->w;
  if (x->prev) x->prev->next = x->next;
  else w->head = x->next;
  if (x->next) x->next->prev = x->prev;
  w->nwatchers--;
  if (x->timer) event_free(x->timer);
  for (size_t i = 0; i < x->nservices; i++) free(x->services[i]);
  free(x->services);
  free(x);
}

void gd_watch_free(gd_watch *w) {
  if (!w) return;
  while (w->head) {
    gd_req_on_abort(w->head->req, NULL, NULL);
    watcher_free(w->head);
  }
  for (size_t i = 0; i < w->count; i++) {
    wevent *e = &w->ring[(w->start + i) % w->cap];
    free(e->service);
    free(e->json);
  }
  free(w->ring);
  free(w);
}

int gd_watch_count(const gd_watch *w) { return w->nwatchers; }

static int wants(const watcher *x, const char *service) {
  if (!x->services) return 1;
  for (size_t i = 0; i < x->nservices; i++)
    if (!strcmp(x->services[i], service)) return 1;
  return 0;
}

/* Events after `since` for this watcher's filter, as {"store_id",...}. */
static char *answer(gd_watch *w, const watcher *x, int64_t since, size_t *len, int *nev) {
  size_t cap = 256, n = 0;
  char *buf = malloc(cap);
  if (!buf) abort();
  int k = snprintf(buf, cap, "{\"store_id\":\"%s\",\"revision\":%lld,\"events\":[", w->s->store_id,
                   (long long)w->s->revision);
  n = (size_t)k;
  *nev = 0;
  /* Binary search would do; windows are small and wakes are rare. */
  for (size_t i = 0; i < w->count; i++) {
    wevent *e = &w->ring[(w->start + i) % w->cap];
    if (e->rev <= since || !wants(x, e->service)) continue;
    if (n + e->len + 8 > cap) {
      while (n + e->len + 8 > cap) cap *= 2;
      char *nb = realloc(buf, cap);
      if (!nb) abort();
      buf = nb;
    }
    if (*nev) buf[n++] = ',';
    memcpy(buf + n, e->json, e->len);
    n += e->len;
    (*nev)++;
  }
  if (n + 4 > cap) {
    char *nb = realloc(buf, cap + 8);
    if (!nb) abort();
    buf = nb;
  }
  memcpy(buf + n, "]}\n", 3);
  n += 3;
  *len = n;
  return buf;
}

static void reply_and_free(watcher *x, const char *body, size_t len) {
  gd_call c;
  memset(&c, 0, sizeof c);
  c.s = x->w->s;
  c.req = x->req;
  c.route = GD_R_WATCH;
  gd_req_on_abort(x->req, NULL, NULL);
  gd_reply_raw(&c, 200, body, len, NULL);
  watcher_free(x);
}

void gd_watch_event(gd_watch *w, int64_t rev, const char *type, const char *service, const char *id,
                    const char *key, json_t *payload) {
  json_t *o = json_pack("{s:I,s:s,s:s}", "revision", (json_int_t)rev, "type", type, "service", service);
  if (!o) abort();
  if (id) json_object_set_new(o, "id", json_string(id));
  if (key && payload) json_object_set_new(o, key, payload);
  else json_decref(payload);
  char *text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!text) abort();
  if (w->count == w->cap) {
    wevent *old = &w->ring[w->start];
    w->floor = old->rev;
    free(old->service);
    free(old->json);
    w->start = (w->start + 1) % w->cap;
    w->count--;
  }
  wevent *e = &w->ring[(w->start + w->count) % w->cap];
  e->rev = rev;
  e->service = strdup(service);
  if (!e->service) abort();
  e->json = text;
  e->len = strlen(text);
  w->count++;

  /* Wake watchers. Unfiltered watchers with the same `since` share one
   * answer: the usual case is thousands of them at the previous revision. */
  int64_t cached_since = -1;
  char *cached = NULL;
  size_t cached_len = 0;
  watcher *x = w->head;
  while (x) {
    watcher *next = x->next;
    if (wants(x, service)) {
      int nev;
      if (!x->services) {
        if (x->since != cached_since) {
          free(cached);
          cached = answer(w, x, x->since, &cached_len, &nev);
          cached_since = x->since;
        }
        reply_and_free(x, cached, cached_len);
      } else {
        size_t len;
        char *body = answer(w, x, x->since, &len, &nev);
        reply_and_free(x, body, len);
        free(body);
      }
    }
    x = next;
  }
  free(cached);
}

static void on_abort(gd_req *req, void *arg) {
  (void)req;
  watcher_free(arg);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
  watcher *x = arg;
  (void)fd;
  (void)what;
  size_t len;
  int nev;
  char *body = answer(x->w, x, x->w->s->revision, &len, &nev);
  reply_and_free(x, body, len);
  free(body);
}

json_t *gd_snapshot_json(gd_state *s) {
  gd_service_list *sl;
  size_t n = gd_registry_services(s->registry, &sl);
  json_t *svcs = json_array();
  int64_t now = gd_mono_ms();
  for (size_t i = 0; i < n; i++) {
    json_t *arr = json_array();
    for (gd_instance *in = sl[i].head; in; in = in->snext) json_array_append_new(arr, gd_instance_json(in, now));
    json_array_append_new(svcs, json_pack("{s:s,s:o}", "service", sl[i].service, "instances", arr));
  }
  return json_pack("{s:s,s:I,s:o,s:o}", "store_id", s->store_id, "revision", (json_int_t)s->revision,
                   "policies", gd_policies_set_json(s), "services", svcs);
}

void gd_api_snapshot(gd_call *c) {
  if (strcmp(gd_req_method(c->req), "GET")) {
    gd_reply_error(c, 405, "EMETHOD", "", "use GET /v1/snapshot");
    return;
  }
  gd_reply_json(c, 200, gd_snapshot_json(c->s), NULL);
}

/* "30s", "500ms", "2m" or plain seconds. */
static int parse_wait(const char *v, int64_t *ms) {
  int64_t n = 0;
  const char *p = v;
  if (!*p) return 0;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (n > 1000000) return 0;
    n = n * 10 + (*p - '0');
  }
  if (p == v) return 0;
  if (!*p || !strcmp(p, "s")) *ms = n * 1000;
  else if (!strcmp(p, "ms")) *ms = n;
  else if (!strcmp(p, "m")) *ms = n * 60000;
  else return 0;
  return 1;
}

void gd_api_watch(gd_call *c) {
  gd_state *s = c->s;
  gd_watch *w = s->watch;
  char buf[2048];
  if (strcmp(gd_req_method(c->req), "GET")) {
    gd_reply_error(c, 405, "EMETHOD", "", "use GET /v1/watch?since=REV");
    return;
  }
  int64_t since = 0, wait_ms = WAIT_DEFAULT_MS;
  if (gd_query_int(c, "since", 0, INT64_MAX, &since) < 0) return;
  if (gd_req_query_param(c->req, "wait", buf, sizeof buf)) {
    if (!parse_wait(buf, &wait_ms)) {
      gd_reply_error(c, 400, "EINVAL", "wait", "wait must be a duration like 30s, 500ms or 1m");
      return;
    }
    if (wait_ms > WAIT_MAX_MS) wait_ms = WAIT_MAX_MS;
  }
  /* Reset when the client cannot be brought up to date from the window: it
   * is new (since=0 while there is state), behind the window, or ahead of
   * this database (a restored or wiped store). */
  int reset = (since == 0 && s->revision > 0) || since < w->floor || since > s->revision;
  if (gd_req_query_param(c->req, "store", buf, sizeof buf) && strcmp(buf, s->store_id)) reset = 1;
  if (reset) {
    json_t *j = json_pack("{s:s,s:I,s:b,s:o}", "store_id", s->store_id, "revision", (json_int_t)s->revision,
                          "reset", 1, "snapshot", gd_snapshot_json(s));
    gd_reply_json(c, 200, j, NULL);
    return;
  }
  watcher *x = calloc(1, sizeof(*x));
  if (!x) abort();
  x->w = w;
  x->req = c->req;
  x->since = since;
  if (gd_req_query_param(c->req, "services", buf, sizeof buf) && buf[0]) {
    x->services = calloc(MAX_FILTER, sizeof(char *));
    if (!x->services) abort();
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      char msg[GRAY_ERROR_TEXT_MAX];
      gray_str_t sv = {tok, strlen(tok)};
      if (x->nservices == MAX_FILTER || gray__check_name(sv, msg, sizeof msg) != GRAY_OK) {
        for (size_t i = 0; i < x->nservices; i++) free(x->services[i]);
        free(x->services);
        free(x);
        gd_reply_error(c, 400, "EINVAL", "services",
                       "services must be a comma-separated list of at most 64 service names");
        return;
      }
      x->services[x->nservices] = strdup(tok);
      if (!x->services[x->nservices]) abort();
      x->nservices++;
    }
  }
  /* Anything to say right away? */
  size_t len;
  int nev;
  char *body = answer(w, x, since, &len, &nev);
  if (nev > 0) {
    for (size_t i = 0; i < x->nservices; i++) free(x->services[i]);
    free(x->services);
    free(x);
    gd_reply_raw(c, 200, body, len, NULL);
    free(body);
    return;
  }
  free(body);
  if (w->nwatchers >= w->max_watchers) {
    for (size_t i = 0; i < x->nservices; i++) free(x->services[i]);
    free(x->services);
    free(x);
    gd_reply_error(c, 503, "EBUSY", "", "too many watchers; retry with backoff");
    return;
  }
  /* A little jitter spreads the reconnects of many idle watchers. */
  int64_t jitter = wait_ms / 10 ? (int64_t)(random() % (wait_ms / 10 + 1)) : 0;
  int64_t total = wait_ms + jitter;
  struct timeval tv = {(time_t)(total / 1000), (suseconds_t)((total % 1000) * 1000)};
  x->timer = evtimer_new(s->base, on_timeout, x);
  if (!x->timer) abort();
  evtimer_add(x->timer, &tv);
  x->next = w->head;
  if (w->head) w->head->prev = x;
  w->head = x;
  w->nwatchers++;
  gd_req_on_abort(c->req, on_abort, x);
}
