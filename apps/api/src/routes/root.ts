import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { SERVICE_NAME, SERVICE_VERSION } from '@zepid/core';
import type { AppContext } from '../context.ts';

/** GET / (service info with every endpoint) and GET /openapi.json. Public. */
export const rootRoutes: FastifyPluginAsyncTypebox<{ context: AppContext; endpoints: () => string[] }> = async (app, { context, endpoints }) => {
  app.get(
    '/',
    {
      schema: {
        tags: ['service'],
        summary: 'Service information and the list of endpoints',
        response: {
          200: Type.Object({
            message: Type.String(),
            service: Type.String(),
            version: Type.String(),
            status: Type.String(),
            mode: Type.String(),
            timestamp: Type.String(),
            architecture: Type.String(),
            description: Type.String(),
            documentation: Type.String(),
            endpoints: Type.Array(Type.String()),
          }),
        },
      },
    },
    () => ({
      message: `${SERVICE_NAME} is running`,
      service: SERVICE_NAME,
      version: SERVICE_VERSION,
      status: 'running',
      mode: context.mode,
      timestamp: new Date().toISOString(),
      architecture:
        context.mode === 'azure'
          ? 'Fastify API → Cosmos DB + Service Bus → worker → ACI/kaniko → ACR → Azure Container Apps'
          : 'Fastify API → SQLite store and queue → worker → local build → local process behind a router',
      description: 'Deploys a project\'s files as a container app in six steps: validate, sync, sandbox, build, deploy, cleanup.',
      documentation: '/docs',
      endpoints: endpoints(),
    }),
  );

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
};
