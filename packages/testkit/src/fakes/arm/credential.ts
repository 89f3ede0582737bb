import { randomUUID } from 'node:crypto';
import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/core-auth';

/**
 * A TokenCredential for tests: issues opaque tokens and remembers the scope each was issued for, so
 * the simulator can refuse an ARM call made with a token for another audience (a wrong
 * `credentialScopes` would pass unnoticed with a credential that ignores scopes).
 */
export class FakeTokenCredential implements TokenCredential {
  /** Scopes of every getToken call, in order. */
  readonly requestedScopes: string[][] = [];
  private readonly issued = new Map<string, string>();
  private readonly labels = new Map<string, string>();

  getToken(scopes: string | string[], _options?: GetTokenOptions): Promise<AccessToken | null> {
    const list = Array.isArray(scopes) ? [...scopes] : [scopes];
    this.requestedScopes.push(list);
    const token = `fake-entra-${randomUUID()}`;
    this.issued.set(token, list.join(' '));
    return Promise.resolve({ token, expiresOnTimestamp: Date.now() + 3_600_000, tokenType: 'Bearer' });
  }

  /** The scope a token was issued for, or undefined for a token this credential never issued. */
  scopeOf(token: string): string | undefined {
    return this.issued.get(token);
  }

  /**
   * Names who holds a token (e.g. the client id of the worker it was issued to through the
   * managed-identity endpoint), so recorded requests say which process sent them.
   */
  label(token: string, caller: string): void {
    this.labels.set(token, caller);
  }

  labelOf(token: string): string | undefined {
    return this.labels.get(token);
  }

  /** Every token issued so far: tests check none of them leaks into logs or errors. */
  issuedTokens(): string[] {
    return [...this.issued.keys()];
  }
}
