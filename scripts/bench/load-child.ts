/**
 * The load generator of `ab-inprocess.ts --http`, in a process of its own so that the measuring
 * process's CPU time is the servers' alone: on each message `{ url, method, headers, body, amount,
 * connections }` it sends `amount` requests with autocannon and answers `{ requests, non2xx }`.
 */
import autocannon from 'autocannon';

interface Order { url: string; method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; amount: number; connections: number }

process.on('message', (order: Order | 'stop') => {
  if (order === 'stop') {
    process.disconnect();
    return;
  }
  void autocannon({ url: order.url, method: order.method, headers: order.headers, body: order.body, amount: order.amount, connections: order.connections }).then(
    (result) => process.send?.({ requests: result.requests.total, non2xx: result.non2xx }),
    (error: unknown) => process.send?.({ error: String(error) }),
  );
});
