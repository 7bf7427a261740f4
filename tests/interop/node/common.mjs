// Shared by server.mjs and client.mjs: loading the interop service from a
// FileDescriptorSet at run time (no generated JavaScript), and small helpers.
import { readFileSync } from "node:fs";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";

export const SERVICE_NAME = "interop.v1.InteropService";

/**
 * Reads a FileDescriptorSet (protoc --include_imports --descriptor_set_out)
 * and returns the registry, the service descriptor and the message
 * descriptors by short name.
 */
export function loadInterop(descriptorPath) {
  const bytes = readFileSync(descriptorPath);
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
  const service = registry.getService(SERVICE_NAME);
  if (service === undefined) {
    throw new Error(`${SERVICE_NAME} is not in ${descriptorPath}`);
  }
  const messages = {};
  for (const name of [
    "Header",
    "ErrorSpec",
    "ErrorInfo",
    "CallSpec",
    "EchoRequest",
    "EchoResponse",
    "CountRequest",
    "CountResponse",
    "CollectRequest",
    "CollectResponse",
    "ChatRequest",
    "ChatResponse",
  ]) {
    const desc = registry.getMessage(`interop.v1.${name}`);
    if (desc === undefined) {
      throw new Error(`interop.v1.${name} is not in ${descriptorPath}`);
    }
    messages[name] = desc;
  }
  return { registry, service, messages, create };
}

// Connect's wire names for the numeric codes (the same numbers as gRPC).
const CODE_NAMES = new Map([
  [Code.Canceled, "canceled"],
  [Code.Unknown, "unknown"],
  [Code.InvalidArgument, "invalid_argument"],
  [Code.DeadlineExceeded, "deadline_exceeded"],
  [Code.NotFound, "not_found"],
  [Code.AlreadyExists, "already_exists"],
  [Code.PermissionDenied, "permission_denied"],
  [Code.ResourceExhausted, "resource_exhausted"],
  [Code.FailedPrecondition, "failed_precondition"],
  [Code.Aborted, "aborted"],
  [Code.OutOfRange, "out_of_range"],
  [Code.Unimplemented, "unimplemented"],
  [Code.Internal, "internal"],
  [Code.Unavailable, "unavailable"],
  [Code.DataLoss, "data_loss"],
  [Code.Unauthenticated, "unauthenticated"],
]);

export function codeName(code) {
  return CODE_NAMES.get(code) ?? `code_${code}`;
}

/** Headers as a list of [name, value] pairs (fetch Headers sort by name). */
export function headerPairs(headers) {
  const out = [];
  if (headers !== undefined) {
    headers.forEach((value, name) => out.push([name, value]));
  }
  return out;
}

/** Resolves after `ms` milliseconds, or rejects when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
