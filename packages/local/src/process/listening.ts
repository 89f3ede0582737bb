import { readdir, readFile, readlink } from 'node:fs/promises';
import { listenFix } from '@zepid/core';

/**
 * Which TCP ports a process group listens on, read from /proc (Linux): the socket inodes its
 * processes hold open (`/proc/<pid>/fd/* -> socket:[inode]`, proc(5)) matched against the
 * listening sockets of `/proc/net/tcp` and `/proc/net/tcp6` (state 0A, TCP_LISTEN; the format is
 * the kernel's Documentation/networking/proc_net_tcp.rst). Used while a new revision starts, to tell
 * an app that listens on a port of its own (Koa's and Hono's templates: 3000) from one still starting.
 */

export interface ListeningSocket {
  /** `127.0.0.1`, `0.0.0.0`, `::`, `::1` or another address, as the kernel reports it. */
  address: string;
  port: number;
}

const LISTEN = '0A';

function ipv4(hex: string): string {
  // /proc/net/tcp prints the address as the kernel's 32-bit word in host byte order (little-endian here).
  const bytes = [0, 2, 4, 6].map((at) => Number.parseInt(hex.slice(at, at + 2), 16)).reverse();
  return bytes.join('.');
}

function ipv6(hex: string): string {
  if (/^0{32}$/.test(hex)) return '::';
  if (hex === '00000000000000000000000001000000') return '::1';
  // Four 32-bit words, each in host byte order.
  const words = [0, 8, 16, 24].map((at) => hex.slice(at, at + 8).match(/../g)?.reverse().join('') ?? '');
  const groups = words.flatMap((word) => [word.slice(0, 4), word.slice(4)]).map((group) => group.replace(/^0+(?=.)/, ''));
  return groups.join(':');
}

/** The listening sockets of a /proc/net/tcp(6) text, by socket inode. */
export function parseListening(text: string, family: 4 | 6): Map<string, ListeningSocket> {
  const sockets = new Map<string, ListeningSocket>();
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const local = fields[1];
    const state = fields[3];
    const inode = fields[9];
    if (local === undefined || state !== LISTEN || inode === undefined) continue;
    const [addressHex = '', portHex = ''] = local.split(':');
    sockets.set(inode, { address: family === 4 ? ipv4(addressHex) : ipv6(addressHex), port: Number.parseInt(portHex, 16) });
  }
  return sockets;
}

/** The pids whose process group is `pgid` (the fifth field of /proc/<pid>/stat, after the command in parentheses). */
async function groupMembers(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid) members.push(Number(entry));
  }
  return members;
}

/** The TCP ports the processes of group `pgid` listen on (empty where /proc cannot tell). */
export async function listeningSockets(pgid: number): Promise<ListeningSocket[]> {
  const inodes = new Set<string>();
  for (const pid of await groupMembers(pgid)) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode !== undefined) inodes.add(inode);
    }
  }
  if (inodes.size === 0) return [];
  const found: ListeningSocket[] = [];
  for (const [file, family] of [
    ['/proc/net/tcp', 4],
    ['/proc/net/tcp6', 6],
  ] as const) {
    const table = parseListening(await readFile(file, 'utf8').catch(() => ''), family);
    for (const [inode, socket] of table) if (inodes.has(inode)) found.push(socket);
  }
  return found;
}

/**
 * The message of an app that listens on other ports than the PORT it was given (or tried to: an
 * EADDRINUSE for another port), saying what to change.
 */
export function wrongPortMessage(framework: string, port: number, elsewhere: readonly number[]): string {
  const ports = [...new Set(elsewhere)].sort((a, b) => a - b);
  const fix = listenFix(framework);
  return (
    `The app listens on port ${ports.join(', ')}, not on the port it is given in PORT (${port} for this revision): every app here gets its port in PORT. ` +
    `Make it listen on process.env.PORT (and on process.env.HOST, 127.0.0.1, so that only the router reaches it)${fix === undefined ? '' : `, e.g. ${fix}`}.`
  );
}

/**
 * The log line for an app that listens on PORT on every interface (`0.0.0.0` or `::`) rather than
 * on HOST (127.0.0.1): other machines, and other tenants, then reach it around the router. Null when
 * it listens on loopback only.
 */
export function allInterfacesWarning(framework: string, port: number, sockets: readonly ListeningSocket[]): string | null {
  const wide = sockets.find((socket) => socket.port === port && (socket.address === '0.0.0.0' || socket.address === '::'));
  if (wide === undefined) return null;
  const fix = listenFix(framework);
  return (
    `warning: the app listens on ${wide.address === '::' ? '[::]' : wide.address}:${port}, every interface, so it is reachable around the router; ` +
    `listen on process.env.HOST (127.0.0.1)${fix === undefined ? '' : `, e.g. ${fix}`}`
  );
}

/** The port an app's output says was in use when it tried to listen (`listen EADDRINUSE: address already in use :::3000`), if not `port`. */
export function addressInUse(output: readonly string[], port: number): number | null {
  for (const line of output) {
    const match = /EADDRINUSE\b.*?:(\d+)\b/.exec(line);
    if (match !== null && Number(match[1]) !== port) return Number(match[1]);
  }
  return null;
}
