/* The evaluator: first matching rule wins. gray_decide allocates nothing;
 * gray_explain runs the same code and also records a trace. The body is
 * core/eval_impl.h, which an executor may include with its own lookup. */
#include <string.h>

#include "core/model.h"

typedef struct trace_item {
  gray_trace_entry_t pub;
  char value[GRAY_TRACE_VALUE_MAX + 1];
  char note[64];
} trace_item;

struct gray_trace_s {
  trace_item *items;
  size_t count, cap;
  int oom;
};

#define GRAY_EVAL_TRACE 1
#define GRAY_EVAL_EXTRA const gray_request_t *req;
#define GRAY_EVAL_LOOKUP(x, slot, value)                                                     \
  (x)->req->lookup((x)->req->ctx, (x)->p->slots[slot].attr, (x)->p->slots[slot].name, value, \
                   (x)->scratch, sizeof (x)->scratch)
#include "core/eval_impl.h"

gray_trace_t *gray_trace_new(void) { return gray__calloc(1, sizeof(gray_trace_t)); }

void gray_trace_free(gray_trace_t *t) {
  if (!t) return;
  gray__free(t->items);
  gray__free(t);
}

size_t gray_trace_count(const gray_trace_t *t) { return t ? t->count : 0; }

const gray_trace_entry_t *gray_trace_at(const gray_trace_t *t, size_t i) {
  return t && i < t->count ? &t->items[i].pub : NULL;
}

void gray_decide(const gray_policy_t *p, const gray_request_t *req, gray_decision_t *out) {
  ectx x;
  ectx_init(&x, p, NULL);
  x.req = req;
  eval_run(p, &x, out);
}

int gray_explain(const gray_policy_t *p, const gray_request_t *req, gray_decision_t *out,
                 gray_trace_t *trace) {
  ectx x;
  ectx_init(&x, p, NULL);
  x.req = req;
  x.trace = trace;
  trace->count = 0;
  trace->oom = 0;
  eval_run(p, &x, out);
  /* Entries may have moved while the array grew: point into them now. */
  for (size_t i = 0; i < trace->count; i++) {
    trace_item *it = &trace->items[i];
    it->pub.value = it->pub.kind == GRAY_TRACE_COND && it->pub.present ? it->value : NULL;
    it->pub.note = it->note[0] ? it->note : NULL;
  }
  return trace->oom ? GRAY_ENOMEM : GRAY_OK;
}
