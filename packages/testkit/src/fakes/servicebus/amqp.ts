import type { Duplex } from 'node:stream';
import rhea from 'rhea';
import type { Connection, Delivery, EventContext, Receiver, Sender } from 'rhea';
import type { CredentialPolicy } from './auth.ts';
import { checkBearerToken, checkSharedAccessSignature, claimCovers, entityPathOf, sasResourcePath } from './auth.ts';
import type { AmqpMessageFields, BrokerError, QueueEntity, SessionLock, StoredMessage } from './entity.ts';
import { SESSION_CANNOT_BE_LOCKED, SESSION_LOCK_LOST } from './entity.ts';

/**
 * The AMQP 1.0 face of the fake: what @azure/service-bus sends, answered with Service Bus semantics.
 * - `$cbs` put-token (SAS or bearer token) authorizes an audience on the connection; links to an
 *   entity without a claim are refused like the service refuses them.
 * - A receiver link with the `com.microsoft:session-filter` source filter accepts a session: the
 *   attach is answered only when a session can be locked (long poll, up to the `com.microsoft:timeout`
 *   link property), with the session id in the filter and `com.microsoft:locked-until-utc`. A waiting
 *   attach is answered as soon as a session can be locked (a message arrives, a session is released,
 *   a scheduled message is due), not only when the client asks again.
 * - Deliveries carry x-opt-sequence-number, x-opt-enqueued-time, x-opt-locked-until, the lock token
 *   as delivery tag and the header delivery-count (Service Bus count - 1); dispositions complete,
 *   abandon (modified) and dead-letter (rejected with com.microsoft:dead-letter).
 * - `<entity>/$management` answers renew-session-lock, schedule-message and peek-message.
 */

const SESSION_FILTER = 'com.microsoft:session-filter';
const BATCH_FORMAT = 0x80013700;
/** .NET ticks at the Unix epoch: the service sends `com.microsoft:locked-until-utc` in ticks. */
const TICKS_AT_EPOCH = 621_355_968_000_000_000n;
/** The service answers an accept-next-session no later than about a minute. */
const MAX_ACCEPT_WAIT_MS = 65_000;

// rhea's typings leave out the link internals and outcome constructors the broker side needs.
interface LinkInternals {
  local: { attach: { source: unknown; target: unknown; properties?: Record<string, unknown>; max_message_size?: number } };
  state: { local_open: boolean; open_requests: number };
}
interface Outcomes {
  accepted(): { described(): unknown };
  rejected(fields: { error?: BrokerError }): { described(): unknown };
  modified(fields: Record<string, unknown>): { described(): unknown };
}
interface RemoteOutcome {
  error?: { condition?: string; description?: string; info?: Record<string, unknown> };
  undeliverable_here?: boolean;
}
interface AcceptingConnection extends Connection {
  accept(socket: Duplex): Connection;
}

interface SessionLink {
  link: Sender;
  connection: Connection;
  queue: QueueEntity;
  sessionId: string;
  /** A transfer was queued this turn; rhea has not taken its credit yet. */
  busy: boolean;
  drainRequested: boolean;
}

interface PendingAccept {
  link: Sender;
  connection: Connection;
  queue: QueueEntity;
  deadline: number;
}

interface DeliveredMessage {
  queue: QueueEntity;
  sequenceNumber: number;
  token: Buffer;
  link: Sender;
}

interface ConnectionState {
  /** Entity paths this connection holds a claim for (`''` is the whole namespace). */
  claims: Set<string>;
}

export interface AmqpBrokerStats {
  connections: number;
  sessionReceivers: number;
  waitingAccepts: number;
}

function ticksOf(time: number): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeBigInt64BE(BigInt(time) * 10_000n + TICKS_AT_EPOCH);
  return buffer;
}

const textOf = (value: unknown): string => (typeof value === 'string' ? value : '');

function longOf(value: unknown): number | null {
  if (typeof value === 'number') return value;
  if (Buffer.isBuffer(value) && value.length === 8) return Number(value.readBigInt64BE());
  return null;
}

export class AmqpBroker {
  private readonly queues: Map<string, QueueEntity>;
  private readonly policy: CredentialPolicy;
  private readonly container = rhea.create_container({ id: 'fake-servicebus' });
  private readonly outcomes = rhea.message as unknown as Outcomes;
  private readonly connections = new Map<Connection, ConnectionState>();
  private readonly sessionLinks = new Map<Sender, SessionLink>();
  private readonly pending: PendingAccept[] = [];
  private readonly delivered = new WeakMap<Delivery, DeliveredMessage>();
  private readonly sweeper: NodeJS.Timeout;
  /** One-off sweeps at the times scheduled messages are due (see sweepAt). */
  private readonly dueTimers = new Set<NodeJS.Timeout>();

  constructor(queues: Map<string, QueueEntity>, policy: CredentialPolicy, sweepIntervalMs: number) {
    this.queues = queues;
    this.policy = policy;
    this.container.on('sender_open', (context: EventContext) => this.onOutgoingLink(context));
    this.container.on('receiver_open', (context: EventContext) => this.onIncomingLink(context));
    this.container.on('message', (context: EventContext) => this.onMessage(context));
    this.container.on('sendable', (context: EventContext) => this.pumpLink(context.sender));
    this.container.on('sender_draining', (context: EventContext) => this.onDraining(context));
    for (const outcome of ['accepted', 'rejected', 'modified', 'released']) {
      this.container.on(outcome, (context: EventContext) => this.onOutcome(context));
    }
    this.container.on('sender_close', (context: EventContext) => this.onOutgoingLinkClosed(context));
    // Connection ends are handled by the socket's 'close' (see accept); these only keep rhea quiet.
    for (const event of ['disconnected', 'connection_error', 'protocol_error', 'error', 'receiver_error', 'sender_error', 'session_error']) {
      this.container.on(event, () => undefined);
    }
    // Time-based transitions (scheduled messages, lock expiry, long-poll timeouts) run on one short sweep.
    this.sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
    this.sweeper.unref();
  }

  /** Serves one client connection on an already-sniffed transport (plain or TLS). */
  accept(socket: Duplex): void {
    const connection = (
      this.container.create_connection({
        reconnect: false,
        // An abandon (modified) must not look like a release, and a sent message is only accepted once stored.
        sender_options: { treat_modified_as_released: false },
        receiver_options: { autoaccept: false },
      } as never) as AcceptingConnection
    ).accept(socket);
    this.connections.set(connection, { claims: new Set() });
    socket.once('close', () => {
      // rhea only listens for 'end'; a destroyed socket must still stop its heartbeat timers.
      (connection as unknown as { eof(): void }).eof();
      this.onConnectionGone(connection);
    });
  }

  stats(): AmqpBrokerStats {
    return { connections: this.connections.size, sessionReceivers: this.sessionLinks.size, waitingAccepts: this.pending.length };
  }

  stop(): void {
    clearInterval(this.sweeper);
    for (const timer of this.dueTimers) clearTimeout(timer);
    this.dueTimers.clear();
    for (const connection of [...this.connections.keys()]) this.onConnectionGone(connection);
  }

  // ---- links -------------------------------------------------------------------------------------

  /** Answers an attach with a null terminus and detaches it with the error, as the service refuses a link. */
  private refuse(link: Sender | Receiver, condition: string, description: string): void {
    const attach = (link as unknown as LinkInternals).local.attach;
    if (link.is_sender()) attach.source = null;
    else attach.target = null;
    link.close({ condition, description });
  }

  private claimed(connection: Connection, address: string): boolean {
    const state = this.connections.get(connection);
    return state !== undefined && [...state.claims].some((claim) => claimCovers(claim, address));
  }

  /** The queue an address names (`queue`, `queue/$DeadLetterQueue`, `queue/$management`...). */
  private queueOf(address: string): QueueEntity | undefined {
    return this.queues.get(address.split('/')[0]!.toLowerCase());
  }

  /** A link on which the client receives: the reply link of `$cbs`/`$management`, or a message receiver. */
  private onOutgoingLink(context: EventContext): void {
    const link = context.sender!;
    const address = String(link.source?.address ?? '');
    if (address === '$cbs') return;
    if (address.endsWith('/$management')) {
      if (!this.claimed(context.connection, address)) {
        this.refuse(link, 'amqp:unauthorized-access', `Unauthorized access. A claim for '${address}' is required to perform this operation.`);
      }
      return;
    }
    const filter = (link.source as { filter?: Record<string, unknown> } | undefined)?.filter;
    const queue = this.queueOf(address);
    if (!this.claimed(context.connection, address)) {
      this.refuse(link, 'amqp:unauthorized-access', `Unauthorized access. 'Listen' claim(s) are required to perform this operation. Resource: '${address}'.`);
    } else if (queue === undefined) {
      this.refuse(link, 'amqp:not-found', `The messaging entity '${address}' could not be found.`);
    } else if (address.includes('/')) {
      this.refuse(link, 'amqp:not-implemented', `The fake Service Bus serves receivers on queues only; read '${address}' by peeking.`);
    } else if (filter === undefined || !(SESSION_FILTER in filter)) {
      this.refuse(
        link,
        queue.settings.requiresSession ? 'amqp:not-allowed' : 'amqp:not-implemented',
        queue.settings.requiresSession
          ? 'It is not possible for an entity that requires sessions to create a non-sessionful message receiver.'
          : 'The fake Service Bus only serves session receivers.',
      );
    } else {
      // Hold the attach: rhea answers a peer's attach at once, so undo that until a session is locked.
      const internals = link as unknown as LinkInternals;
      internals.state.local_open = false;
      internals.state.open_requests -= 1;
      const requested = filter[SESSION_FILTER];
      if (typeof requested === 'string') {
        const lock = queue.acceptSession(requested, link, Date.now());
        if (lock === null) {
          link.open();
          this.refuse(link, SESSION_CANNOT_BE_LOCKED, `The requested session '${requested}' cannot be accepted. It may be locked by another receiver.`);
        } else {
          this.grantSession(link, context.connection, queue, lock);
        }
        return;
      }
      // The client says how long it waits (com.microsoft:timeout, ms); the service caps the wait.
      const timeout = Number((link.properties as Record<string, unknown> | undefined)?.['com.microsoft:timeout']);
      const waitMs = Number.isFinite(timeout) && timeout > 0 ? Math.min(timeout, MAX_ACCEPT_WAIT_MS) : MAX_ACCEPT_WAIT_MS;
      this.pending.push({ link, connection: context.connection, queue, deadline: Date.now() + waitMs });
      this.serveWaiting(queue);
    }
  }

  private grantSession(link: Sender, connection: Connection, queue: QueueEntity, lock: SessionLock): void {
    const internals = link as unknown as LinkInternals;
    link.set_source({ address: link.source.address, filter: { [SESSION_FILTER]: lock.sessionId } });
    internals.local.attach.properties = { 'com.microsoft:locked-until-utc': rhea.types.wrap_long(ticksOf(lock.lockedUntil)) };
    link.open();
    this.sessionLinks.set(link, { link, connection, queue, sessionId: lock.sessionId, busy: false, drainRequested: false });
  }

  /** Hands sessions to waiting accepts, oldest first. */
  private serveWaiting(queue: QueueEntity): void {
    const now = Date.now();
    for (const waiting of [...this.pending]) {
      if (waiting.queue !== queue) continue;
      const lock = queue.acceptSession(null, waiting.link, now);
      if (lock === null) break;
      this.pending.splice(this.pending.indexOf(waiting), 1);
      this.grantSession(waiting.link, waiting.connection, queue, lock);
    }
  }

  /** A link on which the client sends: `$cbs`, `$management` requests, or messages to a queue. */
  private onIncomingLink(context: EventContext): void {
    const link = context.receiver!;
    const address = String(link.target?.address ?? '');
    if (address === '$cbs') return;
    if (!this.claimed(context.connection, address)) {
      this.refuse(link, 'amqp:unauthorized-access', `Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: '${address}'.`);
    } else if (address.endsWith('/$management')) {
      return;
    } else if (this.queueOf(address) === undefined || address.includes('/')) {
      this.refuse(link, 'amqp:not-found', `The messaging entity '${address}' could not be found.`);
    } else {
      (link as unknown as LinkInternals).local.attach.max_message_size = 256 * 1024;
    }
  }

  private onOutgoingLinkClosed(context: EventContext): void {
    const link = context.sender!;
    const index = this.pending.findIndex((waiting) => waiting.link === link);
    if (index >= 0) {
      // The client gave up waiting: complete the attach so its detach is answered.
      this.pending.splice(index, 1);
      link.open();
      link.close();
      return;
    }
    this.endSessionLink(link);
  }

  private endSessionLink(link: Sender, error?: BrokerError): void {
    const entry = this.sessionLinks.get(link);
    if (entry === undefined) return;
    this.sessionLinks.delete(link);
    entry.queue.releaseSession(entry.sessionId, link, Date.now());
    if (error !== undefined && !link.is_closed()) link.close(error);
    this.changed(entry.queue);
  }

  private onConnectionGone(connection: Connection): void {
    if (!this.connections.delete(connection)) return;
    for (const waiting of this.pending.filter((entry) => entry.connection === connection)) {
      this.pending.splice(this.pending.indexOf(waiting), 1);
    }
    for (const entry of [...this.sessionLinks.values()]) {
      if (entry.connection === connection) this.endSessionLink(entry.link);
    }
    const socket = (connection as unknown as { socket?: Duplex }).socket;
    socket?.destroy();
  }

  // ---- deliveries --------------------------------------------------------------------------------

  /** After any change of a queue: waiting accepts may get a session, open session links messages. */
  private changed(queue: QueueEntity): void {
    this.serveWaiting(queue);
    for (const entry of this.sessionLinks.values()) {
      if (entry.queue === queue) this.pumpLink(entry.link);
    }
  }

  /**
   * Sends the next message of the link's session if the link has credit. One message per turn: rhea
   * takes the credit when it writes the transfer (next tick), so the next one waits for setImmediate.
   */
  private pumpLink(link: Sender | undefined): void {
    const entry = link === undefined ? undefined : this.sessionLinks.get(link);
    if (entry === undefined || entry.busy || !entry.link.is_open()) return;
    const lock = entry.queue.sessionLockOf(entry.sessionId);
    if (lock !== undefined && entry.link.sendable()) {
      const message = entry.queue.deliverNext(entry.sessionId, entry.link);
      if (message?.lock != null) {
        const delivery = entry.link.send(this.outgoing(message, { 'x-opt-locked-until': new Date(lock.lockedUntil) }) as never, message.lock.token);
        this.delivered.set(delivery, { queue: entry.queue, sequenceNumber: message.sequenceNumber, token: message.lock.token, link: entry.link });
        entry.busy = true;
        setImmediate(() => {
          entry.busy = false;
          this.pumpLink(entry.link);
        });
        return;
      }
    }
    if (entry.drainRequested) {
      // Nothing (more) to send: give the remaining credit back so the receiver's drain completes.
      entry.drainRequested = false;
      entry.link.set_drained(true);
    }
  }

  private onDraining(context: EventContext): void {
    const entry = context.sender === undefined ? undefined : this.sessionLinks.get(context.sender);
    if (entry === undefined) {
      context.sender?.set_drained(true);
      return;
    }
    entry.drainRequested = true;
    this.pumpLink(entry.link);
  }

  /** The message as the service sends it: stored fields plus the broker's annotations. */
  private outgoing(message: StoredMessage, annotations: Record<string, unknown>): AmqpMessageFields {
    const state = message.deadLetter === null && message.scheduledFor !== null ? 2 : 0;
    return {
      ...message.fields,
      delivery_count: Math.max(0, message.deliveryCount - 1),
      message_annotations: {
        ...message.fields.message_annotations,
        'x-opt-sequence-number': rhea.types.wrap_long(message.sequenceNumber),
        'x-opt-enqueued-time': new Date(message.enqueuedAt),
        'x-opt-message-state': state,
        ...(message.deadLetter === null ? {} : { 'x-opt-deadletter-source': message.deadLetter.source }),
        ...annotations,
      },
    };
  }

  private onOutcome(context: EventContext): void {
    const delivery = context.delivery!;
    const delivered = this.delivered.get(delivery);
    if (delivered === undefined) {
      // A reply on $cbs/$management the client settled itself.
      if (!delivery.settled) delivery.update(true);
      return;
    }
    if (delivery.settled) return;
    const remote = (delivery.remote_state ?? {}) as RemoteOutcome;
    const kind = (delivery.remote_state as { constructor: { composite_type?: string } } | undefined)?.constructor.composite_type;
    let error: BrokerError | null;
    if (kind === 'accepted') {
      error = delivered.queue.settle(delivered.sequenceNumber, delivered.token, delivered.link, { kind: 'complete' }, Date.now());
    } else if (kind === 'rejected' && remote.error?.condition === 'com.microsoft:dead-letter') {
      const { DeadLetterReason, DeadLetterErrorDescription, ...properties } = remote.error.info ?? {};
      error = delivered.queue.settle(
        delivered.sequenceNumber,
        delivered.token,
        delivered.link,
        {
          kind: 'dead-letter',
          reason: typeof DeadLetterReason === 'string' ? DeadLetterReason : undefined,
          description: typeof DeadLetterErrorDescription === 'string' ? DeadLetterErrorDescription : undefined,
          properties,
        },
        Date.now(),
      );
    } else if (kind === 'modified' && remote.undeliverable_here === true) {
      error = { condition: 'amqp:not-implemented', description: 'The fake Service Bus does not implement deferral.' };
    } else {
      error = delivered.queue.settle(delivered.sequenceNumber, delivered.token, delivered.link, { kind: 'abandon' }, Date.now());
    }
    if (!delivery.remote_settled) {
      delivery.update(true, (error === null ? this.outcomes.accepted() : this.outcomes.rejected({ error })).described());
    }
    this.changed(delivered.queue);
  }

  // ---- incoming messages ---------------------------------------------------------------------------

  private onMessage(context: EventContext): void {
    const link = context.receiver!;
    const address = String(link.target?.address ?? '');
    const message = context.message as unknown as AmqpMessageFields & { reply_to?: string; body?: unknown };
    if (address === '$cbs') {
      context.delivery!.accept();
      this.reply(context.connection, message, this.putToken(context.connection, message));
    } else if (address.endsWith('/$management')) {
      context.delivery!.accept();
      this.reply(context.connection, message, this.manage(context.connection, address, message));
    } else {
      this.onSend(context, address, message);
    }
  }

  private reply(connection: Connection, request: AmqpMessageFields & { reply_to?: string }, response: { properties: Record<string, unknown>; body?: unknown }): void {
    const replyLink = connection.find_sender((link: Sender) => link.name === request.reply_to || link.target?.address === request.reply_to);
    replyLink?.send({ correlation_id: request.message_id, application_properties: response.properties, body: response.body } as never);
  }

  private putToken(connection: Connection, request: AmqpMessageFields & { body?: unknown }): { properties: Record<string, unknown> } {
    const properties = request.application_properties ?? {};
    const token = typeof request.body === 'string' ? request.body : '';
    const audience = textOf(properties['name']);
    const now = Date.now();
    let verdict = properties['type'] === 'jwt' ? checkBearerToken(token, this.policy) : checkSharedAccessSignature(token, this.policy, now);
    let claim = entityPathOf(audience);
    if (verdict.ok && properties['type'] !== 'jwt') {
      const covered = sasResourcePath(token);
      if (covered === null || !claimCovers(covered, claim)) verdict = { ok: false, reason: 'InvalidAudience: The token does not cover the requested audience.' };
      else claim = covered;
    }
    if (!verdict.ok) return { properties: { 'status-code': 401, 'status-description': verdict.reason } };
    this.connections.get(connection)?.claims.add(claim);
    return { properties: { 'status-code': 202, 'status-description': 'Accepted' } };
  }

  private onSend(context: EventContext, address: string, message: AmqpMessageFields): void {
    const delivery = context.delivery!;
    const queue = this.queueOf(address);
    if (queue === undefined) {
      delivery.reject({ condition: 'amqp:not-found', description: `The messaging entity '${address}' could not be found.` });
      return;
    }
    if (delivery.format === BATCH_FORMAT) {
      delivery.reject({ condition: 'amqp:not-implemented', description: 'The fake Service Bus does not accept batches; send messages one by one.' });
      return;
    }
    const refused = this.refusal(queue, message);
    if (refused !== null) {
      delivery.reject(refused);
      return;
    }
    const scheduledFor = message.message_annotations?.['x-opt-scheduled-enqueue-time'];
    this.sweepAt(queue.enqueue(message, Date.now(), scheduledFor instanceof Date ? scheduledFor.getTime() : null));
    delivery.accept();
    this.changed(queue);
  }

  private refusal(queue: QueueEntity, message: AmqpMessageFields): BrokerError | null {
    if (queue.settings.requiresSession && (typeof message.group_id !== 'string' || message.group_id === '')) {
      return {
        condition: 'amqp:not-allowed',
        description: 'The SessionId was not set on a message, and it cannot be sent to the entity. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value.',
      };
    }
    return null;
  }

  // ---- $management -----------------------------------------------------------------------------------

  private manage(connection: Connection, address: string, request: AmqpMessageFields & { body?: unknown }): { properties: Record<string, unknown>; body?: unknown } {
    const operation = textOf(request.application_properties?.['operation']);
    const body = (request.body ?? {}) as Record<string, unknown>;
    const queue = this.queueOf(address);
    const failure = (statusCode: number, error: BrokerError) => ({
      properties: { statusCode, statusDescription: error.description, errorCondition: error.condition },
    });
    if (queue === undefined) return failure(404, { condition: 'amqp:not-found', description: `The messaging entity '${address}' could not be found.` });
    const deadLetter = address.toLowerCase().endsWith('/$deadletterqueue/$management');
    const now = Date.now();
    switch (operation) {
      case 'com.microsoft:renew-session-lock': {
        const sessionId = textOf(body['session-id']);
        const linkName = request.application_properties?.['associated-link-name'];
        const owner = [...this.sessionLinks.values()].find(
          (entry) => entry.connection === connection && entry.queue === queue && entry.sessionId === sessionId && (linkName === undefined || entry.link.name === linkName),
        );
        const result = queue.renewSessionLock(sessionId, owner?.link ?? {}, now);
        if ('condition' in result) return failure(410, result);
        return { properties: { statusCode: 200, statusDescription: 'OK' }, body: { expiration: new Date(result.lockedUntil) } };
      }
      case 'com.microsoft:schedule-message': {
        const entries = Array.isArray(body['messages']) ? (body['messages'] as Record<string, unknown>[]) : [];
        const sequenceNumbers: unknown[] = [];
        for (const entry of entries) {
          if (!Buffer.isBuffer(entry['message'])) return failure(400, { condition: 'com.microsoft:argument-error', description: 'A scheduled message has no encoded body.' });
          const message = rhea.message.decode(entry['message']) as unknown as AmqpMessageFields;
          const refused = this.refusal(queue, message);
          if (refused !== null) return failure(400, refused);
          const scheduledFor = message.message_annotations?.['x-opt-scheduled-enqueue-time'];
          const stored = queue.enqueue(message, now, scheduledFor instanceof Date ? scheduledFor.getTime() : null);
          this.sweepAt(stored);
          // A duplicate is dropped silently; the caller still gets a sequence number, as for a send.
          sequenceNumbers.push(rhea.types.wrap_long(stored?.sequenceNumber ?? 0));
        }
        this.changed(queue);
        return { properties: { statusCode: 200, statusDescription: 'OK' }, body: { 'sequence-numbers': sequenceNumbers } };
      }
      case 'com.microsoft:peek-message': {
        const from = longOf(body['from-sequence-number']) ?? 1;
        const count = typeof body['message-count'] === 'number' ? body['message-count'] : 1;
        const sessionId = typeof body['session-id'] === 'string' ? body['session-id'] : undefined;
        const messages = queue.peek(deadLetter ? 'dead-letter' : 'main', from, count, sessionId);
        if (messages.length === 0) return { properties: { statusCode: 204, statusDescription: 'No messages' } };
        return {
          properties: { statusCode: 200, statusDescription: 'OK' },
          body: { messages: messages.map((message) => ({ message: rhea.message.encode(this.outgoing(message, {})) })) },
        };
      }
      default:
        return failure(501, { condition: 'amqp:not-implemented', description: `The fake Service Bus does not implement the management operation '${operation}'.` });
    }
  }

  // ---- time ------------------------------------------------------------------------------------------

  /**
   * A scheduled message becomes available at its time, as on the service, not at the next periodic
   * sweep: a session wait already pending is answered then.
   */
  private sweepAt(message: StoredMessage | null): void {
    if (message?.scheduledFor == null) return;
    const timer = setTimeout(() => {
      this.dueTimers.delete(timer);
      this.sweep();
    }, Math.max(0, message.scheduledFor - Date.now()));
    timer.unref();
    this.dueTimers.add(timer);
  }

  private sweep(): void {
    const now = Date.now();
    for (const queue of this.queues.values()) {
      const { expired, activated } = queue.sweep(now);
      for (const lock of expired) {
        // The service detaches a session receiver whose lock expired; the SDK then closes it.
        this.endSessionLink(lock.owner as Sender, {
          condition: SESSION_LOCK_LOST,
          description: `The session lock has expired on the MessageSession '${lock.sessionId}'. Accept a new MessageSession.`,
        });
      }
      if (activated) this.changed(queue);
    }
    for (const waiting of [...this.pending]) {
      if (waiting.deadline > now) continue;
      this.pending.splice(this.pending.indexOf(waiting), 1);
      waiting.link.open();
      this.refuse(waiting.link, 'com.microsoft:timeout', 'The operation did not complete within the allocated time: no session was available.');
    }
  }
}
