// A connect-node client that runs interop scenarios against a server.
//
//   node client.mjs --descriptor interop.binpb --base-url http://127.0.0.1:8080
//       [--protocol connect|grpc|grpc-web] [--http2] [--json] [--gzip]
//       [--scenario NAME]...
//
// Prints one JSON object per line and scenario: {"scenario": NAME, ...what it
// observed}, or {"scenario": NAME, "skipped": REASON}. Without --scenario every
// scenario runs. Errors from the server are observations, not failures: they
// are printed under "error". The exit status is non-zero only when the harness
// itself breaks (bad arguments, unknown scenario).
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { codeName, headerPairs, loadInterop } from "./common.mjs";

const { values: args } = parseArgs({
  options: {
    descriptor: { type: "string" },
    "base-url": { type: "string" },
    protocol: { type: "string", default: "connect" },
    http2: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    gzip: { type: "boolean", default: false },
    scenario: { type: "string", multiple: true },
    "list-scenarios": { type: "boolean", default: false },
  },
});

const { registry, service, messages } = loadInterop(
  args.descriptor ?? fail("--descriptor is required"),
);

function fail(message) {
  console.error(`client.mjs: ${message}`);
  process.exit(2);
}

function makeTransport(options) {
  if (args.protocol === "grpc" && !args.http2) {
    fail("gRPC needs HTTP/2: pass --http2 with --protocol grpc");
  }
  const common = {
    baseUrl: args["base-url"] ?? fail("--base-url is required"),
    httpVersion: args.http2 ? "2" : "1.1",
    useBinaryFormat: !args.json,
    acceptCompression: args.gzip ? [compressionGzip] : [],
    sendCompression: args.gzip ? compressionGzip : undefined,
    compressMinBytes: 0,
    ...options,
  };
  switch (args.protocol) {
    case "connect":
      return createConnectTransport(common);
    case "grpc":
      return createGrpcTransport(common);
    case "grpc-web":
      return createGrpcWebTransport(common);
    default:
      return fail(`unknown protocol ${args.protocol}`);
  }
}

// Built once the arguments are checked (see the end of this file).
let client;
let getClient;

// Request headers every scenario sends; servers echo the "x-test-" ones.
const REQUEST_HEADERS = [
  ["x-test-alpha", "one"],
  ["x-test-beta", "two words"],
  ["x-other", "not echoed"],
];

/** Call options recording response headers and trailers into `seen`. */
function callOptions(seen, extra = {}) {
  return {
    headers: REQUEST_HEADERS,
    onHeader: (h) => {
      seen.headers = headerPairs(h);
    },
    onTrailer: (t) => {
      seen.trailers = headerPairs(t);
    },
    ...extra,
  };
}

function describeError(err) {
  const ce = ConnectError.from(err);
  const decoded = ce.findDetails(messages.ErrorInfo);
  return {
    code: codeName(ce.code),
    message: ce.rawMessage,
    details: ce.details.map((d) => ("type" in d ? d.type : d.desc.typeName)),
    error_info: decoded.map((m) => toJson(messages.ErrorInfo, m, { registry })),
    metadata: headerPairs(ce.metadata),
  };
}

function headerList(msg) {
  return msg.requestHeaders.map((h) => [h.name, h.value]);
}

/** A queue that is also an async iterable: push() messages, end() to finish. */
function createQueue() {
  const items = [];
  let waiting;
  let ended = false;
  return {
    push(item) {
      if (waiting !== undefined) {
        const w = waiting;
        waiting = undefined;
        w({ value: item, done: false });
      } else {
        items.push(item);
      }
    },
    end() {
      ended = true;
      if (waiting !== undefined) {
        const w = waiting;
        waiting = undefined;
        w({ value: undefined, done: true });
      }
    },
    [Symbol.asyncIterator]() {
      return {
        next() {
          if (items.length > 0) {
            return Promise.resolve({ value: items.shift(), done: false });
          }
          if (ended) {
            return Promise.resolve({ value: undefined, done: true });
          }
          return new Promise((resolve) => {
            waiting = resolve;
          });
        },
        return() {
          ended = true;
          return Promise.resolve({ value: undefined, done: true });
        },
        throw(err) {
          ended = true;
          return Promise.reject(err);
        },
      };
    },
  };
}

const METADATA_SPEC = {
  responseHeaders: [
    { name: "x-test-header", value: "header value" },
    { name: "x-test-header-two", value: "second" },
  ],
  responseTrailers: [{ name: "x-test-trailer", value: "trailer value" }],
};

const BIDI_NEEDS_HTTP2 =
  "connect-node cannot stream in both directions over HTTP/1.1; bidi needs --http2";

// Each scenario returns what it observed; a thrown error lands in "error".
const SCENARIOS = {
  async unary(seen) {
    const res = await client.echo({ text: "hello" }, callOptions(seen));
    return {
      text: res.text,
      request_headers: headerList(res),
      protocol: res.protocol,
    };
  },

  async unary_large(seen) {
    const text = "0123456789abcdef".repeat(4096);
    const res = await client.echo({ text }, callOptions(seen));
    return { length: res.text.length, same: res.text === text };
  },

  async unary_metadata(seen) {
    const res = await client.echo(
      { text: "with metadata", spec: METADATA_SPEC },
      callOptions(seen),
    );
    return { text: res.text };
  },

  async unary_error(seen) {
    await client.echo(
      {
        text: "fail",
        spec: {
          ...METADATA_SPEC,
          error: { code: 5, message: "no such thing: ünïcödé", withDetail: true },
        },
      },
      callOptions(seen),
    );
    return {};
  },

  async unary_deadline(seen) {
    const started = performance.now();
    try {
      await client.echo(
        { text: "slow", spec: { delayMs: 3000 } },
        callOptions(seen, { timeoutMs: 200 }),
      );
      return { elapsed_ms: Math.round(performance.now() - started) };
    } catch (err) {
      const out = describeError(err);
      return { error: out, elapsed_ms: Math.round(performance.now() - started) };
    }
  },

  async get(seen) {
    const res = await getClient.echoGet(
      { text: "via get" },
      callOptions(seen),
    );
    return { text: res.text, request_headers: headerList(res) };
  },

  async server_stream(seen) {
    const out = [];
    for await (const res of client.count(
      { n: 3, text: "s", spec: { ...METADATA_SPEC, delayMs: 5 } },
      callOptions(seen),
    )) {
      out.push({ index: res.index, text: res.text, request_headers: headerList(res) });
    }
    return { messages: out };
  },

  async server_stream_error(seen) {
    const out = [];
    try {
      for await (const res of client.count(
        {
          n: 2,
          text: "e",
          spec: {
            ...METADATA_SPEC,
            error: { code: 9, message: "stream broke", withDetail: true },
          },
        },
        callOptions(seen),
      )) {
        out.push({ index: res.index, text: res.text });
      }
    } catch (err) {
      return { messages: out, error: describeError(err) };
    }
    return { messages: out };
  },

  async client_stream(seen) {
    async function* requests() {
      yield { text: "a", spec: METADATA_SPEC };
      yield { text: "b" };
      yield { text: "c" };
    }
    const res = await client.collect(requests(), callOptions(seen));
    return { text: res.text, count: res.count, request_headers: headerList(res) };
  },

  async client_stream_error(seen) {
    async function* requests() {
      yield {
        text: "a",
        spec: { error: { code: 8, message: "too many", withDetail: false } },
      };
      yield { text: "b" };
    }
    await client.collect(requests(), callOptions(seen));
    return {};
  },

  async bidi(seen) {
    if (!args.http2) {
      return { skipped: BIDI_NEEDS_HTTP2 };
    }
    const queue = createQueue();
    const replies = [];
    const texts = ["one", "two", "three"];
    queue.push({ text: texts[0], spec: METADATA_SPEC });
    let sent = 1;
    for await (const res of client.chat(queue, callOptions(seen))) {
      // Each reply arrives before the next request is sent: full duplex.
      replies.push({ index: res.index, text: res.text, sent_before_reply: sent });
      if (sent < texts.length) {
        queue.push({ text: texts[sent] });
        sent++;
      } else {
        queue.end();
      }
    }
    return { mode: "full-duplex", messages: replies };
  },

  async bidi_error(seen) {
    if (!args.http2) {
      return { skipped: BIDI_NEEDS_HTTP2 };
    }
    const queue = createQueue();
    const replies = [];
    queue.push({
      text: "only",
      spec: { error: { code: 10, message: "chat aborted", withDetail: true } },
    });
    try {
      for await (const res of client.chat(queue, callOptions(seen))) {
        replies.push({ index: res.index, text: res.text });
        queue.end();
      }
    } catch (err) {
      return { messages: replies, error: describeError(err) };
    }
    return { messages: replies };
  },
};

if (args["list-scenarios"]) {
  process.stdout.write(`${JSON.stringify(Object.keys(SCENARIOS))}\n`);
  process.exit(0);
}

client = createClient(service, makeTransport({}));
getClient = createClient(service, makeTransport({ useHttpGet: true }));

const names = args.scenario ?? Object.keys(SCENARIOS);
for (const name of names) {
  if (!(name in SCENARIOS)) {
    fail(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(", ")}`);
  }
}

for (const name of names) {
  const seen = { headers: [], trailers: [] };
  let result;
  try {
    result = await SCENARIOS[name](seen);
  } catch (err) {
    result = { error: describeError(err) };
  }
  const line = { scenario: name, ...result };
  if (!("skipped" in result)) {
    line.response_headers = seen.headers;
    line.response_trailers = seen.trailers;
  }
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// HTTP/2 sessions stay open for reuse; end the process once output is written.
process.stdout.write("", () => process.exit(0));
