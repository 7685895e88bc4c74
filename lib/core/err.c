#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/model.h"
#include "gray/err.h"

const char *gray_strerror(int err) {
  switch (err) {
#define GRAY__ERR_TEXT(name, val, msg) \
  case val:                            \
    return msg;
    GRAY_ERR_MAP(GRAY__ERR_TEXT)
#undef GRAY__ERR_TEXT
  }
  return "unknown error";
}

const char *gray_err_name(int err) {
  switch (err) {
#define GRAY__ERR_NAME(name, val, msg) \
  case val:                            \
    return #name;
    GRAY_ERR_MAP(GRAY__ERR_NAME)
#undef GRAY__ERR_NAME
  }
  return "EUNKNOWN";
}

char *gray_error_format(const gray_error_t *e, char *buf, size_t size) {
  if (!size) return buf;
  if (!e) {
    buf[0] = '\0';
  } else if (e->path[0]) {
    snprintf(buf, size, "%s: %s", e->path, e->message);
  } else {
    snprintf(buf, size, "%s", e->message);
  }
  return buf;
}

void gray__msg(char *msg, size_t msgsz, const char *fmt, ...) {
  va_list ap;
  if (!msg || !msgsz) return;
  va_start(ap, fmt);
  vsnprintf(msg, msgsz, fmt, ap);
  va_end(ap);
}

void gray__error_set(gray_error_t *e, gray_err_t code, const char *path, const char *msg) {
  if (!e) return;
  e->code = code;
  snprintf(e->path, sizeof(e->path), "%s", path ? path : "");
  snprintf(e->message, sizeof(e->message), "%s", msg ? msg : gray_strerror(code));
}

void gray__quote(const char *p, size_t len, char *out, size_t outsz) {
  /* Keep messages short and printable: at most 64 source bytes. */
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, i;
  size_t show = len > 64 ? 64 : len;
  if (outsz < 8) {
    if (outsz) out[0] = '\0';
    return;
  }
  out[o++] = '"';
  for (i = 0; i < show && o + 8 < outsz; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    } else {
      out[o++] = (char)c;
    }
  }
  out[o++] = '"';
  if (i < len && o + 4 < outsz) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}
