/* graylane example: `order`, the business-logic service in the middle of
 * the chain.
 *
 * For each request it decides with the `order-dal` policy for its call to
 * `order-dal` — the callee's policy decides which of the callee's versions
 * serves, exactly as the gateway decides its call to `order` with the
 * `order` policy (docs/DESIGN.md, lanes). The incoming X-Gray-Tag is the
 * decision's `tag` attribute, so a lane rule such as
 *
 *   {"name": "lane-beta", "route": "v2", "when": {"attr": "tag", "op": "eq", "value": "beta"}}
 *
 * sends the request to order-dal v2. It picks a live instance of that
 * version — order-dal's default version when that one has none — and calls
 * it, forwarding the decision's tag (the rule's, else the incoming one).
 *
 *   order --listen 127.0.0.1:0 --grayd http://127.0.0.1:7070 --cache order.cache */
#include "example.h"

/* Whom it calls, and the policy it decides those calls with: the callee's. */
#define CALLEE "order-dal"
#define DECIDE_WITH CALLEE

static void handle(struct evhttp_request *req, void *arg) {
  ex_app_t *app = arg;
  ex_view_t view;
  gray_client_decision_t d;
  gray_endpoint_t ep;
  struct evbuffer *hop = evbuffer_new();

  if (!hop) {
    evhttp_send_error(req, 503, "out of memory");
    return;
  }
  ex_view_init(&view, req); /* tag = the incoming X-Gray-Tag */
  ex_hop_begin(hop, app, ex_tag_in(req));

  if (gray_client_decide(app->client, DECIDE_WITH, &view.req, &d) != GRAY_OK) {
    ex_hop_no_policy(hop, app, DECIDE_WITH);
    ex_hop_end(hop);
    ex_reply(req, 503, hop);
    return;
  }
  if (gray_client_pick(app->client, CALLEE, d.version, &ep) != GRAY_OK) {
    ex_hop_call(hop, CALLEE, &d, NULL);
    ex_hop_error(hop, "no live instance of " CALLEE " %s to call (the SDK falls back to the default"
                      " version unless " CALLEE "'s policy says \"fallback\": \"fail\")", d.version);
    ex_hop_end(hop);
    ex_reply(req, 503, hop);
    return;
  }
  ex_hop_call(hop, CALLEE, &d, &ep);
  ex_call(app, req, &ep, d.tag, hop);
}

int main(int argc, char **argv) {
  ex_app_t app;
  int rc = ex_start(&app, "order", DECIDE_WITH "," CALLEE, argc, argv, handle);
  return rc ? rc : ex_run(&app);
}
