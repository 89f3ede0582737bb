import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import { DeployError } from '@zepid/core';

/**
 * Swagger UI's own build (the swagger-ui-dist package) and the files it asks for, streamed from disk
 * on request. Nothing of it is loaded at start: @fastify/swagger-ui, used before, loaded its module
 * tree (@fastify/static, glob, send, mime: ~2 MB of RSS) into every API process whether or not
 * anyone opened /docs (BENCHMARKS.md, issue 13's memory target). The package's `main` would load
 * the 1.6 MB bundle itself, so only its directory is resolved.
 */
const DIST = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

const ASSETS = new Map<string, string>([
  ['swagger-ui.css', 'text/css; charset=utf-8'],
  ['index.css', 'text/css; charset=utf-8'],
  ['swagger-ui-bundle.js', 'text/javascript; charset=utf-8'],
  ['swagger-ui-standalone-preset.js', 'text/javascript; charset=utf-8'],
  ['favicon-32x32.png', 'image/png'],
  ['favicon-16x16.png', 'image/png'],
]);

/** swagger-ui-dist's index.html, titled; every URL is relative, so the page works behind a path prefix too. */
const INDEX = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Zepid Deploy API</title>
    <link rel="stylesheet" type="text/css" href="./swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./index.css" />
    <link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32" />
    <link rel="icon" type="image/png" href="./favicon-16x16.png" sizes="16x16" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./swagger-ui-bundle.js" charset="UTF-8"> </script>
    <script src="./swagger-ui-standalone-preset.js" charset="UTF-8"> </script>
    <script src="./swagger-initializer.js" charset="UTF-8"> </script>
  </body>
</html>
`;

/** swagger-ui-dist's swagger-initializer.js, pointed at this API's document (GET /openapi.json, one level up). */
const INITIALIZER = `window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: new URL('../openapi.json', window.location.href).href,
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: 'StandaloneLayout',
  });
};
`;

/** GET /docs (the interactive documentation of GET /openapi.json) and its files. Public. */
export const docsRoutes: FastifyPluginAsync = async (app) => {
  const hide = { schema: { hide: true } };
  app.get('/docs', hide, (_request, reply) => reply.redirect('/docs/'));
  app.get('/docs/', hide, (_request, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(INDEX));
  app.get('/docs/swagger-initializer.js', hide, (_request, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(INITIALIZER),
  );
  app.get<{ Params: { file: string } }>('/docs/:file', hide, (request, reply) => {
    const type = ASSETS.get(request.params.file);
    if (type === undefined) throw new DeployError('NOT_FOUND', `No documentation file ${request.params.file}`);
    return reply
      .type(type)
      .header('cache-control', 'public, max-age=3600')
      .header('x-content-type-options', 'nosniff')
      .send(createReadStream(join(DIST, request.params.file)));
  });
};
