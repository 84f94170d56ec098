// Drives many official socket.io-client sockets on behalf of the Python test suite.
//
// Protocol: newline-delimited JSON on stdin (commands) and stdout (replies and events).
//
// Every command carries a `seq` number and is answered by exactly one line
//   {"type": "ack", "seq": <seq>, "ok": true, ...result}
// or {"type": "ack", "seq": <seq>, "ok": false, "error": "<why>"}.
//
// Commands (fields besides `cmd` and `seq`):
//   connect       {id, url, opts}      create socket `id` with io(url, {...opts, forceNew: true})
//   emit          {id, event, args, ackTimeout?}
//                                      emit an event; with ackTimeout (ms) the server's
//                                      acknowledgement is awaited and returned as `response`
//   emitBatch     {id, items: [{event, args}, ...]}
//                                      emit several events back to back, in one tick
//   disconnect    {id}                 socket.disconnect()
//   connectAgain  {id}                 socket.connect() on an existing, disconnected socket
//   dispose       {id}                 disconnect if needed and forget the socket
//   raw           {id, data}           write one raw Engine.IO "message" packet whose data is a
//                                      Socket.IO packet string such as '2["event",{}]'
//                                      (the Engine.IO "4" prefix is added by the client)
//   enginePacket  {id, packetType, data?}
//                                      write one raw Engine.IO packet of any type
//                                      ("ping", "pong", "message", "close", "noop", ...)
//   dropTransport {id}                 end the connection without a Socket.IO goodbye: over
//                                      WebSocket the TCP connection is cut (the server sees a
//                                      transport close); over polling Engine.IO is closed
//   state         {id}                 -> {connected, sid, transport}
//   serverAck     {ackId, args}        answer an acknowledgement the server asked for
//   ping          {}                   -> {}
//   close         {}                   disconnect everything and exit
//
// Events written without being asked:
//   {type: "connect", id, sid, transport, recovered}
//                                              recovered: the server resumed the session
//                                              (connection state recovery)
//   {type: "connect_error", id, message, data, description}
//   {type: "disconnect", id, reason, description}
//   {type: "event", id, event, args, ackId?, offset?}
//                                              every event received (socket.onAny); with
//                                              connection state recovery on, the offset the
//                                              server appended is reported apart from args
//   {type: "upgrade", id, transport}           the transport was upgraded
//   {type: "reconnect_attempt", id, attempt} / {type: "reconnect", id, attempt}
//   {type: "fatal", message}                   a bug in this bridge
//
// Binary data: any `{"$bytes": "<base64>"}` value in command args becomes a Buffer, and every
// Buffer / ArrayBuffer / typed array received is written back as `{"$bytes": "<base64>"}`.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const sockets = new Map();
const serverAcks = new Map();
let nextAckId = 1;

function write(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function isBinary(value) {
  return (
    Buffer.isBuffer(value) || value instanceof ArrayBuffer || ArrayBuffer.isView(value)
  );
}

function encode(value) {
  if (value === undefined || typeof value === "function") {
    return null;
  }
  if (isBinary(value)) {
    let buf;
    if (Buffer.isBuffer(value)) {
      buf = value;
    } else if (value instanceof ArrayBuffer) {
      buf = Buffer.from(value);
    } else {
      buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
    return { $bytes: buf.toString("base64") };
  }
  if (Array.isArray(value)) {
    return value.map(encode);
  }
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [key, item] of Object.entries(value)) {
      out[key] = encode(item);
    }
    return out;
  }
  return value;
}

function decode(value) {
  if (Array.isArray(value)) {
    return value.map(decode);
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bytes" && typeof value.$bytes === "string") {
      return Buffer.from(value.$bytes, "base64");
    }
    const out = {};
    for (const [key, item] of Object.entries(value)) {
      out[key] = decode(item);
    }
    return out;
  }
  return value;
}

function describe(detail) {
  if (detail === undefined || detail === null) {
    return null;
  }
  if (detail instanceof Error) {
    return { message: detail.message };
  }
  if (typeof detail === "object") {
    const out = {};
    for (const key of ["description", "context", "message", "type"]) {
      const item = detail[key];
      if (item === undefined) {
        continue;
      }
      if (item instanceof Error) {
        out[key] = item.message;
      } else if (typeof item === "object" && item !== null) {
        out[key] = item.status ?? item.statusCode ?? String(item);
      } else {
        out[key] = item;
      }
    }
    return out;
  }
  return detail;
}

function transportName(socket) {
  return socket.io.engine?.transport?.name ?? null;
}

function getSocket(id) {
  const socket = sockets.get(id);
  if (!socket) {
    throw new Error(`unknown client id ${JSON.stringify(id)}`);
  }
  return socket;
}

function watchEngine(id, socket) {
  const engine = socket.io.engine;
  if (!engine || engine.__bridgeWatched) {
    return;
  }
  engine.__bridgeWatched = true;
  engine.on("upgrade", (transport) => {
    write({ type: "upgrade", id, transport: transport?.name ?? null });
  });
}

function connect({ id, url, opts }) {
  if (sockets.has(id)) {
    throw new Error(`client id ${JSON.stringify(id)} already in use`);
  }
  const socket = io(url, { ...(opts ?? {}), forceNew: true });
  sockets.set(id, socket);
  watchEngine(id, socket);
  socket.io.on("open", () => watchEngine(id, socket));
  socket.on("connect", () => {
    write({
      type: "connect",
      id,
      sid: socket.id,
      transport: transportName(socket),
      recovered: Boolean(socket.recovered),
    });
  });
  socket.on("connect_error", (err) => {
    write({
      type: "connect_error",
      id,
      message: err?.message ?? String(err),
      data: encode(err?.data ?? null),
      description: describe(err?.description ?? null),
    });
  });
  socket.on("disconnect", (reason, details) => {
    write({ type: "disconnect", id, reason, description: describe(details ?? null) });
  });
  socket.io.on("reconnect_attempt", (attempt) => {
    write({ type: "reconnect_attempt", id, attempt });
  });
  socket.io.on("reconnect", (attempt) => {
    write({ type: "reconnect", id, attempt });
  });
  socket.onAny((event, ...args) => {
    const message = { type: "event", id, event };
    const last = args.at(-1);
    if (typeof last === "function") {
      const ackId = nextAckId++;
      serverAcks.set(ackId, last);
      message.ackId = ackId;
      args = args.slice(0, -1);
    }
    // With connection state recovery the server appends an offset to every event; the client
    // keeps the last one (its private `_pid` is set once the server offered recovery).
    if (socket._pid && args.length > 1 && typeof args.at(-1) === "string") {
      message.offset = args.at(-1);
      args = args.slice(0, -1);
    }
    message.args = encode(args);
    write(message);
  });
  return {};
}

async function emit({ id, event, args, ackTimeout }) {
  const socket = getSocket(id);
  const decoded = decode(args ?? []);
  if (ackTimeout === undefined || ackTimeout === null) {
    socket.emit(event, ...decoded);
    return {};
  }
  try {
    const response = await socket.timeout(ackTimeout).emitWithAck(event, ...decoded);
    return { response: encode(response), timedOut: false };
  } catch (err) {
    return { response: null, timedOut: true, message: err?.message ?? String(err) };
  }
}

function emitBatch({ id, items }) {
  const socket = getSocket(id);
  for (const item of items ?? []) {
    socket.emit(item.event, ...decode(item.args ?? []));
  }
  return { count: (items ?? []).length };
}

function raw({ id, data }) {
  const socket = getSocket(id);
  const engine = socket.io.engine;
  if (!engine) {
    throw new Error("no engine connection");
  }
  engine.write(decode(data));
  return {};
}

function enginePacket({ id, packetType, data }) {
  const socket = getSocket(id);
  const engine = socket.io.engine;
  if (!engine) {
    throw new Error("no engine connection");
  }
  engine._sendPacket(packetType, data === undefined || data === null ? undefined : decode(data));
  return {};
}

function dropTransport({ id }) {
  const socket = getSocket(id);
  const engine = socket.io.engine;
  if (!engine) {
    throw new Error("no engine connection");
  }
  const transport = engine.transport;
  if (transport?.name === "websocket" && transport.ws) {
    // Terminate the TCP connection without a close handshake, like a network cut.
    if (typeof transport.ws.terminate === "function") {
      transport.ws.terminate();
    } else {
      transport.ws.close();
    }
  } else {
    engine.close();
  }
  return {};
}

const handlers = {
  connect,
  emit,
  emitBatch,
  raw,
  enginePacket,
  dropTransport,
  disconnect({ id }) {
    getSocket(id).disconnect();
    return {};
  },
  connectAgain({ id }) {
    getSocket(id).connect();
    return {};
  },
  dispose({ id }) {
    const socket = sockets.get(id);
    if (socket) {
      socket.offAny();
      socket.removeAllListeners();
      socket.io.removeAllListeners();
      socket.disconnect();
      sockets.delete(id);
    }
    return {};
  },
  state({ id }) {
    const socket = getSocket(id);
    return { connected: socket.connected, sid: socket.id ?? null, transport: transportName(socket) };
  },
  serverAck({ ackId, args }) {
    const fn = serverAcks.get(ackId);
    if (!fn) {
      throw new Error(`unknown ackId ${ackId}`);
    }
    serverAcks.delete(ackId);
    fn(...decode(args ?? []));
    return {};
  },
  ping() {
    return {};
  },
  close() {
    for (const socket of sockets.values()) {
      socket.disconnect();
    }
    sockets.clear();
    setTimeout(() => process.exit(0), 50);
    return {};
  },
};

async function handle(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    write({ type: "fatal", message: `unparsable command: ${err.message}` });
    return;
  }
  const seq = command.seq ?? null;
  const handler = handlers[command.cmd];
  if (!handler) {
    write({ type: "ack", seq, ok: false, error: `unknown command ${command.cmd}` });
    return;
  }
  try {
    const result = await handler(command);
    write({ type: "ack", seq, ok: true, ...(result ?? {}) });
  } catch (err) {
    write({ type: "ack", seq, ok: false, error: err?.message ?? String(err) });
  }
}

process.on("uncaughtException", (err) => {
  write({ type: "fatal", message: err?.stack ?? String(err) });
});
process.on("unhandledRejection", (err) => {
  write({ type: "fatal", message: err?.stack ?? String(err) });
});

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", (line) => {
  if (line.trim() !== "") {
    void handle(line);
  }
});
input.on("close", () => {
  for (const socket of sockets.values()) {
    socket.disconnect();
  }
  setTimeout(() => process.exit(0), 50);
});
write({ type: "ready", pid: process.pid });
