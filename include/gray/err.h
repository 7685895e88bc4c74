/* graylane — error codes and error details. */
#ifndef GRAY_ERR_H
#define GRAY_ERR_H

#include "gray/common.h"

GRAY_BEGIN_DECLS

/* The one list of error codes. Append only: the numbers are part of the ABI
 * and of grayd's API answers. */
#define GRAY_ERR_MAP(X)                                                    \
  X(OK, 0, "success")                                                      \
  X(ENOMEM, -1, "out of memory")                                           \
  X(EINVAL, -2, "invalid argument")                                        \
  X(EJSON, -3, "malformed JSON")                                           \
  X(ESCHEMA, -4, "invalid policy")                                         \
  X(ELIMIT, -5, "limit exceeded")                                          \
  X(ENOTFOUND, -6, "not found")                                            \
  X(EIO, -7, "input/output error")                                         \
  X(ETOOBIG, -8, "input too large")

typedef enum {
#define GRAY__ERR_ENUM(name, val, msg) GRAY_##name = (val),
  GRAY_ERR_MAP(GRAY__ERR_ENUM)
#undef GRAY__ERR_ENUM
} gray_err_t;

/* Human text for an error code ("invalid policy"); never NULL. */
GRAY_EXTERN const char *gray_strerror(int err);
/* The code's name without prefix ("ESCHEMA"); "EUNKNOWN" for others. */
GRAY_EXTERN const char *gray_err_name(int err);

#define GRAY_ERROR_PATH_MAX 256
#define GRAY_ERROR_TEXT_MAX 320

/* Details of a failure, for people. `path` is the JSON path of the fault
 * ("policies[0].rules[2].when.any[1].op"), empty when the fault is the whole
 * input; `message` says what is wrong there. Filled by the function that
 * failed when the caller passes a non-NULL pointer. */
typedef struct gray_error_s {
  gray_err_t code;
  char path[GRAY_ERROR_PATH_MAX];
  char message[GRAY_ERROR_TEXT_MAX];
} gray_error_t;

/* Write "path: message" (or just "message" when path is empty) into buf,
 * always NUL-terminated. Returns buf. */
GRAY_EXTERN char *gray_error_format(const gray_error_t *e, char *buf, size_t size);

GRAY_END_DECLS

#endif
