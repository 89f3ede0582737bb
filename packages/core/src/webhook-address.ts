import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { DeployError } from './errors.ts';

/**
 * Where a webhook may be sent (server-side request forgery rules). Checked on the addresses a
 * host name resolves to, at registration and again at every attempt (DNS can change in between),
 * and the request then connects to the address that was checked, not to a new lookup.
 *
 * - always refused: link-local (169.254.0.0/16, fe80::/10) which holds the cloud metadata services
 *   (169.254.169.254, fd00:ec2::254), Azure's host address 168.63.129.16, unspecified, multicast and
 *   reserved ranges;
 * - loopback and private ranges (127/8, 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, ::1):
 *   only when `allowPrivateNetworks` (WEBHOOK_ALLOW_PRIVATE_NETWORKS; default true in local mode,
 *   false in Azure mode);
 * - `https` only when `requireHttps` (Azure mode).
 */
export interface WebhookAddressPolicy {
  allowPrivateNetworks: boolean;
  requireHttps: boolean;
}

const ALWAYS = new BlockList();
ALWAYS.addSubnet('169.254.0.0', 16, 'ipv4');
ALWAYS.addAddress('168.63.129.16', 'ipv4');
ALWAYS.addAddress('100.100.100.200', 'ipv4');
ALWAYS.addSubnet('0.0.0.0', 8, 'ipv4');
ALWAYS.addSubnet('224.0.0.0', 4, 'ipv4');
ALWAYS.addSubnet('240.0.0.0', 4, 'ipv4');
ALWAYS.addSubnet('fe80::', 10, 'ipv6');
ALWAYS.addAddress('fd00:ec2::254', 'ipv6');
ALWAYS.addAddress('::', 'ipv6');
ALWAYS.addSubnet('ff00::', 8, 'ipv6');

const PRIVATE = new BlockList();
PRIVATE.addSubnet('127.0.0.0', 8, 'ipv4');
PRIVATE.addSubnet('10.0.0.0', 8, 'ipv4');
PRIVATE.addSubnet('172.16.0.0', 12, 'ipv4');
PRIVATE.addSubnet('192.168.0.0', 16, 'ipv4');
PRIVATE.addSubnet('100.64.0.0', 10, 'ipv4');
PRIVATE.addAddress('::1', 'ipv6');
PRIVATE.addSubnet('fc00::', 7, 'ipv6');

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4 address it carries. */
function normalise(address: string): { address: string; family: 'ipv4' | 'ipv6' } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return { address: mapped[1], family: 'ipv4' };
  return { address, family: isIP(address) === 6 ? 'ipv6' : 'ipv4' };
}

/** Why `address` may not receive webhooks under `policy`, or null when it may. */
export function refusalOf(address: string, policy: Pick<WebhookAddressPolicy, 'allowPrivateNetworks'>): string | null {
  const { address: ip, family } = normalise(address);
  if (ALWAYS.check(ip, family)) return `${address} is a link-local, metadata or reserved address`;
  if (!policy.allowPrivateNetworks && PRIVATE.check(ip, family)) {
    return `${address} is a loopback or private address (WEBHOOK_ALLOW_PRIVATE_NETWORKS is false)`;
  }
  return null;
}

export type Resolver = (host: string) => Promise<{ address: string; family: number }[]>;

export const systemResolver: Resolver = (host) => dnsLookup(host, { all: true, verbatim: true });

/** Parses a webhook URL: http(s), no credentials, no fragment; https only when required. */
export function parseWebhookUrl(raw: string, policy: Pick<WebhookAddressPolicy, 'requireHttps'>): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new DeployError('VALIDATION_ERROR', 'url is not a valid URL', { details: [{ field: 'url', message: 'is not a valid URL' }] });
  }
  const problem =
    url.protocol !== 'https:' && url.protocol !== 'http:'
      ? 'must be http or https'
      : policy.requireHttps && url.protocol !== 'https:'
        ? 'must be https in Azure mode'
        : url.username !== '' || url.password !== ''
          ? 'must not carry credentials'
          : null;
  if (problem !== null) throw new DeployError('VALIDATION_ERROR', `url ${problem}`, { details: [{ field: 'url', message: problem }] });
  return url;
}

/**
 * Resolves the URL's host and checks every address it resolves to (one refused address refuses
 * the URL: a rebinding host could hand out either). Returns the address to connect to.
 */
export async function resolveWebhookTarget(
  url: URL,
  policy: WebhookAddressPolicy,
  resolve: Resolver = systemResolver,
): Promise<{ address: string; family: 4 | 6 }> {
  parseWebhookUrl(url.href, policy);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  let addresses: { address: string; family: number }[];
  if (isIP(host) !== 0) addresses = [{ address: host, family: isIP(host) }];
  else {
    try {
      addresses = await resolve(host);
    } catch (error) {
      throw new DeployError('VALIDATION_ERROR', `url host ${host} does not resolve`, { cause: error, details: [{ field: 'url', message: 'host does not resolve' }] });
    }
  }
  if (addresses.length === 0) throw new DeployError('VALIDATION_ERROR', `url host ${host} does not resolve`, { details: [{ field: 'url', message: 'host does not resolve' }] });
  for (const candidate of addresses) {
    const refusal = refusalOf(candidate.address, policy);
    if (refusal !== null) throw new DeployError('VALIDATION_ERROR', `url refused: ${refusal}`, { details: [{ field: 'url', message: refusal }] });
  }
  const first = addresses[0] ?? { address: host, family: 4 };
  return { address: first.address, family: first.family === 6 ? 6 : 4 };
}
