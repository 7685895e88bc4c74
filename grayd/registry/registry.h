/* grayd service registry: ephemeral instances with TTLs, in memory. */
#ifndef GRAYD_REGISTRY_H
#define GRAYD_REGISTRY_H

#include <jansson.h>
#include <stdint.h>

typedef struct gd_instance {
  struct gd_instance *hnext;            /* hash chain */
  struct gd_instance *sprev, *snext;    /* per-service list */
  char *service, *id, *address, *version;
  int port;
  int ttl_s;
  json_t *metadata;                     /* object of strings */
  int64_t expires_ms;                   /* monotonic */
  int64_t revision;                     /* of the last change */
} gd_instance;

typedef struct gd_service_list {
  char *service;
  gd_instance *head;
  size_t count;
} gd_service_list;

typedef struct gd_registry gd_registry;

gd_registry *gd_registry_new(void);
void gd_registry_free(gd_registry *r);
gd_instance *gd_registry_find(gd_registry *r, const char *service, const char *id);
/* Insert a new instance (fields copied; metadata reference taken). */
gd_instance *gd_registry_add(gd_registry *r, const char *service, const char *id);
void gd_registry_remove(gd_registry *r, gd_instance *in);
size_t gd_registry_count(const gd_registry *r);
/* Services sorted by name. */
size_t gd_registry_services(gd_registry *r, gd_service_list **out);
gd_service_list *gd_registry_service(gd_registry *r, const char *service);
/* Calls fn for every instance expired at now_ms; fn must remove it. */
void gd_registry_expire(gd_registry *r, int64_t now_ms, void (*fn)(void *ctx, gd_instance *in), void *ctx);
/* {"id","address","port","version","metadata","ttl_s","expires_in_ms"} */
json_t *gd_instance_json(const gd_instance *in, int64_t now_ms);

#endif
