/* gray-agent: the Nginx side — staged files, nginx -t on exactly what will
 * be swapped in, atomic swap, reload, and the gray_status check.
 *
 * How the test sees the staged files: the main config names the live
 * files by their full path (DIR/gray-upstreams.conf, DIR/gray-policies.json).
 * The agent writes the new files into DIR/.gray-staging/ and a copy of the
 * main config, next to it (so relative paths resolve the same), in which
 * those two paths point at the staged files; `nginx -t -c COPY` then loads
 * the main config exactly as a reload would, with the new files. Only when
 * it passes are the staged files renamed over the live ones. */
#define _GNU_SOURCE /* pipe2 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

extern char **environ;

#define CONF_MAX (4u << 20)      /* the main config we copy */
#define NGINX_TEST_TIMEOUT_MS 30000
#define RELOAD_TIMEOUT_MS 30000

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- running commands --------------------------------------------------------- */

int ga_run(char *const argv[], int timeout_ms, char *out, size_t size) {
  int p[2] = {-1, -1}, rc = -1, status = 0;
  size_t used = 0;
  pid_t pid = -1;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, defaults;
  if (size) out[0] = '\0';
  if (pipe2(p, O_CLOEXEC) != 0) {
    snprintf(out, size, "pipe: %s", strerror(errno));
    return -1;
  }
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  /* The child gets a clean signal state: our threads block signals, and
   * SIGPIPE is ignored here; Nginx must not inherit either. */
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGHUP);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  int e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(p[1]);
  if (e != 0) {
    snprintf(out, size, "cannot run %s: %s", argv[0], strerror(e));
    close(p[0]);
    return -1;
  }
  int64_t deadline = mono_ms() + timeout_ms;
  int killed = 0;
  for (;;) {
    int64_t left = deadline - mono_ms();
    if (left <= 0 && !killed) {
      kill(pid, SIGKILL);
      killed = 1;
      left = 1000; /* drain what is left after the kill */
    } else if (left <= 0) {
      break;
    }
    struct pollfd pf = {p[0], POLLIN, 0};
    int n = poll(&pf, 1, (int)(left > 1000 ? 1000 : left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char chunk[4096];
    ssize_t r = read(p[0], chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (size && used < size - 1) {
      size_t take = (size_t)r < size - 1 - used ? (size_t)r : size - 1 - used;
      memcpy(out + used, chunk, take);
      used += take;
      out[used] = '\0';
    }
  }
  close(p[0]);
  if (!killed && mono_ms() >= deadline) {
    kill(pid, SIGKILL);
    killed = 1;
  }
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (killed) {
    size_t n = strlen(out);
    snprintf(out + n, size - n, "%s(killed after %d ms)", n ? " " : "", timeout_ms);
    rc = 128 + SIGKILL;
  } else if (WIFEXITED(status)) {
    rc = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    rc = 128 + WTERMSIG(status);
  }
  return rc;
}

static int reload_master(ga_nginx *n, long master, char *err, size_t errsz);

/* ---- files ---------------------------------------------------------------- */

static int fsync_dir_of(const char *path) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s", path);
  int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Write text to path (created 0644: Nginx's workers, often another user,
 * read these files) and fsync it. */
static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  size_t len = strlen(text), off = 0;
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    off += (size_t)w;
  }
  if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return close(fd);
}

int ga_write_atomic(const char *path, const char *text) {
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  if (write_file(tmp, text) != 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    return -1;
  }
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    return -1;
  }
  fsync_dir_of(path);
  return 0;
}

int ga_read_file(const char *path, size_t max, char **out, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0) goto fail;
  if ((size_t)st.st_size > max) {
    close(fd);
    errno = EFBIG;
    return -1;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (!buf) goto fail;
  size_t off = 0;
  while (off < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      free(buf);
      goto fail;
    }
    if (r == 0) break;
    off += (size_t)r;
  }
  buf[off] = '\0';
  close(fd);
  *out = buf;
  *len = off;
  return 0;
fail: {
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}
}

/* ---- the main config ---------------------------------------------------------- */

/* A path character: an occurrence of the live path followed by one of
 * these is another file (gray-policies.json.bak), not ours. */
static int path_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-' || c == '/';
}

/* Occurrences of `what` in text as a whole path; with `with`, a new string
 * where each is replaced (*count set either way). */
static char *replace_path(const char *text, const char *what, const char *with, size_t *count) {
  size_t wl = strlen(what), nl = with ? strlen(with) : 0, n = 0;
  for (const char *p = strstr(text, what); p; p = strstr(p + wl, what))
    if (!path_char(p[wl]) && (p == text || !path_char(p[-1]))) n++;
  *count = n;
  if (!with) return NULL;
  size_t tl = strlen(text);
  char *out = malloc(tl + n * (nl > wl ? nl - wl : 0) + 1), *o = out;
  if (!out) return NULL;
  const char *s = text;
  for (const char *p = strstr(s, what); p; p = strstr(p + wl, what)) {
    if (path_char(p[wl]) || (p != text && path_char(p[-1]))) continue;
    memcpy(o, s, (size_t)(p - s));
    o += p - s;
    memcpy(o, with, nl);
    o += nl;
    s = p + wl;
  }
  memcpy(o, s, strlen(s) + 1); /* fits: sized above */
  return out;
}

/* The `pid FILE;` directive of the main config, when there is one at the
 * start of a line (the main context). */
static int conf_pid(const char *conf_text, char *out, size_t size) {
  for (const char *l = conf_text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    while (*l == ' ' || *l == '\t') l++;
    if (strncmp(l, "pid", 3) || (l[3] != ' ' && l[3] != '\t')) continue;
    l += 3;
    while (*l == ' ' || *l == '\t') l++;
    size_t n = 0;
    while (l[n] && l[n] != ';' && l[n] != '\n' && l[n] != ' ' && l[n] != '\t') n++;
    if (l[n] != ';' && l[n] != ' ' && l[n] != '\t') continue;
    if (n == 0 || n >= size) continue;
    memcpy(out, l, n);
    out[n] = '\0';
    return 1;
  }
  return 0;
}

/* a + b into buf; -1 when it does not fit. */
static int path_join(char *buf, size_t size, const char *a, const char *b) {
  int n = snprintf(buf, size, "%s%s", a, b);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

int ga_nginx_init(ga_nginx *n, char *err, size_t errsz) {
  char *text = NULL;
  size_t len = 0, c1 = 0, c2 = 0;
  if (path_join(n->live_pol, sizeof n->live_pol, n->dir, "/gray-policies.json") ||
      path_join(n->live_up, sizeof n->live_up, n->dir, "/gray-upstreams.conf") ||
      path_join(n->stage_dir, sizeof n->stage_dir, n->dir, "/.gray-staging") ||
      path_join(n->stage_pol, sizeof n->stage_pol, n->stage_dir, "/gray-policies.json") ||
      path_join(n->stage_up, sizeof n->stage_up, n->stage_dir, "/gray-upstreams.conf") ||
      path_join(n->test_conf, sizeof n->test_conf, n->conf, ".gray-agent-test")) {
    snprintf(err, errsz, "--nginx-dir or --nginx-conf is too long a path");
    return -1;
  }
  if (ga_read_file(n->conf, CONF_MAX, &text, &len) != 0) {
    snprintf(err, errsz, "cannot read the main config %s: %s", n->conf, strerror(errno));
    return -1;
  }
  replace_path(text, n->live_up, NULL, &c1);
  replace_path(text, n->live_pol, NULL, &c2);
  if (!c1 || !c2) {
    snprintf(err, errsz,
             "%s must name the agent's files by their full path, as --nginx-dir spells them: "
             "`include %s;` and `gray_policies %s;` (in the http block of this file, not of an included one)",
             n->conf, n->live_up, n->live_pol);
    free(text);
    return -1;
  }
  if (n->pid_file) {
    snprintf(n->pid_path, sizeof n->pid_path, "%s", n->pid_file);
  } else {
    char pid[4096];
    if (conf_pid(text, pid, sizeof pid)) {
      if (pid[0] == '/' || !n->prefix)
        snprintf(n->pid_path, sizeof n->pid_path, "%s", pid);
      else
        snprintf(n->pid_path, sizeof n->pid_path, "%s/%s", n->prefix, pid);
    } else {
      snprintf(n->pid_path, sizeof n->pid_path, "/run/nginx.pid");
    }
  }
  free(text);
  if (mkdir(n->stage_dir, 0755) != 0 && errno != EEXIST) {
    snprintf(err, errsz, "cannot make %s: %s", n->stage_dir, strerror(errno));
    return -1;
  }
  return 0;
}

/* Nginx's message without its "nginx: " prefixes and blank lines, on one
 * line per message. */
static void tidy(char *s) {
  char *o = s;
  for (char *l = s; *l;) {
    char *e = strchr(l, '\n');
    size_t n = e ? (size_t)(e - l) : strlen(l);
    if (n >= 7 && !strncmp(l, "nginx: ", 7)) l += 7, n -= 7;
    if (n) {
      if (o != s) *o++ = '\n';
      memmove(o, l, n);
      o += n;
    }
    if (!e) break;
    l = e + 1;
  }
  *o = '\0';
}

int ga_nginx_test(ga_nginx *n, const char *pol_text, const char *up_text, char *err, size_t errsz) {
  char *conf = NULL, *a = NULL, *b = NULL;
  size_t len, c;
  int rc = -1;
  if (mkdir(n->stage_dir, 0755) != 0 && errno != EEXIST) {
    snprintf(err, errsz, "cannot make %s: %s", n->stage_dir, strerror(errno));
    return -1;
  }
  if (write_file(n->stage_pol, pol_text) != 0 || write_file(n->stage_up, up_text) != 0) {
    snprintf(err, errsz, "cannot write the staged files in %s: %s", n->stage_dir, strerror(errno));
    return -1;
  }
  /* The main config as it is now, re-read every time: an operator's edit
   * is part of what the next reload loads. */
  if (ga_read_file(n->conf, CONF_MAX, &conf, &len) != 0) {
    snprintf(err, errsz, "cannot read the main config %s: %s", n->conf, strerror(errno));
    return -1;
  }
  if (!(a = replace_path(conf, n->live_up, n->stage_up, &c)) || !c ||
      !(b = replace_path(a, n->live_pol, n->stage_pol, &c)) || !c) {
    snprintf(err, errsz, "%s no longer names %s and %s", n->conf, n->live_up, n->live_pol);
    goto out;
  }
  if (write_file(n->test_conf, b) != 0) {
    snprintf(err, errsz, "cannot write the test copy %s: %s", n->test_conf, strerror(errno));
    goto out;
  }
  char *argv[8];
  int k = 0;
  argv[k++] = (char *)n->bin;
  argv[k++] = "-t";
  argv[k++] = "-q";
  if (n->prefix) {
    argv[k++] = "-p";
    argv[k++] = (char *)n->prefix;
  }
  argv[k++] = "-c";
  argv[k++] = n->test_conf;
  argv[k] = NULL;
  char out[GA_ERROR_MAX];
  int st = ga_run(argv, NGINX_TEST_TIMEOUT_MS, out, sizeof out);
  unlink(n->test_conf);
  if (st != 0) {
    tidy(out);
    snprintf(err, errsz, "nginx -t refused the new files (exit %d): %s", st, out[0] ? out : "(no output)");
    goto out;
  }
  rc = 0;
out:
  free(conf);
  free(a);
  free(b);
  return rc;
}

int ga_nginx_swap(ga_nginx *n, int pol, int up, char *err, size_t errsz) {
  if (up && rename(n->stage_up, n->live_up) != 0) {
    snprintf(err, errsz, "cannot move %s over %s: %s", n->stage_up, n->live_up, strerror(errno));
    return -1;
  }
  if (pol && rename(n->stage_pol, n->live_pol) != 0) {
    snprintf(err, errsz, "cannot move %s over %s: %s", n->stage_pol, n->live_pol, strerror(errno));
    return -1;
  }
  fsync_dir_of(n->live_pol);
  return 0;
}

long ga_nginx_pid(ga_nginx *n) {
  char *text = NULL;
  size_t len = 0;
  long pid = 0;
  if (ga_read_file(n->pid_path, 64, &text, &len) != 0) return 0;
  size_t i = 0;
  while (i < len && text[i] >= '0' && text[i] <= '9' && pid < 100000000) pid = pid * 10 + (text[i++] - '0');
  if (i == 0 || (i < len && text[i] != '\n')) pid = 0;
  free(text);
  if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno != EPERM) pid = 0;
  return pid;
}

/* The master's workers that still accept connections: children whose
 * title is "nginx: worker process" (a worker told to quit retitles itself
 * "... is shutting down" as it closes its listening sockets). At most max;
 * returns how many. */
static size_t accepting_workers(long master, long *pids, size_t max) {
  size_t n = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  if (!d) return 0;
  while ((e = readdir(d)) != NULL && n < max) {
    char path[300], buf[512];
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) continue;
    buf[r] = '\0';
    char *rp = strrchr(buf, ')');
    long ppid = 0;
    /* ") S PPID ..." */
    if (!rp || rp[1] != ' ' || !rp[2] || rp[3] != ' ') continue;
    for (char *q = rp + 4; *q >= '0' && *q <= '9' && ppid < 100000000; q++) ppid = ppid * 10 + (*q - '0');
    if (ppid != master) continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) continue;
    for (ssize_t i = 0; i < r; i++)
      if (!buf[i]) buf[i] = ' ';
    buf[r] = '\0';
    if (strncmp(buf, "nginx: worker process", 21) || strstr(buf, "shutting down")) continue;
    pids[n++] = strtol(e->d_name, NULL, 10);
  }
  closedir(d);
  return n;
}

/* After a reload, wait (bounded) until the workers that accepted before it
 * stop accepting: the master lets old and new workers accept side by side
 * for about 100 ms, and "applied" means a new connection gets the new
 * configuration. */
static void wait_old_workers(ga_nginx *n, long master, const long *old, size_t nold) {
  int64_t deadline = mono_ms() + n->confirm_timeout_ms;
  while (nold && mono_ms() < deadline) {
    long now[GA_STATUS_WORKERS];
    size_t k = accepting_workers(master, now, GA_STATUS_WORKERS), still = 0;
    for (size_t i = 0; i < nold; i++)
      for (size_t j = 0; j < k; j++)
        if (old[i] == now[j]) still++;
    if (!still) return;
    sleep_ms(20);
  }
  if (nold) ga_log(GA_WARN, "old Nginx workers still accept connections %d ms after the reload", n->confirm_timeout_ms);
}

int ga_nginx_reload(ga_nginx *n, char *err, size_t errsz) {
  long master = ga_nginx_pid(n), old[GA_STATUS_WORKERS];
  size_t nold = master > 0 ? accepting_workers(master, old, GA_STATUS_WORKERS) : 0;
  int rc = reload_master(n, master, err, errsz);
  if (rc == 0) wait_old_workers(n, master, old, nold);
  return rc;
}

static int reload_master(ga_nginx *n, long master, char *err, size_t errsz) {
  if (n->reload_argv) {
    char out[GA_ERROR_MAX];
    int st = ga_run(n->reload_argv, RELOAD_TIMEOUT_MS, out, sizeof out);
    if (st != 0) {
      tidy(out);
      snprintf(err, errsz, "the reload command %s failed (exit %d): %s", n->reload_argv[0], st,
               out[0] ? out : "(no output)");
      return -1;
    }
    return 0;
  }
  long pid = master;
  if (pid <= 0) {
    snprintf(err, errsz, "no running Nginx master in the pid file %s", n->pid_path);
    return -1;
  }
  if (kill((pid_t)pid, SIGHUP) != 0) {
    snprintf(err, errsz, "cannot signal the Nginx master %ld: %s", pid, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- gray_status -------------------------------------------------------------- */

typedef struct sink {
  char buf[65536];
  size_t len;
  int over;
} sink;

static size_t on_body(char *p, size_t sz, size_t nm, void *arg) {
  sink *s = arg;
  size_t n = sz * nm;
  if (s->len + n >= sizeof s->buf) {
    s->over = 1;
    return 0;
  }
  memcpy(s->buf + s->len, p, n);
  s->len += n;
  return n;
}

int ga_nginx_status(ga_nginx *n, ga_status *st, char *err, size_t errsz) {
  sink *s = calloc(1, sizeof *s);
  CURL *h = curl_easy_init();
  char cerr[CURL_ERROR_SIZE] = "";
  long code = 0;
  int rc = -1;
  json_t *j = NULL;
  st->policy_revision = st->upstreams_revision = -1;
  st->policy_error[0] = '\0';
  st->nworkers = 0;
  if (!s || !h) {
    snprintf(err, errsz, "out of memory");
    goto out;
  }
  curl_easy_setopt(h, CURLOPT_URL, n->status_url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
  /* A new connection each time: after a reload, only a new connection is
   * sure to reach a new worker. */
  curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
  curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "gray-agent");
  CURLcode cc = curl_easy_perform(h);
  if (cc != CURLE_OK) {
    snprintf(err, errsz, "%s: %s", n->status_url,
             s->over ? "answer over 64 KiB" : cerr[0] ? cerr : curl_easy_strerror(cc));
    goto out;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  if (code != 200) {
    snprintf(err, errsz, "%s answered %ld", n->status_url, code);
    goto out;
  }
  json_error_t jerr;
  j = json_loadb(s->buf, s->len, 0, &jerr);
  json_t *pr = json_object_get(j, "policy_revision"), *ur = json_object_get(j, "upstreams_revision"),
         *pe = json_object_get(j, "policy_error");
  if (!json_is_object(j)) {
    snprintf(err, errsz, "%s: not JSON (%s)", n->status_url, j ? "not an object" : jerr.text);
    goto out;
  }
  json_t *ws = json_object_get(j, "workers"), *w;
  size_t i;
  json_array_foreach(ws, i, w) {
    json_t *wp = json_object_get(w, "pid"), *wpr = json_object_get(w, "policy_revision"),
           *wur = json_object_get(w, "upstreams_revision");
    if (st->nworkers == GA_STATUS_WORKERS) break;
    if (!json_is_integer(wp) || !json_is_integer(wpr) || !json_is_integer(wur)) continue;
    st->workers[st->nworkers].pid = (long)json_integer_value(wp);
    st->workers[st->nworkers].policy_revision = json_integer_value(wpr);
    st->workers[st->nworkers].upstreams_revision = json_integer_value(wur);
    st->nworkers++;
  }
  if (json_is_integer(pr)) st->policy_revision = json_integer_value(pr);
  if (json_is_integer(ur)) st->upstreams_revision = json_integer_value(ur);
  if (json_is_string(pe)) snprintf(st->policy_error, sizeof st->policy_error, "%s", json_string_value(pe));
  rc = 0;
out:
  json_decref(j);
  if (h) curl_easy_cleanup(h);
  free(s);
  return rc;
}

int ga_nginx_confirm(ga_nginx *n, int64_t pol_rev, int64_t up_rev, char *err, size_t errsz) {
  if (!n->status_url) return 0;
  int64_t deadline = mono_ms() + n->confirm_timeout_ms;
  ga_status *st = malloc(sizeof *st);
  char why[1024] = "no answer yet";
  if (!st) {
    snprintf(err, errsz, "out of memory");
    return -1;
  }
  for (;;) {
    if (ga_nginx_status(n, st, why, sizeof why) == 0) {
      long behind = 0;
      int64_t behind_rev = 0;
      for (size_t i = 0; i < st->nworkers; i++)
        if (st->workers[i].upstreams_revision == up_rev && st->workers[i].policy_revision != pol_rev) {
          behind = st->workers[i].pid;
          behind_rev = st->workers[i].policy_revision;
        }
      if (st->policy_revision == pol_rev && st->upstreams_revision == up_rev && !behind) {
        free(st);
        return 0;
      }
      if (behind && st->policy_revision == pol_rev && st->upstreams_revision == up_rev)
        snprintf(why, sizeof why, "worker %ld still shows policy_revision %lld", behind, (long long)behind_rev);
      else
        snprintf(why, sizeof why, "it shows policy_revision %lld, upstreams_revision %lld%s%s",
                 (long long)st->policy_revision, (long long)st->upstreams_revision,
                 st->policy_error[0] ? ", policy_error: " : "", st->policy_error);
    }
    if (mono_ms() >= deadline) break;
    sleep_ms(50);
  }
  free(st);
  snprintf(err, errsz,
           "Nginx did not confirm within %d ms (want policy_revision %lld, upstreams_revision %lld): %s",
           n->confirm_timeout_ms, (long long)pol_rev, (long long)up_rev, why);
  return -1;
}
