import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ManagedIdentityEndpoint {
  /** For IDENTITY_ENDPOINT: where DefaultAzureCredential asks for tokens, as inside Container Apps. */
  endpoint: string;
  /** For IDENTITY_HEADER: the shared secret the platform puts in each container's environment. */
  header: string;
  /** Resources tokens were asked for, in order (`https://management.azure.com`, `https://vault.azure.net`…). */
  requests: { resource: string; clientId: string | null }[];
  stop(): Promise<void>;
}

/**
 * The managed-identity endpoint of Azure Container Apps / App Service (IDENTITY_ENDPOINT +
 * IDENTITY_HEADER, api-version 2019-08-01), on loopback. With both variables set, a child process's
 * DefaultAzureCredential takes its ManagedIdentityCredential path exactly as in production; `issue`
 * decides which token each resource gets (e.g. one the ARM simulator or the Key Vault fake accepts).
 * Plain HTTP like the real endpoint, which is local to the container.
 */
export async function startManagedIdentityEndpoint(issue: (resource: string, clientId: string | null) => Promise<string>): Promise<ManagedIdentityEndpoint> {
  const header = randomBytes(16).toString('hex');
  const requests: ManagedIdentityEndpoint['requests'] = [];
  const server: Server = createServer((request, response) => {
    void (async () => {
      const url = new URL(request.url ?? '/', 'http://127.0.0.1');
      const resource = url.searchParams.get('resource');
      if (request.headers['x-identity-header'] !== header || resource === null || url.searchParams.get('api-version') !== '2019-08-01') {
        response.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_request' }));
        return;
      }
      const clientId = url.searchParams.get('client_id');
      requests.push({ resource, clientId });
      const token = await issue(resource, clientId);
      response.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ access_token: token, expires_on: String(Math.floor(Date.now() / 1000) + 3600), resource, token_type: 'Bearer' }),
      );
    })().catch(() => response.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}/msi/token`,
    header,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
