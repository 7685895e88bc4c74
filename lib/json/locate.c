/* Map a byte offset in a JSON text to the JSON path there, so syntax errors
 * and duplicate keys name where they are, like every other refusal. The
 * text before the offset is known to be well-formed up to the error, so a
 * small scanner is enough. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/model.h"
#include "json/internal.h"

static int plain_key(const char *k, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = k[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-' || c == ':'))
      return 0;
  }
  return 1;
}

static void jpath_append(gray__jpath *p, const char *s, size_t n) {
  size_t room = sizeof(p->buf) - 1 - p->len;
  if (n > room) {
    /* Mark the cut so nobody mistakes a truncated path for a real one. */
    if (p->len >= 3 && sizeof(p->buf) - 1 >= 3) {
      p->len = sizeof(p->buf) - 4;
      memcpy(p->buf + p->len, "...", 3);
      p->len += 3;
    }
    p->buf[p->len] = '\0';
    return;
  }
  memcpy(p->buf + p->len, s, n);
  p->len += n;
  p->buf[p->len] = '\0';
}

static size_t jpath_key_n(gray__jpath *p, const char *key, size_t n) {
  size_t mark = p->len;
  if (plain_key(key, n)) {
    if (p->len) jpath_append(p, ".", 1);
    jpath_append(p, key, n);
  } else {
    char q[96];
    gray__quote(key, n, q, sizeof q);
    jpath_append(p, "[", 1);
    jpath_append(p, q, strlen(q));
    jpath_append(p, "]", 1);
  }
  return mark;
}

size_t gray__jpath_key(gray__jpath *p, const char *key) { return jpath_key_n(p, key, strlen(key)); }

size_t gray__jpath_index(gray__jpath *p, size_t i) {
  char b[32];
  size_t mark = p->len;
  int n = snprintf(b, sizeof b, "[%zu]", i);
  jpath_append(p, b, (size_t)n);
  return mark;
}

void gray__jpath_pop(gray__jpath *p, size_t mark) {
  if (mark <= p->len) {
    p->len = mark;
    p->buf[mark] = '\0';
  }
}

#define LOCATE_DEPTH 64

static int hex4(const char *p, size_t n, unsigned *out) {
  unsigned v = 0;
  if (n < 4) return 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

/* Decode a JSON string body (escapes as written) into out, so a key in an
 * error path reads as it does in every other message. Returns the length;
 * stops quietly at the buffer's end or at a malformed escape. */
static size_t unescape(const char *p, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 4 < cap; i++) {
    if (p[i] != '\\') {
      out[o++] = p[i];
      continue;
    }
    if (++i >= n) break;
    switch (p[i]) {
      case 'b': out[o++] = '\b'; break;
      case 'f': out[o++] = '\f'; break;
      case 'n': out[o++] = '\n'; break;
      case 'r': out[o++] = '\r'; break;
      case 't': out[o++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (!hex4(p + i + 1, n - i - 1, &cp)) return o;
        i += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < n && p[i + 1] == '\\' && p[i + 2] == 'u' &&
            hex4(p + i + 3, n - i - 3, &lo) && lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        }
        if (cp < 0x80) {
          out[o++] = (char)cp;
        } else if (cp < 0x800) {
          out[o++] = (char)(0xc0 | (cp >> 6));
          out[o++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
          out[o++] = (char)(0xe0 | (cp >> 12));
          out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
          out[o++] = (char)(0x80 | (cp & 0x3f));
        } else {
          out[o++] = (char)(0xf0 | (cp >> 18));
          out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
          out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
          out[o++] = (char)(0x80 | (cp & 0x3f));
        }
        break;
      }
      default: out[o++] = p[i]; break; /* \" \\ \/ */
    }
  }
  return o;
}

typedef struct frame {
  int array;
  size_t index;
  const char *key; /* raw key bytes (still escaped) */
  size_t keylen;
  int have_key;
} frame;

static void locate(const char *buf, size_t pos, gray__jpath *out) {
  frame st[LOCATE_DEPTH];
  size_t depth = 0; /* may exceed LOCATE_DEPTH; frames past it are not kept */
  int expect_key = 0;
  for (size_t i = 0; i < pos;) {
    char ch = buf[i];
    if (ch == '"') {
      size_t s = ++i;
      while (i < pos && buf[i] != '"') i += buf[i] == '\\' ? 2 : 1;
      size_t e = i < pos ? i : pos;
      i++;
      if (expect_key && depth && depth <= LOCATE_DEPTH) {
        st[depth - 1].key = buf + s;
        st[depth - 1].keylen = e - s;
        st[depth - 1].have_key = 1;
        expect_key = 0;
      }
      continue;
    }
    if (ch == '{' || ch == '[') {
      if (depth < LOCATE_DEPTH) {
        st[depth].array = ch == '[';
        st[depth].index = 0;
        st[depth].have_key = 0;
      }
      depth++;
      expect_key = ch == '{';
    } else if (ch == '}' || ch == ']') {
      if (depth) depth--;
      expect_key = 0;
    } else if (ch == ',') {
      if (depth && depth <= LOCATE_DEPTH) {
        frame *f = &st[depth - 1];
        if (f->array)
          f->index++;
        else {
          f->have_key = 0;
          expect_key = 1;
        }
      }
    }
    i++;
  }
  out->len = 0;
  out->buf[0] = '\0';
  size_t keep = depth < LOCATE_DEPTH ? depth : LOCATE_DEPTH;
  for (size_t d = 0; d < keep; d++) {
    if (st[d].array) {
      /* "[" just opened with nothing in it yet still names element 0. */
      gray__jpath_index(out, st[d].index);
    } else if (st[d].have_key) {
      char key[GRAY_ERROR_PATH_MAX];
      jpath_key_n(out, key, unescape(st[d].key, st[d].keylen, key, sizeof key));
    } else {
      break;
    }
  }
  if (depth > LOCATE_DEPTH) jpath_append(out, "...", 3);
}

int gray__json_syntax_error(const char *buf, size_t len, const json_error_t *jerr, gray_error_t *err) {
  gray__jpath p;
  char msg[GRAY_ERROR_TEXT_MAX];
  enum json_error_code code = json_error_code(jerr);
  /* jansson leaves the text empty when an allocation failed before it could
   * say anything (lexer set-up); its explicit code covers the rest. */
  if (code == json_error_out_of_memory || jerr->text[0] == '\0') {
    gray__error_set(err, GRAY_ENOMEM, "", "out of memory");
    return GRAY_ENOMEM;
  }
  size_t pos = (size_t)jerr->position;
  if (pos > len) pos = len;
  locate(buf, pos, &p);
  if (code == json_error_duplicate_key) {
    snprintf(msg, sizeof msg, "duplicate key (line %d, column %d)", jerr->line, jerr->column);
  } else {
    snprintf(msg, sizeof msg, "invalid JSON at line %d, column %d: %s", jerr->line, jerr->column,
             jerr->text);
  }
  gray__error_set(err, GRAY_EJSON, p.buf, msg);
  return GRAY_EJSON;
}

int gray__read_file(const char *path, size_t max, char **out, size_t *len, gray_error_t *err) {
  char msg[GRAY_ERROR_TEXT_MAX];
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  *out = NULL;
  *len = 0;
  if (fd < 0) {
    snprintf(msg, sizeof msg, "cannot open %s: %s", path, strerror(errno));
    gray__error_set(err, GRAY_EIO, "", msg);
    return GRAY_EIO;
  }
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size > max) {
    close(fd);
    snprintf(msg, sizeof msg, "document is %lld bytes, over the limit of %zu bytes",
             (long long)st.st_size, max);
    gray__error_set(err, GRAY_ETOOBIG, "", msg);
    return GRAY_ETOOBIG;
  }
  size_t cap = 4096, n = 0;
  char *buf = gray__malloc(cap);
  if (!buf) goto oom;
  for (;;) {
    if (n == cap) {
      if (cap > max) break;
      char *nb = gray__realloc(buf, cap * 2);
      if (!nb) goto oom;
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      snprintf(msg, sizeof msg, "cannot read %s: %s", path, strerror(errno));
      gray__error_set(err, GRAY_EIO, "", msg);
      gray__free(buf);
      close(fd);
      return GRAY_EIO;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  if (n > max) {
    snprintf(msg, sizeof msg, "document is over the limit of %zu bytes", max);
    gray__error_set(err, GRAY_ETOOBIG, "", msg);
    gray__free(buf);
    return GRAY_ETOOBIG;
  }
  *out = buf;
  *len = n;
  return GRAY_OK;
oom:
  gray__free(buf);
  close(fd);
  gray__error_set(err, GRAY_ENOMEM, "", "out of memory");
  return GRAY_ENOMEM;
}
