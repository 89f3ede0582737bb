/* global process */
// `node --import=./scripts/exit-with-parent.mjs <entry>`, as `npm start` (scripts/start.ts) runs the
// API and the worker: a service started with an IPC channel stops itself when that channel closes,
// which the kernel does when the process holding its other end dies, however it died (even
// SIGKILL: Linux's PDEATHSIG is not available from Node, and a parent killed with -9 runs no code).
// The stop is the service's own SIGTERM handler (the worker stops its apps and builds first); its
// stdout and stderr lost their reader with the parent, so write errors there are ignored from then on.
if (typeof process.send === 'function' && process.channel !== undefined) {
  // The channel alone must not keep a service alive once it has stopped.
  process.channel.unref();
  process.once('disconnect', () => {
    for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
    process.kill(process.pid, 'SIGTERM');
  });
}
