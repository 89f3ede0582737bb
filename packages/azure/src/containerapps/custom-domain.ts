import type { DnsRecord } from '@zepid/core';

/**
 * The records a user adds so Container Apps can verify and serve a custom domain: a TXT
 * `asuid.<domain>` holding the environment's verification id, and a CNAME to the app's FQDN; an
 * apex domain cannot have a CNAME, so it gets an A record to the environment's static IP instead.
 * The apex test counts labels (`example.com`); a public suffix like `co.uk` makes `shop.co.uk` look
 * like a subdomain, for which Azure's own analysis (not this list) is what decides.
 */
export function customDomainRecords(domain: string, fqdn: string, verificationId: string | undefined, staticIp: string | undefined): DnsRecord[] {
  const records: DnsRecord[] = [];
  if (verificationId !== undefined) records.push({ type: 'TXT', name: `asuid.${domain}`, value: verificationId });
  const apex = domain.split('.').length === 2;
  if (apex && staticIp !== undefined) records.push({ type: 'A', name: domain, value: staticIp });
  else records.push({ type: 'CNAME', name: domain, value: fqdn });
  return records;
}

/** Name of the managed certificate of a domain in the environment: stable, so a retry finds it. */
export function managedCertificateName(domain: string): string {
  const readable = domain
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 48)
    .replace(/-+$/g, '');
  return `mc-${readable}`;
}
