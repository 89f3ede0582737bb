// The Zepid Deploy dashboard. Plain JavaScript, no framework and no build: every call goes through the
// public API with the token in an Authorization header; everything shown is set with textContent.
/* global document, window, sessionStorage, fetch, TextDecoder, AbortController, URLSearchParams, history, location, setTimeout, clearTimeout */

const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'superseded']);
const STEPS = ['validate', 'sync', 'sandbox', 'build', 'deploy', 'cleanup'];
const $ = (selector) => document.querySelector(selector);

const state = {
  token: null,
  deployments: new Map(),
  apps: null,
  /** The service has no GET /apps (asked once per page load). */
  appsMissing: false,
  selected: null,
  /** The app open in the app panel. */
  app: null,
  /** Aborts the org stream and the open deployment's stream (sign-out, resync). */
  streams: new AbortController(),
  detail: null,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  if (!response.ok) {
    if (response.status === 401) signOut('The token was refused: sign in again.');
    throw new ApiError(response.status, json?.error ?? `HTTP_${response.status}`, json?.message ?? `${method} ${path} answered ${response.status}`);
  }
  return json;
}

const routeMissing = (error) => error instanceof ApiError && error.status === 404 && /^No route /.test(error.message);

/**
 * Reads a text/event-stream with fetch (EventSource cannot send an Authorization header). Calls
 * onMessage({event, id, data}) per message; resolves when the server ends the stream.
 */
async function readEvents(path, lastId, onMessage, signal, onOpen = () => {}) {
  const headers = { authorization: `Bearer ${state.token}`, accept: 'text/event-stream' };
  if (lastId !== null) headers['last-event-id'] = lastId;
  const response = await fetch(path, { headers, signal });
  if (!response.ok || response.body === null) throw new ApiError(response.status, `HTTP_${response.status}`, `${path} answered ${response.status}`);
  onOpen();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let message = { event: 'message', id: null, data: '' };
  let hasData = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let index;
    while ((index = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, index);
      buffer = buffer.slice(index + (buffer.startsWith('\r\n', index) ? 2 : 1));
      if (line === '') {
        if (hasData) onMessage(message);
        message = { event: 'message', id: null, data: '' };
        hasData = false;
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') message.event = value;
        else if (field === 'id') message.id = value;
        else if (field === 'data') {
          message.data = hasData ? `${message.data}\n${value}` : value;
          hasData = true;
        }
      }
    }
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function statusCell(status) {
  return el('td', status.replace('_', ' '), `status status-${status}`);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '–';
}

function duration(deployment) {
  if (!deployment.createdAt) return '–';
  const end = deployment.finishedAt ? Date.parse(deployment.finishedAt) : Date.now();
  const seconds = Math.max(0, Math.round((end - Date.parse(deployment.createdAt)) / 1000));
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** build, rollback or config; a build made by POST /deploy/:id/redeploy says so. */
function kindText(deployment) {
  const kind = deployment.kind ?? 'build';
  return deployment.redeployOf ? `${kind} (redeploy)` : kind;
}

/** Who started it: the token's name, else its id (never the token); older services record nobody. */
function creatorText(deployment) {
  return deployment.createdBy?.tokenName ?? deployment.createdBy?.tokenId ?? '–';
}

function setConnection(text) {
  $('#connection').textContent = text;
}

// ---- views --------------------------------------------------------------------------------------

function renderDeployments() {
  const rows = [...state.deployments.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  const body = $('#deployments tbody');
  body.replaceChildren(
    ...rows.map((deployment) => {
      const row = el('tr');
      row.dataset.id = deployment.deploymentId;
      if (deployment.deploymentId === state.selected) row.className = 'selected';
      const open = el('button', deployment.deploymentId);
      open.type = 'button';
      open.setAttribute('aria-label', `Open ${deployment.deploymentId} (${deployment.projectId}, ${deployment.status})`);
      open.addEventListener('click', () => void openDetail(deployment.deploymentId));
      const idCell = el('td');
      idCell.append(open);
      const creator = el('td', creatorText(deployment), 'creator');
      if (deployment.createdBy?.tokenId) creator.title = `token ${deployment.createdBy.tokenId}`;
      row.append(idCell, el('td', deployment.projectId), el('td', deployment.environment), statusCell(deployment.status), el('td', kindText(deployment), 'kind'), creator,
        el('td', deployment.source?.digest ? deployment.source.digest.replace('sha256:', '').slice(0, 12) : '–'), el('td', duration(deployment)), el('td', when(deployment.createdAt)));
      return row;
    }),
  );
  if (state.apps === null) renderApps(appsFromDeployments());
}

/** Without GET /apps (older services): an app per project and environment, from the recent deployments. */
function appsFromDeployments() {
  const apps = new Map();
  const newestFirst = [...state.deployments.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  for (const deployment of newestFirst) {
    const key = `${deployment.projectId}\u0000${deployment.environment}`;
    let app = apps.get(key);
    if (app === undefined) {
      app = { appName: deployment.projectId, projectId: deployment.projectId, environment: deployment.environment, url: null, status: null, liveDeploymentId: null, updatedAt: deployment.createdAt };
      apps.set(key, app);
      app.status = TERMINAL.has(deployment.status) ? (deployment.status === 'completed' ? 'live' : 'failed') : 'deploying';
    }
    if (app.liveDeploymentId === null && deployment.status === 'completed') {
      app.liveDeploymentId = deployment.deploymentId;
      app.url = deployment.url;
      if (app.status === 'failed') app.status = 'live';
    }
  }
  return [...apps.values()];
}

function renderApps(apps) {
  $('#apps tbody').replaceChildren(
    ...apps.map((app) => {
      const row = el('tr');
      const link = el('td');
      if (app.url) {
        const anchor = el('a', app.url);
        anchor.href = app.url;
        anchor.rel = 'noopener noreferrer';
        anchor.target = '_blank';
        link.append(anchor);
      } else link.textContent = '–';
      const name = el('td');
      if (state.appsMissing) name.textContent = app.appName;
      else {
        const open = el('button', app.appName);
        open.type = 'button';
        open.setAttribute('aria-label', `Open app ${app.appName}`);
        open.addEventListener('click', () => void openApp(app));
        name.append(open);
      }
      row.append(name, el('td', app.environment), statusCell(app.status), link, el('td', app.liveDeploymentId ?? '–'), el('td', when(app.updatedAt)));
      return row;
    }),
  );
}

function renderDetail(status) {
  state.detail = status;
  $('#detail').hidden = false;
  const kind = status.kind === 'rollback' ? ` · rollback to ${status.rollbackOf}` : status.kind === 'config' ? ' · env restart' : status.redeployOf ? ` · redeploy of ${status.redeployOf}` : '';
  $('#detail-title').textContent = `${status.deploymentId} · ${status.projectId} (${status.environment})${kind}`;
  const summary = $('#detail-summary');
  summary.replaceChildren(el('span', status.status.replace('_', ' '), `status status-${status.status}`));
  if (status.currentStep) summary.append(` · ${status.currentStep} · ${status.progress}%`);
  if (status.url) {
    const anchor = el('a', status.url);
    anchor.href = status.url;
    anchor.rel = 'noopener noreferrer';
    anchor.target = '_blank';
    summary.append(' · ', anchor);
  }
  if (status.error) summary.append(el('span', ` · ${status.errorCode ?? ''} ${status.error}`, 'error'));
  summary.append(` · ${kindText(status)} · started by ${creatorText(status)}`);
  $('#steps').replaceChildren(...STEPS.map((step) => el('li', `${step}: ${status.steps?.[step]?.status ?? '–'}`, `status status-${status.steps?.[step]?.status ?? 'pending'}`)));
  const finished = TERMINAL.has(status.status);
  $('[data-action="cancel"]').disabled = finished;
  $('[data-action="retry"]').disabled = !(status.status === 'failed' || status.status === 'cancelled');
  // canRollback: completed, and image retention still keeps its image (older services: completed only).
  $('[data-action="rollback"]').disabled = typeof status.canRollback === 'boolean' ? !status.canRollback : status.status !== 'completed';
  // Redeploy builds this deployment's stored source again (the service answers 409 when it is gone).
  $('[data-action="redeploy"]').disabled = !finished;
}

function appendLog(line) {
  const log = $('#log');
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(`${line.timestamp ?? ''} [${line.step ?? '-'}] ${line.level === 'error' ? 'error: ' : ''}${line.message}\n`);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// ---- live data ----------------------------------------------------------------------------------

async function loadAll() {
  const [recent, apps] = await Promise.all([
    api('GET', '/status/deployments?limit=100'),
    state.appsMissing
      ? null
      : api('GET', '/apps?limit=100').catch((error) => {
        if (!routeMissing(error)) throw error;
        state.appsMissing = true;
        return null;
      }),
  ]);
  state.deployments = new Map(recent.deployments.map((deployment) => [deployment.deploymentId, deployment]));
  state.apps = apps === null ? null : apps.apps;
  $('#apps-note').textContent = apps === null ? 'This service has no apps endpoint yet: apps are shown from the recent deployments.' : '';
  if (state.apps !== null) renderApps(state.apps);
  renderDeployments();
}

/** The org's changes: its event stream when the service has one, else a poll every 2 s. */
async function followOrg(signal) {
  let useStream = true;
  while (!signal.aborted) {
    if (useStream) {
      try {
        await readEvents('/events', null, (message) => {
          const data = JSON.parse(message.data);
          if (message.event === 'deployment' && data.deploymentId) {
            state.deployments.set(data.deploymentId, { ...state.deployments.get(data.deploymentId), ...data });
            renderDeployments();
          } else if ((message.event === 'app' || message.event === 'app_removed') && state.apps !== null) {
            // app_removed: the delete job removed the app; its deployments left with it.
            state.apps = [...state.apps.filter((app) => app.appName !== data.appName), ...(message.event === 'app_removed' ? [] : [data])]
              .sort((a, b) => (a.appName < b.appName ? -1 : 1));
            if (message.event === 'app_removed') {
              for (const [id, deployment] of state.deployments) if (deployment.projectId === data.projectId && deployment.environment === data.environment) state.deployments.delete(id);
              renderDeployments();
            }
            renderApps(state.apps);
          }
        }, signal, () => setConnection('Live'));
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && (error.status === 404 || error.status === 405)) useStream = false;
        else setConnection('Reconnecting…');
      }
      if (signal.aborted) return;
      await sleep(1000, signal);
      // A stream that dropped may have missed changes: load everything again before following.
      await loadAll().catch(() => setConnection('Reconnecting…'));
      continue;
    }
    await sleep(2000, signal);
    if (signal.aborted) return;
    try {
      await loadAll();
      setConnection(`Updated ${new Date().toLocaleTimeString()}`);
    } catch {
      setConnection('Reconnecting…');
    }
  }
}

/** One deployment: its event stream (log so far, then each line once, then end), else polling. */
async function followDeployment(id, signal) {
  let lastId = null;
  let lines = 0;
  for (let failures = 0; !signal.aborted && failures < 5; failures++) {
    try {
      let ended = false;
      await readEvents(`/deploy/${id}/events`, lastId, (message) => {
        if (message.id !== null) lastId = message.id;
        if (message.event === 'log') {
          lines++;
          appendLog(JSON.parse(message.data));
        } else if (message.event === 'status') {
          renderDetail(JSON.parse(message.data));
        } else if (message.event === 'end') {
          // `end` is {deploymentId, status, reason}: the terminal view came as the last `status` event.
          ended = true;
        }
      }, signal);
      if (ended) return;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && (error.status === 404 || error.status === 405)) break;
      await sleep(1000, signal);
    }
  }
  while (!signal.aborted) {
    const [status, log] = await Promise.all([api('GET', `/deploy/${id}/status`), api('GET', `/deploy/${id}/logs`)]);
    if (signal.aborted) return;
    renderDetail(status);
    for (const line of log.logs.slice(lines)) appendLog(line);
    lines = Math.max(lines, log.logs.length);
    if (TERMINAL.has(status.status)) return;
    await sleep(1000, signal);
  }
}

let detailStream = new AbortController();

async function openDetail(id) {
  detailStream.abort();
  detailStream = new AbortController();
  state.selected = id;
  $('#log').textContent = '';
  $('#action-result').textContent = '';
  renderDeployments();
  try {
    renderDetail(await api('GET', `/deploy/${id}/status`));
    $('#detail-title').focus?.();
    await followDeployment(id, detailStream.signal);
  } catch (error) {
    $('#action-result').textContent = `${error.code ?? 'ERROR'}: ${error.message}`;
  }
}

async function act(action) {
  const id = state.selected;
  if (id === null) return;
  const result = $('#action-result');
  result.textContent = `${action}…`;
  // No second click while the first is on its way (a double click would start two rollbacks or redeploys).
  for (const button of document.querySelectorAll('[data-action]')) button.disabled = true;
  try {
    const answer = await api('POST', `/deploy/${id}/${action}`);
    result.textContent = answer?.message ?? `${action} accepted`;
    if (answer?.deploymentId && answer.deploymentId !== id) void openDetail(answer.deploymentId);
    else void openDetail(id);
  } catch (error) {
    result.textContent = routeMissing(error) ? `This service cannot ${action} yet (${error.message}).` : `${error.code}: ${error.message}`;
    if (state.detail !== null && state.selected === id) renderDetail(state.detail);
  }
}

// ---- an app: env variables and deletion (issue 12's endpoints) -----------------------------------

const envPath = (app) => `/projects/${encodeURIComponent(app.projectId)}/env`;

async function loadEnv(app) {
  const answer = await api('GET', `${envPath(app)}?environment=${encodeURIComponent(app.environment)}`);
  $('#env tbody').replaceChildren(
    ...answer.variables.map((variable) => {
      const remove = el('button', 'Remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Remove ${variable.name}`);
      remove.addEventListener('click', () => void changeEnv(app, { [variable.name]: null }));
      const actions = el('td');
      actions.append(remove);
      const row = el('tr');
      row.append(el('td', variable.name), el('td', variable.scope), el('td', when(variable.updatedAt)), actions);
      return row;
    }),
  );
}

async function changeEnv(app, set) {
  const result = $('#app-result');
  result.textContent = 'saving…';
  try {
    const answer = await api('PATCH', envPath(app), { environment: app.environment, set });
    result.textContent = answer?.message ?? 'saved';
    await loadEnv(app);
    if (answer?.deploymentId) void openDetail(answer.deploymentId);
  } catch (error) {
    result.textContent = `${error.code}: ${error.message}`;
  }
}

async function openApp(app) {
  state.app = app;
  $('#app-detail').hidden = false;
  $('#app-title').textContent = `${app.appName} · ${app.projectId} (${app.environment})`;
  $('#app-result').textContent = '';
  $('#delete-confirm').value = '';
  try {
    await loadEnv(app);
  } catch (error) {
    $('#app-result').textContent = `${error.code}: ${error.message}`;
  }
  $('#app-title').focus?.();
}

async function deleteApp(app) {
  const result = $('#app-result');
  if ($('#delete-confirm').value.trim() !== app.projectId) {
    result.textContent = `Type ${app.projectId} to confirm.`;
    return;
  }
  result.textContent = 'deleting…';
  try {
    await api('DELETE', `/projects/${encodeURIComponent(app.projectId)}?environment=${encodeURIComponent(app.environment)}`);
    result.textContent = `${app.appName} is being deleted: it leaves the list once everything it owned is removed.`;
    $('#delete-confirm').value = '';
  } catch (error) {
    result.textContent = `${error.code}: ${error.message}`;
  }
}

// ---- session ------------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem('zepid-token');
  state.token = null;
  state.streams.abort();
  detailStream.abort();
  $('#sign-in').hidden = false;
  for (const id of ['#apps-section', '#deployments-section', '#detail', '#app-detail', '#sign-out']) $(id).hidden = true;
  $('#sign-in-error').textContent = message ?? '';
  setConnection('');
  $('#organization').textContent = '';
  $('#token').focus();
}

async function start() {
  const { organizationId } = await api('GET', '/status');
  $('#sign-in').hidden = true;
  for (const id of ['#apps-section', '#deployments-section', '#sign-out']) $(id).hidden = false;
  $('#organization').textContent = `Organization ${organizationId}`;
  await loadAll();
  state.streams = new AbortController();
  void followOrg(state.streams.signal);
}

async function signIn(token) {
  state.token = token;
  try {
    await start();
    sessionStorage.setItem('zepid-token', token);
  } catch (error) {
    if (error.status !== 401) signOut(`${error.code}: ${error.message}`);
  }
}

/** After sleep or a lost connection the streams may have missed events: load everything again. */
function resync() {
  if (state.token === null) return;
  state.streams.abort();
  void start().catch(() => setConnection('Reconnecting…'));
  if (state.selected !== null) void openDetail(state.selected);
}

window.addEventListener('DOMContentLoaded', () => {
  $('#sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    void signIn($('#token').value.trim());
  });
  $('#sign-out').addEventListener('click', () => signOut());
  $('#close-detail').addEventListener('click', () => {
    detailStream.abort();
    state.selected = null;
    $('#detail').hidden = true;
    renderDeployments();
  });
  $('#env-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (state.app === null) return;
    const name = $('#env-name').value.trim();
    const value = $('#env-value').value;
    $('#env-value').value = '';
    void changeEnv(state.app, { [name]: value });
  });
  $('#delete-app-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (state.app !== null) void deleteApp(state.app);
  });
  $('#close-app').addEventListener('click', () => {
    state.app = null;
    $('#app-detail').hidden = true;
  });
  for (const button of document.querySelectorAll('[data-action]')) button.addEventListener('click', () => void act(button.dataset.action));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') resync();
  });
  window.addEventListener('online', resync);

  // #token=… lets a script open the page signed in; a fragment never reaches the server or its logs.
  const fragment = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fragment) history.replaceState(null, '', location.pathname);
  const token = fragment ?? sessionStorage.getItem('zepid-token');
  if (token) void signIn(token);
  else signOut();
});
