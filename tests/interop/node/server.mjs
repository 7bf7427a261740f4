// A connect-node server for interop.v1.InteropService.
//
//   node server.mjs --descriptor interop.binpb [--port 0] [--http2]
//
// Serves Connect, gRPC and gRPC-Web on one port, over HTTP/1.1 or, with
// --http2, cleartext HTTP/2 with prior knowledge (h2c). Accepts gzip requests
// and compresses every response message when the client accepts gzip. Prints
// "READY <port>" once listening; exits on SIGTERM or SIGINT.
import * as http from "node:http";
import * as http2 from "node:http2";
import { parseArgs } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import { compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import { headerPairs, loadInterop, sleep } from "./common.mjs";

const { values: args } = parseArgs({
  options: {
    descriptor: { type: "string" },
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    http2: { type: "boolean", default: false },
  },
});
if (args.descriptor === undefined) {
  console.error("usage: server.mjs --descriptor FILE [--port N] [--http2]");
  process.exit(2);
}

const { service, messages } = loadInterop(args.descriptor);

/** The "x-test-" request headers, as Header messages. */
function seenHeaders(ctx) {
  return headerPairs(ctx.requestHeader)
    .filter(([name]) => name.startsWith("x-test-"))
    .map(([name, value]) => ({ name, value }));
}

/** Copies the requested response headers and trailers onto the call. */
function applyMetadata(spec, ctx) {
  for (const h of spec?.responseHeaders ?? []) {
    ctx.responseHeader.append(h.name, h.value);
  }
  for (const h of spec?.responseTrailers ?? []) {
    ctx.responseTrailer.append(h.name, h.value);
  }
}

/** The ConnectError an ErrorSpec asks for, or undefined. */
function requestedError(spec) {
  const e = spec?.error;
  if (e === undefined || e.code === 0) {
    return undefined;
  }
  const details = e.withDetail
    ? [{ desc: messages.ErrorInfo, value: { reason: e.message, code: e.code } }]
    : [];
  return new ConnectError(e.message, e.code, undefined, details);
}

async function unary(req, ctx) {
  applyMetadata(req.spec, ctx);
  ctx.responseHeader.set("x-http-method", ctx.requestMethod);
  if (req.spec?.delayMs > 0) {
    await sleep(req.spec.delayMs, ctx.signal);
  }
  const err = requestedError(req.spec);
  if (err !== undefined) {
    throw err;
  }
  return {
    text: req.text,
    requestHeaders: seenHeaders(ctx),
    protocol: ctx.protocolName,
  };
}

const impl = {
  echo: unary,
  echoGet: unary,

  async *count(req, ctx) {
    applyMetadata(req.spec, ctx);
    const delay = req.spec?.delayMs ?? 0;
    for (let i = 0; i < req.n; i++) {
      if (delay > 0) {
        await sleep(delay, ctx.signal);
      }
      yield {
        index: i,
        text: `${req.text}-${i}`,
        requestHeaders: i === 0 ? seenHeaders(ctx) : [],
      };
    }
    const err = requestedError(req.spec);
    if (err !== undefined) {
      throw err;
    }
  },

  async collect(reqs, ctx) {
    let spec;
    let text = "";
    let count = 0;
    for await (const req of reqs) {
      if (count === 0) {
        spec = req.spec;
        applyMetadata(spec, ctx);
      }
      text += req.text;
      count++;
    }
    if (spec?.delayMs > 0) {
      await sleep(spec.delayMs, ctx.signal);
    }
    const err = requestedError(spec);
    if (err !== undefined) {
      throw err;
    }
    return { text, count, requestHeaders: seenHeaders(ctx) };
  },

  async *chat(reqs, ctx) {
    let spec;
    let index = 0;
    for await (const req of reqs) {
      if (index === 0) {
        spec = req.spec;
        applyMetadata(spec, ctx);
      }
      if (spec?.delayMs > 0) {
        await sleep(spec.delayMs, ctx.signal);
      }
      yield { index, text: `echo: ${req.text}` };
      index++;
    }
    const err = requestedError(spec);
    if (err !== undefined) {
      throw err;
    }
  },
};

const handler = connectNodeAdapter({
  routes: (router) => router.service(service, impl),
  acceptCompression: [compressionGzip],
  compressMinBytes: 0,
});

const server = args.http2
  ? http2.createServer(handler)
  : http.createServer(handler);

server.on("error", (err) => {
  console.error(`server error: ${err}`);
  process.exit(1);
});

server.listen(Number(args.port), args.host, () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  if (!args.http2) {
    server.closeAllConnections();
  }
  // HTTP/2 sessions may linger; don't wait for them.
  setTimeout(() => process.exit(0), 500).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

