import type { AddressInfo } from 'node:net';
import { createHttpsServer } from '@zeit/cosmosdb-server';
import { testCertificate, trustTestCertificate } from '../tls.ts';

export interface CosmosEmulator {
  /** `https://127.0.0.1:<port>/` */
  endpoint: string;
  /** `AccountEndpoint=…;AccountKey=…;` as Azure hands it out; the emulator accepts any key. */
  connectionString: string;
  /** PEM file that child processes need in NODE_EXTRA_CA_CERTS to reach the emulator. */
  certPath: string;
  stop(): Promise<void>;
}

/** The Cosmos DB emulator's published, well-known key: not a secret, and ignored by cosmosdb-server. */
const EMULATOR_KEY = 'C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==';

/**
 * Starts `@zeit/cosmosdb-server` in this process on a free loopback port, empty, in memory. It
 * serves TLS with the shared test certificate (its bundled one is not valid for 127.0.0.1), which
 * this process is made to trust; children get `certPath` through NODE_EXTRA_CA_CERTS.
 *
 * What it lacks compared with Cosmos DB: no PATCH, no GROUP BY, no TTL expiry (items with `ttl`
 * are kept), no throttling, no RU accounting, continuation tokens are not validated, and auth is
 * not checked.
 */
export async function startCosmosEmulator(): Promise<CosmosEmulator> {
  const certificate = trustTestCertificate();
  const { key, cert } = testCertificate();
  const server = createHttpsServer({ key, cert });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const endpoint = `https://127.0.0.1:${port}/`;
  return {
    endpoint,
    connectionString: `AccountEndpoint=${endpoint};AccountKey=${EMULATOR_KEY};`,
    certPath: certificate.certPath,
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error === undefined ? resolve() : reject(error)));
        server.closeAllConnections();
      }),
  };
}
