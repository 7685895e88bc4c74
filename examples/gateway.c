/* graylane example: the gateway, where a request enters the call chain.
 *
 * For each request it
 *   1. decides with the `gateway` policy, which puts the request in a lane:
 *      a rule that matches (a header, a cookie, a user id...) sets tag T;
 *   2. decides with the `order` policy which version of `order` serves it
 *      (the tag is an attribute of that decision),
 *   3. picks a live instance of that version (the policy's default version
 *      when that one has none) and calls it, forwarding the tag in
 *      X-Gray-Tag so every service downstream sees the lane.
 *
 * Both decisions and the pick read the SDK's in-memory snapshot: no network,
 * no allocation, and they keep working while grayd is down.
 *
 *   gateway --listen 127.0.0.1:8080 --grayd http://127.0.0.1:7070
 *   curl -H 'X-Gray: 1' http://127.0.0.1:8080/orders/42 */
#include <string.h>

#include "example.h"

static void handle(struct evhttp_request *req, void *arg) {
  ex_app_t *app = arg;
  ex_view_t view;
  gray_client_decision_t lane, d;
  gray_endpoint_t ep;
  const char *tag_in = ex_tag_in(req);
  struct evbuffer *hop = evbuffer_new();

  if (!hop) {
    evhttp_send_error(req, 503, "out of memory");
    return;
  }
  ex_view_init(&view, req);
  ex_hop_begin(hop, app, tag_in);

  /* 1. The lane. Without a gateway policy the request keeps the tag it
   * came with, when that is a valid tag. */
  if (gray_client_decide(app->client, "gateway", &view.req, &lane) == GRAY_OK) {
    ex_hop_lane(hop, &lane);
    ex_view_set_tag(&view, lane.tag);
  } else {
    ex_view_set_tag(&view, gray_tag_valid(tag_in, strlen(tag_in)) ? tag_in : NULL);
  }

  /* 2. Which version of order. */
  if (gray_client_decide(app->client, "order", &view.req, &d) != GRAY_OK) {
    ex_hop_no_policy(hop, app, "order");
    ex_hop_end(hop);
    ex_reply(req, 503, hop);
    return;
  }

  /* 3. An instance of it, then the call with the tag. */
  if (gray_client_pick(app->client, "order", d.version, &ep) != GRAY_OK) {
    ex_hop_call(hop, "order", &d, NULL);
    ex_hop_error(hop, "no live instance of order %s%s", d.version,
                 d.fallback_fail ? " (the policy says \"fallback\": \"fail\")" : "");
    ex_hop_end(hop);
    ex_reply(req, 503, hop);
    return;
  }
  ex_hop_call(hop, "order", &d, &ep);
  ex_call(app, req, &ep, d.tag, hop);
}

int main(int argc, char **argv) {
  ex_app_t app;
  int rc = ex_start(&app, "gateway", "gateway,order", argc, argv, handle);
  return rc ? rc : ex_run(&app);
}
