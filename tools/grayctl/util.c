/* Small pieces shared by the commands: option errors, integers, capped
 * strings, files, tables, JSON getters. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "grayctl.h"

#define BUF_CAP ((size_t)64 << 20) /* no string grayctl builds comes near this */

int grayctl_global_option(grayctl_globals *g, int opt, const char *arg) {
  switch (opt) {
    case GRAYCTL_O_SERVER: g->server = arg; return 1;
    case GRAYCTL_O_TOKEN: g->token = arg; return 1;
    case GRAYCTL_O_CA: g->ca = arg; return 1;
    case GRAYCTL_O_INSECURE_PLAIN: g->insecure_plain = 1; return 1;
    default: return 0;
  }
}

int grayctl_option_error(const char *cmd, char **argv) {
  /* getopt_long leaves the option's value in optopt when only its argument
   * is missing; our long options all have values above any character. */
  if (optopt >= 0x100)
    fprintf(stderr, "grayctl %s: %s needs a value\n", cmd, argv[optind - 1]);
  else
    fprintf(stderr, "grayctl %s: unknown option \"%s\" (try grayctl %s --help)\n", cmd, argv[optind - 1], cmd);
  return GRAYCTL_EUSAGE;
}

void grayctl_usage_line(const char *usage) {
  const char *nl = strchr(usage, '\n');
  int n = nl ? (int)(nl - usage) : (int)strlen(usage);
  fprintf(stderr, "%.*s\n", n, usage);
}

int grayctl_parse_int(const char *s, long long min, long long max, long long *out) {
  if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9'))) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < min || v > max) return -1;
  *out = v;
  return 0;
}

static int buf_reserve(grayctl_buf *b, size_t more) {
  if (b->failed) return -1;
  if (more > BUF_CAP || b->len + more + 1 > BUF_CAP) {
    b->failed = 1;
    return -1;
  }
  if (b->len + more + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->failed = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

void grayctl_buf_add(grayctl_buf *b, const char *s) {
  size_t n = strlen(s);
  if (buf_reserve(b, n)) return;
  memcpy(b->p + b->len, s, n + 1);
  b->len += n;
}

void grayctl_buf_addf(grayctl_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || buf_reserve(b, (size_t)n)) {
    b->failed = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void grayctl_buf_add_escaped(grayctl_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  if (buf_reserve(b, 3 * n)) return;
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    /* RFC 3986 unreserved characters go as they are; everything else,
     * including '/', '?', '&' and '%', is encoded, so a name can never
     * reach another route or add a query parameter. */
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
        ch == '.' || ch == '_' || ch == '~') {
      b->p[b->len++] = (char)ch;
    } else {
      b->p[b->len++] = '%';
      b->p[b->len++] = hex[ch >> 4];
      b->p[b->len++] = hex[ch & 15];
    }
  }
  b->p[b->len] = '\0';
}

void grayctl_buf_free(grayctl_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  b->failed = 0;
}

int grayctl_read_file(const char *what, const char *file, size_t cap, char **out, size_t *len) {
  int is_stdin = strcmp(file, "-") == 0;
  FILE *f = is_stdin ? stdin : fopen(file, "rb");
  const char *name = is_stdin ? "standard input" : file;
  char shown[512];
  *out = NULL;
  *len = 0;
  if (!f) {
    fprintf(stderr, "grayctl %s: cannot open %s: %s\n", what, grayctl_clean(name, shown, sizeof shown),
            strerror(errno));
    return GRAYCTL_EFAIL;
  }
  size_t size = 0, alloc = 64 << 10;
  char *p = malloc(alloc);
  int rc = GRAYCTL_EFAIL;
  if (!p) goto oom;
  for (;;) {
    if (size + 1 == alloc) {
      char *q = realloc(p, alloc * 2);
      if (!q) goto oom;
      p = q;
      alloc *= 2;
    }
    size_t got = fread(p + size, 1, alloc - 1 - size, f);
    size += got;
    if (size > cap) {
      fprintf(stderr, "grayctl %s: %s is larger than %zu MiB\n", what, grayctl_clean(name, shown, sizeof shown),
              cap >> 20);
      rc = GRAYCTL_EINVALID;
      goto fail;
    }
    if (got == 0) break;
  }
  if (ferror(f)) {
    fprintf(stderr, "grayctl %s: cannot read %s: %s\n", what, grayctl_clean(name, shown, sizeof shown),
            strerror(errno));
    goto fail;
  }
  p[size] = '\0';
  if (!is_stdin) fclose(f);
  *out = p;
  *len = size;
  return GRAYCTL_OK;
oom:
  fprintf(stderr, "grayctl %s: out of memory\n", what);
fail:
  free(p);
  if (!is_stdin) fclose(f);
  return rc;
}

const char *grayctl_clean(const char *s, char *dst, size_t n) {
  size_t i = 0;
  if (!n) return "";
  for (; s && *s && i + 1 < n; s++) {
    unsigned char ch = (unsigned char)*s;
    dst[i++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  dst[i] = '\0';
  return dst;
}

/* ---- Tables ------------------------------------------------------------- */

struct grayctl_table {
  size_t ncols, nrows, cap; /* rows include the header */
  char **cells;
};

grayctl_table *grayctl_table_new(size_t ncols, const char *const *header) {
  grayctl_table *t = calloc(1, sizeof(*t));
  if (!t) return NULL;
  t->ncols = ncols;
  if (grayctl_table_add(t, header)) {
    grayctl_table_free(t);
    return NULL;
  }
  return t;
}

int grayctl_table_add(grayctl_table *t, const char *const *cells) {
  if (t->nrows == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
    if (!c) return -1;
    t->cells = c;
    t->cap = cap;
  }
  char **row = t->cells + t->nrows * t->ncols;
  for (size_t i = 0; i < t->ncols; i++) {
    const char *s = cells[i] ? cells[i] : "-";
    size_t n = strlen(s);
    row[i] = malloc(n + 1);
    if (!row[i]) {
      while (i--) free(row[i]);
      return -1;
    }
    grayctl_clean(s, row[i], n + 1);
  }
  t->nrows++;
  return 0;
}

size_t grayctl_table_rows(const grayctl_table *t) {
  return t->nrows - 1;
}

/* Display width in characters, counting a UTF-8 sequence as one. */
static size_t width(const char *s) {
  size_t w = 0;
  for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
  return w;
}

void grayctl_table_print(const grayctl_table *t, FILE *f) {
  size_t w[16] = {0};
  size_t ncols = t->ncols < 16 ? t->ncols : 16;
  for (size_t r = 0; r < t->nrows; r++)
    for (size_t i = 0; i < ncols; i++) {
      size_t n = width(t->cells[r * t->ncols + i]);
      if (n > w[i]) w[i] = n;
    }
  for (size_t r = 0; r < t->nrows; r++) {
    size_t last = ncols; /* no padding after the last non-empty cell */
    while (last > 1 && !t->cells[r * t->ncols + last - 1][0]) last--;
    for (size_t i = 0; i < last; i++) {
      const char *s = t->cells[r * t->ncols + i];
      if (i + 1 == last) {
        fprintf(f, "%s\n", s);
      } else {
        fputs(s, f);
        for (size_t pad = width(s); pad < w[i] + 2; pad++) fputc(' ', f);
      }
    }
  }
}

void grayctl_table_free(grayctl_table *t) {
  if (!t) return;
  for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
  free(t->cells);
  free(t);
}

const char *grayctl_jstr(json_t *o, const char *key, const char *dflt) {
  json_t *v = json_object_get(o, key);
  return json_is_string(v) ? json_string_value(v) : dflt;
}

const char *grayctl_jint(json_t *o, const char *key, char *buf, size_t n) {
  json_t *v = json_object_get(o, key);
  if (json_is_integer(v)) {
    snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    return buf;
  }
  if (json_is_real(v)) {
    snprintf(buf, n, "%.0f", json_real_value(v));
    return buf;
  }
  return "-";
}
