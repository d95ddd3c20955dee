// NanoTypeDB browser client: an ES module with no dependencies and no build step.
//
//   import { createClient } from "/client.js";
//   const db = createClient({ token });
//   const stop = db.runReactiveQuery("listTasks", {}, (tasks) => render(tasks), (err) => show(err));
//   await db.performMutation("createTask", { title: "Buy milk" });
//
// The wire protocol is docs/protocol.md; the optimistic algorithm, which this file implements
// exactly as the Python client does, is docs/live-queries.md. The how-to is docs/browser-client.md.

export const PROTOCOL_VERSION = 1;

const RECONNECT_BASE_MS = 250;
const RECONNECT_MAX_MS = 10000;
const HEARTBEAT_MS = 20000;
const TEMP_ID = /^optimistic:(\d+)$/;

// ---------------------------------------------------------------------------------------------
// Errors

/** Every failure the client reports: the server's error envelope, or a client-side one
 *  (`ConnectionLost`, `ClientClosed`). Match on `code`, never on `message`. */
export class NanoTypeDBError extends Error {
  constructor(code, message, details = undefined, requestId = undefined) {
    super(message);
    this.name = "NanoTypeDBError";
    this.code = code;
    this.details = details;
    this.requestId = requestId;
  }

  /** The error of a server's `{"code", "message", "details", "request_id"}` object. */
  static fromEnvelope(body) {
    const e = body && typeof body === "object" ? body : {};
    return new NanoTypeDBError(
      typeof e.code === "string" ? e.code : "InternalError",
      typeof e.message === "string" ? e.message : "The server sent an error without a message.",
      e.details,
      e.request_id,
    );
  }
}

function connectionLost(message = "The connection dropped before the server answered.") {
  return new NanoTypeDBError("ConnectionLost", message);
}

// ---------------------------------------------------------------------------------------------
// Optimistic updates: pure functions over JSON values (docs/live-queries.md#optimistic-mutations).
// None of them changes its inputs: each returns new objects where something changed.

/** The hint of `GET /api/functions` in one shape: `null`, or an object with a `kind`.
 *  The short form `"insert:tasks"` (a server that publishes no columns) is accepted too:
 *  without `columns`, every argument is a column. */
export function normalizeSpec(optimistic) {
  if (optimistic == null) return null;
  if (typeof optimistic === "string") {
    const at = optimistic.indexOf(":");
    const kind = at < 0 ? optimistic : optimistic.slice(0, at);
    const target = at < 0 ? "" : optimistic.slice(at + 1);
    if (kind === "custom") return { kind, name: target };
    if (kind === "insert" || kind === "update" || kind === "delete") return { kind, table: target, id: "id" };
    return null;
  }
  if (typeof optimistic !== "object" || typeof optimistic.kind !== "string") return null;
  return optimistic;
}

/** Whether `v` is a temporary id, `"optimistic:<n>"`. */
export function isTempId(v) {
  return typeof v === "string" && TEMP_ID.test(v);
}

function rank(v) {
  if (v === null || v === undefined) return 0;
  if (typeof v === "number" || typeof v === "boolean") return 1;
  if (typeof v === "string") return 2;
  return 3;
}

// Strings compare by code point (as SQLite and Python do), not by UTF-16 unit.
function compareStrings(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      // Surrogates (U+D800–DFFF) encode code points above U+FFFF: move them above U+E000–FFFF.
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x < y ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** Order of two column values: null first, then numbers (as numbers), then strings (as strings);
 *  a temporary id is greater than every real id, and temporary ids follow their number. */
export function compareValues(a, b) {
  const ta = isTempId(a);
  const tb = isTempId(b);
  if (ta && tb) return Math.sign(Number(a.slice(11)) - Number(b.slice(11)));
  if (ta && rank(b) === 1) return 1;
  if (tb && rank(a) === 1) return -1;
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  if (ra === 0) return 0;
  if (ra === 1) return Math.sign(Number(a) - Number(b));
  if (ra === 2) return compareStrings(a, b);
  return compareStrings(JSON.stringify(a), JSON.stringify(b));
}

/** Order of two rows by `order`, `[[column, "asc" | "desc"], …]`. */
export function compareRows(a, b, order) {
  for (const [column, direction] of order || []) {
    const c = compareValues(a[column], b[column]);
    if (c !== 0) return direction === "desc" ? -c : c;
  }
  return 0;
}

/** JSON equality of two values. */
export function sameValue(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameValue(a[k], b[k]));
}

/** Whether `row` matches every `filters` entry; a column the row lacks counts as a match. */
export function matchesFilters(row, filters) {
  for (const [column, value] of Object.entries(filters || {})) {
    if (Object.prototype.hasOwnProperty.call(row, column) && !sameValue(row[column], value)) return false;
  }
  return true;
}

/** The row an insert shows before the server answers: `defaults`, then the arguments named in
 *  `columns`, then `owner` set to the user's id (when both are known), then `id` = `tempId`.
 *  Columns with a computed default (a timestamp) are absent. */
export function optimisticRow(spec, args, userId, tempId) {
  const row = { ...(spec.defaults || {}) };
  for (const [name, value] of Object.entries(args || {})) {
    if (value !== undefined && (!spec.columns || spec.columns.includes(name))) row[name] = value;
  }
  if (spec.owner != null && userId != null) row[spec.owner] = userId;
  row.id = tempId;
  return row;
}

/** The patch of an update: `set`, then the arguments other than the id that are in `columns`
 *  and not null. */
export function updatePatch(spec, args) {
  const idArg = spec.id || "id";
  const patch = { ...(spec.set || {}) };
  for (const [name, value] of Object.entries(args || {})) {
    if (name === idArg || value === null || value === undefined) continue;
    if (!spec.columns || spec.columns.includes(name)) patch[name] = value;
  }
  return patch;
}

function isRow(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function insertRow(list, row, read) {
  if (!matchesFilters(row, read.filters)) return list;
  let at = list.length;
  for (let i = 0; i < list.length; i++) {
    if (isRow(list[i]) && compareRows(row, list[i], read.order) < 0) {
      at = i;
      break;
    }
  }
  const out = [...list.slice(0, at), row, ...list.slice(at)];
  return typeof read.limit === "number" && out.length > read.limit ? out.slice(0, read.limit) : out;
}

function mapRows(data, fn) {
  // fn(list) → a new list; applied to the data itself (a list) or its `items`.
  if (Array.isArray(data)) return fn(data);
  if (isRow(data) && Array.isArray(data.items)) {
    const items = fn(data.items);
    return items === data.items ? data : { ...data, items };
  }
  return data;
}

/**
 * One pending mutation's effect on one subscription's data (docs/live-queries.md, steps 1–4).
 *
 * - `spec`: the mutation's normalized hint (insert, update or delete; custom is not handled here);
 * - `args`: the mutation's arguments;
 * - `sub`: `{data, reads, args}`: the subscription's current data, its `reads` and its arguments;
 * - `row`: for an insert, the row to show: `optimisticRow(...)`, or the row the server returned.
 *
 * Returns the new data (the same object when the mutation has no effect).
 */
export function applyEffect(spec, args, sub, row = undefined) {
  if (!spec || !spec.table) return sub.data;
  const read = (sub.reads || []).find((r) => r.table === spec.table);
  if (!read) return sub.data;
  const data = sub.data;
  if (spec.kind === "insert") {
    if (!row) return data;
    if (read.kind === "count") return typeof data === "number" && matchesFilters(row, read.filters) ? data + 1 : data;
    if (read.kind !== "rows") return data;
    if (Array.isArray(data)) return insertRow(data, row, read);
    const cursor = sub.args ? sub.args.cursor : undefined;
    if (isRow(data) && Array.isArray(data.items) && cursor == null) {
      return { ...data, items: insertRow(data.items, row, read) };
    }
    return data;
  }
  const id = (args || {})[spec.id || "id"];
  if (spec.kind === "update") {
    const patch = updatePatch(spec, args);
    const inRows = read.kind === "rows";
    const patchList = (list) => {
      let changed = false;
      const out = [];
      for (const item of list) {
        if (isRow(item) && sameValue(item.id, id)) {
          changed = true;
          const patched = { ...item, ...patch };
          if (!inRows || matchesFilters(patched, read.filters)) out.push(patched);
        } else {
          out.push(item);
        }
      }
      return changed ? out : list;
    };
    if (isRow(data) && sameValue(data.id, id)) return { ...data, ...patch };
    return mapRows(data, patchList);
  }
  if (spec.kind === "delete") {
    if (isRow(data) && sameValue(data.id, id)) return null;
    return mapRows(data, (list) => {
      const out = list.filter((item) => !(isRow(item) && sameValue(item.id, id)));
      return out.length === list.length ? list : out;
    });
  }
  return data;
}

/** A deep copy of a JSON value (what a custom optimistic function gets and gives). */
function copy(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

/** Arguments as a stable string: keys sorted at every level (subscriptions that share it are one). */
export function argsKey(name, args) {
  const canon = (v) => {
    if (Array.isArray(v)) return v.map(canon);
    if (isRow(v)) {
      const out = {};
      for (const k of Object.keys(v).sort()) if (v[k] !== undefined) out[k] = canon(v[k]);
      return out;
    }
    return v;
  };
  return `${name}\u0000${JSON.stringify(canon(args || {}))}`;
}

/**
 * What the application sees: every subscription's server data with the pending mutations applied
 * on top, oldest first.
 *
 * - `subs`: `[{name, args, data, reads, version?}]` (a subscription without data is skipped);
 * - `mutations`: `[{spec, args, row?, version?, name?}]`: `row` is the row an insert shows; a
 *   mutation with a `version` (answered) does not apply to a subscription whose `version` is
 *   already at or past it;
 * - `custom(name)`: the function registered for a custom hint (or undefined).
 *
 * Returns one data value per subscription, in order.
 */
export function layer(subs, mutations, custom = () => undefined) {
  const views = subs.map((s) => s.data);
  const applies = (m, i) => subs[i].hasData !== false && !(m.version != null && (subs[i].version ?? -1) >= m.version);
  for (const m of mutations) {
    const spec = m.spec;
    if (!spec) continue;
    if (spec.kind === "custom") {
      const fn = custom(spec.name) || (m.name ? custom(m.name) : undefined);
      if (!fn) continue;
      const matching = (name, args) => {
        const key = argsKey(name, args);
        return subs.map((s, i) => (applies(m, i) && argsKey(s.name, s.args) === key ? i : -1)).filter((i) => i >= 0);
      };
      const store = {
        getQuery(name, args = {}) {
          const found = matching(name, args);
          return found.length ? copy(views[found[0]]) : undefined;
        },
        setQuery(name, args, data) {
          for (const i of matching(name, args ?? {})) views[i] = copy(data);
        },
      };
      try {
        fn(store, copy(m.args));
      } catch (err) {
        console.error(`nanotypedb: the optimistic function for ${spec.name} threw`, err);
      }
      continue;
    }
    for (let i = 0; i < subs.length; i++) {
      if (!applies(m, i)) continue;
      views[i] = applyEffect(spec, m.args, { data: views[i], reads: subs[i].reads, args: subs[i].args }, m.row);
    }
  }
  return views;
}

// ---------------------------------------------------------------------------------------------
// The client

function endpoints(url) {
  const base = new URL(url ?? "/", globalThis.location ? globalThis.location.href : undefined);
  const ws = new URL(base.href);
  const http = new URL(base.href);
  if (base.protocol === "http:" || base.protocol === "https:") {
    ws.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  } else {
    http.protocol = base.protocol === "wss:" ? "https:" : "http:";
  }
  let path = base.pathname.replace(/\/+$/, "");
  if (path.endsWith("/ws")) path = path.slice(0, -3);
  ws.pathname = `${path}/ws`;
  http.pathname = path || "/";
  ws.search = http.search = ws.hash = http.hash = "";
  return { ws: ws.href, http: http.href.replace(/\/+$/, "") };
}

/** `createClient({url, token})`: a connected client (see `Client`). */
export function createClient(options = {}) {
  return new Client(options);
}

/**
 * One WebSocket connection to a NanoTypeDB server, kept open: it reconnects with exponential
 * backoff and jitter, signs in again and re-subscribes.
 *
 * Options:
 * - `url`: the server, `http(s)://host:port` or `ws(s)://host:port/ws` (default: this page's origin);
 * - `token`: a JWT or API key, `null` for anonymous, or a function returning one (or a Promise of
 *   one), called on every (re)connection;
 * - `functions`: the list `GET /api/functions` returns (or a `{name: optimisticHint}` object);
 *   given, the client does not fetch it (a page on another origin must pass it unless the server
 *   lists that origin in `--cors-origins`);
 * - `onAuthError(err)`: a refused token on (re)connection (default: `console.warn`);
 * - `reconnect`: `{baseMs: 250, maxMs: 10000}`; `heartbeatMs`: 20000 (0: none);
 * - `WebSocket`: the WebSocket class (default: the global one).
 */
export class Client {
  constructor(options = {}) {
    const urls = endpoints(options.url);
    this.wsUrl = urls.ws;
    this.httpUrl = urls.http;
    this.principal = { kind: "anonymous", id: null };
    this.status = "connecting";
    this._token = options.token ?? null;
    this._credential = undefined; // what a token function last gave
    this._onAuthError = options.onAuthError || ((err) => console.warn("nanotypedb: sign-in refused:", err));
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._baseMs = options.reconnect?.baseMs ?? RECONNECT_BASE_MS;
    this._maxMs = options.reconnect?.maxMs ?? RECONNECT_MAX_MS;
    this._heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    this._nextId = 1;
    this._tempIds = 0;
    this._ws = null;
    this._ready = false; // open and signed in: messages go out at once
    this._closed = false;
    this._attempt = 0;
    this._timer = null;
    this._heartbeat = null;
    this._lastHeard = 0;
    this._lastVersion = 0; // of the last transition on this connection
    this._requests = new Map(); // message id → {resolve, reject, mutation?, auth?}
    this._outbox = []; // calls made while not ready
    this._afterAuth = []; // setAuth calls made while not connected
    this._subs = new Map(); // argsKey → subscription
    this._subsByWire = new Map(); // subscribe id → subscription
    this._pending = []; // optimistic mutations, oldest first
    this._custom = new Map();
    this._statusListeners = new Set();
    this._functions = null; // name → normalized hint, once known
    this._functionsLoading = null;
    this._functionsWarned = false;
    this._functionsGiven = options.functions != null;
    if (this._functionsGiven) this._functions = specsOf(options.functions);
    this._onOnline = () => {
      if (!this._ws && !this._closed) this._reconnectNow();
    };
    globalThis.addEventListener?.("online", this._onOnline);
    this._connect();
  }

  // -- public API ------------------------------------------------------------------------------

  /** Call a function over the WebSocket: a Promise of its data; rejects with a NanoTypeDBError. */
  rpc(name, args = {}) {
    return this._call(name, args, null);
  }

  /**
   * Run a query live: `onResult(data)` gets its first result, then every new one, with pending
   * optimistic mutations applied; `onError(err)` gets a NanoTypeDBError when the query raised or
   * the subscription was refused (default: `console.error`). Returns the function that stops it.
   * Calls with the same name and arguments share one subscription.
   */
  runReactiveQuery(name, args = {}, onResult = () => {}, onError = undefined) {
    const key = argsKey(name, args);
    let sub = this._subs.get(key);
    if (!sub) {
      sub = {
        key,
        name,
        args: copy(args),
        wireId: null,
        listeners: new Set(),
        data: undefined,
        reads: [],
        hasData: false,
        current: false, // holds a result from this connection
        failed: false, // the server refused the subscription
        error: null, // the last error, until a result replaces it
        version: -1,
        view: undefined,
        viewJson: null,
      };
      this._subs.set(key, sub);
      if (this._ready) this._subscribe(sub);
    }
    const listener = {
      onResult,
      onError: onError || ((err) => console.error(`nanotypedb: query ${name} failed:`, err)),
    };
    sub.listeners.add(listener);
    if (sub.viewJson !== null || sub.error) {
      // A later listener of a live subscription gets where it stands at once.
      queueMicrotask(() => {
        if (!sub.listeners.has(listener)) return;
        if (sub.error) listener.onError(sub.error);
        else listener.onResult(sub.view);
      });
    }
    return () => {
      if (!sub.listeners.delete(listener) || sub.listeners.size) return;
      this._subs.delete(key);
      if (sub.wireId !== null) {
        this._subsByWire.delete(sub.wireId);
        this._send({ type: "unsubscribe", id: sub.wireId });
        sub.wireId = null;
      }
      this._refresh();
    };
  }

  /**
   * Call a mutation, showing its effect at once: the hint the server declares for it (from
   * `GET /api/functions`), or the function registered with `registerOptimistic`. The effect is
   * rolled back if the call fails; the Promise gives the mutation's data or rejects.
   */
  performMutation(name, args = {}) {
    if (this._closed) return Promise.reject(new NanoTypeDBError("ClientClosed", "The client is closed."));
    const start = () => {
      let spec = this._functions ? this._functions.get(name) || null : null;
      if (!spec && this._custom.has(name)) spec = { kind: "custom", name };
      const m = { name, args: copy(args), spec, row: undefined, version: null };
      if (spec && spec.kind === "insert") {
        m.row = optimisticRow(spec, m.args, this._userId(), `optimistic:${++this._tempIds}`);
      }
      if (spec) {
        this._pending.push(m);
        this._refresh();
      }
      return this._call(name, args, spec ? m : null).catch((err) => {
        this._drop(m);
        throw err;
      });
    };
    if (this._functions || this._closed) return start();
    return this._loadFunctions().then(start, start);
  }

  /** Register the optimistic function of a `custom:NAME` hint (or of a mutation by its name):
   *  `fn(store, args)` with `store.getQuery(name, args)` and `store.setQuery(name, args, data)`. */
  registerOptimistic(name, fn) {
    this._custom.set(name, fn);
    this._refresh();
  }

  /** Sign in as `token` (null: anonymous). Subscriptions restart as the new caller. Returns a
   *  Promise of the principal, `{kind, id}`; rejects when the token is refused (the connection
   *  is then anonymous). */
  setAuth(token) {
    if (this._closed) return Promise.reject(new NanoTypeDBError("ClientClosed", "The client is closed."));
    this._token = token ?? null;
    if (!this._functionsGiven) {
      this._functions = null;
      this._functionsLoading = null;
    }
    if (!this._ws || this._ws.readyState !== 1) {
      // Not connected: the next connection signs in with it.
      return new Promise((resolve, reject) => this._afterAuth.push({ resolve, reject }));
    }
    this._ready = false;
    for (const sub of this._subs.values()) this._unsubscribeWire(sub);
    return this._authenticate(this._ws);
  }

  /** How many optimistic mutations are still shown on top of the server's data (0: none). */
  get pendingMutations() {
    return this._pending.length;
  }

  /** `cb(status)`: "connecting", "open", "reconnecting" or "closed"; called at once with the
   *  current status, then on each change. Returns the function that stops it. */
  onStatus(cb) {
    this._statusListeners.add(cb);
    cb(this.status);
    return () => this._statusListeners.delete(cb);
  }

  /** Close the connection for good: calls still waiting fail with `ClientClosed`. */
  close() {
    if (this._closed) return;
    this._closed = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._timer);
    const ws = this._ws;
    this._ws = null;
    this._lost(new NanoTypeDBError("ClientClosed", "The client was closed."));
    for (const req of this._outbox.splice(0)) req.reject(new NanoTypeDBError("ClientClosed", "The client was closed."));
    for (const w of this._afterAuth.splice(0)) w.reject(new NanoTypeDBError("ClientClosed", "The client was closed."));
    if (ws) ws.close(1000, "client closed");
    this._setStatus("closed");
  }

  // -- connection ------------------------------------------------------------------------------

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    for (const cb of [...this._statusListeners]) {
      try {
        cb(status);
      } catch (err) {
        console.error("nanotypedb: a status listener threw", err);
      }
    }
  }

  _connect() {
    this._timer = null;
    if (this._closed) return;
    let ws;
    try {
      ws = new this._WebSocket(this.wsUrl);
    } catch (err) {
      console.error("nanotypedb: cannot open", this.wsUrl, err);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (this._ws === ws) this._opened(ws);
    };
    ws.onmessage = (event) => {
      if (this._ws === ws) this._received(event.data);
    };
    ws.onclose = () => {
      if (this._ws === ws) this._disconnected();
    };
    ws.onerror = () => {}; // a close event follows
  }

  async _opened(ws) {
    this._lastVersion = 0;
    this._lastHeard = Date.now();
    this._startHeartbeat(ws);
    const waiting = this._afterAuth.splice(0);
    try {
      const principal = await this._authenticate(ws);
      for (const w of waiting) w.resolve(principal);
    } catch (err) {
      if (err && err.code === "ConnectionLost") {
        for (const w of waiting) this._afterAuth.push(w);
        return;
      }
      for (const w of waiting) w.reject(err);
      if (!waiting.length) this._onAuthError(err);
    }
  }

  /** Send `auth` (when there is a token), wait for its reply, then re-subscribe and send what waited. */
  async _authenticate(ws) {
    this._ready = false;
    let token = this._token;
    let principal = { kind: "anonymous", id: null };
    let failure = null;
    try {
      if (typeof token === "function") token = await token();
      this._credential = token ?? null;
      if (token != null || this.principal.kind !== "anonymous") {
        if (ws !== this._ws || this._closed) throw connectionLost();
        const id = this._nextId++;
        const reply = new Promise((resolve, reject) => this._requests.set(id, { resolve, reject, auth: true }));
        this._send({ type: "auth", id, token: token ?? null });
        principal = await reply;
      }
    } catch (err) {
      if (err && err.code === "ConnectionLost") throw err;
      failure = err; // the server made the connection anonymous
    }
    if (ws !== this._ws || this._closed) throw connectionLost();
    this.principal = principal;
    this._ready = true;
    this._attempt = 0;
    this._setStatus("open");
    for (const sub of this._subs.values()) this._subscribe(sub);
    for (const req of this._outbox.splice(0)) this._sendCall(req);
    if (!this._functionsGiven && !this._functions) this._loadFunctions();
    if (failure) throw failure;
    return principal;
  }

  _disconnected() {
    this._ws = null;
    this._lost(connectionLost());
    if (!this._closed) this._scheduleReconnect();
  }

  /** The connection is gone: every call sent and not answered fails with `err`; their optimistic
   *  effects roll back; subscriptions wait to be re-established. */
  _lost(err) {
    this._ready = false;
    clearInterval(this._heartbeat);
    this._heartbeat = null;
    const requests = [...this._requests.values()];
    this._requests.clear();
    for (const sub of this._subs.values()) {
      sub.wireId = null;
      sub.current = false;
    }
    this._subsByWire.clear();
    for (const req of requests) if (req.mutation) this._pending = this._pending.filter((m) => m !== req.mutation);
    this._refresh();
    for (const req of requests) req.reject(err);
  }

  _scheduleReconnect() {
    this._setStatus("reconnecting");
    const ceiling = Math.min(this._maxMs, this._baseMs * 2 ** this._attempt);
    this._attempt += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _reconnectNow() {
    clearTimeout(this._timer);
    this._connect();
  }

  _startHeartbeat(ws) {
    clearInterval(this._heartbeat);
    if (!this._heartbeatMs) return;
    this._heartbeat = setInterval(() => {
      if (ws !== this._ws) return;
      if (Date.now() - this._lastHeard > 2 * this._heartbeatMs) {
        // Nothing heard for two periods: the connection is dead even if the socket does not know.
        ws.onclose = ws.onmessage = ws.onopen = null;
        ws.close();
        this._disconnected();
        return;
      }
      this._send({ type: "ping", id: null });
    }, this._heartbeatMs);
  }

  _send(message) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(message));
  }

  // -- calls and subscriptions -----------------------------------------------------------------

  _call(name, args, mutation) {
    if (this._closed) return Promise.reject(new NanoTypeDBError("ClientClosed", "The client is closed."));
    return new Promise((resolve, reject) => {
      const req = { name, args, resolve, reject, mutation };
      if (this._ready) this._sendCall(req);
      else this._outbox.push(req);
    });
  }

  _sendCall(req) {
    const id = this._nextId++;
    this._requests.set(id, req);
    this._send({ type: "rpc", id, name: req.name, args: req.args });
  }

  _subscribe(sub) {
    if (sub.wireId !== null) return; // already live on this connection
    sub.wireId = this._nextId++;
    sub.current = false;
    sub.failed = false;
    this._subsByWire.set(sub.wireId, sub);
    this._send({ type: "subscribe", id: sub.wireId, name: sub.name, args: sub.args });
  }

  _unsubscribeWire(sub) {
    if (sub.wireId === null) return;
    this._subsByWire.delete(sub.wireId);
    this._send({ type: "unsubscribe", id: sub.wireId });
    sub.wireId = null;
    sub.current = false;
  }

  _received(raw) {
    this._lastHeard = Date.now();
    let msg;
    try {
      msg = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
    } catch {
      console.error("nanotypedb: the server sent a frame that is not JSON");
      return;
    }
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "result") this._result(msg);
    else if (msg.type === "error") this._error(msg);
    else if (msg.type === "transition") this._transition(msg);
  }

  _result(msg) {
    const req = this._requests.get(msg.id);
    if (!req) return;
    this._requests.delete(msg.id);
    const m = req.mutation;
    if (m) {
      m.version = msg.version;
      if (m.spec && m.spec.kind === "insert" && isRow(msg.data) && msg.data.id != null) m.row = msg.data;
      this._refresh();
    }
    req.resolve(msg.data);
  }

  _error(msg) {
    const err = NanoTypeDBError.fromEnvelope(msg.error);
    const req = msg.id === null || msg.id === undefined ? undefined : this._requests.get(msg.id);
    if (req) {
      this._requests.delete(msg.id);
      if (req.mutation) this._drop(req.mutation);
      req.reject(err);
      return;
    }
    const sub = msg.id === null || msg.id === undefined ? undefined : this._subsByWire.get(msg.id);
    if (sub) {
      // Refused: nothing is kept on the server. It is tried again after setAuth or a reconnection.
      this._subsByWire.delete(msg.id);
      sub.wireId = null;
      sub.failed = true;
      sub.error = err;
      sub.viewJson = null;
      this._refresh();
      for (const l of [...sub.listeners]) l.onError(err);
      return;
    }
    if (msg.id === null || msg.id === undefined) console.error("nanotypedb: the server reports", err);
  }

  _transition(msg) {
    const version = typeof msg.version === "number" ? msg.version : this._lastVersion;
    this._lastVersion = Math.max(this._lastVersion, version);
    const failed = [];
    for (const update of msg.updates || []) {
      const sub = this._subsByWire.get(update.id);
      if (!sub) continue; // ended: updates already on their way are ignored
      sub.current = true;
      if (update.error) {
        sub.error = NanoTypeDBError.fromEnvelope(update.error);
        sub.viewJson = null;
        failed.push([sub, sub.error]);
      } else {
        sub.error = null;
        sub.data = update.data;
        sub.reads = update.reads || [];
        sub.hasData = true;
      }
    }
    for (const sub of this._subs.values()) if (sub.current && sub.wireId !== null) sub.version = this._lastVersion;
    this._refresh();
    for (const [sub, err] of failed) for (const l of [...sub.listeners]) l.onError(err);
  }

  // -- optimistic layers -----------------------------------------------------------------------

  _userId() {
    return this.principal && this.principal.kind === "user" ? this.principal.id : null;
  }

  _drop(m) {
    const before = this._pending.length;
    this._pending = this._pending.filter((p) => p !== m);
    if (this._pending.length !== before) this._refresh();
  }

  /** Recompute what each subscription shows and tell its listeners when it changed. */
  _refresh() {
    // An answered mutation ends once every subscription holds a result that includes it.
    this._pending = this._pending.filter(
      (m) =>
        m.version === null ||
        [...this._subs.values()].some((s) => !s.failed && !(s.current && s.version >= m.version)),
    );
    const subs = [...this._subs.values()];
    const views = layer(subs, this._pending, (name) => this._custom.get(name));
    subs.forEach((sub, i) => {
      if (!sub.hasData || sub.error) return;
      const json = JSON.stringify(views[i]);
      if (json === sub.viewJson) return;
      sub.view = views[i];
      sub.viewJson = json;
      for (const l of [...sub.listeners]) {
        try {
          l.onResult(sub.view);
        } catch (err) {
          console.error(`nanotypedb: a listener of ${sub.name} threw`, err);
        }
      }
    });
  }

  _loadFunctions() {
    if (this._functionsLoading) return this._functionsLoading;
    const load = async () => {
      // A token function is asked once per connection: use what the connection signed in with.
      let token = typeof this._token === "function" ? this._credential : this._token;
      if (token === undefined) token = await this._token();
      const headers = token != null ? { authorization: `Bearer ${token}` } : {};
      const response = await fetch(`${this.httpUrl}/api/functions`, { headers });
      if (!response.ok) throw NanoTypeDBError.fromEnvelope((await response.json()).error);
      const specs = specsOf(await response.json());
      if (this._functionsLoading === loading) this._functions = specs;
      return specs;
    };
    const loading = load().catch((err) => {
      if (!this._functionsWarned) {
        this._functionsWarned = true;
        console.warn("nanotypedb: cannot read GET /api/functions (pass `functions`); no optimistic effects", err);
      }
      if (this._functionsLoading === loading) this._functionsLoading = null;
    });
    this._functionsLoading = loading;
    return loading;
  }
}

function specsOf(functions) {
  const specs = new Map();
  const list = Array.isArray(functions) ? functions : functions && functions.functions;
  if (Array.isArray(list)) {
    for (const f of list) if (f && f.name) specs.set(f.name, normalizeSpec(f.optimistic));
  } else if (functions && typeof functions === "object") {
    for (const [name, hint] of Object.entries(functions)) specs.set(name, normalizeSpec(hint));
  }
  return specs;
}
