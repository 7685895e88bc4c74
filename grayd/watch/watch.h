/* grayd watch: the event window and parked long-poll watchers. */
#ifndef GRAYD_WATCH_H
#define GRAYD_WATCH_H

#include <jansson.h>

#include "grayd.h"

gd_watch *gd_watch_new(gd_state *s, size_t window, int max_watchers);
void gd_watch_free(gd_watch *w);

/* Record an event at `rev` (strictly above every earlier one) and wake the
 * watchers it concerns. `payload` (may be NULL) is stolen and stored under
 * `key` ("policy" or "instance"). */
void gd_watch_event(gd_watch *w, int64_t rev, const char *type, const char *service,
                    const char *id, const char *key, json_t *payload);

int gd_watch_count(const gd_watch *w);

/* {"store_id", "revision", "policies", "services"} (new reference). */
json_t *gd_snapshot_json(gd_state *s);

#endif
