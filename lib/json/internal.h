/* Internal helpers of lib/json. */
#ifndef GRAY_JSON_INTERNAL_H
#define GRAY_JSON_INTERNAL_H

#include <jansson.h>

#include "gray/err.h"

/* A JSON path being built while walking a document: "rules[2].when.op". */
typedef struct gray__jpath {
  char buf[GRAY_ERROR_PATH_MAX];
  size_t len;
} gray__jpath;

/* Append ".key" (or "key" at the root) / "[i]". Both return the previous
 * length for gray__jpath_pop. An overlong path ends in "...". */
size_t gray__jpath_key(gray__jpath *p, const char *key);
size_t gray__jpath_index(gray__jpath *p, size_t i);
void gray__jpath_pop(gray__jpath *p, size_t mark);

/* Turn a jansson error into a gray_error_t whose path is the JSON path at
 * the error's position. Returns GRAY_EJSON (GRAY_ENOMEM when jansson ran out
 * of memory). */
int gray__json_syntax_error(const char *buf, size_t len, const json_error_t *jerr, gray_error_t *err);

/* Read a whole file of at most `max` bytes into a new buffer (gray__free). */
int gray__read_file(const char *path, size_t max, char **out, size_t *len, gray_error_t *err);

#endif
