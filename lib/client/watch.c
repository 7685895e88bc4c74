/* The watch thread: long-polls grayd's /v1/watch, applies the answers to
 * the model, publishes snapshots, writes the cache file.
 *
 * One libcurl easy handle inside a multi handle: the multi keeps the
 * connection alive between polls, and curl_multi_wakeup lets _stop
 * interrupt a poll (or a backoff pause) at once. On any failure the thread
 * keeps the last snapshot, moves to the next server of the list and waits
 * backoff_min_ms, doubling up to backoff_max_ms, each pause drawn between
 * half and all of it (jitter, so a fleet does not reconnect in step). */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "client/internal.h"

#define URL_MAX 4096

typedef struct wstate {
  uint64_t rng;
  size_t server;
  int backoff_ms;
  int failing;      /* in an outage: logged once, recovery logged */
  char last_why[1024]; /* what the outage looked like when logged */
} wstate;

static uint64_t next_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static int stopping(gray_client_t *c) { return atomic_load_explicit(&c->stopping, memory_order_acquire); }

static void flush_cache(gray_client_t *c, int force) {
  if (!c->cache_dirty || !c->cache_path) return;
  if (!force && gray__mono_ms() - c->cache_written_ms < GRAY__CACHE_INTERVAL_MS) return;
  gray__client_write_cache(c);
}

/* How long a poll may sleep: until a pending cache write is due, and at
 * most a second (retired snapshots are reclaimed in between). */
static int poll_ms(gray_client_t *c) {
  if (c->cache_dirty && c->cache_path) {
    int64_t due = c->cache_written_ms + GRAY__CACHE_INTERVAL_MS - gray__mono_ms();
    if (due < 0) return 0;
    if (due < 1000) return (int)due;
  }
  return 1000;
}

/* Sleep up to ms; returns early when stopping. */
static void pause_ms(gray_client_t *c, int ms) {
  int64_t end = gray__mono_ms() + ms;
  while (!stopping(c)) {
    int64_t left = end - gray__mono_ms();
    if (left <= 0) break;
    int t = poll_ms(c);
    curl_multi_poll(c->multi, NULL, 0, left < t ? (int)left : t, NULL);
    flush_cache(c, 0);
    gray__client_reclaim(c);
  }
}

static void build_url(gray_client_t *c, const wstate *w, char *url, size_t size) {
  const gray__model *m = c->model;
  /* Until there is a snapshot, ask for an answer at once: an empty grayd
   * has no reset to send, and its empty state is a state. */
  int wait = m->store_id[0] ? c->watch_wait_s : 0;
  snprintf(url, size, "%s/v1/watch?since=%lld&wait=%ds%s%s%s%s", c->servers[w->server], (long long)m->revision,
           wait, c->follow_text ? "&services=" : "", c->follow_text ? c->follow_text : "",
           m->store_id[0] ? "&store=" : "", m->store_id);
}

static void failed(gray_client_t *c, wstate *w, int level, const char *why) {
  /* Once per outage, and again when it changes character (say from
   * "unreachable" to "HTTP 401"); the rest at debug level. */
  int fresh = !w->failing || strcmp(w->last_why, why);
  gray__log(&c->lg, fresh ? level : GRAY__DEBUG, "watch: grayd %s %s; %s", c->servers[w->server], why,
            c->model->store_id[0] ? "serving the last snapshot" : "no snapshot yet");
  snprintf(w->last_why, sizeof w->last_why, "%s", why);
  w->failing = 1;
  w->server = (w->server + 1) % c->nservers;
  int half = w->backoff_ms / 2;
  int sleep_ms = half + (int)(next_rand(&w->rng) % (uint64_t)(w->backoff_ms - half + 1));
  w->backoff_ms = w->backoff_ms > c->backoff_max_ms / 2 ? c->backoff_max_ms : w->backoff_ms * 2;
  pause_ms(c, sleep_ms);
}

/* Apply one 200 answer; 0 on success. */
static int apply(gray_client_t *c, const gray__buf *body, char *why, size_t whysz) {
  gray_error_t e;
  int changed = 0;
  int64_t before = c->model->revision;
  char before_store[GRAY__STORE_ID_MAX + 1];
  memcpy(before_store, c->model->store_id, sizeof before_store);
  uint64_t resets = c->model->resets;
  int rc = gray__model_apply(c->model, body->p ? body->p : "", body->len, &changed, &e);
  if (c->model->resets != resets && before_store[0]) {
    /* grayd restarted (or its store changed): make sure it knows our
     * instances now rather than at the next heartbeat. */
    gray__log(&c->lg, GRAY__INFO, "watch: grayd sent a full snapshot (revision %lld); renewing our registrations",
              (long long)c->model->revision);
    gray__registry_poke(c);
  }
  if (changed) {
    gray_error_t pe;
    if (before_store[0] && strcmp(before_store, c->model->store_id))
      gray__log(&c->lg, GRAY__WARN, "watch: grayd's store changed (%s -> %s): replacing everything (revision %lld)",
                before_store, c->model->store_id, (long long)c->model->revision);
    if (gray__client_publish_model(c, &pe) != GRAY_OK) {
      gray__log(&c->lg, GRAY__ERROR, "watch: cannot build a snapshot: %s", pe.message);
    } else {
      c->cache_dirty = 1;
      gray__log(&c->lg, GRAY__DEBUG, "watch: revision %lld -> %lld", (long long)before,
                (long long)c->model->revision);
    }
  }
  if (rc != GRAY_OK) {
    snprintf(why, whysz, "sent a bad watch answer: %s%s%s", e.path, e.path[0] ? ": " : "", e.message);
    return -1;
  }
  return 0;
}

void *gray__watch_main(void *arg) {
  gray_client_t *c = arg;
  CURLM *multi = c->multi;
  CURL *h = gray__http_new(c);
  gray__buf body = {NULL, 0, 0, GRAY__BODY_MAX, 0};
  char url[URL_MAX], cerr[CURL_ERROR_SIZE], why[1024];
  wstate w;
  memset(&w, 0, sizeof w);
  w.rng = (uint64_t)gray__mono_ms() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)c ^ (uint64_t)(uintptr_t)&w;
  if (!w.rng) w.rng = 1;
  w.backoff_ms = c->backoff_min_ms;
  if (!h) {
    gray__log(&c->lg, GRAY__ERROR, "watch: cannot create a libcurl handle; not following grayd");
    return NULL;
  }
  long timeout_ms = ((long)c->watch_wait_s * 11 / 10 + 1) * 1000 + c->connect_timeout_ms + 5000;
  while (!stopping(c)) {
    body.len = 0;
    body.too_big = 0;
    cerr[0] = '\0';
    build_url(c, &w, url, sizeof url);
    gray__http_setup(c, h, "GET", url, NULL, &body, timeout_ms, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    if (curl_multi_add_handle(multi, h) != CURLM_OK) {
      failed(c, &w, GRAY__ERROR, "not asked: libcurl refused the request");
      continue;
    }
    int running = 1;
    while (!stopping(c)) {
      if (curl_multi_perform(multi, &running) != CURLM_OK || !running) break;
      curl_multi_poll(multi, NULL, 0, poll_ms(c), NULL);
      flush_cache(c, 0);
      gray__client_reclaim(c);
    }
    CURLcode res = CURLE_OK;
    int done = 0, left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(multi, &left))) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) {
        res = msg->data.result;
        done = 1;
      }
    }
    curl_multi_remove_handle(multi, h);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    if (stopping(c)) break;
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (!done) {
      failed(c, &w, GRAY__WARN, "unreachable: the transfer did not finish");
    } else if (res != CURLE_OK) {
      snprintf(why, sizeof why, "%s%s", body.too_big ? "answered over the size limit" : "unreachable: ",
               body.too_big ? "" : cerr[0] ? cerr : curl_easy_strerror(res));
      failed(c, &w, GRAY__WARN, why);
    } else if (status != 200) {
      char text[200];
      gray__http_error_text(&body, text, sizeof text);
      snprintf(why, sizeof why, "answered HTTP %ld%s%s", status, text[0] ? ": " : "", text);
      failed(c, &w, status == 401 || status == 403 ? GRAY__ERROR : GRAY__WARN, why);
    } else if (apply(c, &body, why, sizeof why) != 0) {
      failed(c, &w, GRAY__ERROR, why);
    } else {
      if (w.failing)
        gray__log(&c->lg, GRAY__INFO, "watch: connected to grayd %s (revision %lld)", c->servers[w.server],
                  (long long)c->model->revision);
      w.failing = 0;
      w.backoff_ms = c->backoff_min_ms;
      flush_cache(c, 0);
    }
  }
  flush_cache(c, 1);
  gray__buf_free(&body);
  curl_easy_cleanup(h);
  return NULL;
}
