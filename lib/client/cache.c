/* The last-good snapshot on disk.
 *
 * Format: one header line, then the payload (a snapshot document):
 *   graylane-cache 1 sha256=<64 hex digits> len=<decimal>\n<payload>
 * The length catches a short write, the checksum any other damage; a file
 * that fails either is ignored by the caller. Written with the usual atomic
 * dance: a temp file in the same directory, fsync, rename over the old
 * file, fsync the directory so the rename itself survives a crash. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/internal.h"

#define MAGIC "graylane-cache 1 sha256="
#define HEADER_MAX 128

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* The directory of path ("." when it has none) into buf. */
static int dir_of(const char *path, char *buf, size_t size) {
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) : 1;
  if (slash == path) n = 1;
  if (n + 1 > size) return -1;
  memcpy(buf, slash ? path : ".", n);
  buf[n] = '\0';
  return 0;
}

int gray__cache_write(const char *path, const char *payload, size_t len, gray_error_t *err) {
  char hex[65], header[HEADER_MAX], dir[4096];
  size_t plen = strlen(path);
  char *tmp = gray__malloc(plen + 16);
  int fd = -1, rc = GRAY_OK, dfd, created = 0;
  if (!tmp) return gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
  if (len > GRAY__BODY_MAX) {
    rc = gray__seterr(err, GRAY_ETOOBIG, "", "snapshot of %zu bytes is over the cache limit", len);
    goto out;
  }
  gray__sha256_hex(payload, len, hex);
  int hlen = snprintf(header, sizeof header, MAGIC "%s len=%zu\n", hex, len);
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", 12);
  fd = mkstemp(tmp);
  if (fd < 0) {
    rc = gray__seterr(err, GRAY_EIO, "", "cannot create a temporary file next to %s: %s", path, strerror(errno));
    goto out;
  }
  created = 1;
  if (write_all(fd, header, (size_t)hlen) != 0 || write_all(fd, payload, len) != 0 || fsync(fd) != 0) {
    rc = gray__seterr(err, GRAY_EIO, "", "cannot write %s: %s", tmp, strerror(errno));
    goto out;
  }
  if (close(fd) != 0) {
    fd = -1;
    rc = gray__seterr(err, GRAY_EIO, "", "cannot write %s: %s", tmp, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    rc = gray__seterr(err, GRAY_EIO, "", "cannot rename the cache into %s: %s", path, strerror(errno));
    goto out;
  }
  created = 0; /* nothing to unlink now */
  if (dir_of(path, dir, sizeof dir) == 0 && (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
    /* Best effort: some file systems refuse fsync on directories. */
    (void)fsync(dfd);
    close(dfd);
  }
out:
  if (fd >= 0) close(fd);
  if (created) unlink(tmp);
  gray__free(tmp);
  return rc;
}

/* Parse the header line at p (n bytes available); sets *hlen, hex, *len. */
static int parse_header(const char *p, size_t n, size_t *hlen, char hex[65], size_t *len) {
  const size_t m = sizeof(MAGIC) - 1;
  size_t i;
  if (n < m + 64 + 6 || memcmp(p, MAGIC, m)) return -1;
  for (i = 0; i < 64; i++) {
    char ch = p[m + i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return -1;
    hex[i] = ch;
  }
  hex[64] = '\0';
  i = m + 64;
  if (memcmp(p + i, " len=", 5)) return -1;
  i += 5;
  size_t v = 0, digits = 0;
  for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
    if (digits >= 12) return -1;
    v = v * 10 + (size_t)(p[i] - '0');
  }
  if (!digits || i >= n || p[i] != '\n') return -1;
  *hlen = i + 1;
  *len = v;
  return 0;
}

int gray__cache_read(const char *path, char **payload, size_t *len, gray_error_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  char *buf = NULL, hex[65], want[65];
  size_t size, got = 0, hlen, plen;
  int rc = GRAY_OK;
  *payload = NULL;
  *len = 0;
  if (fd < 0) {
    if (errno == ENOENT) return gray__seterr(err, GRAY_ENOTFOUND, "", "%s does not exist", path);
    return gray__seterr(err, GRAY_EIO, "", "cannot open %s: %s", path, strerror(errno));
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = gray__seterr(err, GRAY_EIO, "", "%s is not a regular file", path);
    goto out;
  }
  if ((uint64_t)st.st_size > (uint64_t)GRAY__BODY_MAX + HEADER_MAX) {
    rc = gray__seterr(err, GRAY_ETOOBIG, "", "%s is larger than the cache limit", path);
    goto out;
  }
  size = (size_t)st.st_size;
  buf = gray__malloc(size + 1);
  if (!buf) {
    rc = gray__seterr(err, GRAY_ENOMEM, "", "out of memory");
    goto out;
  }
  while (got < size) {
    ssize_t k = read(fd, buf + got, size - got);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      rc = gray__seterr(err, GRAY_EIO, "", "cannot read %s: %s", path, strerror(errno));
      goto out;
    }
    if (k == 0) break;
    got += (size_t)k;
  }
  if (parse_header(buf, got < HEADER_MAX ? got : HEADER_MAX, &hlen, hex, &plen) != 0) {
    rc = gray__seterr(err, GRAY_EJSON, "", "%s has no valid cache header", path);
    goto out;
  }
  if (got - hlen != plen) {
    rc = gray__seterr(err, GRAY_EJSON, "", "%s holds %zu bytes of snapshot, its header says %zu (cut short?)",
                      path, got - hlen, plen);
    goto out;
  }
  gray__sha256_hex(buf + hlen, plen, want);
  if (memcmp(want, hex, 64)) {
    rc = gray__seterr(err, GRAY_EJSON, "", "%s fails its checksum", path);
    goto out;
  }
  memmove(buf, buf + hlen, plen);
  buf[plen] = '\0';
  *payload = buf;
  *len = plen;
  buf = NULL;
out:
  close(fd);
  gray__free(buf);
  return rc;
}
