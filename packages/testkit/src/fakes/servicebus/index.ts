import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createServer } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { testCertificate } from '../../tls.ts';
import { AmqpBroker } from './amqp.ts';
import type { AmqpBrokerStats } from './amqp.ts';
import { createAtomHandler } from './atom.ts';
import type { CredentialPolicy } from './auth.ts';
import { QueueEntity } from './entity.ts';
import type { QueueSettings } from './entity.ts';

export type { QueueSettings } from './entity.ts';

/**
 * A fake Azure Service Bus namespace on loopback for tests: an AMQP 1.0 broker (on rhea) that the
 * real @azure/service-bus client talks to, plus the HTTPS ATOM endpoint of ServiceBusAdministrationClient.
 *
 * Both share one port, as the SDK derives both from one endpoint: the first byte of a connection
 * tells plain AMQP ('A', the emulator connection string form), TLS (0x16: AMQPS for a namespace with a
 * TokenCredential, or HTTPS for the administration client; the first decrypted byte tells which).
 * The certificate is the testkit's self-signed one: call `trustTestCertificate()` in the test process.
 */

export interface FakeServiceBusOptions {
  /** Shared access key name → key; default `{ RootManageSharedAccessKey: <random> }`. */
  sharedAccessKeys?: Record<string, string>;
  /** Bearer tokens a TokenCredential may present; none by default. */
  acceptedTokens?: readonly string[];
  queues?: readonly Partial<QueueSettings>[];
  /** How often time-based transitions (lock expiry, long-poll timeouts) are checked; scheduled messages are due at their time. */
  sweepIntervalMs?: number;
}

export interface FakeServiceBus {
  readonly host: string;
  readonly port: number;
  /** `127.0.0.1:<port>`: the fully qualified namespace for a TokenCredential (AMQPS and HTTPS). */
  readonly fullyQualifiedNamespace: string;
  /** `Endpoint=sb://127.0.0.1:<port>;...;UseDevelopmentEmulator=true`: plain AMQP, as with the emulator. */
  connectionString(keyName?: string, key?: string): string;
  createQueue(settings: Partial<QueueSettings> & { name: string }): QueueEntity;
  queue(name: string): QueueEntity | undefined;
  stats(): AmqpBrokerStats;
  /** Closes every connection and the listener. */
  stop(): Promise<void>;
}

export const DEFAULT_QUEUE_SETTINGS: Omit<QueueSettings, 'name'> = {
  lockDurationMs: 60_000,
  maxDeliveryCount: 10,
  requiresSession: true,
  duplicateDetectionWindowMs: 10 * 60_000,
};

/** A readable/writable view of `socket` that first yields `head` (bytes already read to sniff the protocol). */
function prefixed(socket: Duplex, head: Buffer): Duplex {
  const view = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(error, callback) {
      socket.destroy();
      callback(error);
    },
  });
  view.push(head);
  socket.on('data', (chunk: Buffer) => {
    if (!view.push(chunk)) socket.pause();
  });
  socket.on('end', () => view.push(null));
  socket.on('error', (error) => view.destroy(error));
  socket.on('close', () => view.destroy());
  return view;
}

function firstChunk(stream: Duplex, then: (chunk: Buffer) => void): void {
  const onData = (chunk: Buffer) => {
    stream.removeListener('data', onData);
    stream.pause();
    then(chunk);
  };
  stream.on('data', onData);
}

const AMQP_HEADER_FIRST_BYTE = 0x41; // 'A' of "AMQP"
const TLS_HANDSHAKE = 0x16;

export async function startFakeServiceBus(options: FakeServiceBusOptions = {}): Promise<FakeServiceBus> {
  const policy: CredentialPolicy = {
    sharedAccessKeys: options.sharedAccessKeys ?? { RootManageSharedAccessKey: randomUUID() },
    acceptedTokens: options.acceptedTokens ?? [],
  };
  const queues = new Map<string, QueueEntity>();
  const createQueue = (settings: Partial<QueueSettings> & { name: string }) => {
    const queue = new QueueEntity({ ...DEFAULT_QUEUE_SETTINGS, ...settings, name: settings.name.toLowerCase() });
    queues.set(queue.settings.name, queue);
    return queue;
  };
  for (const settings of options.queues ?? []) createQueue({ name: 'queue', ...settings });

  const broker = new AmqpBroker(queues, policy, options.sweepIntervalMs ?? 25);
  const atom = createHttpServer(createAtomHandler(queues, policy, new Date()));
  const certificate = testCertificate();
  const sockets = new Set<Socket>();

  const server = createServer((socket) => {
    // Frames are small and often answer one another: with Nagle's algorithm a reply waits for the
    // client's delayed ACK (about 40 ms on loopback), a lag the service does not have.
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    firstChunk(socket, (head) => {
      if (head[0] === AMQP_HEADER_FIRST_BYTE) {
        broker.accept(prefixed(socket, head));
      } else if (head[0] === TLS_HANDSHAKE) {
        const secure = new TLSSocket(prefixed(socket, head), { isServer: true, key: certificate.key, cert: certificate.cert });
        secure.on('error', () => socket.destroy());
        firstChunk(secure, (inner) => {
          if (inner[0] === AMQP_HEADER_FIRST_BYTE) broker.accept(prefixed(secure, inner));
          else atom.emit('connection', prefixed(secure, inner));
        });
      } else {
        socket.destroy();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = '127.0.0.1';
  const defaultKey = Object.entries(policy.sharedAccessKeys)[0];

  return {
    host,
    port,
    fullyQualifiedNamespace: `${host}:${port}`,
    connectionString(keyName = defaultKey?.[0] ?? 'none', key = defaultKey?.[1] ?? 'none') {
      return `Endpoint=sb://${host}:${port};SharedAccessKeyName=${keyName};SharedAccessKey=${key};UseDevelopmentEmulator=true`;
    },
    createQueue,
    queue: (name) => queues.get(name.toLowerCase()),
    stats: () => broker.stats(),
    async stop() {
      broker.stop();
      for (const socket of sockets) socket.destroy();
      atom.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
