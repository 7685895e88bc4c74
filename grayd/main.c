/* grayd — graylane's strategy configuration platform and service registry.
 * One libevent loop owns all state; see docs/DESIGN.md and docs/api.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include "api/api.h"
#include "core/model.h"
#include "gray/gray.h"
#include "registry/registry.h"
#include "watch/watch.h"

void gd_registry_sweep(gd_state *s);

static const char usage[] =
    "usage: grayd [options]\n"
    "       grayd token NAME ROLE      print a new token and its tokens-file line\n"
    "\n"
    "graylane's control plane: gray-release policies with history and rollback,\n"
    "the service registry, and long-poll watch for every executor.\n"
    "\n"
    "  --listen HOST:PORT     address to serve (default 127.0.0.1:7070; port 0 picks\n"
    "                         a free port, printed at start)\n"
    "  --data PATH            SQLite database (default grayd.db), created if absent\n"
    "  --tokens FILE          bearer tokens, one per line: NAME ROLE sha256:HEX\n"
    "                         (roles: admin, write, agent, read; see grayd token)\n"
    "  --dev                  development mode without a tokens file: makes an admin\n"
    "                         token, prints it once, and serves loopback only\n"
    "  --tls-cert FILE        serve HTTPS with this certificate chain (PEM)\n"
    "  --tls-key FILE         ... and this private key (PEM)\n"
    "  --allow-plain-remote   accept tokens over plain HTTP from other hosts\n"
    "                         (they travel in clear text: use TLS instead)\n"
    "  --max-watchers N       parked long-poll watchers (default 20000)\n"
    "  --max-conns N          open connections (default 24000)\n"
    "  --event-window N       events kept for watchers to catch up (default 10000)\n"
    "  --default-ttl SECONDS  instance TTL when registration gives none (default 15)\n"
    "  --request-timeout MS   time a client has to send a whole request once it\n"
    "                         started (default 10000): slow clients lose the slot\n"
    "  --idle-timeout MS      keep-alive connection with no request (default 60000)\n"
    "  --config FILE          read options from FILE: one \"name value\" per line,\n"
    "                         names as the flags without dashes; flags win\n"
    "  -h, --help             this text\n"
    "\n"
    "Examples:\n"
    "  grayd --dev --data /tmp/grayd.db\n"
    "  grayd token ops admin >> tokens   # prints the token once on stderr\n"
    "  grayd --listen 0.0.0.0:7070 --tokens tokens --tls-cert c.pem --tls-key k.pem\n";

static struct event_base *g_base;

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)what;
  (void)arg;
  gd_log("info", "signal %d: shutting down", (int)sig);
  event_base_loopbreak(g_base);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gd_registry_sweep(arg);
  fflush(stderr);
}

static void on_batch(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gd_batch_flush(arg);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static gd_role parse_role(const char *r) {
  if (!strcmp(r, "admin")) return GD_ROLE_ADMIN;
  if (!strcmp(r, "write")) return GD_ROLE_WRITE;
  if (!strcmp(r, "agent")) return GD_ROLE_AGENT;
  if (!strcmp(r, "read")) return GD_ROLE_READ;
  return GD_ROLE_NONE;
}

static int add_token(gd_state *s, const char *name, gd_role role, const unsigned char hash[32]) {
  gd_token *n = realloc(s->tokens, (s->ntokens + 1) * sizeof(*n));
  if (!n) return -1;
  s->tokens = n;
  gd_token *t = &s->tokens[s->ntokens++];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->role = role;
  memcpy(t->hash, hash, 32);
  return 0;
}

static int load_tokens(gd_state *s, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "grayd: cannot open tokens file %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[1024];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *save = NULL;
    char *name = strtok_r(line, " \t\r\n", &save);
    if (!name || name[0] == '#') continue;
    char *role = strtok_r(NULL, " \t\r\n", &save);
    char *hash = strtok_r(NULL, " \t\r\n", &save);
    char *extra = strtok_r(NULL, " \t\r\n", &save);
    gray_str_t ns = {name, strlen(name)};
    char msg[GRAY_ERROR_TEXT_MAX];
    unsigned char h[32];
    if (!role || !hash || extra) {
      fprintf(stderr, "grayd: %s:%d: expected NAME ROLE sha256:HEX\n", path, lineno);
      rc = -1;
      break;
    }
    if (gray__check_name(ns, msg, sizeof msg) != GRAY_OK) {
      fprintf(stderr, "grayd: %s:%d: token name: %s\n", path, lineno, msg);
      rc = -1;
      break;
    }
    gd_role r = parse_role(role);
    if (r == GD_ROLE_NONE) {
      fprintf(stderr, "grayd: %s:%d: unknown role \"%s\" (admin, write, agent or read)\n", path, lineno, role);
      rc = -1;
      break;
    }
    int ok = !strncmp(hash, "sha256:", 7) && strlen(hash) == 7 + 64;
    for (int i = 0; ok && i < 32; i++) {
      int hi = hexval(hash[7 + 2 * i]), lo = hexval(hash[8 + 2 * i]);
      if (hi < 0 || lo < 0) ok = 0;
      else h[i] = (unsigned char)(hi * 16 + lo);
    }
    if (!ok) {
      fprintf(stderr, "grayd: %s:%d: the hash must be sha256: and 64 hex digits\n", path, lineno);
      rc = -1;
      break;
    }
    if (add_token(s, name, r, h)) abort();
  }
  fclose(f);
  if (rc == 0 && s->ntokens == 0) {
    fprintf(stderr, "grayd: %s holds no tokens\n", path);
    rc = -1;
  }
  return rc;
}

static int new_token(char *out, size_t outsz, unsigned char hash[32]) {
  unsigned char raw[24];
  static const char hex[] = "0123456789abcdef";
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw || outsz < 2 * sizeof raw + 1) return -1;
  for (size_t i = 0; i < sizeof raw; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[2 * sizeof raw] = '\0';
  unsigned int dl = 0;
  return EVP_Digest(out, strlen(out), hash, &dl, EVP_sha256(), NULL) && dl == 32 ? 0 : -1;
}

static int cmd_token(int argc, char **argv) {
  if (argc != 4 || parse_role(argv[3]) == GD_ROLE_NONE) {
    fprintf(stderr, "usage: grayd token NAME ROLE   (ROLE: admin, write, agent or read)\n");
    return 64;
  }
  gray_str_t ns = {argv[2], strlen(argv[2])};
  char msg[GRAY_ERROR_TEXT_MAX], tok[64];
  unsigned char h[32];
  if (gray__check_name(ns, msg, sizeof msg) != GRAY_OK) {
    fprintf(stderr, "grayd token: name: %s\n", msg);
    return 64;
  }
  if (new_token(tok, sizeof tok, h)) {
    fprintf(stderr, "grayd token: cannot make a random token\n");
    return 1;
  }
  /* The secret goes to stderr once; stdout is the line for the tokens file. */
  fprintf(stderr, "token for %s (%s): %s\n", argv[2], argv[3], tok);
  printf("%s %s sha256:", argv[2], argv[3]);
  for (int i = 0; i < 32; i++) printf("%02x", h[i]);
  printf("\n");
  return 0;
}

static int split_listen(const char *spec, char *host, size_t hsz, int *port) {
  const char *colon = strrchr(spec, ':');
  if (!colon) return -1;
  const char *h = spec;
  size_t hl = (size_t)(colon - spec);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  if (hl == 0 || hl >= hsz) return -1;
  memcpy(host, h, hl);
  host[hl] = '\0';
  long p = 0;
  const char *d = colon + 1;
  if (!*d) return -1;
  for (; *d; d++) {
    if (*d < '0' || *d > '9' || p > 65535) return -1;
    p = p * 10 + (*d - '0');
  }
  if (p > 65535) return -1;
  *port = (int)p;
  return 0;
}

static int is_loopback_host(const char *h) {
  return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

enum { O_LISTEN = 256, O_DATA, O_TOKENS, O_DEV, O_CERT, O_KEY, O_PLAIN, O_WATCHERS, O_CONNS, O_WINDOW, O_TTL,
       O_REQ_TIMEOUT, O_IDLE_TIMEOUT, O_CONFIG };

static const struct option opts[] = {{"listen", required_argument, NULL, O_LISTEN},
                                     {"data", required_argument, NULL, O_DATA},
                                     {"tokens", required_argument, NULL, O_TOKENS},
                                     {"dev", no_argument, NULL, O_DEV},
                                     {"tls-cert", required_argument, NULL, O_CERT},
                                     {"tls-key", required_argument, NULL, O_KEY},
                                     {"allow-plain-remote", no_argument, NULL, O_PLAIN},
                                     {"max-watchers", required_argument, NULL, O_WATCHERS},
                                     {"max-conns", required_argument, NULL, O_CONNS},
                                     {"event-window", required_argument, NULL, O_WINDOW},
                                     {"default-ttl", required_argument, NULL, O_TTL},
                                     {"request-timeout", required_argument, NULL, O_REQ_TIMEOUT},
                                     {"idle-timeout", required_argument, NULL, O_IDLE_TIMEOUT},
                                     {"config", required_argument, NULL, O_CONFIG},
                                     {"help", no_argument, NULL, 'h'},
                                     {NULL, 0, NULL, 0}};

static int number(const char *flag, const char *v, long lo, long hi, long *out) {
  long n = 0;
  const char *d = v;
  if (!*d) goto bad;
  for (; *d; d++) {
    if (*d < '0' || *d > '9' || n > hi) goto bad;
    n = n * 10 + (*d - '0');
  }
  if (n < lo || n > hi) goto bad;
  *out = n;
  return 0;
bad:
  fprintf(stderr, "grayd: --%s must be a number from %ld to %ld, not \"%s\"\n", flag, lo, hi, v);
  return -1;
}

static int apply(gd_config *cfg, int opt, const char *name, const char *v) {
  long n;
  switch (opt) {
    case O_LISTEN:
      if (split_listen(v, cfg->listen_host, sizeof cfg->listen_host, &cfg->listen_port)) {
        fprintf(stderr, "grayd: --listen wants HOST:PORT (for example 127.0.0.1:7070), not \"%s\"\n", v);
        return -1;
      }
      return 0;
    case O_DATA: snprintf(cfg->data_path, sizeof cfg->data_path, "%s", v); return 0;
    case O_TOKENS: snprintf(cfg->tokens_path, sizeof cfg->tokens_path, "%s", v); return 0;
    case O_DEV: cfg->dev = 1; return 0;
    case O_CERT: snprintf(cfg->tls_cert, sizeof cfg->tls_cert, "%s", v); return 0;
    case O_KEY: snprintf(cfg->tls_key, sizeof cfg->tls_key, "%s", v); return 0;
    case O_PLAIN: cfg->allow_plain_remote = 1; return 0;
    case O_WATCHERS:
      if (number(name, v, 1, 1000000, &n)) return -1;
      cfg->max_watchers = (int)n;
      return 0;
    case O_CONNS:
      if (number(name, v, 16, 1000000, &n)) return -1;
      cfg->http.max_conns = (int)n;
      return 0;
    case O_WINDOW:
      if (number(name, v, 16, 10000000, &n)) return -1;
      cfg->event_window = (int)n;
      return 0;
    case O_TTL:
      if (number(name, v, 1, 3600, &n)) return -1;
      cfg->default_ttl_s = (int)n;
      return 0;
    case O_REQ_TIMEOUT:
      if (number(name, v, 100, 600000, &n)) return -1;
      cfg->http.request_timeout_ms = (int)n;
      return 0;
    case O_IDLE_TIMEOUT:
      if (number(name, v, 100, 3600000, &n)) return -1;
      cfg->http.idle_timeout_ms = (int)n;
      return 0;
  }
  return -1;
}

static int read_config(gd_config *cfg, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "grayd: cannot open config %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[4200];
  int lineno = 0, rc = 0;
  while (rc == 0 && fgets(line, sizeof line, f)) {
    lineno++;
    char *save = NULL;
    char *k = strtok_r(line, " \t\r\n", &save);
    if (!k || k[0] == '#') continue;
    char *v = strtok_r(NULL, " \t\r\n", &save);
    const struct option *o = opts;
    for (; o->name; o++)
      if (!strcmp(o->name, k) && o->val >= O_LISTEN && o->val != O_CONFIG) break;
    if (!o->name) {
      fprintf(stderr, "grayd: %s:%d: unknown option \"%s\"\n", path, lineno, k);
      rc = -1;
    } else if ((o->has_arg == required_argument) != (v != NULL)) {
      fprintf(stderr, "grayd: %s:%d: \"%s\" %s a value\n", path, lineno, k,
              o->has_arg == required_argument ? "needs" : "takes no");
      rc = -1;
    } else if (apply(cfg, o->val, k, v ? v : "")) {
      fprintf(stderr, "grayd: (in %s:%d)\n", path, lineno);
      rc = -1;
    }
  }
  fclose(f);
  return rc;
}

int main(int argc, char **argv) {
  gd_state s;
  memset(&s, 0, sizeof s);
  if (argc >= 2 && !strcmp(argv[1], "token")) return cmd_token(argc, argv);
  gd_config *cfg = &s.cfg;
  snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
  cfg->listen_port = 7070;
  snprintf(cfg->data_path, sizeof cfg->data_path, "grayd.db");
  gd_http_limits_default(&cfg->http);
  cfg->http.max_conns = 24000;
  cfg->max_watchers = 20000;
  cfg->default_ttl_s = 15;
  cfg->event_window = 10000;

  /* The config file first, so flags on the command line win. */
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--config") && read_config(cfg, argv[i + 1])) return 64;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'h') {
      fputs(usage, stdout);
      return 0;
    }
    if (c == O_CONFIG) continue;
    if (c == '?' || c == ':') {
      fprintf(stderr, "grayd: unknown or incomplete option \"%s\" (see grayd --help)\n", argv[optind - 1]);
      return 64;
    }
    const char *name = "";
    for (const struct option *o = opts; o->name; o++)
      if (o->val == c) name = o->name;
    if (apply(cfg, c, name, optarg ? optarg : "")) return 64;
  }
  if (optind < argc) {
    fprintf(stderr, "grayd: unexpected argument \"%s\" (see grayd --help)\n", argv[optind]);
    return 64;
  }
  if (!cfg->tokens_path[0] && !cfg->dev) {
    fprintf(stderr, "grayd: refusing to start without --tokens FILE: every API call needs a token.\n"
                    "       Make one with `grayd token NAME admin >> tokens`, or use --dev on a\n"
                    "       development machine (loopback only, a generated admin token).\n");
    return 64;
  }
  if (cfg->dev && !is_loopback_host(cfg->listen_host)) {
    fprintf(stderr, "grayd: --dev serves loopback only; %s is not a loopback address\n", cfg->listen_host);
    return 64;
  }
  if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
    fprintf(stderr, "grayd: --tls-cert and --tls-key go together\n");
    return 64;
  }
  if (cfg->tokens_path[0] && load_tokens(&s, cfg->tokens_path)) return 64;
  if (cfg->dev) {
    char tok[64];
    unsigned char h[32];
    if (new_token(tok, sizeof tok, h) || add_token(&s, "dev-admin", GD_ROLE_ADMIN, h)) {
      fprintf(stderr, "grayd: cannot make the dev token\n");
      return 1;
    }
    fprintf(stderr, "grayd: dev admin token: %s\n", tok);
  }

  SSL_CTX *tls = NULL;
  if (cfg->tls_cert[0]) {
    tls = SSL_CTX_new(TLS_server_method());
    if (!tls || SSL_CTX_set_min_proto_version(tls, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(tls, cfg->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(tls, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(tls) != 1) {
      char e[256];
      ERR_error_string_n(ERR_get_error(), e, sizeof e);
      fprintf(stderr, "grayd: TLS set-up failed (%s, %s): %s\n", cfg->tls_cert, cfg->tls_key, e);
      return 1;
    }
  }

  /* One grayd per database: a second one would hand out the same registry
   * revisions. The lock dies with the process, kill -9 included. */
  char lockpath[4200];
  snprintf(lockpath, sizeof lockpath, "%s.lock", cfg->data_path);
  int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
    fprintf(stderr, "grayd: %s is in use by another grayd (lock %s: %s)\n", cfg->data_path, lockpath,
            strerror(errno));
    return 1;
  }
  gray_error_t err;
  s.store = gd_store_sqlite_open(cfg->data_path, &err);
  if (!s.store) {
    fprintf(stderr, "grayd: cannot open the store %s: %s\n", cfg->data_path, err.message);
    return 1;
  }
  s.store_id = s.store->ops->store_id(s.store);
  s.revision = s.reserved = s.store->ops->revision(s.store);
  if (gd_policies_load(&s, &err) != GRAY_OK) {
    fprintf(stderr, "grayd: cannot load policies: %s\n", err.message);
    return 1;
  }
  srandom((unsigned)gd_mono_ms());

  signal(SIGPIPE, SIG_IGN);
  /* The epoll changelist folds the add/remove pairs a request cycle makes
   * on one descriptor into at most one epoll_ctl per loop turn. */
  struct event_config *ecfg = event_config_new();
  if (!ecfg) abort();
  event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  g_base = s.base = event_base_new_with_config(ecfg);
  event_config_free(ecfg);
  if (!s.base) abort();
  s.registry = gd_registry_new();
  if (gd_registry_restore(&s, &err) != GRAY_OK) {
    fprintf(stderr, "grayd: cannot restore the registry: %s\n", err.message);
    return 1;
  }
  s.watch = gd_watch_new(&s, (size_t)cfg->event_window, cfg->max_watchers);
  s.audit_timer = evtimer_new(s.base, on_batch, &s);
  s.http = gd_http_new(s.base, &cfg->http, tls, gd_api_handle, &s);
  int bound = 0;
  if (!s.audit_timer || !s.http || gd_http_listen(s.http, cfg->listen_host, cfg->listen_port, &bound, &err)) {
    fprintf(stderr, "grayd: %s\n", err.message);
    return 1;
  }
  struct event *sweep = event_new(s.base, -1, EV_PERSIST, on_sweep, &s);
  struct timeval tv = {0, 250000};
  event_add(sweep, &tv);
  struct event *sigint = evsignal_new(s.base, SIGINT, on_signal, NULL);
  struct event *sigterm = evsignal_new(s.base, SIGTERM, on_signal, NULL);
  event_add(sigint, NULL);
  event_add(sigterm, NULL);

  fprintf(stderr, "grayd: listening on %s://%s%s%s:%d\n", tls ? "https" : "http",
          strchr(cfg->listen_host, ':') ? "[" : "", cfg->listen_host, strchr(cfg->listen_host, ':') ? "]" : "",
          bound);
  gd_log("info", "store %s (%s), revision %lld, %zu policies, %zu tokens", cfg->data_path, s.store_id,
         (long long)s.revision, s.npolicies, s.ntokens);
  fflush(stderr);
  static char logbuf[1 << 16];
  setvbuf(stderr, logbuf, _IOFBF, sizeof logbuf);
  event_base_dispatch(s.base);
  fflush(stderr);

  gd_batch_flush(&s);
  gd_http_free(s.http);
  gd_watch_free(s.watch);
  gd_registry_free(s.registry);
  gd_policies_free(&s);
  gd_agents_free(&s);
  event_free(sweep);
  event_free(sigint);
  event_free(sigterm);
  event_free(s.audit_timer);
  for (size_t i = 0; i < s.naudit; i++) gd_audit_rec_clear(&s.audit_buf[i]);
  free(s.audit_buf);
  free(s.inst_buf);
  free(s.tokens);
  s.store->ops->close(s.store);
  event_base_free(s.base);
  if (tls) SSL_CTX_free(tls);
  return 0;
}
