/* /v1/services: the registry API. Instances are ephemeral; register,
 * change, deregister and eviction are revisions like any other change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/model.h"
#include "registry/registry.h"
#include "watch/watch.h"

#define META_MAX_KEYS 32
#define META_MAX_BYTES 4096

static int check_name(gd_call *c, const char *what, const char *v) {
  char msg[GRAY_ERROR_TEXT_MAX], full[GRAY_ERROR_TEXT_MAX + 32];
  gray_str_t s = {v, strlen(v)};
  if (gray__check_name(s, msg, sizeof msg) == GRAY_OK) return 1;
  snprintf(full, sizeof full, "%s: %s", what, msg);
  gd_reply_error(c, 400, "EINVAL", "", full);
  return 0;
}

static void bad_body(gd_call *c, const char *path, const char *msg) {
  gd_audit(c->s, gd_call_actor(c), "instance.put", c->seg[0], 400, msg, 0);
  gd_reply_error(c, 400, "ESCHEMA", path, msg);
}

static int meta_equal(json_t *a, json_t *b) {
  if (!a || json_object_size(a) == 0) return !b || json_object_size(b) == 0;
  return b && json_equal(a, b);
}

static json_t *instance_event(const gd_instance *in) { return gd_instance_json(in, gd_mono_ms()); }

/* Check an instance object ({address, port, version, metadata, ttl_s}):
 * NULL when valid (*ttl_s = its TTL, or default_ttl when absent), else the
 * key at fault, with the reason in msg. */
static const char *check_instance(json_t *j, int default_ttl, int *ttl_s, char *msg, size_t msgsz) {
  const char *key;
  json_t *v;
  json_object_foreach(j, key, v) {
    if (strcmp(key, "address") && strcmp(key, "port") && strcmp(key, "version") && strcmp(key, "metadata") &&
        strcmp(key, "ttl_s")) {
      snprintf(msg, msgsz, "unknown key (allowed: address, port, version, metadata, ttl_s)");
      return key; /* lives in j */
    }
  }
  json_t *addr = json_object_get(j, "address"), *port = json_object_get(j, "port"),
         *ver = json_object_get(j, "version"), *meta = json_object_get(j, "metadata"),
         *ttl = json_object_get(j, "ttl_s");
  if (!json_is_string(addr) || !gray__host_valid(json_string_value(addr)) ||
      strlen(json_string_value(addr)) != json_string_length(addr)) {
    snprintf(msg, msgsz, "must be an IP address or a host name");
    return "address";
  }
  if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535) {
    snprintf(msg, msgsz, "must be an integer from 1 to 65535");
    return "port";
  }
  if (!json_is_string(ver)) {
    snprintf(msg, msgsz, "must be a version name (a string)");
    return "version";
  }
  gray_str_t vs = {json_string_value(ver), json_string_length(ver)};
  if (gray__check_name(vs, msg, msgsz) != GRAY_OK) return "version";
  *ttl_s = default_ttl;
  if (ttl) {
    if (!json_is_integer(ttl) || json_integer_value(ttl) < 1 || json_integer_value(ttl) > 3600) {
      snprintf(msg, msgsz, "must be an integer from 1 to 3600 (seconds)");
      return "ttl_s";
    }
    *ttl_s = (int)json_integer_value(ttl);
  }
  if (meta && !json_is_null(meta)) {
    size_t bytes = 0;
    if (!json_is_object(meta) || json_object_size(meta) > META_MAX_KEYS) {
      snprintf(msg, msgsz, "must be an object of at most 32 string values");
      return "metadata";
    }
    json_object_foreach(meta, key, v) {
      if (!json_is_string(v)) {
        snprintf(msg, msgsz, "values must be strings");
        return "metadata";
      }
      bytes += strlen(key) + json_string_length(v);
    }
    if (bytes > META_MAX_BYTES) {
      snprintf(msg, msgsz, "is larger than 4096 bytes");
      return "metadata";
    }
  }
  return NULL;
}

/* Set an instance's fields from a checked object. */
static void set_instance(gd_instance *in, json_t *j, int ttl_s, int64_t rev) {
  json_t *meta = json_object_get(j, "metadata");
  free(in->address);
  free(in->version);
  in->address = strdup(json_string_value(json_object_get(j, "address")));
  in->version = strdup(json_string_value(json_object_get(j, "version")));
  if (!in->address || !in->version) abort();
  in->port = (int)json_integer_value(json_object_get(j, "port"));
  in->ttl_s = ttl_s;
  json_decref(in->metadata);
  in->metadata = meta && !json_is_null(meta) ? json_incref(meta) : NULL;
  in->revision = rev;
}

/* Queue the save of an instance's registration for a restart. */
static void save_instance(gd_state *s, const gd_instance *in) {
  json_t *o = json_pack("{s:s,s:i,s:s,s:i}", "address", in->address, "port", in->port, "version", in->version,
                        "ttl_s", in->ttl_s);
  if (!o) abort();
  if (in->metadata && json_object_size(in->metadata)) json_object_set(o, "metadata", in->metadata);
  char *body = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!body) abort();
  gd_instance_save(s, in->service, in->id, in->revision, body);
}

static void do_register(gd_call *c, const char *service, const char *id) {
  gd_state *s = c->s;
  size_t len;
  const char *body = gd_req_body(c->req, &len);
  json_error_t jerr;
  json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!j || !json_is_object(j)) {
    char msg[300];
    snprintf(msg, sizeof msg, "body must be a JSON object: %s", j ? "not an object" : jerr.text);
    json_decref(j);
    bad_body(c, "", msg);
    return;
  }
  char msg[GRAY_ERROR_TEXT_MAX];
  int ttl_s;
  const char *err_path = check_instance(j, s->cfg.default_ttl_s, &ttl_s, msg, sizeof msg);
  if (err_path) {
    bad_body(c, err_path, msg);
    json_decref(j); /* after the reply: err_path may live in j */
    return;
  }
  json_t *addr = json_object_get(j, "address"), *port = json_object_get(j, "port"),
         *ver = json_object_get(j, "version"), *meta = json_object_get(j, "metadata");
  gd_instance *in = gd_registry_find(s->registry, service, id);
  const char *a = json_string_value(addr), *vv = json_string_value(ver);
  int p = (int)json_integer_value(port);
  json_t *m = meta && !json_is_null(meta) ? meta : NULL;
  int same = in && !strcmp(in->address, a) && in->port == p && !strcmp(in->version, vv) &&
             in->ttl_s == ttl_s && meta_equal(in->metadata, m);
  int64_t rev = in ? in->revision : 0;
  if (!same) {
    gray_error_t err;
    if (gd_next_revision(s, &rev, &err) != 0) {
      json_decref(j);
      gd_reply_error(c, 503, "EIO", "", "the store failed to reserve revisions");
      return;
    }
    if (!in) in = gd_registry_add(s->registry, service, id);
    set_instance(in, j, ttl_s, rev);
    save_instance(s, in);
  }
  in->expires_ms = gd_mono_ms() + (int64_t)ttl_s * 1000;
  if (!same) {
    gd_log("info", "registry: %s/%s %s at %s:%d (revision %lld)", service, id, in->version, in->address, in->port,
           (long long)rev);
    gd_watch_event(s->watch, rev, "instance.put", service, id, "instance", instance_event(in));
    gd_audit(s, gd_call_actor(c), "instance.put", service, 200, id, 0);
  }
  json_decref(j);
  gd_reply_json(c, 200,
                json_pack("{s:s,s:s,s:I,s:i}", "service", service, "id", id, "revision", (json_int_t)rev,
                          "ttl_s", ttl_s),
                NULL);
}

static void drop(gd_state *s, gd_instance *in, const char *type) {
  int64_t rev;
  gray_error_t err;
  if (gd_next_revision(s, &rev, &err) != 0) {
    gd_log("error", "registry: cannot reserve a revision: %s", err.message);
    rev = s->revision; /* keep memory consistent; the event shares the revision */
  }
  char *service = strdup(in->service), *id = strdup(in->id);
  if (!service || !id) abort();
  gd_registry_remove(s->registry, in);
  gd_instance_save(s, service, id, rev, NULL);
  gd_watch_event(s->watch, rev, type, service, id, NULL, NULL);
  free(service);
  free(id);
}

static void expire_one(void *ctx, gd_instance *in) {
  gd_state *s = ctx;
  gd_log("info", "registry: %s/%s missed its %d s TTL: evicted", in->service, in->id, in->ttl_s);
  s->metrics.evictions++;
  drop(s, in, "instance.expire");
}

void gd_registry_sweep(gd_state *s);
void gd_registry_sweep(gd_state *s) { gd_registry_expire(s->registry, gd_mono_ms(), expire_one, s); }

/* One saved instance back into the registry (gd_registry_restore). */
static int restore_one(void *ctx, const gd_instance_rec *r) {
  gd_state *s = ctx;
  char msg[GRAY_ERROR_TEXT_MAX];
  const char *bad = NULL;
  int ttl_s = 0;
  json_error_t jerr;
  json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
  gray_str_t sv = {r->service, strlen(r->service)}, iv = {r->id, strlen(r->id)};
  if (!j || !json_is_object(j)) {
    bad = "body";
    snprintf(msg, sizeof msg, "not a JSON object");
  } else if (gray__check_name(sv, msg, sizeof msg) != GRAY_OK) {
    bad = "service";
  } else if (gray__check_name(iv, msg, sizeof msg) != GRAY_OK) {
    bad = "id";
  } else if (r->revision > s->revision) {
    bad = "revision";
    snprintf(msg, sizeof msg, "%lld is above the store's %lld", (long long)r->revision, (long long)s->revision);
  } else {
    bad = check_instance(j, s->cfg.default_ttl_s, &ttl_s, msg, sizeof msg);
  }
  if (bad) {
    gd_log("warn", "registry: saved instance %s/%s skipped: %s: %s", r->service, r->id, bad, msg);
  } else if (!gd_registry_find(s->registry, r->service, r->id)) {
    gd_instance *in = gd_registry_add(s->registry, r->service, r->id);
    set_instance(in, j, ttl_s, r->revision);
    in->expires_ms = gd_mono_ms() + (int64_t)ttl_s * 1000;
  }
  json_decref(j);
  return 0;
}

int gd_registry_restore(gd_state *s, gray_error_t *err) {
  if (s->store->ops->instance_each(s->store, restore_one, s, err) != GRAY_OK) return -1;
  size_t n = gd_registry_count(s->registry);
  if (n)
    gd_log("info", "registry: %zu saved instances restored; each has its full TTL to heartbeat", n);
  return GRAY_OK;
}

static void list_services(gd_call *c) {
  gd_service_list *sl;
  size_t n = gd_registry_services(c->s->registry, &sl);
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    json_t *versions = json_object();
    for (gd_instance *in = sl[i].head; in; in = in->snext) {
      json_t *cnt = json_object_get(versions, in->version);
      json_object_set_new(versions, in->version, json_integer(cnt ? json_integer_value(cnt) + 1 : 1));
    }
    json_array_append_new(arr, json_pack("{s:s,s:I,s:o}", "service", sl[i].service, "instances",
                                         (json_int_t)sl[i].count, "versions", versions));
  }
  gd_reply_json(c, 200, json_pack("{s:I,s:o}", "revision", (json_int_t)c->s->revision, "services", arr), NULL);
}

static void list_instances(gd_call *c, const char *service) {
  char version[80], healthy[16];
  int want = gd_req_query_param(c->req, "version", version, sizeof version);
  /* Every listed instance is live: one that missed its TTL is evicted, not
   * kept as unhealthy. So healthy=false lists nothing. */
  if (gd_req_query_param(c->req, "healthy", healthy, sizeof healthy)) {
    if (strcmp(healthy, "true") && strcmp(healthy, "false")) {
      gd_reply_error(c, 400, "EINVAL", "healthy", "healthy must be true or false");
      return;
    }
    if (!strcmp(healthy, "false")) {
      gd_reply_json(c, 200,
                    json_pack("{s:I,s:s,s:[]}", "revision", (json_int_t)c->s->revision, "service", service,
                              "instances"),
                    NULL);
      return;
    }
  }
  json_t *arr = json_array();
  gd_service_list *sl = gd_registry_service(c->s->registry, service);
  int64_t now = gd_mono_ms();
  for (gd_instance *in = sl ? sl->head : NULL; in; in = in->snext) {
    if (want && strcmp(in->version, version)) continue;
    json_array_append_new(arr, gd_instance_json(in, now));
  }
  gd_reply_json(c, 200,
                json_pack("{s:I,s:s,s:o}", "revision", (json_int_t)c->s->revision, "service", service,
                          "instances", arr),
                NULL);
}

void gd_api_services(gd_call *c) {
  const char *m = gd_req_method(c->req);
  if (c->nseg == 0) {
    if (strcmp(m, "GET")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use GET /v1/services");
      return;
    }
    list_services(c);
    return;
  }
  const char *service = c->seg[0];
  if (!check_name(c, "service", service)) return;
  if (c->nseg == 1 || strcmp(c->seg[1], "instances")) {
    gd_reply_error(c, 404, "ENOTFOUND", "", "no such route (try /v1/services/{service}/instances)");
    return;
  }
  if (c->nseg == 2) {
    if (strcmp(m, "GET")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use GET on .../instances");
      return;
    }
    list_instances(c, service);
    return;
  }
  const char *id = c->seg[2];
  if (!check_name(c, "instance id", id)) return;
  gd_instance *in = gd_registry_find(c->s->registry, service, id);
  if (c->nseg == 3) {
    if (!strcmp(m, "PUT")) {
      do_register(c, service, id);
      return;
    }
    if (!strcmp(m, "DELETE")) {
      if (!in) {
        gd_audit(c->s, gd_call_actor(c), "instance.delete", service, 404, id, 0);
        gd_reply_error(c, 404, "ENOTFOUND", "", "no such instance");
        return;
      }
      gd_log("info", "registry: %s/%s deregistered", service, id);
      drop(c->s, in, "instance.delete");
      gd_audit(c->s, gd_call_actor(c), "instance.delete", service, 200, id, 0);
      gd_reply_json(c, 200, json_pack("{s:I}", "revision", (json_int_t)c->s->revision), NULL);
      return;
    }
    if (!strcmp(m, "GET")) {
      if (!in) {
        gd_reply_error(c, 404, "ENOTFOUND", "", "no such instance");
        return;
      }
      gd_reply_json(c, 200, gd_instance_json(in, gd_mono_ms()), NULL);
      return;
    }
    gd_reply_error(c, 405, "EMETHOD", "", "use PUT, GET or DELETE on an instance");
    return;
  }
  if (c->nseg == 4 && !strcmp(c->seg[3], "heartbeat")) {
    if (strcmp(m, "PUT") && strcmp(m, "POST")) {
      gd_reply_error(c, 405, "EMETHOD", "", "use PUT on .../heartbeat");
      return;
    }
    if (!in) {
      /* The client registers again: that is how a restarted grayd, or an
       * evicted instance, gets its registry back. */
      gd_reply_error(c, 404, "ENOTFOUND", "", "unknown instance: register it again");
      return;
    }
    in->expires_ms = gd_mono_ms() + (int64_t)in->ttl_s * 1000;
    gd_reply_json(c, 200, json_pack("{s:i}", "ttl_s", in->ttl_s), NULL);
    return;
  }
  gd_reply_error(c, 404, "ENOTFOUND", "", "no such route");
}
