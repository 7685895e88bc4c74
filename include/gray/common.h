/* graylane — shared definitions for the public headers. */
#ifndef GRAY_COMMON_H
#define GRAY_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define GRAY_EXTERN __attribute__((visibility("default")))
#else
#define GRAY_EXTERN
#endif

#ifdef __cplusplus
#define GRAY_BEGIN_DECLS extern "C" {
#define GRAY_END_DECLS }
#else
#define GRAY_BEGIN_DECLS
#define GRAY_END_DECLS
#endif

GRAY_BEGIN_DECLS

/* A borrowed byte string: `p` need not be NUL-terminated. */
typedef struct gray_str_s {
  const char *p;
  size_t len;
} gray_str_t;

/* Replace the allocator used by every graylane library (and handed to PCRE2).
 * Call it once, before any other graylane call; not thread-safe. Passing NULL
 * for all three restores the C library's allocator. Used by the
 * out-of-memory tests to fail the Nth allocation. */
typedef void *(*gray_malloc_fn)(size_t size);
typedef void *(*gray_realloc_fn)(void *ptr, size_t size);
typedef void (*gray_free_fn)(void *ptr);
GRAY_EXTERN void gray_set_alloc_funcs(gray_malloc_fn m, gray_realloc_fn r, gray_free_fn f);

GRAY_END_DECLS

#endif
