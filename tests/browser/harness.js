// Loaded into a page of the server's own origin by page.evaluate(source, options): imports the
// client from /client.js and keeps a record of everything it reports, for the tests to wait on.
async (options) => {
  const mod = await import("/client.js");
  const plain = (err) => ({
    name: err && err.name,
    code: err && err.code,
    message: err && err.message,
    details: err && err.details,
    requestId: err && err.requestId,
    isError: err instanceof Error,
  });
  const h = {
    mod,
    plain,
    db: null,
    statuses: [],
    results: {}, // label → every value onResult received, in order
    errors: {}, // label → every error onError received
    stops: {},
    open(clientOptions) {
      h.db = mod.createClient({ reconnect: { baseMs: 50, maxMs: 400 }, ...clientOptions });
      h.db.onStatus((s) => h.statuses.push(s));
      return h.db;
    },
    watch(label, name, args) {
      h.results[label] = [];
      h.errors[label] = [];
      h.stops[label] = h.db.runReactiveQuery(
        name,
        args,
        (value) => h.results[label].push(value),
        (err) => h.errors[label].push(plain(err)),
      );
    },
    last(label) {
      const list = h.results[label];
      return list.length ? list[list.length - 1] : undefined;
    },
    // Settles a promise into {ok, value} or {ok: false, error}, for page.evaluate to return.
    async settle(promise) {
      try {
        return { ok: true, value: await promise };
      } catch (err) {
        return { ok: false, error: plain(err) };
      }
    },
  };
  window.h = h;
  h.open(options);
  return true;
}
