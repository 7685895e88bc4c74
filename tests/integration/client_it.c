/* The client SDK against a real grayd on 127.0.0.1 (port 0).
 *
 *     client_it GRAYD TEST
 *
 * Each test starts the grayd processes it needs (--dev, a fresh data
 * directory), drives them over HTTP with libcurl, and stops them by PID.
 * Written in C rather than Python so the same program runs in the
 * ThreadSanitizer build with the SDK's threads inside it. */
#define _GNU_SOURCE /* nftw */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/internal.h" /* gray__sha256_hex, for the tokens file */
#include "gray/client.h"

extern char **environ;

static const char *g_grayd;
static char g_tmp[256];
static char g_token[65]; /* one per test, in a tokens file: survives restarts */
static pid_t g_pids[8];  /* grayd processes still running, stopped after each test */

static void die(void);

/* A failed check ends the process at once (after stopping its grayd
 * processes): the SDK's threads of the failed test are still running, and
 * a return would leave them logging into a dead stack frame. ctest runs one
 * test per process, so nothing else is lost. */
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                        \
      fputc('\n', stderr);                                                 \
      die();                                                               \
    }                                                                      \
  } while (0)

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- the SDK's log, kept for assertions ----------------------------------- */

typedef struct logbuf {
  pthread_mutex_t mu;
  char *text;
  size_t len, cap;
  const char *name;
} logbuf;

static void log_sink(void *arg, int level, const char *msg) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  logbuf *b = arg;
  char line[1200];
  int n = snprintf(line, sizeof line, "%s %s: %s\n", b->name, names[level & 3], msg);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  pthread_mutex_lock(&b->mu);
  if (level >= 1) fputs(line, stderr);
  if (b->len + (size_t)n + 1 <= b->cap) {
    memcpy(b->text + b->len, line, (size_t)n + 1);
    b->len += (size_t)n;
  }
  pthread_mutex_unlock(&b->mu);
}

static void log_init(logbuf *b, const char *name) {
  pthread_mutex_init(&b->mu, NULL);
  b->cap = 1 << 20;
  b->text = calloc(1, b->cap);
  b->len = 0;
  b->name = name;
}

static int log_has(logbuf *b, const char *needle) {
  pthread_mutex_lock(&b->mu);
  int r = strstr(b->text, needle) != NULL;
  pthread_mutex_unlock(&b->mu);
  return r;
}

static void log_free(logbuf *b) {
  free(b->text);
  pthread_mutex_destroy(&b->mu);
}

/* ---- grayd ------------------------------------------------------------------- */

typedef struct grayd {
  pid_t pid;
  int port;
  char token[128];
  char url[64];
  char log[512];
  char ca[512]; /* the certificate an https grayd serves ("" for http) */
} grayd;

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = malloc(1 << 20);
  size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
  fclose(f);
  if (buf) buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

/* A value after `key` up to a space or newline. */
static int after(const char *text, const char *key, char *out, size_t size) {
  const char *p = strstr(text, key);
  size_t n = 0;
  if (!p) return 0;
  p += strlen(key);
  while (p[n] && p[n] != '\n' && p[n] != ' ' && n + 1 < size) n++;
  memcpy(out, p, n);
  out[n] = '\0';
  return n > 0;
}

static void track(pid_t pid, pid_t replace) {
  for (size_t i = 0; i < sizeof g_pids / sizeof g_pids[0]; i++)
    if (g_pids[i] == replace) {
      g_pids[i] = pid;
      return;
    }
}

/* A tokens file with g_token as an admin (grayd keeps only its sha256). */
static int write_tokens(const char *path) {
  char hex[65];
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  gray__sha256_hex(g_token, strlen(g_token), hex);
  fprintf(f, "it admin sha256:%s\n", hex);
  return fclose(f);
}

/* Start grayd on port (0: any) with database db; over TLS with cert and
 * key when given. */
static int grayd_start_tls(grayd *g, const char *db, int port, const char *cert, const char *key) {
  char listen[64], data[512], tokens[512];
  static int seq;
  posix_spawn_file_actions_t fa;
  memset(g, 0, sizeof *g);
  const char *scheme = cert ? "https" : "http";
  char prefix[64];
  snprintf(prefix, sizeof prefix, "listening on %s://127.0.0.1:", scheme);
  if (cert) snprintf(g->ca, sizeof g->ca, "%s", cert);
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  snprintf(data, sizeof data, "%s/%s", g_tmp, db);
  snprintf(tokens, sizeof tokens, "%s/tokens", g_tmp);
  snprintf(g->log, sizeof g->log, "%s/grayd-%d.log", g_tmp, ++seq);
  snprintf(g->token, sizeof g->token, "%s", g_token);
  if (write_tokens(tokens) != 0) {
    fprintf(stderr, "cannot write %s\n", tokens);
    return -1;
  }
  char *argv[] = {(char *)g_grayd, "--tokens", tokens, "--listen", listen, "--data", data,
                  cert ? "--tls-cert" : NULL, (char *)cert, "--tls-key", (char *)key, NULL};
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, g->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int rc = posix_spawn(&g->pid, g_grayd, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    fprintf(stderr, "cannot start grayd: %s\n", strerror(rc));
    return -1;
  }
  track(g->pid, 0);
  for (int64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(20)) {
    char *text = slurp(g->log, NULL);
    char port_s[16];
    if (text && after(text, prefix, port_s, sizeof port_s)) {
      g->port = atoi(port_s);
      snprintf(g->url, sizeof g->url, "%s://127.0.0.1:%d", scheme, g->port);
      free(text);
      return 0;
    }
    if (text && waitpid(g->pid, NULL, WNOHANG) == g->pid) {
      fprintf(stderr, "grayd exited at start: %s\n", text);
      free(text);
      track(0, g->pid);
      g->pid = 0;
      return -1;
    }
    free(text);
  }
  fprintf(stderr, "grayd did not start\n");
  return -1;
}

static int grayd_start(grayd *g, const char *db, int port) { return grayd_start_tls(g, db, port, NULL, NULL); }

static void grayd_stop(grayd *g) {
  int st;
  if (g->pid <= 0) return;
  kill(g->pid, SIGTERM);
  for (int i = 0; i < 500; i++) {
    if (waitpid(g->pid, &st, WNOHANG) == g->pid) {
      track(0, g->pid);
      g->pid = 0;
      return;
    }
    sleep_ms(10);
  }
  kill(g->pid, SIGKILL);
  waitpid(g->pid, &st, 0);
  track(0, g->pid);
  g->pid = 0;
}

typedef struct body {
  char *p;
  size_t len;
} body;

static size_t on_data(char *d, size_t s, size_t n, void *arg) {
  body *b = arg;
  char *p = realloc(b->p, b->len + s * n + 1);
  if (!p) return 0;
  b->p = p;
  memcpy(b->p + b->len, d, s * n);
  b->len += s * n;
  b->p[b->len] = '\0';
  return s * n;
}

/* One admin call; the status, and the answer in *out (free) when wanted. */
static long call(const grayd *g, const char *method, const char *path, const char *json, char **out) {
  CURL *h = curl_easy_init();
  struct curl_slist *hd = NULL;
  char url[512], auth[200];
  body b = {NULL, 0};
  long status = 0;
  snprintf(url, sizeof url, "%s%s", g->url, path);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", g->token);
  hd = curl_slist_append(hd, auth);
  hd = curl_slist_append(hd, "Content-Type: application/json");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
  if (g->ca[0]) curl_easy_setopt(h, CURLOPT_CAINFO, g->ca);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
  if (json) curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  curl_slist_free_all(hd);
  if (out) *out = b.p ? b.p : calloc(1, 1);
  else free(b.p);
  return status;
}

/* PUT a policy; the revision grayd gave it (or -1). */
static long long put_policy(const grayd *g, const char *service, const char *json) {
  char path[128], *ans = NULL, rev[32];
  snprintf(path, sizeof path, "/v1/policies/%s", service);
  long st = call(g, "PUT", path, json, &ans);
  long long r = st == 200 && after(ans, "\"revision\":", rev, sizeof rev) ? atoll(rev) : -1;
  if (st != 200) fprintf(stderr, "PUT %s: %ld %s\n", path, st, ans);
  free(ans);
  return r;
}

/* ---- SDK helpers ------------------------------------------------------------ */

static gray_client_t *client_ca(const char *servers, const char *token, const char *cache, const char *ca,
                                logbuf *lb) {
  gray_client_options_t o;
  gray_client_t *c = NULL;
  gray_error_t err;
  gray_client_options_init(&o);
  o.ca_file = ca;
  o.servers = servers;
  o.token = token;
  o.cache_path = cache;
  o.connect_timeout_ms = 500;
  o.backoff_min_ms = 50;
  o.backoff_max_ms = 500;
  o.log = log_sink;
  o.log_arg = lb;
  if (gray_client_new(&o, &c, &err) != GRAY_OK || gray_client_start(c, &err) != GRAY_OK) {
    fprintf(stderr, "client: %s\n", err.message);
    gray_client_free(c);
    return NULL;
  }
  return c;
}

static gray_client_t *client(const char *servers, const char *token, const char *cache, logbuf *lb) {
  return client_ca(servers, token, cache, NULL, lb);
}

static const char *decide(gray_client_t *c, const char *service, int gray_header, gray_client_decision_t *d) {
  gray_kv_t hdr = {{"x-gray", 6}, {"1", 1}};
  gray_kv_request_t kv;
  memset(&kv, 0, sizeof kv);
  if (gray_header) {
    kv.headers = &hdr;
    kv.nheaders = 1;
  }
  gray_request_t req = {gray_kv_lookup, &kv};
  return gray_client_decide(c, service, &req, d) == GRAY_OK ? d->version : "-";
}

/* Poll until decide(service) gives `want` ("-": ENOTFOUND); microseconds
 * it took, or -1. */
static int64_t wait_version_us(gray_client_t *c, const char *service, const char *want, int timeout_ms) {
  gray_client_decision_t d;
  int64_t start = now_us();
  while (now_us() - start < (int64_t)timeout_ms * 1000) {
    if (!strcmp(decide(c, service, 0, &d), want)) return now_us() - start;
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static int64_t wait_version(gray_client_t *c, const char *service, const char *want, int timeout_ms) {
  int64_t us = wait_version_us(c, service, want, timeout_ms);
  return us < 0 ? -1 : us / 1000;
}

static const char *const POLICY_V1 =
    "{\"service\":\"order\",\"default\":\"v1\",\"rules\":[{\"name\":\"testers\",\"route\":\"v2\",\"tag\":\"beta\","
    "\"when\":{\"attr\":\"header:x-gray\",\"op\":\"eq\",\"value\":\"1\"}}]}";

/* ---- tests ------------------------------------------------------------------ */

static void t_decide_follows_policy(void) {
  grayd g;
  logbuf lb;
  gray_client_decision_t d;
  CHECK(grayd_start(&g, "g.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  long long rev = put_policy(&g, "order", POLICY_V1);
  CHECK(rev > 0, "put");
  gray_client_t *c = client(g.url, g.token, NULL, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "not ready");
  CHECK(gray_client_revision(c) >= rev, "revision %lld < %lld", (long long)gray_client_revision(c), rev);
  CHECK(!strcmp(decide(c, "order", 1, &d), "v2") && !strcmp(d.tag, "beta") && !strcmp(d.rule, "testers"),
        "%s/%s/%s", d.version, d.tag, d.rule);
  CHECK(!strcmp(decide(c, "order", 0, &d), "v1"), "%s", d.version);

  /* Changes arrive through the long poll: each well under a second. */
  int64_t worst = 0, total = 0;
  for (int i = 0; i < 20; i++) {
    char doc[256];
    const char *v = i % 2 ? "v1" : "v3";
    snprintf(doc, sizeof doc, "{\"service\":\"order\",\"default\":\"%s\"}", v);
    /* From before the PUT: grayd wakes watchers before it answers. */
    int64_t t0 = now_us();
    rev = put_policy(&g, "order", doc);
    CHECK(rev > 0, "put %d", i);
    int64_t waited = wait_version_us(c, "order", v, 3000);
    int64_t took = now_us() - t0;
    CHECK(waited >= 0 && took < 1000000, "change %d took %lld us", i, (long long)took);
    CHECK(gray_client_revision(c) >= rev, "revision");
    if (took > worst) worst = took;
    total += took;
  }
  fprintf(stderr, "PUT to decision: mean %.2f ms, worst %.2f ms over 20 policy changes\n", total / 20.0 / 1000.0,
          worst / 1000.0);

  /* A delete: no policy, no decision. */
  CHECK(call(&g, "DELETE", "/v1/policies/order", NULL, NULL) == 200, "delete");
  CHECK(wait_version(c, "order", "-", 2000) >= 0, "delete not seen");

  /* Stop is prompt even with a long poll parked in grayd. */
  int64_t t0 = now_ms();
  gray_client_stop(c);
  CHECK(now_ms() - t0 < 1000, "stop took %lld ms", (long long)(now_ms() - t0));
  gray_client_free(c);
  CHECK(!log_has(&lb, g.token), "the token was logged");
  grayd_stop(&g);
  log_free(&lb);
}

static void t_empty_grayd_ready(void) {
  grayd g;
  logbuf lb;
  gray_client_decision_t d;
  CHECK(grayd_start(&g, "g.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  gray_client_t *c = client(g.url, g.token, NULL, &lb);
  CHECK(c, "client");
  /* An empty grayd is a state: ready at once, deciding ENOTFOUND. */
  int64_t t0 = now_ms();
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "not ready");
  CHECK(now_ms() - t0 < 2000, "ready took %lld ms", (long long)(now_ms() - t0));
  CHECK(!strcmp(decide(c, "order", 0, &d), "-"), "%s", d.version);
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put");
  CHECK(wait_version(c, "order", "v1", 2000) >= 0, "policy not seen");
  gray_client_free(c);
  grayd_stop(&g);
  log_free(&lb);
}

static int instance_listed(const grayd *g, const char *service, const char *id) {
  char path[128], *ans = NULL, needle[96];
  snprintf(path, sizeof path, "/v1/services/%s/instances", service);
  snprintf(needle, sizeof needle, "\"id\":\"%s\"", id);
  long st = call(g, "GET", path, NULL, &ans);
  int r = st == 200 && strstr(ans, needle) != NULL;
  free(ans);
  return r;
}

static void t_register_heartbeat(void) {
  grayd g;
  logbuf lb;
  gray_error_t err;
  gray_endpoint_t ep;
  CHECK(grayd_start(&g, "g.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put");
  gray_client_t *c = client(g.url, g.token, NULL, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "not ready");

  const char *meta[] = {"zone", "z1", NULL};
  gray_instance_t in = {"order", "order-it-1", "127.0.0.1", 18080, "v1", 3, meta};
  CHECK(gray_client_register(c, &in, &err) == GRAY_OK, "register: %s", err.message);
  CHECK(instance_listed(&g, "order", "order-it-1"), "not listed after register");

  /* The watch brings it into the snapshot. */
  int64_t t0 = now_ms();
  int found = 0;
  while (now_ms() - t0 < 2000 && !found) {
    found = gray_client_pick(c, "order", "v1", &ep) == GRAY_OK;
    if (!found) sleep_ms(2);
  }
  CHECK(found && !strcmp(ep.id, "order-it-1") && ep.port == 18080 && !strcmp(ep.address, "127.0.0.1"), "pick");
  /* v2 has none: the policy's default, flagged. */
  CHECK(gray_client_pick(c, "order", "v2", &ep) == GRAY_OK && ep.fell_back && !strcmp(ep.version, "v1"), "fallback");

  /* Heartbeats keep it past its TTL (3 s). */
  sleep_ms(4000);
  CHECK(instance_listed(&g, "order", "order-it-1"), "evicted despite heartbeats");

  /* Deleted behind the SDK's back: the next heartbeat gets 404 and the SDK
   * registers again (heartbeat every TTL/3 = 1 s). */
  /* (No "is it gone" check here: the next heartbeat may already have put
   * it back. The 200 says it was deleted, the log says why it returned.) */
  CHECK(call(&g, "DELETE", "/v1/services/order/instances/order-it-1", NULL, NULL) == 200, "delete");
  t0 = now_ms();
  while (now_ms() - t0 < 4000 && !instance_listed(&g, "order", "order-it-1")) sleep_ms(50);
  CHECK(instance_listed(&g, "order", "order-it-1"), "not registered again");
  fprintf(stderr, "re-registered %lld ms after the delete\n", (long long)(now_ms() - t0));
  while (now_ms() - t0 < 4000 && !log_has(&lb, "registering again")) sleep_ms(20);
  CHECK(log_has(&lb, "registering again"), "no log of the re-registration");

  /* Stop deregisters at once. */
  gray_client_stop(c);
  CHECK(!instance_listed(&g, "order", "order-it-1"), "still listed after stop");
  gray_client_free(c);
  CHECK(!log_has(&lb, g.token), "the token was logged");
  grayd_stop(&g);
  log_free(&lb);
}

static int file_has(const char *path, const char *needle) {
  char *text = slurp(path, NULL);
  int r = text && strstr(text, needle);
  free(text);
  return r;
}

static void t_grayd_down_keeps_routing(void) {
  grayd g;
  logbuf lb, lb2;
  gray_client_decision_t d;
  char cache[512];
  struct stat st;
  snprintf(cache, sizeof cache, "%s/down.cache", g_tmp);
  CHECK(grayd_start(&g, "g.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  log_init(&lb2, "sdk2");
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put");
  gray_client_t *c = client(g.url, g.token, cache, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "not ready");
  int64_t rev = gray_client_revision(c);
  int64_t t0 = now_ms();
  while (now_ms() - t0 < 3000 && stat(cache, &st) != 0) sleep_ms(10);
  CHECK(stat(cache, &st) == 0, "no cache file");

  grayd_stop(&g);
  /* Decisions go on unchanged while grayd is away. */
  t0 = now_ms();
  while (now_ms() - t0 < 1500) {
    CHECK(!strcmp(decide(c, "order", 1, &d), "v2") && !strcmp(d.tag, "beta"), "%s", d.version);
    CHECK(!strcmp(decide(c, "order", 0, &d), "v1"), "%s", d.version);
    CHECK(gray_client_revision(c) == rev, "revision changed");
    sleep_ms(20);
  }
  CHECK(log_has(&lb, "unreachable"), "the outage was not logged");

  /* A client started now, grayd still down, routes from the cache file. */
  gray_client_t *c2 = client(g.url, g.token, cache, &lb2);
  CHECK(c2, "client 2");
  CHECK(gray_client_wait_ready(c2, 0) == GRAY_OK, "cache not loaded at start");
  CHECK(gray_client_revision(c2) == rev, "cache revision %lld != %lld", (long long)gray_client_revision(c2),
        (long long)rev);
  CHECK(!strcmp(decide(c2, "order", 1, &d), "v2") && !strcmp(d.tag, "beta") && !strcmp(d.rule, "testers"),
        "%s", d.version);
  CHECK(!strcmp(decide(c2, "order", 0, &d), "v1"), "%s", d.version);
  gray_client_free(c2);
  gray_client_free(c);
  CHECK(!log_has(&lb, g.token) && !log_has(&lb2, g.token), "the token was logged");
  log_free(&lb);
  log_free(&lb2);
}

static void t_wiped_store_reset(void) {
  grayd g, g2;
  logbuf lb;
  gray_client_decision_t d;
  char cache[512], *health = NULL, store[64];
  snprintf(cache, sizeof cache, "%s/wiped.cache", g_tmp);
  CHECK(grayd_start(&g, "first.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put");
  CHECK(put_policy(&g, "cart", "{\"service\":\"cart\",\"default\":\"c1\"}") > 0, "put");
  gray_client_t *c = client(g.url, g.token, cache, &lb);
  CHECK(c, "client");
  CHECK(wait_version(c, "cart", "c1", 5000) >= 0, "cart not seen");
  int port = g.port;
  grayd_stop(&g);

  /* Unreachable: not empty, the last snapshot. */
  sleep_ms(300);
  CHECK(!strcmp(decide(c, "order", 0, &d), "v1"), "%s", d.version);
  CHECK(!strcmp(decide(c, "cart", 0, &d), "c1"), "%s", d.version);

  /* Back on the same port with a new, empty database: a new store id. The
   * SDK sends its store id, grayd answers with a reset, and the reset
   * replaces everything: cart is gone, order is the new one. */
  CHECK(grayd_start(&g2, "second.db", port) == 0, "grayd 2");
  CHECK(call(&g2, "GET", "/healthz", NULL, &health) == 200 && after(health, "\"store_id\":\"", store, sizeof store),
        "healthz");
  store[strcspn(store, "\"")] = '\0';
  free(health);
  CHECK(put_policy(&g2, "order", "{\"service\":\"order\",\"default\":\"v7\"}") > 0, "put 2");
  CHECK(wait_version(c, "order", "v7", 5000) >= 0, "reset not applied");
  CHECK(!strcmp(decide(c, "cart", 0, &d), "-"), "cart survived the reset: %s", d.version);
  int64_t t0 = now_ms();
  while (now_ms() - t0 < 2000 && !log_has(&lb, "store changed")) sleep_ms(10);
  CHECK(log_has(&lb, "store changed"), "the store change was not logged");
  t0 = now_ms();
  while (now_ms() - t0 < 3000 && !file_has(cache, store)) sleep_ms(20);
  CHECK(file_has(cache, store), "cache file not rewritten with the new store id");
  gray_client_free(c);

  /* A client restarted now loads the cache (new store) and agrees. */
  c = client(g2.url, g2.token, cache, &lb);
  CHECK(c, "client again");
  CHECK(gray_client_wait_ready(c, 0) == GRAY_OK, "cache not loaded");
  CHECK(!strcmp(decide(c, "order", 0, &d), "v7"), "%s", d.version);
  CHECK(!strcmp(decide(c, "cart", 0, &d), "-"), "%s", d.version);
  gray_client_free(c);
  CHECK(!log_has(&lb, g_token), "the token was logged");
  grayd_stop(&g2);
  log_free(&lb);
}

/* grayd back with a wiped database (no registry): the reset the SDK gets
 * makes it renew its registrations at once, not a third of the TTL later
 * (60 s TTL here: the next heartbeat would come after 20 s). */
static void t_reregister_after_reset(void) {
  grayd g, g2;
  logbuf lb;
  gray_error_t err;
  CHECK(grayd_start(&g, "first.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  gray_client_t *c = client(g.url, g.token, NULL, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "not ready");
  gray_instance_t in = {"order", "order-it-r", "127.0.0.1", 18081, "v1", 60, NULL};
  CHECK(gray_client_register(c, &in, &err) == GRAY_OK, "register: %s", err.message);
  CHECK(instance_listed(&g, "order", "order-it-r"), "not listed after register");
  int port = g.port;
  grayd_stop(&g);
  sleep_ms(200);
  CHECK(grayd_start(&g2, "second.db", port) == 0, "grayd 2");
  int64_t t0 = now_ms();
  while (now_ms() - t0 < 8000 && !instance_listed(&g2, "order", "order-it-r")) sleep_ms(20);
  CHECK(instance_listed(&g2, "order", "order-it-r"), "not registered again within 8 s of the reset");
  fprintf(stderr, "registered again %lld ms after grayd's return\n", (long long)(now_ms() - t0));
  CHECK(log_has(&lb, "renewing our registrations"), "the reset was not logged");
  gray_client_free(c);
  grayd_stop(&g2);
  log_free(&lb);
}

typedef struct hookrec {
  pthread_mutex_t mu;
  int calls;
  int64_t last_rev;
  int monotonic;
  char last[4096];
} hookrec;

static void on_change(void *arg, int64_t rev, const char *doc, size_t len) {
  hookrec *h = arg;
  pthread_mutex_lock(&h->mu);
  if (rev < h->last_rev || strlen(doc) != len) h->monotonic = 0;
  h->last_rev = rev;
  h->calls++;
  snprintf(h->last, sizeof h->last, "%s", doc);
  pthread_mutex_unlock(&h->mu);
}

static int hook_has(hookrec *h, const char *needle, int64_t min_rev) {
  pthread_mutex_lock(&h->mu);
  int r = h->last_rev >= min_rev && strstr(h->last, needle) != NULL;
  pthread_mutex_unlock(&h->mu);
  return r;
}

/* The change hook (what the Nginx agent renders from): one call per new
 * snapshot with the whole state as a document, revisions never going back,
 * and once at start from the cache file. */
static void t_change_hook(void) {
  grayd g;
  logbuf lb;
  gray_error_t err;
  hookrec h;
  char cache[512];
  memset(&h, 0, sizeof h);
  pthread_mutex_init(&h.mu, NULL);
  h.monotonic = 1;
  snprintf(cache, sizeof cache, "%s/hook.cache", g_tmp);
  CHECK(grayd_start(&g, "hook.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  int64_t r1 = put_policy(&g, "order", POLICY_V1);
  CHECK(r1 > 0, "put");
  gray_client_options_t o;
  gray_client_t *c = NULL;
  gray_client_options_init(&o);
  o.servers = g.url;
  o.token = g.token;
  o.cache_path = cache;
  o.log = log_sink;
  o.log_arg = &lb;
  o.on_change = on_change;
  o.on_change_arg = &h;
  CHECK(gray_client_new(&o, &c, &err) == GRAY_OK && gray_client_start(c, &err) == GRAY_OK, "client: %s",
        err.message);
  int64_t t0 = now_ms();
  while (now_ms() - t0 < 5000 && !hook_has(&h, "\"service\":\"order\"", r1)) sleep_ms(5);
  CHECK(hook_has(&h, "\"service\":\"order\"", r1), "the hook did not see the policy: %s", h.last);
  gray_instance_t in = {"order", "order-hook-1", "127.0.0.1", 18090, "v2", 30, NULL};
  CHECK(gray_client_register(c, &in, &err) == GRAY_OK, "register: %s", err.message);
  t0 = now_ms();
  while (now_ms() - t0 < 5000 && !hook_has(&h, "\"port\":18090", r1 + 1)) sleep_ms(5);
  CHECK(hook_has(&h, "\"id\":\"order-hook-1\"", r1 + 1) && hook_has(&h, "\"version\":\"v2\"", r1 + 1),
        "the hook did not see the instance: %s", h.last);
  CHECK(gray_client_revision(c) == h.last_rev, "hook revision %lld, client %lld", (long long)h.last_rev,
        (long long)gray_client_revision(c));
  int before = h.calls;
  gray_client_free(c);
  CHECK(h.monotonic && before >= 2, "calls %d, monotonic %d", before, h.monotonic);

  /* grayd gone: a new client's hook fires once, from the cache file. */
  grayd_stop(&g);
  memset(h.last, 0, sizeof h.last);
  h.calls = 0;
  h.last_rev = 0;
  o.servers = "http://127.0.0.1:1";
  CHECK(gray_client_new(&o, &c, &err) == GRAY_OK && gray_client_start(c, &err) == GRAY_OK, "client 2");
  CHECK(h.calls == 1 && hook_has(&h, "order-hook-1", r1 + 1), "no hook call from the cache: %d", h.calls);
  gray_client_free(c);
  log_free(&lb);
  pthread_mutex_destroy(&h.mu);
}

/* Run a program (no shell) and wait; its exit status, or -1. */
static int run(char *const argv[]) {
  pid_t pid;
  int st;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0 || waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* An https grayd: the SDK verifies its certificate against ca_file, and
 * refuses one it cannot verify (no snapshot, an error naming the cause). */
static void t_tls_ca_file(void) {
  grayd g;
  logbuf lb, lb2, lb3;
  gray_client_decision_t d;
  char key[600], crt[600], other_key[600], other_crt[600];
  snprintf(key, sizeof key, "%s/k.pem", g_tmp);
  snprintf(crt, sizeof crt, "%s/c.pem", g_tmp);
  snprintf(other_key, sizeof other_key, "%s/k2.pem", g_tmp);
  snprintf(other_crt, sizeof other_crt, "%s/c2.pem", g_tmp);
  char *req1[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                  "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", NULL};
  char *req2[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", other_key, "-out",
                  other_crt, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                  NULL};
  CHECK(run(req1) == 0 && run(req2) == 0, "openssl req failed");
  CHECK(grayd_start_tls(&g, "tls.db", 0, crt, key) == 0, "grayd over TLS");
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put over https");

  log_init(&lb, "sdk");
  gray_client_t *c = client_ca(g.url, g.token, NULL, crt, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "no snapshot over https");
  CHECK(!strcmp(decide(c, "order", 1, &d), "v2"), "%s", d.version);
  CHECK(put_policy(&g, "order", "{\"service\":\"order\",\"default\":\"v5\"}") > 0, "put 2");
  CHECK(wait_version(c, "order", "v5", 5000) >= 0, "the watch over https did not follow");
  gray_client_free(c);

  /* Another CA, or the system's (which does not know this self-signed
   * certificate): nothing is trusted, nothing is applied. */
  log_init(&lb2, "sdk-other-ca");
  c = client_ca(g.url, g.token, NULL, other_crt, &lb2);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 1500) == GRAY_ENOTFOUND, "a snapshot from an unverified grayd");
  CHECK(gray_client_revision(c) == 0, "revision moved");
  CHECK(log_has(&lb2, "certificate") || log_has(&lb2, "SSL"), "the TLS failure was not logged");
  gray_client_free(c);
  log_init(&lb3, "sdk-system-ca");
  c = client_ca(g.url, g.token, NULL, NULL, &lb3);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 1500) == GRAY_ENOTFOUND, "a snapshot from an unverified grayd (system CAs)");
  gray_client_free(c);
  CHECK(!log_has(&lb, g_token) && !log_has(&lb2, g_token), "the token was logged");
  grayd_stop(&g);
  log_free(&lb);
  log_free(&lb2);
  log_free(&lb3);
}

/* 0 when `port` (0: any) cannot be bound on 127.0.0.1, else the port. */
static int try_port(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    if (fd >= 0) close(fd);
    return 0;
  }
  close(fd);
  return ntohs(a.sin_port);
}

/* A port free a moment ago, drawn below the kernel's ephemeral range (as
 * tests/pylib/testkit.py's free_port): whatever binds port 0 and every
 * client connection take theirs from that range, so none of them can take
 * this one before the test uses it. */
static int free_port(void) {
  int low = 32768, port = 0;
  FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f) {
    if (fscanf(f, "%d", &low) != 1) low = 32768;
    fclose(f);
  }
  if (low > 65536) low = 65536;
  unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
  for (int i = 0; i < 200 && low - 10000 >= 1000 && !port; i++)
    port = try_port(10000 + (int)(rand_r(&seed) % (unsigned)(low - 10000)));
  if (!port) port = try_port(0);
  return port ? port : 1;
}

static void t_failover(void) {
  grayd g;
  logbuf lb;
  gray_client_decision_t d;
  char servers[256];
  CHECK(grayd_start(&g, "g.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put");
  snprintf(servers, sizeof servers, "http://127.0.0.1:%d,%s", free_port(), g.url);
  gray_client_t *c = client(servers, g.token, NULL, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "no failover");
  CHECK(!strcmp(decide(c, "order", 0, &d), "v1"), "%s", d.version);
  CHECK(log_has(&lb, "unreachable"), "the dead server was not logged");
  gray_client_free(c);
  grayd_stop(&g);
  log_free(&lb);
}

static void t_bad_token(void) {
  grayd g;
  logbuf lb;
  gray_error_t err;
  const char *secret = "wrong-secret-0123456789";
  CHECK(grayd_start(&g, "g.db", 0) == 0, "grayd");
  log_init(&lb, "sdk");
  CHECK(put_policy(&g, "order", POLICY_V1) > 0, "put");
  gray_client_t *c = client(g.url, secret, NULL, &lb);
  CHECK(c, "client");
  CHECK(gray_client_wait_ready(c, 1000) == GRAY_ENOTFOUND, "ready with a bad token");
  CHECK(log_has(&lb, "HTTP 401"), "401 not logged");
  gray_instance_t in = {"order", "bad-1", "127.0.0.1", 18081, "v1", 0, NULL};
  CHECK(gray_client_register(c, &in, &err) == GRAY_EIO, "register with a bad token");
  CHECK(strstr(err.message, "401") != NULL, "%s", err.message);
  CHECK(strstr(err.message, secret) == NULL, "token in the error");
  gray_client_free(c);
  CHECK(!log_has(&lb, secret), "the token was logged");
  grayd_stop(&g);
  log_free(&lb);
}

static void t_register_while_down(void) {
  grayd g;
  logbuf lb;
  gray_error_t err;
  char servers[64];
  int port = free_port();
  snprintf(servers, sizeof servers, "http://127.0.0.1:%d", port);
  log_init(&lb, "sdk");
  /* No grayd yet: EIO, and the SDK keeps trying in the background. */
  gray_client_t *c = client(servers, g_token, NULL, &lb);
  CHECK(c, "client");
  gray_instance_t in = {"order", "late-1", "127.0.0.1", 18082, "v1", 3, NULL};
  CHECK(gray_client_register(c, &in, &err) == GRAY_EIO, "register while down");
  CHECK(gray_client_wait_ready(c, 300) == GRAY_ENOTFOUND, "ready without grayd or cache");

  /* grayd comes up on that port: the registration lands, the watch too. */
  CHECK(grayd_start(&g, "g.db", port) == 0, "grayd");
  int64_t t0 = now_ms();
  while (now_ms() - t0 < 5000 && !instance_listed(&g, "order", "late-1")) sleep_ms(20);
  CHECK(instance_listed(&g, "order", "late-1"), "not registered after grayd came up");
  CHECK(gray_client_wait_ready(c, 5000) == GRAY_OK, "watch did not connect");
  grayd_stop(&g);

  /* Stopping with grayd down is bounded by the connect timeout. */
  t0 = now_ms();
  gray_client_stop(c);
  CHECK(now_ms() - t0 < 2000, "stop took %lld ms with grayd down", (long long)(now_ms() - t0));
  CHECK(log_has(&lb, "cannot deregister"), "no deregistration attempt");
  gray_client_free(c);
  CHECK(!log_has(&lb, g_token), "the token was logged");
  log_free(&lb);
}

/* ---- main ------------------------------------------------------------------- */

typedef struct test {
  const char *name;
  void (*fn)(void);
} test;

#define T(name) {#name, name}
static const test TESTS[] = {
    T(t_decide_follows_policy), T(t_empty_grayd_ready),  T(t_register_heartbeat), T(t_grayd_down_keeps_routing),
    T(t_wiped_store_reset),     T(t_reregister_after_reset), T(t_tls_ca_file), T(t_change_hook), T(t_failover),           T(t_bad_token),          T(t_register_while_down),
};

static void kill_grayds(void) {
  for (size_t k = 0; k < sizeof g_pids / sizeof g_pids[0]; k++)
    if (g_pids[k] > 0) {
      kill(g_pids[k], SIGKILL);
      waitpid(g_pids[k], NULL, 0);
      g_pids[k] = 0;
    }
}

static void die(void) {
  kill_grayds();
  fprintf(stderr, "FAILED (kept %s)\n", g_tmp);
  fflush(stderr);
  _exit(1);
}

static void random_token(void) {
  unsigned char raw[16];
  FILE *f = fopen("/dev/urandom", "rb");
  size_t n = f ? fread(raw, 1, sizeof raw, f) : 0;
  if (f) fclose(f);
  for (size_t i = 0; i < sizeof raw; i++) {
    unsigned v = i < n ? raw[i] : (unsigned)(now_ms() * 31 + (int64_t)i * 17) & 255u;
    snprintf(g_token + 2 * i, 3, "%02x", v);
  }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void rm_tree(const char *dir) {
  if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: client_it GRAYD TEST|all\n");
    return 2;
  }
  g_grayd = argv[1];
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const char *t = getenv("TMPDIR");
  int ran = 0;
  for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++) {
    if (strcmp(argv[2], "all") && strcmp(argv[2], TESTS[i].name)) continue;
    snprintf(g_tmp, sizeof g_tmp, "%s/gray-client-it-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_tmp)) {
      perror("mkdtemp");
      return 1;
    }
    random_token();
    fprintf(stderr, "--- %s\n", TESTS[i].name);
    TESTS[i].fn();
    kill_grayds();
    fprintf(stderr, "ok %s\n", TESTS[i].name);
    rm_tree(g_tmp);
    ran++;
  }
  curl_global_cleanup();
  if (!ran) {
    fprintf(stderr, "no test named %s\n", argv[2]);
    return 2;
  }
  return 0;
}
