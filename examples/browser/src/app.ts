// Calls GreetService on a Python server from the browser, with Connect (JSON and
// binary, POST and GET) and gRPC-Web, and renders one table row per call.
//
// The API's base URL comes from the page's query string: index.html?api=http://host:port
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { GreetService, type GreetResponse } from "./gen/greet/v1/greet_pb.js";

const api = new URLSearchParams(location.search).get("api") ?? "http://127.0.0.1:8080";

interface Result {
  id: string;
  protocol: string;
  status: "ok" | "error";
  detail: string;
  ms: number;
}

type Case = {
  id: string;
  label: string;
  protocol: string;
  transport: Transport;
  run: (client: ReturnType<typeof createClient<typeof GreetService>>) => Promise<string>;
};

const transports = {
  connectJson: createConnectTransport({ baseUrl: api }),
  connectJsonGet: createConnectTransport({ baseUrl: api, useHttpGet: true }),
  connectBinary: createConnectTransport({ baseUrl: api, useBinaryFormat: true }),
  grpcWeb: createGrpcWebTransport({ baseUrl: api }),
};

function describe(res: GreetResponse): string {
  const when = res.time ? timestampDate(res.time).toISOString().slice(11, 19) : "?";
  return `${res.greeting} (${when})`;
}

async function unary(
  client: ReturnType<typeof createClient<typeof GreetService>>,
  name: string,
): Promise<string> {
  let version = "";
  const res = await client.greet(
    { name },
    { onHeader: (h) => (version = h.get("greet-version") ?? "(hidden)") },
  );
  return `${describe(res)}; greet-version: ${version}`;
}

async function stream(
  client: ReturnType<typeof createClient<typeof GreetService>>,
  name: string,
): Promise<string> {
  const parts: string[] = [];
  for await (const res of client.greetStream({ name, count: 3, intervalMs: 50 })) {
    parts.push(res.greeting);
  }
  return parts.join(" | ");
}

async function failing(
  client: ReturnType<typeof createClient<typeof GreetService>>,
): Promise<string> {
  try {
    await client.greet({ name: "" });
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code === Code.InvalidArgument && err.rawMessage.includes("empty")) {
      return `${Code[err.code]}: ${err.rawMessage}`;
    }
    throw err;
  }
  throw new Error("expected invalid_argument, got a response");
}

const cases: Case[] = [
  { id: "connect-json-unary", label: "Greet", protocol: "Connect, JSON, POST", transport: transports.connectJson, run: (c) => unary(c, "JSON") },
  { id: "connect-json-get", label: "Greet", protocol: "Connect, JSON, GET", transport: transports.connectJsonGet, run: (c) => unary(c, "GET") },
  { id: "connect-binary-unary", label: "Greet", protocol: "Connect, binary", transport: transports.connectBinary, run: (c) => unary(c, "binary") },
  { id: "connect-json-stream", label: "GreetStream", protocol: "Connect, JSON", transport: transports.connectJson, run: (c) => stream(c, "JSON") },
  { id: "connect-binary-stream", label: "GreetStream", protocol: "Connect, binary", transport: transports.connectBinary, run: (c) => stream(c, "binary") },
  { id: "connect-error", label: "Greet (empty name)", protocol: "Connect, JSON", transport: transports.connectJson, run: (c) => failing(c) },
  { id: "grpc-web-unary", label: "Greet", protocol: "gRPC-Web, binary", transport: transports.grpcWeb, run: (c) => unary(c, "gRPC-Web") },
  { id: "grpc-web-stream", label: "GreetStream", protocol: "gRPC-Web, binary", transport: transports.grpcWeb, run: (c) => stream(c, "gRPC-Web") },
  { id: "grpc-web-error", label: "Greet (empty name)", protocol: "gRPC-Web, binary", transport: transports.grpcWeb, run: (c) => failing(c) },
];

function row(c: Case): HTMLTableRowElement {
  const tr = document.createElement("tr");
  tr.id = c.id;
  tr.dataset.status = "pending";
  for (const [cls, text] of [["call", c.label], ["protocol", c.protocol], ["status", "…"], ["detail", ""]]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
  }
  return tr;
}

async function main(): Promise<void> {
  document.getElementById("page-origin")!.textContent = location.origin;
  document.getElementById("api-origin")!.textContent = api;
  const tbody = document.getElementById("results")!;
  const results: Result[] = [];
  // One after another, so the table (and the screenshot) reads top to bottom.
  for (const c of cases) {
    const tr = row(c);
    tbody.appendChild(tr);
    const started = performance.now();
    let status: Result["status"] = "ok";
    let detail: string;
    try {
      detail = await c.run(createClient(GreetService, c.transport));
    } catch (e) {
      status = "error";
      const err = ConnectError.from(e);
      detail = `${Code[err.code]}: ${err.rawMessage}`;
    }
    const ms = Math.round(performance.now() - started);
    tr.dataset.status = status;
    tr.querySelector(".status")!.textContent = status;
    tr.querySelector(".detail")!.textContent = detail;
    results.push({ id: c.id, protocol: c.protocol, status, detail, ms });
  }
  (window as unknown as { connectResults: Result[] }).connectResults = results;
  document.body.dataset.done = "true";
}

void main();
