import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { DASHBOARD_CSP, loadDashboard } from '@zepid/dashboard';

/**
 * GET /dashboard: the web page (public files; it signs in with a token and then calls the API like any
 * client). Served with a Content-Security-Policy that allows its own files and same-origin calls only.
 */
export const dashboardRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const files = new Map(loadDashboard().map((file) => [file.name, file]));
  const send = (name: string) => {
    const file = files.get(name);
    if (file === undefined) throw new Error(`dashboard file ${name} missing`);
    return file;
  };
  const headers = { 'content-security-policy': DASHBOARD_CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'cache-control': 'no-cache' };
  app.get('/dashboard', { schema: { hide: true } }, (_request, reply) => {
    const file = send('index.html');
    return reply.headers({ ...headers, 'content-type': file.contentType }).send(file.body);
  });
  for (const name of ['app.js', 'style.css']) {
    app.get(`/dashboard/${name}`, { schema: { hide: true } }, (_request, reply) => {
      const file = send(name);
      return reply.headers({ ...headers, 'content-type': file.contentType }).send(file.body);
    });
  }
};
