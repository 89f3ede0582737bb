import { subscribe, unsubscribe } from 'node:diagnostics_channel';

/**
 * Fastify (≥ 5) publishes `tracing:fastify.request.handler:start` with the matched route just
 * before a route handler runs, synchronously and inside the request's async context. Listening to
 * it lets telemetry name a request `POST /deploy` instead of `POST`, and `GET /deploy/:id/status`
 * instead of one name per deployment id, without the app importing anything from telemetry.
 * Requests refused before their handler (401, 400 from validation) keep the method-only name.
 */
const HANDLER_START = 'tracing:fastify.request.handler:start';

export interface RouteMatch {
  method: string;
  /** The route pattern, e.g. `/deploy/:id/status`. */
  route: string;
}

/** Calls `onRoute` for every request that reaches a Fastify route handler; returns the unsubscribe. */
export function onFastifyRoute(onRoute: (match: RouteMatch) => void): () => void {
  const listener = (message: unknown) => {
    if (typeof message !== 'object' || message === null) return;
    const { request, route } = message as { request?: { method?: unknown }; route?: { url?: unknown } };
    if (typeof request?.method === 'string' && typeof route?.url === 'string') onRoute({ method: request.method, route: route.url });
  };
  subscribe(HANDLER_START, listener);
  return () => {
    unsubscribe(HANDLER_START, listener);
  };
}
