// A connect-node client for tests/test_validate.py: sends one CreateUser
// request and prints what came back, reading buf.validate.Violations details
// typed, with the schema from the descriptor set (no generated JavaScript).
//
//   node validate_client.mjs --descriptor users.binpb --base-url URL
//       --protocol connect|grpc-web [--json] --request JSON
//
// Prints one JSON object: {"code": ..., "message": ..., "violations": [...]}
// for an error, or {"response": {...}} for a success.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import {
  create,
  createFileRegistry,
  fromBinary,
  fromJson,
  toJson,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { codeName } from "./common.mjs";

const { values: args } = parseArgs({
  options: {
    descriptor: { type: "string" },
    "base-url": { type: "string" },
    protocol: { type: "string", default: "connect" },
    json: { type: "boolean", default: false },
    request: { type: "string" },
  },
});

const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(args.descriptor)),
);
const service = registry.getService("users.v1.UserService");
const requestSchema = registry.getMessage("users.v1.CreateUserRequest");
const responseSchema = registry.getMessage("users.v1.CreateUserResponse");
const violationsSchema = registry.getMessage("buf.validate.Violations");
if (!service || !requestSchema || !responseSchema || !violationsSchema) {
  console.error("validate_client.mjs: types missing from the descriptor set");
  process.exit(2);
}

const options = {
  baseUrl: args["base-url"],
  httpVersion: "1.1",
  useBinaryFormat: !args.json,
};
const transport =
  args.protocol === "grpc-web"
    ? createGrpcWebTransport(options)
    : createConnectTransport(options);
const client = createClient(service, transport);

const request = fromJson(requestSchema, JSON.parse(args.request), { registry });
try {
  const response = await client.createUser(request, { timeoutMs: 20000 });
  console.log(JSON.stringify({ response: toJson(responseSchema, response) }));
} catch (err) {
  const ce = ConnectError.from(err);
  const found = ce.findDetails(violationsSchema);
  console.log(
    JSON.stringify({
      code: codeName(ce.code),
      message: ce.rawMessage,
      violations: found.flatMap((v) =>
        toJson(violationsSchema, v, { registry }).violations ?? [],
      ),
    }),
  );
}
