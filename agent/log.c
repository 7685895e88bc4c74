/* gray-agent: log lines and safe quoting of refused values. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent.h"

void ga_log(int level, const char *fmt, ...) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  char line[4096], when[32];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  int n = snprintf(line, sizeof line, "%s.%03ldZ %-5s ", when, ts.tv_nsec / 1000000,
                   names[level < 0 ? 0 : level > 3 ? 3 : level]);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  /* One write per line, so lines from the SDK's threads do not interleave. */
  size_t len = strlen(line);
  if (len + 1 < sizeof line) {
    line[len++] = '\n';
    line[len] = '\0';
  } else {
    line[sizeof line - 2] = '\n';
  }
  fputs(line, stderr);
  fflush(stderr);
}

const char *ga_quote(const char *p, size_t len, char *buf, size_t size) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  if (size < 8) {
    if (size) buf[0] = '\0';
    return buf;
  }
  buf[o++] = '"';
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)p[i];
    if (i == 64 || o + 8 >= size) {
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20 || c > 0x7e) {
      buf[o++] = '\\';
      buf[o++] = 'x';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    } else {
      buf[o++] = (char)c;
    }
  }
  buf[o++] = '"';
  buf[o] = '\0';
  return buf;
}
