#include "util/alloc.h"

#include <stdlib.h>
#include <string.h>

#include "gray/common.h"

static gray_malloc_fn g_malloc = malloc;
static gray_realloc_fn g_realloc = realloc;
static gray_free_fn g_free = free;

void gray_set_alloc_funcs(gray_malloc_fn m, gray_realloc_fn r, gray_free_fn f) {
  g_malloc = m ? m : malloc;
  g_realloc = r ? r : realloc;
  g_free = f ? f : free;
}

void *gray__malloc(size_t size) { return g_malloc(size ? size : 1); }

void *gray__calloc(size_t n, size_t size) {
  if (size && n > (size_t)-1 / size) return NULL;
  void *p = gray__malloc(n * size);
  if (p) memset(p, 0, n * size);
  return p;
}

void *gray__realloc(void *ptr, size_t size) { return g_realloc(ptr, size ? size : 1); }

void gray__free(void *ptr) {
  if (ptr) g_free(ptr);
}

struct gray__arena_block {
  gray__arena_block *next;
  /* Payload follows, aligned by the union. */
  union {
    max_align_t align;
    unsigned char bytes[1];
  } data;
};

#define ARENA_BLOCK_MIN 8192

void gray__arena_init(gray__arena *a) { memset(a, 0, sizeof(*a)); }

void *gray__arena_alloc(gray__arena *a, size_t size) {
  const size_t align = sizeof(max_align_t);
  size = (size + align - 1) & ~(align - 1);
  if (size == 0) size = align;
  if (!a->head || a->cap - a->used < size) {
    size_t cap = size > ARENA_BLOCK_MIN ? size : ARENA_BLOCK_MIN;
    gray__arena_block *b = gray__malloc(offsetof(gray__arena_block, data) + cap);
    if (!b) return NULL;
    b->next = a->head;
    a->head = b;
    a->used = 0;
    a->cap = cap;
  }
  void *p = a->head->data.bytes + a->used;
  a->used += size;
  a->total += size;
  memset(p, 0, size);
  return p;
}

char *gray__arena_strndup(gray__arena *a, const char *s, size_t len) {
  char *p = gray__arena_alloc(a, len + 1);
  if (!p) return NULL;
  if (len) memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

void gray__arena_free(gray__arena *a) {
  gray__arena_block *b = a->head;
  while (b) {
    gray__arena_block *next = b->next;
    gray__free(b);
    b = next;
  }
  gray__arena_init(a);
}
