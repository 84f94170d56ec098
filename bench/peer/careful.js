"use strict";

// Benchmark peer, careful version: the same Socket.IO 4.8 package and the same wire output as
// spacesync, written the way a careful Node.js engineer would write the position relay.
//
// - `player:move` only records the player's newest state (no emit per move).
// - Every 50 ms a tick sends what changed since the previous tick, per space:
//   * clients that joined with `positionBatching: true` get ONE `players:moved` array per tick
//     holding every changed player: one room broadcast, encoded once (a client skips its own
//     entry).
//   * the other clients get one `player:moved` per changed player except their own: one room
//     broadcast per changed player (encoded once), `except` the mover's socket.
// - Rooms, `io.to(room).except(...)` and `socket.emit` only: public Socket.IO API, compression
//   off (the default), no volatile emits.
// Development-mode behaviour only: `dev-*` session tokens are accepted without verification.

const http = require("http");
const { Server } = require("socket.io");

const PORT = Number.parseInt(process.env.PORT || process.env.SOCKET_PORT || "3001", 10);
const HOST = process.env.HOST || "0.0.0.0";
const TICK_MS = Number.parseInt(process.env.TICK_MS || "50", 10);
const startedAt = Date.now();

/**
 * spaceId -> space state.
 * @type {Map<string, {players: Map<string, object>, dirty: Map<string, object>,
 *   batched: Map<string, import("socket.io").Socket>, plain: number, proximity: boolean}>}
 */
const spaces = new Map();
/** Spaces with at least one changed player since the last tick. */
const dirtySpaces = new Set();

const batchRoom = (spaceId) => `${spaceId}\u0000batched`;
const plainRoom = (spaceId) => `${spaceId}\u0000plain`;

const httpServer = http.createServer((req, res) => {
  if (req.method === "GET" && (req.url === "/health" || req.url === "/")) {
    res.writeHead(200, {
      "Content-Type": "application/json",
      "Access-Control-Allow-Origin": "*",
    });
    res.end(
      JSON.stringify({
        status: "ok",
        timestamp: Date.now(),
        uptime: Math.floor((Date.now() - startedAt) / 1000),
      }),
    );
    return;
  }
  res.writeHead(404, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ error: "Not found" }));
});

const io = new Server(httpServer, {
  cors: { origin: "*", methods: ["GET", "POST"] },
  pingInterval: 25000,
  pingTimeout: 10000,
  perMessageDeflate: false,
});

function getSpace(spaceId) {
  let space = spaces.get(spaceId);
  if (!space) {
    space = { players: new Map(), dirty: new Map(), batched: new Map(), plain: 0, proximity: false };
    spaces.set(spaceId, space);
  }
  return space;
}

function leaveCurrentSpace(socket) {
  const { spaceId, playerId } = socket.data;
  if (!spaceId || !playerId) return;
  const space = spaces.get(spaceId);
  if (space) {
    const player = space.players.get(playerId);
    space.players.delete(playerId);
    space.dirty.delete(playerId);
    if (space.batched.get(playerId) === socket) space.batched.delete(playerId);
    else if (player) space.plain -= 1;
    if (space.players.size === 0) {
      spaces.delete(spaceId);
      dirtySpaces.delete(spaceId);
    }
  }
  socket.to(spaceId).emit("player:left", { id: playerId });
  socket.leave(spaceId);
  socket.leave(batchRoom(spaceId));
  socket.leave(plainRoom(spaceId));
  socket.data.spaceId = undefined;
  socket.data.playerId = undefined;
}

io.on("connection", (socket) => {
  socket.on("join:space", (data) => {
    if (!data || typeof data.spaceId !== "string" || !data.spaceId) {
      socket.emit("error", { message: "Invalid payload", code: "INVALID_PAYLOAD" });
      return;
    }
    const { spaceId, nickname, avatarColor, avatarConfig, sessionToken } = data;
    if (sessionToken && !String(sessionToken).startsWith("dev-")) {
      socket.emit("error", { message: "Invalid session", code: "INVALID_SESSION" });
      socket.disconnect(true);
      return;
    }
    if (socket.data.spaceId) leaveCurrentSpace(socket);

    const playerId = data.playerId || `dev-anon-${socket.id}`;
    const batching = data.positionBatching === true;
    const player = {
      id: playerId,
      nickname: String(nickname || "Guest"),
      x: 480,
      y: 320,
      direction: "down",
      isMoving: false,
      avatarColor: avatarColor || "default",
      avatarConfig,
    };

    socket.data.spaceId = spaceId;
    socket.data.playerId = playerId;
    socket.data.player = player;
    const space = getSpace(spaceId);
    space.players.set(playerId, player);
    if (batching) space.batched.set(playerId, socket);
    else space.plain += 1;
    socket.join([spaceId, batching ? batchRoom(spaceId) : plainRoom(spaceId)]);

    socket.emit("room:joined", {
      spaceId,
      players: Array.from(space.players.values()),
      yourPlayerId: playerId,
      proximity: space.proximity,
    });
    socket.emit("proximity:status", { enabled: space.proximity });
    socket.to(spaceId).emit("player:joined", player);
  });

  socket.on("player:move", (data) => {
    const { spaceId, playerId, player } = socket.data;
    if (!spaceId || !playerId || !data || typeof data !== "object") return;
    const space = spaces.get(spaceId);
    if (!space) return;
    player.x = data.x;
    player.y = data.y;
    player.direction = data.direction;
    player.isMoving = data.isMoving;
    // The newest state only: a later move in the same tick replaces this one.
    space.dirty.set(playerId, {
      id: playerId,
      nickname: player.nickname,
      x: player.x,
      y: player.y,
      direction: player.direction,
      isMoving: player.isMoving,
      socketId: socket.id,
    });
    dirtySpaces.add(spaceId);
  });

  socket.on("leave:space", () => leaveCurrentSpace(socket));

  socket.on("disconnect", () => leaveCurrentSpace(socket));
});

function flushSpace(spaceId, space) {
  const dirty = space.dirty;
  if (dirty.size === 0) return;
  const entries = [];
  const moverSockets = [];
  for (const d of dirty.values()) {
    entries.push({
      id: d.id,
      nickname: d.nickname,
      x: d.x,
      y: d.y,
      direction: d.direction,
      isMoving: d.isMoving,
    });
    moverSockets.push(d.socketId);
  }
  dirty.clear();

  if (space.plain > 0) {
    const room = io.to(plainRoom(spaceId));
    for (let i = 0; i < entries.length; i++) {
      room.except(moverSockets[i]).emit("player:moved", entries[i]);
    }
  }

  if (space.batched.size > 0) {
    // One broadcast to every batched client, encoded once (each client skips its own entry).
    io.to(batchRoom(spaceId)).emit("players:moved", entries);
  }
}

setInterval(() => {
  if (dirtySpaces.size === 0) return;
  for (const spaceId of dirtySpaces) {
    const space = spaces.get(spaceId);
    if (space) flushSpace(spaceId, space);
  }
  dirtySpaces.clear();
}, TICK_MS);

httpServer.listen(PORT, HOST, () => {
  console.log(
    JSON.stringify({ level: "info", message: `careful peer listening on ${HOST}:${PORT}` }),
  );
});

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
