/* A regex condition's required literal: a string of bytes that every match
 * of the pattern contains, found from the pattern's text when it is simple
 * enough to be sure. The evaluator looks for it (a memchr and a memcmp)
 * before it runs PCRE2: a value without it cannot match, which is the common
 * case for a rule such as "(iPhone|Android).*AppVersion/5\." on user agents.
 *
 * Only the pattern's top level is read: a run of plain characters not
 * inside any group, none of them made optional by a quantifier. Anything
 * this reader does not fully understand gives no literal at all (and the
 * regex runs on every value, as before): a top-level `|`, option settings
 * such as `(?i)`, verbs `(*...)`, `\Q...\E`, escapes other than the
 * one-character classes and assertions, an unusual `{`. The answer depends
 * on the compile options of gray__regex_compile (UTF, case-sensitive, not
 * extended); tests/fuzz/fuzz_regex.c checks it against PCRE2 itself. */
#include <string.h>

#include "core/model.h"

/* Escapes \X (X alphanumeric) that stand for one character of a class, or
 * an assertion, and never for a literal character. */
static int escape_is_class(unsigned char c) { return c && strchr("dDwWsShHvVRbBAzZGKX", c); }

/* Skips the quantifier {n}, {n,} or {n,m} at p[*i] ('{'): returns its
 * minimum, or -1 when it is not one of those forms. */
static long brace_quantifier(const char *p, size_t len, size_t *i) {
  size_t j = *i + 1;
  long min = 0;
  if (j >= len || p[j] < '0' || p[j] > '9') return -1;
  while (j < len && p[j] >= '0' && p[j] <= '9') {
    if (min < 100000) min = min * 10 + (p[j] - '0');
    j++;
  }
  if (j < len && p[j] == ',') {
    j++;
    while (j < len && p[j] >= '0' && p[j] <= '9') j++;
  }
  if (j >= len || p[j] != '}') return -1;
  *i = j + 1;
  return min;
}

/* Inside a class or a group, may the escape at p[j] be skipped as its two
 * bytes? Not \Q...\E quoting, a stray \E, or \cX, which is three bytes
 * (X maybe ']' or ')'). */
static int escape_skippable(const char *p, size_t len, size_t j) {
  return j + 1 < len && p[j + 1] != 'Q' && p[j + 1] != 'E' && p[j + 1] != 'c';
}

/* Skips the character class starting at p[*i] ('['); 0 when it does not
 * end or holds something not understood. */
static int skip_class(const char *p, size_t len, size_t *i) {
  size_t j = *i + 1;
  if (j < len && p[j] == '^') j++;
  if (j < len && p[j] == ']') j++; /* a leading ']' is a member */
  while (j < len) {
    if (p[j] == ']') {
      *i = j + 1;
      return 1;
    }
    if (p[j] == '\\') {
      if (!escape_skippable(p, len, j)) return 0;
      j += 2;
      continue;
    }
    if (p[j] == '[' && j + 1 < len && (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
      /* [:alpha:] and the like, when the next ']' closes it as ":]";
       * otherwise PCRE2 may read the '[' as a member: not understood */
      char kind = p[j + 1];
      size_t k = j + 2;
      while (k < len && p[k] != ']' && p[k] != '[' && p[k] != '\\') k++;
      if (k >= len || p[k] != ']' || k < j + 4 || p[k - 1] != kind) return 0;
      j = k + 1;
      continue;
    }
    j++;
  }
  return 0;
}

/* At p[*i] ('('): skips the whole group, nested groups and classes
 * included; 0 when it does not end or opens with something not understood
 * (options, verbs, comments, conditions, recursion, callouts). */
static int skip_group(const char *p, size_t len, size_t *i) {
  size_t j = *i;
  int depth = 0;
  while (j < len) {
    char c = p[j];
    if (c == '\\') {
      if (!escape_skippable(p, len, j)) return 0;
      j += 2;
      continue;
    }
    if (c == '[') {
      if (!skip_class(p, len, &j)) return 0;
      continue;
    }
    if (c == '(') {
      if (j + 1 < len && p[j + 1] == '*') return 0;
      if (j + 1 < len && p[j + 1] == '?') {
        char k = j + 2 < len ? p[j + 2] : '\0';
        /* non-capturing, lookarounds, atomic, branch reset, named */
        if (!k || !strchr(":=!<>|P'", k)) return 0;
      }
      depth++;
      j++;
      continue;
    }
    if (c == ')') {
      j++;
      if (--depth == 0) {
        *i = j;
        return 1;
      }
      continue;
    }
    j++;
  }
  return 0;
}

size_t gray__regex_literal(const char *p, size_t len, char *out, size_t cap) {
  char run[GRAY__REGEX_LITERAL_MAX];
  size_t rl = 0, best = 0, i = 0;

  while (i < len) {
    unsigned char c = (unsigned char)p[i];
    int lit = -1; /* this atom's byte, when it is a plain character */
    switch (c) {
      case '\\': {
        if (i + 1 >= len) return 0;
        unsigned char e = (unsigned char)p[i + 1];
        if (e >= 0x80) return 0;
        int alnum = (e >= '0' && e <= '9') || ((e | 0x20) >= 'a' && (e | 0x20) <= 'z');
        if (!alnum)
          lit = e;
        else if (!escape_is_class(e))
          return 0; /* \N{...}, \p{...}, backreferences, \x.., ...: not read */
        i += 2;
        break;
      }
      case '[':
        if (!skip_class(p, len, &i)) return 0;
        break;
      case '(':
        if (!skip_group(p, len, &i)) return 0;
        break;
      case ')':
      case '|':
        return 0;
      case '*':
      case '+':
      case '?':
      case '{':
        /* a quantifier with nothing before it to apply to */
        return 0;
      case '.':
      case '^':
      case '$':
        i++;
        break;
      default:
        if (c >= 0x80) {
          /* a UTF-8 character: one atom, no literal */
          i++;
          while (i < len && ((unsigned char)p[i] & 0xc0) == 0x80) i++;
        } else {
          lit = c;
          i++;
        }
    }

    /* the atom's quantifier, if any: optional (minimum 0) or repeated */
    int optional = 0, repeated = 0;
    if (i < len && (p[i] == '?' || p[i] == '*')) {
      optional = 1;
      i++;
    } else if (i < len && p[i] == '+') {
      repeated = 1;
      i++;
    } else if (i < len && p[i] == '{') {
      long min = brace_quantifier(p, len, &i);
      if (min < 0) return 0;
      optional = min == 0;
      repeated = !optional;
    }
    if ((optional || repeated) && i < len && (p[i] == '?' || p[i] == '+')) i++; /* lazy, possessive */

    if (lit >= 0 && !optional && rl < sizeof run) {
      run[rl++] = (char)lit;
      if (rl > best) {
        best = rl;
        memcpy(out, run, best < cap ? best : cap);
      }
    }
    if (lit < 0 || optional || repeated) rl = 0;
  }
  return best < cap ? best : cap;
}
