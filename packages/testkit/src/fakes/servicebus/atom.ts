import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CredentialPolicy } from './auth.ts';
import { checkBearerToken, checkSharedAccessSignature, claimCovers, sasResourcePath } from './auth.ts';
import type { QueueEntity } from './entity.ts';

/**
 * The HTTPS ATOM endpoint ServiceBusAdministrationClient talks to (`https://<namespace>/<queue>?api-version=2021-05`).
 * Only reading a queue description is served: that is what getQueue and getQueueRuntimeProperties send.
 * As on the service, reading an entity that does not exist answers 200 with an empty feed.
 */

const escapeXml = (value: string) => value.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** xs:duration of a lock duration, e.g. PT30S or PT0.5S. */
function duration(ms: number): string {
  return `PT${ms / 1000}S`;
}

function queueEntry(queue: QueueEntity, selfUrl: string, created: Date): string {
  const { settings } = queue;
  const counts = queue.counts();
  const now = new Date().toISOString();
  const total = counts.active + counts.scheduled + counts.deadLettered;
  return `<?xml version="1.0" encoding="utf-8"?>
<entry xmlns="http://www.w3.org/2005/Atom"><id>${escapeXml(selfUrl)}</id><title type="text">${escapeXml(settings.name)}</title><published>${created.toISOString()}</published><updated>${now}</updated><author><name>fake-servicebus</name></author><link rel="self" href="${escapeXml(selfUrl)}"/><content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><LockDuration>${duration(settings.lockDurationMs)}</LockDuration><MaxSizeInMegabytes>1024</MaxSizeInMegabytes><RequiresDuplicateDetection>${settings.duplicateDetectionWindowMs > 0}</RequiresDuplicateDetection><RequiresSession>${settings.requiresSession}</RequiresSession><DefaultMessageTimeToLive>P10675199DT2H48M5.4775807S</DefaultMessageTimeToLive><DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration><DuplicateDetectionHistoryTimeWindow>${duration(settings.duplicateDetectionWindowMs)}</DuplicateDetectionHistoryTimeWindow><MaxDeliveryCount>${settings.maxDeliveryCount}</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations><SizeInBytes>0</SizeInBytes><MessageCount>${total}</MessageCount><IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/><Status>Active</Status><CreatedAt>${created.toISOString()}</CreatedAt><UpdatedAt>${created.toISOString()}</UpdatedAt><AccessedAt>${now}</AccessedAt><SupportOrdering>true</SupportOrdering><CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus"><d2p1:ActiveMessageCount>${counts.active}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>${counts.deadLettered}</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>${counts.scheduled}</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount><d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails><AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle><EnablePartitioning>false</EnablePartitioning><EntityAvailabilityStatus>Available</EntityAvailabilityStatus><EnableExpress>false</EnableExpress></QueueDescription></content></entry>`;
}

function emptyFeed(selfUrl: string): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Publicly Listed Services</title><id>uuid:00000000-0000-0000-0000-000000000000;id=1</id><updated>${new Date().toISOString()}</updated><link rel="self" href="${escapeXml(selfUrl)}"/></feed>`;
}

function errorBody(code: number, detail: string): string {
  return `<Error><Code>${code}</Code><Detail>${escapeXml(detail)}</Detail></Error>`;
}

export function createAtomHandler(queues: Map<string, QueueEntity>, policy: CredentialPolicy, created: Date) {
  return (request: IncomingMessage, response: ServerResponse): void => {
    const url = new URL(request.url ?? '/', `https://${request.headers.host ?? 'localhost'}`);
    const path = decodeURIComponent(url.pathname.replace(/^\/+/, ''));
    const send = (status: number, body: string) => {
      response.writeHead(status, { 'content-type': 'application/atom+xml;type=entry;charset=utf-8' });
      response.end(body);
    };
    const authorization = request.headers.authorization ?? '';
    const verdict = authorization.startsWith('Bearer ')
      ? checkBearerToken(authorization.slice('Bearer '.length), policy)
      : checkSharedAccessSignature(authorization, policy, Date.now());
    if (!verdict.ok) {
      send(401, errorBody(401, `${verdict.reason} TrackingId:fake, SystemTracker:${url.host}`));
      return;
    }
    const covered = authorization.startsWith('Bearer ') ? '' : sasResourcePath(authorization);
    if (covered === null || !claimCovers(covered, path)) {
      send(401, errorBody(401, 'InvalidAudience: The token does not cover this resource.'));
      return;
    }
    if (request.method !== 'GET') {
      send(405, errorBody(405, `The fake Service Bus serves only GET on entities, not ${request.method ?? ''}.`));
      return;
    }
    const selfUrl = `https://${url.host}/${path}?api-version=${url.searchParams.get('api-version') ?? ''}`;
    const queue = queues.get(path.toLowerCase());
    send(200, queue === undefined ? emptyFeed(selfUrl) : queueEntry(queue, selfUrl, created));
  };
}
