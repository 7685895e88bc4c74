/* Registry storage: a hash of (service, id) for heartbeats, and per-service
 * lists kept sorted by service name for listing. */
#include "registry/registry.h"

#include <stdlib.h>
#include <string.h>

#include "gray/policy.h"

struct gd_registry {
  gd_instance **buckets;
  size_t nbuckets, count;
  gd_service_list *services; /* sorted */
  size_t nservices, cap_services;
};

static char *xdup(const char *s) {
  size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (!d) abort();
  memcpy(d, s, n + 1);
  return d;
}

static uint32_t key_hash(const char *service, const char *id) {
  uint32_t a = gray_murmur3_32(service, strlen(service), 17);
  return gray_murmur3_32(id, strlen(id), a);
}

gd_registry *gd_registry_new(void) {
  gd_registry *r = calloc(1, sizeof(*r));
  if (!r) abort();
  r->nbuckets = 1024;
  r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
  if (!r->buckets) abort();
  return r;
}

static void instance_free(gd_instance *in) {
  free(in->service);
  free(in->id);
  free(in->address);
  free(in->version);
  json_decref(in->metadata);
  free(in);
}

void gd_registry_free(gd_registry *r) {
  if (!r) return;
  for (size_t i = 0; i < r->nbuckets; i++) {
    gd_instance *in = r->buckets[i];
    while (in) {
      gd_instance *n = in->hnext;
      instance_free(in);
      in = n;
    }
  }
  for (size_t i = 0; i < r->nservices; i++) free(r->services[i].service);
  free(r->services);
  free(r->buckets);
  free(r);
}

gd_instance *gd_registry_find(gd_registry *r, const char *service, const char *id) {
  gd_instance *in = r->buckets[key_hash(service, id) & (r->nbuckets - 1)];
  for (; in; in = in->hnext)
    if (!strcmp(in->id, id) && !strcmp(in->service, service)) return in;
  return NULL;
}

static void grow(gd_registry *r) {
  size_t nb = r->nbuckets * 2;
  gd_instance **b = calloc(nb, sizeof(*b));
  if (!b) abort();
  for (size_t i = 0; i < r->nbuckets; i++) {
    gd_instance *in = r->buckets[i];
    while (in) {
      gd_instance *n = in->hnext;
      size_t k = key_hash(in->service, in->id) & (nb - 1);
      in->hnext = b[k];
      b[k] = in;
      in = n;
    }
  }
  free(r->buckets);
  r->buckets = b;
  r->nbuckets = nb;
}

static gd_service_list *service_slot(gd_registry *r, const char *service, int create) {
  size_t lo = 0, hi = r->nservices;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(r->services[mid].service, service);
    if (c == 0) return &r->services[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  if (!create) return NULL;
  if (r->nservices == r->cap_services) {
    size_t cap = r->cap_services ? r->cap_services * 2 : 16;
    gd_service_list *n = realloc(r->services, cap * sizeof(*n));
    if (!n) abort();
    r->services = n;
    r->cap_services = cap;
  }
  memmove(&r->services[lo + 1], &r->services[lo], (r->nservices - lo) * sizeof(*r->services));
  r->nservices++;
  r->services[lo].service = xdup(service);
  r->services[lo].head = NULL;
  r->services[lo].count = 0;
  return &r->services[lo];
}

gd_instance *gd_registry_add(gd_registry *r, const char *service, const char *id) {
  if (r->count >= r->nbuckets) grow(r);
  gd_instance *in = calloc(1, sizeof(*in));
  if (!in) abort();
  in->service = xdup(service);
  in->id = xdup(id);
  size_t k = key_hash(service, id) & (r->nbuckets - 1);
  in->hnext = r->buckets[k];
  r->buckets[k] = in;
  gd_service_list *sl = service_slot(r, service, 1);
  in->snext = sl->head;
  if (sl->head) sl->head->sprev = in;
  sl->head = in;
  sl->count++;
  r->count++;
  return in;
}

void gd_registry_remove(gd_registry *r, gd_instance *in) {
  gd_instance **pp = &r->buckets[key_hash(in->service, in->id) & (r->nbuckets - 1)];
  while (*pp && *pp != in) pp = &(*pp)->hnext;
  if (*pp) *pp = in->hnext;
  gd_service_list *sl = service_slot(r, in->service, 0);
  if (sl) {
    if (in->sprev) in->sprev->snext = in->snext;
    else sl->head = in->snext;
    if (in->snext) in->snext->sprev = in->sprev;
    if (--sl->count == 0) {
      size_t pos = (size_t)(sl - r->services);
      free(sl->service);
      memmove(&r->services[pos], &r->services[pos + 1], (r->nservices - pos - 1) * sizeof(*r->services));
      r->nservices--;
    }
  }
  r->count--;
  instance_free(in);
}

size_t gd_registry_count(const gd_registry *r) { return r->count; }

size_t gd_registry_services(gd_registry *r, gd_service_list **out) {
  *out = r->services;
  return r->nservices;
}

gd_service_list *gd_registry_service(gd_registry *r, const char *service) {
  return service_slot(r, service, 0);
}

void gd_registry_expire(gd_registry *r, int64_t now_ms, void (*fn)(void *ctx, gd_instance *in), void *ctx) {
  for (size_t i = 0; i < r->nbuckets; i++) {
    gd_instance *in = r->buckets[i];
    while (in) {
      gd_instance *n = in->hnext;
      if (in->expires_ms <= now_ms) fn(ctx, in);
      in = n;
    }
  }
}

json_t *gd_instance_json(const gd_instance *in, int64_t now_ms) {
  int64_t left = in->expires_ms - now_ms;
  return json_pack("{s:s,s:s,s:i,s:s,s:o,s:i,s:I}", "id", in->id, "address", in->address, "port", in->port,
                   "version", in->version, "metadata", in->metadata ? json_incref(in->metadata) : json_object(), "ttl_s",
                   in->ttl_s, "expires_in_ms", (json_int_t)(left > 0 ? left : 0));
}
