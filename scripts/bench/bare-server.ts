/**
 * The bench's yardstick: a bare Fastify server (no logger, no hooks, no plugins) answering with a
 * JSON body of a given size. `POST /bare` parses the body as Fastify does for any JSON route;
 * `GET /bare` reads nothing. Started as a child process by bench.ts, on the same Node.
 */
import Fastify from 'fastify';

const port = Number(process.env.PORT);
const postBytes = Number(process.env.POST_RESPONSE_BYTES ?? 320);
const getBytes = Number(process.env.GET_RESPONSE_BYTES ?? 1000);
/** `{"data":"xxx…"}` is 11 bytes plus the padding. */
const body = (bytes: number) => ({ data: 'x'.repeat(Math.max(0, bytes - 11)) });
const postBody = body(postBytes);
const getBody = body(getBytes);

const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024 });
app.post('/bare', async (_request, reply) => reply.code(202).send(postBody));
app.get('/bare', async () => getBody);
await app.listen({ port, host: '127.0.0.1' });
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
