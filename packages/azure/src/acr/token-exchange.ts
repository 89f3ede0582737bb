import type { TokenCredential } from '@azure/identity';
import { DeployError } from '@zepid/core';

/**
 * ACR credentials without the admin user: an Entra access token is exchanged for an ACR refresh
 * token (`POST https://<registry>/oauth2/exchange`, grant_type=access_token), which docker-compatible
 * clients (kaniko) use as the password of the fixed user 00000000-0000-0000-0000-000000000000. The
 * registry's own access tokens (for its REST API) come from `/oauth2/token` with that refresh token.
 *
 * Refresh tokens live about three hours: long enough for one build, so each build asks for a fresh one.
 */
export const ACR_REFRESH_TOKEN_USERNAME = '00000000-0000-0000-0000-000000000000';
/** Entra scope whose tokens ACR accepts for the exchange; the ARM audience works for every registry. */
export const ACR_EXCHANGE_SCOPE = 'https://management.azure.com/.default';

/** Manifest kinds kaniko pushes (single image or index, Docker or OCI); a registry answers 404 for a kind not accepted. */
const MANIFEST_MEDIA_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export interface RegistryCredential {
  username: string;
  password: string;
}

export interface AcrTokenOptions {
  /** Login server, `myregistry.azurecr.io` (tests: `127.0.0.1:<port>`). */
  loginServer: string;
  credential: TokenCredential;
  tenantId?: string | undefined;
  /** Scope of the Entra token exchanged; ACR_EXCHANGE_SCOPE by default. */
  scope?: string | undefined;
  /** Bound on each registry call. */
  timeoutMs?: number | undefined;
}

interface TokenAnswer {
  refresh_token?: unknown;
  access_token?: unknown;
}

export class AcrTokenExchange {
  private readonly options: AcrTokenOptions;

  constructor(options: AcrTokenOptions) {
    this.options = options;
  }

  /** A push/pull credential for docker clients: the fixed user and a fresh ACR refresh token. */
  async pushCredential(signal?: AbortSignal): Promise<RegistryCredential> {
    const aad = await this.options.credential.getToken(this.options.scope ?? ACR_EXCHANGE_SCOPE, signal === undefined ? {} : { abortSignal: signal });
    if (aad === null) throw new DeployError('REGISTRY_FAILED', 'No Entra token for the container registry (the credential returned none)');
    const form = new URLSearchParams({ grant_type: 'access_token', service: this.service(), access_token: aad.token });
    if (this.options.tenantId !== undefined) form.set('tenant', this.options.tenantId);
    const answer = await this.post('/oauth2/exchange', form, 'exchanging the Entra token for a registry token', signal);
    if (typeof answer.refresh_token !== 'string' || answer.refresh_token === '') {
      throw new DeployError('REGISTRY_FAILED', 'The container registry answered the token exchange without a refresh token');
    }
    return { username: ACR_REFRESH_TOKEN_USERNAME, password: answer.refresh_token };
  }

  /** A registry access token for `scope` (`repository:<repo>:delete`), for the registry's REST API. */
  async accessToken(scope: string, signal?: AbortSignal): Promise<string> {
    const { password } = await this.pushCredential(signal);
    const form = new URLSearchParams({ grant_type: 'refresh_token', service: this.service(), scope, refresh_token: password });
    const answer = await this.post('/oauth2/token', form, 'getting a registry access token', signal);
    if (typeof answer.access_token !== 'string' || answer.access_token === '') {
      throw new DeployError('REGISTRY_FAILED', 'The container registry answered without an access token');
    }
    return answer.access_token;
  }

  /** Removes a tag (`DELETE /acr/v1/<repo>/_tags/<tag>`); a tag that is already gone is fine. */
  async untag(repository: string, tag: string, signal?: AbortSignal): Promise<void> {
    const token = await this.accessToken(`repository:${repository}:delete`, signal);
    const response = await this.call(`/acr/v1/${repository}/_tags/${encodeURIComponent(tag)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } }, 'removing the image tag', signal);
    await response.body?.cancel();
    if (response.status === 404 || response.ok) return;
    throw registryError(response.status, 'removing the image tag');
  }

  /**
   * Whether the registry still holds the manifest `reference` (a digest, or a tag) of `repository`:
   * `HEAD /v2/<repo>/manifests/<reference>` with a pull token. An untagged image is still there by
   * digest until something deletes its manifest (a retention policy, a purge).
   */
  async manifestExists(repository: string, reference: string, signal?: AbortSignal): Promise<boolean> {
    // Both forms are URL-safe as they are; anything else is not an image reference of ours.
    if (!/^(sha256:[a-f0-9]{64}|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/.test(reference)) return false;
    const token = await this.accessToken(`repository:${repository}:pull`, signal);
    const response = await this.call(
      `/v2/${repository}/manifests/${reference}`,
      { method: 'HEAD', headers: { authorization: `Bearer ${token}`, accept: MANIFEST_MEDIA_TYPES } },
      'looking up an image',
      signal,
    );
    await response.body?.cancel();
    if (response.ok) return true;
    if (response.status === 404) return false;
    throw registryError(response.status, 'looking up an image');
  }

  /** The digest `<repository>:<tag>` names now (`Docker-Content-Digest` of a HEAD), null when the tag is gone. */
  async manifestDigest(repository: string, tag: string, signal?: AbortSignal): Promise<string | null> {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(tag)) return null;
    const token = await this.accessToken(`repository:${repository}:pull`, signal);
    const response = await this.call(
      `/v2/${repository}/manifests/${tag}`,
      { method: 'HEAD', headers: { authorization: `Bearer ${token}`, accept: MANIFEST_MEDIA_TYPES } },
      'looking up an image',
      signal,
    );
    await response.body?.cancel();
    if (response.status === 404) return null;
    if (!response.ok) throw registryError(response.status, 'looking up an image');
    const digest = response.headers.get('docker-content-digest');
    if (digest === null || !/^sha256:[a-f0-9]{64}$/.test(digest)) throw new DeployError('REGISTRY_FAILED', 'The container registry named no digest for the image');
    return digest;
  }

  /**
   * The tags on manifest `digest` (ACR's manifest attributes, `GET /acr/v1/<repo>/_manifests/<digest>`,
   * scope action `metadata_read`); null when the manifest is gone; 'unknown' when the identity may not
   * read metadata (metadata/read is a permission of its own in ACR: Azure/acr#690).
   */
  async manifestTags(repository: string, digest: string, signal?: AbortSignal): Promise<string[] | null | 'unknown'> {
    let token: string;
    try {
      token = await this.accessToken(`repository:${repository}:metadata_read`, signal);
    } catch (error) {
      if (error instanceof DeployError && (error.details as { status?: number } | undefined)?.status === 401) return 'unknown';
      throw error;
    }
    const response = await this.call(`/acr/v1/${repository}/_manifests/${digest}`, { method: 'GET', headers: { authorization: `Bearer ${token}` } }, 'reading an image\'s tags', signal);
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    if (response.status === 401 || response.status === 403) {
      await response.body?.cancel();
      return 'unknown';
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw registryError(response.status, 'reading an image\'s tags');
    }
    const body = (await response.json().catch(() => null)) as { manifest?: { tags?: unknown } } | null;
    const tags = body?.manifest?.tags ?? [];
    return Array.isArray(tags) ? tags.filter((tag): tag is string => typeof tag === 'string') : [];
  }

  /**
   * Deletes manifest `digest` and with it every tag on it (`DELETE /v2/<repo>/manifests/<digest>`,
   * 202; the OCI distribution spec's manifest deletion); already gone (404) is fine.
   */
  async deleteManifest(repository: string, digest: string, signal?: AbortSignal): Promise<void> {
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) throw new DeployError('VALIDATION_ERROR', `not a manifest digest: ${digest.slice(0, 80)}`);
    const token = await this.accessToken(`repository:${repository}:delete`, signal);
    const response = await this.call(`/v2/${repository}/manifests/${digest}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } }, 'deleting the image', signal);
    await response.body?.cancel();
    if (response.status === 404 || response.ok) return;
    throw registryError(response.status, 'deleting the image');
  }

  private service(): string {
    return this.options.loginServer;
  }

  private async post(path: string, form: URLSearchParams, action: string, signal: AbortSignal | undefined): Promise<TokenAnswer> {
    const response = await this.call(path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() }, action, signal);
    if (!response.ok) {
      await response.body?.cancel();
      throw registryError(response.status, action);
    }
    try {
      return (await response.json()) as TokenAnswer;
    } catch {
      throw new DeployError('REGISTRY_FAILED', `The container registry answered ${action} with something that is not JSON`);
    }
  }

  private async call(path: string, init: RequestInit, action: string, signal: AbortSignal | undefined): Promise<Response> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs ?? 30_000);
    try {
      return await fetch(`https://${this.options.loginServer}${path}`, { ...init, signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]) });
    } catch (error) {
      // The fetch error names only the URL and the socket problem; still, say it in our words.
      const reason = error instanceof Error && error.name === 'TimeoutError' ? 'timed out' : 'could not be reached';
      throw new DeployError('DEPENDENCY_UNAVAILABLE', `The container registry ${reason} while ${action}`, { retryable: true });
    }
  }
}

function registryError(status: number, action: string): DeployError {
  const transient = status === 429 || status >= 500;
  return new DeployError(transient ? 'DEPENDENCY_UNAVAILABLE' : 'REGISTRY_FAILED', `The container registry answered ${status} while ${action}`, {
    retryable: transient,
    details: { status },
  });
}

/** docker's config.json for one registry, as kaniko reads it from /kaniko/.docker/config.json. */
export function dockerConfigJson(loginServer: string, credential: RegistryCredential): string {
  const auth = Buffer.from(`${credential.username}:${credential.password}`).toString('base64');
  return JSON.stringify({ auths: { [loginServer]: { auth } } });
}
