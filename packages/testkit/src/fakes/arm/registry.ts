import { randomBytes } from 'node:crypto';
import type { FakeTokenCredential } from './credential.ts';
import { ArmHttpError } from './http.ts';
import type { ArmRequest, ArmResponse } from './http.ts';

/** Audiences ACR accepts for the token exchange. */
const EXCHANGE_SCOPES = new Set(['https://management.azure.com/.default', 'https://containerregistry.azure.net/.default']);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

/**
 * The part of Azure Container Registry the service talks to: the OAuth exchange of an Entra token
 * for a refresh token (admin user disabled), refresh → access tokens, tag deletion, manifest lookups
 * (`HEAD /v2/<repo>/manifests/<digest or tag>`), and the images the fake kaniko pushes (so a build's
 * digest and a later untag agree). As in ACR, untagging leaves the manifest pullable by digest; only
 * deleting the manifest (the service's `DELETE /v2/<repo>/manifests/<digest>`, or `deleteManifest`:
 * a retention policy or purge) removes it, with every tag on it.
 */
export class RegistrySimulation {
  /** Login server, `127.0.0.1:<port>`. */
  readonly loginServer: string;
  /** Refresh tokens handed out by /oauth2/exchange: what kaniko's config.json must carry. */
  readonly refreshTokens = new Set<string>();
  private readonly accessTokens = new Map<string, string>();
  private readonly tags = new Map<string, Map<string, string>>();
  private readonly manifests = new Map<string, Set<string>>();
  private readonly credential: FakeTokenCredential;
  /**
   * Whether the identity's role lets it read manifest metadata: `metadata/read` is a permission of
   * its own, apart from pulling (Azure/acr#690); without it the attributes endpoint answers 401.
   */
  metadataRead = true;

  constructor(loginServer: string, credential: FakeTokenCredential) {
    this.loginServer = loginServer;
    this.credential = credential;
  }

  /** Records a push (the fake kaniko's). */
  push(repository: string, tag: string, digest: string): void {
    let repo = this.tags.get(repository);
    if (repo === undefined) {
      repo = new Map();
      this.tags.set(repository, repo);
    }
    repo.set(tag, digest);
    const manifests = this.manifests.get(repository) ?? new Set<string>();
    manifests.add(digest);
    this.manifests.set(repository, manifests);
  }

  /** Removes an image and every tag on it, as ACR's retention policy or `az acr repository delete` would. */
  deleteManifest(repository: string, digest: string): void {
    this.manifests.get(repository)?.delete(digest);
    for (const [tag, tagged] of this.tags.get(repository) ?? []) if (tagged === digest) this.tags.get(repository)?.delete(tag);
  }

  /** Digest of `<repository>:<tag>`, or undefined. */
  digestOf(repository: string, tag: string): string | undefined {
    return this.tags.get(repository)?.get(tag);
  }

  /** Whether `repository` holds an image with `digest`, tagged or not. */
  hasDigest(repository: string, digest: string): boolean {
    return this.manifests.get(repository)?.has(digest) ?? false;
  }

  /** Every token the registry issued; tests check none leaks. */
  issuedTokens(): string[] {
    return [...this.refreshTokens, ...this.accessTokens.keys()];
  }

  /** Checks a docker `auth` (base64 user:password) the way the registry would on a push. */
  acceptsBasicAuth(auth: string | undefined): boolean {
    if (auth === undefined) return false;
    const decoded = Buffer.from(auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return decoded.slice(0, colon) === '00000000-0000-0000-0000-000000000000' && this.refreshTokens.has(decoded.slice(colon + 1));
  }

  handle(request: ArmRequest): ArmResponse | null {
    const path = request.url.pathname;
    if (request.method === 'POST' && path === '/oauth2/exchange') return this.exchange(request);
    if (request.method === 'POST' && path === '/oauth2/token') return this.token(request);
    const untag = /^\/acr\/v1\/(.+)\/_tags\/([^/]+)$/.exec(path);
    if (request.method === 'DELETE' && untag !== null) return this.untag(request, untag[1] ?? '', decodeURIComponent(untag[2] ?? ''));
    const manifest = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
    if ((request.method === 'HEAD' || request.method === 'GET') && manifest !== null) {
      return this.manifest(request, manifest[1] ?? '', decodeURIComponent(manifest[2] ?? ''));
    }
    if (request.method === 'DELETE' && manifest !== null) return this.deleteByDigest(request, manifest[1] ?? '', decodeURIComponent(manifest[2] ?? ''));
    const attributes = /^\/acr\/v1\/(.+)\/_manifests\/([^/]+)$/.exec(path);
    if (request.method === 'GET' && attributes !== null) return this.attributes(request, attributes[1] ?? '', decodeURIComponent(attributes[2] ?? ''));
    return null;
  }

  private form(request: ArmRequest): Record<string, string> {
    if (!(request.headers['content-type'] ?? '').includes('application/x-www-form-urlencoded')) {
      throw new ArmHttpError(400, 'UNSUPPORTED', 'the token endpoints take application/x-www-form-urlencoded');
    }
    return (request.body ?? {}) as Record<string, string>;
  }

  private exchange(request: ArmRequest): ArmResponse {
    const form = this.form(request);
    if (form.grant_type !== 'access_token') throw new ArmHttpError(400, 'UNSUPPORTED_GRANT', `grant_type must be access_token, got ${form.grant_type ?? 'none'}`);
    if (form.service !== this.loginServer) throw new ArmHttpError(400, 'INVALID_SERVICE', `service must be ${this.loginServer}`);
    const scope = this.credential.scopeOf(form.access_token ?? '');
    if (scope === undefined || !EXCHANGE_SCOPES.has(scope)) throw new ArmHttpError(401, 'UNAUTHORIZED', 'the access token is not valid for the registry');
    const refreshToken = `acr-refresh-${randomBytes(18).toString('base64url')}`;
    this.refreshTokens.add(refreshToken);
    return { status: 200, body: { refresh_token: refreshToken } };
  }

  private token(request: ArmRequest): ArmResponse {
    const form = this.form(request);
    if (form.grant_type !== 'refresh_token') throw new ArmHttpError(400, 'UNSUPPORTED_GRANT', `grant_type must be refresh_token, got ${form.grant_type ?? 'none'}`);
    if (!this.refreshTokens.has(form.refresh_token ?? '')) throw new ArmHttpError(401, 'UNAUTHORIZED', 'the refresh token is not valid');
    if (form.service !== this.loginServer || form.scope === undefined) throw new ArmHttpError(400, 'INVALID_REQUEST', 'service and scope are required');
    const accessToken = `acr-access-${randomBytes(18).toString('base64url')}`;
    this.accessTokens.set(accessToken, form.scope);
    return { status: 200, body: { access_token: accessToken } };
  }

  /** The access token of the request must have been issued for `repository:<repo>:<action>`. */
  private authorize(request: ArmRequest, repository: string, action: 'pull' | 'delete' | 'metadata_read'): void {
    const bearer = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
    const scope = bearer === undefined ? undefined : this.accessTokens.get(bearer);
    if (scope === undefined || !scope.split(' ').includes(`repository:${repository}:${action}`)) {
      throw new ArmHttpError(401, 'UNAUTHORIZED', `authentication required for repository:${repository}:${action}`);
    }
  }

  private manifest(request: ArmRequest, repository: string, reference: string): ArmResponse {
    this.authorize(request, repository, 'pull');
    const accepted = request.headers.accept ?? '';
    if (!accepted.includes(OCI_MANIFEST) && !accepted.includes(DOCKER_MANIFEST)) {
      // A registry falls back to a schema 1 conversion or 404 for clients that accept neither.
      throw new ArmHttpError(404, 'MANIFEST_UNKNOWN', `no manifest in a media type the client accepts (${accepted || 'none'})`);
    }
    const digest = reference.startsWith('sha256:') ? reference : this.digestOf(repository, reference);
    if (digest === undefined || !this.hasDigest(repository, digest)) throw new ArmHttpError(404, 'MANIFEST_UNKNOWN', `manifest unknown: ${repository}@${reference}`);
    return { status: 200, headers: { 'docker-content-digest': digest, 'content-type': DOCKER_MANIFEST } };
  }

  /**
   * OCI distribution spec, "Deleting manifests": `DELETE /v2/<name>/manifests/<digest>` answers 202
   * Accepted, 404 when the manifest is unknown (opencontainers/distribution-spec spec.md, endpoint end-9);
   * ACR takes a digest here (a tag is 400 in this fake: the service never sends one). In ACR deleting
   * by manifest digest "deletes an image, all unique layers referenced by the image, and all tags
   * associated with the image" (https://learn.microsoft.com/azure/container-registry/container-registry-delete).
   * Needs a token with the repository's `delete` action.
   */
  private deleteByDigest(request: ArmRequest, repository: string, reference: string): ArmResponse {
    this.authorize(request, repository, 'delete');
    if (!/^sha256:[a-f0-9]{64}$/.test(reference)) throw new ArmHttpError(400, 'DIGEST_INVALID', `not a manifest digest: ${reference}`);
    if (!this.hasDigest(repository, reference)) throw new ArmHttpError(404, 'MANIFEST_UNKNOWN', `manifest unknown: ${repository}@${reference}`);
    this.deleteManifest(repository, reference);
    return { status: 202 };
  }

  /**
   * ACR's "Get manifest attributes", `GET /acr/v1/<repo>/_manifests/<digest>` (scope action
   * `metadata_read`): `{registry, imageName, manifest: {digest, tags, …}}`, 404 MANIFEST_UNKNOWN
   * (https://learn.microsoft.com/rest/api/containerregistry/manifests/get-attributes).
   */
  private attributes(request: ArmRequest, repository: string, digest: string): ArmResponse {
    this.authorize(request, repository, 'metadata_read');
    if (!this.metadataRead) throw new ArmHttpError(401, 'UNAUTHORIZED', `authentication required for repository:${repository}:metadata_read`, [], true);
    if (!this.hasDigest(repository, digest)) throw new ArmHttpError(404, 'MANIFEST_UNKNOWN', `manifest unknown: ${repository}@${digest}`);
    const tags = [...(this.tags.get(repository) ?? [])].filter(([, tagged]) => tagged === digest).map(([tag]) => tag);
    return { status: 200, body: { registry: this.loginServer, imageName: repository, manifest: { digest, mediaType: DOCKER_MANIFEST, tags } } };
  }

  /** Tags of `repository` (for assertions). */
  tagsOf(repository: string): string[] {
    return [...(this.tags.get(repository)?.keys() ?? [])];
  }

  private untag(request: ArmRequest, repository: string, tag: string): ArmResponse {
    this.authorize(request, repository, 'delete');
    const repo = this.tags.get(repository);
    if (repo?.delete(tag) !== true) throw new ArmHttpError(404, 'TAG_UNKNOWN', `tag ${tag} is not in repository ${repository}`);
    return { status: 202 };
  }
}
