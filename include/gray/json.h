/* graylane — JSON front-end of libgray (the only part that sees json_t). */
#ifndef GRAY_JSON_H
#define GRAY_JSON_H

#include <jansson.h>

#include "gray/policy.h"

GRAY_BEGIN_DECLS

/* What a document may be. */
#define GRAY_PARSE_ANY 0 /* one policy object or a set {"revision", "policies"} */
#define GRAY_PARSE_ONE 1 /* exactly one policy object */
#define GRAY_PARSE_SET 2 /* exactly a set */

/* Parse and compile a policy document of `len` bytes (need not be
 * NUL-terminated). Strict: unknown or duplicate keys, wrong types, bad names,
 * CIDRs or regexes, and anything over a GRAY_*_MAX limit are refused.
 * On success *out is a new set (one reference) and GRAY_OK is returned; on
 * failure *out is NULL, the code is returned and *err (when non-NULL) names
 * the JSON path and what is wrong there. Thread-safe (no shared state
 * besides the allocator). */
GRAY_EXTERN int gray_policyset_parse(const char *buf, size_t len, int flags,
                                     gray_policyset_t **out, gray_error_t *err);

/* gray_policyset_parse on the contents of a file, refusing files over
 * GRAY_POLICY_FILE_MAX. I/O errors give GRAY_EIO with the reason. */
GRAY_EXTERN int gray_policyset_load_file(const char *path, int flags,
                                         gray_policyset_t **out, gray_error_t *err);

/* A request read from JSON:
 *   {"headers": {"Name": "v", ...} or [["Name", "v"], ...],
 *    "cookies": same shape, "params": same shape (decoded values),
 *    "query": "raw=query&string", "ip": "...", "tag": "...", "path": "...",
 *    "method": "...", "host": "..."}
 * Every key is optional; unknown keys are refused. A "cookies" (or "params")
 * key, even an empty one, replaces the Cookie header (or the query) as the
 * source of cookies (params). The request borrows the
 * strings of `obj` and keeps a reference to it. */
typedef struct gray_json_request_s gray_json_request_t;

GRAY_EXTERN int gray_json_request_new(json_t *obj, gray_json_request_t **out,
                                      gray_error_t *err);
/* The request to pass to gray_decide; borrowed, valid until _free. */
GRAY_EXTERN const gray_request_t *gray_json_request_get(const gray_json_request_t *r);
GRAY_EXTERN void gray_json_request_free(gray_json_request_t *r);

/* {"service":..., "version":..., "tag":...|null, "rule":...|null} and, when
 * trace is non-NULL, "trace": [ {"rule", "kind", "depth", "attr", "op",
 * "value", "result", "note"} ... ]. Returns a new reference or NULL on out of
 * memory. */
GRAY_EXTERN json_t *gray_decision_to_json(const gray_decision_t *d, const gray_trace_t *trace);

GRAY_END_DECLS

#endif
