/* Internal allocation helpers shared by the graylane libraries. */
#ifndef GRAY_UTIL_ALLOC_H
#define GRAY_UTIL_ALLOC_H

#include <stddef.h>

void *gray__malloc(size_t size);
void *gray__calloc(size_t n, size_t size);
void *gray__realloc(void *ptr, size_t size);
void gray__free(void *ptr);

/* A bump allocator for data that lives exactly as long as its owner (a
 * compiled policy set). Blocks come from gray__malloc; nothing is freed
 * until gray__arena_free. */
typedef struct gray__arena_block gray__arena_block;
typedef struct gray__arena {
  gray__arena_block *head;
  size_t used; /* bytes used in head */
  size_t cap;  /* bytes available in head */
  size_t total;
} gray__arena;

void gray__arena_init(gray__arena *a);
/* Returns zeroed memory aligned for any type, or NULL. */
void *gray__arena_alloc(gray__arena *a, size_t size);
/* Copies len bytes and adds a NUL; returns NULL on allocation failure. */
char *gray__arena_strndup(gray__arena *a, const char *s, size_t len);
void gray__arena_free(gray__arena *a);

#endif
