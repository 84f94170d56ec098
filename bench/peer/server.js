"use strict";

// Benchmark peer: a plain Socket.IO 4.8 server written the way the product's original
// TypeScript server is written. Rooms live in a Map (spaceId -> Map of players) and every
// `player:move` becomes one `socket.to(spaceId).emit("player:moved", ...)`.
// Development-mode behaviour only: `dev-*` session tokens are accepted without verification.

const http = require("http");
const { Server } = require("socket.io");

const PORT = Number.parseInt(process.env.PORT || process.env.SOCKET_PORT || "3001", 10);
const HOST = process.env.HOST || "0.0.0.0";
const startedAt = Date.now();

/** @type {Map<string, Map<string, {id: string, nickname: string, x: number, y: number,
 *   direction: string, isMoving: boolean, avatarColor: string, avatarConfig?: object}>>} */
const rooms = new Map();
const proximityBySpace = new Map();

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
});

function getRoom(spaceId) {
  let room = rooms.get(spaceId);
  if (!room) {
    room = new Map();
    rooms.set(spaceId, room);
  }
  return room;
}

function leaveCurrentSpace(socket) {
  const { spaceId, playerId } = socket.data;
  if (!spaceId || !playerId) return;
  const room = rooms.get(spaceId);
  if (room) {
    room.delete(playerId);
    if (room.size === 0) rooms.delete(spaceId);
  }
  socket.to(spaceId).emit("player:left", { id: playerId });
  socket.leave(spaceId);
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
    socket.join(spaceId);
    const room = getRoom(spaceId);
    room.set(playerId, player);

    const proximity = proximityBySpace.get(spaceId) === true;
    socket.emit("room:joined", {
      spaceId,
      players: Array.from(room.values()),
      yourPlayerId: playerId,
      proximity,
    });
    socket.emit("proximity:status", { enabled: proximity });
    socket.to(spaceId).emit("player:joined", player);
  });

  socket.on("player:move", (data) => {
    const { spaceId, playerId } = socket.data;
    if (!spaceId || !playerId || !data) return;
    const player = rooms.get(spaceId)?.get(playerId);
    if (!player) return;
    player.x = data.x;
    player.y = data.y;
    player.direction = data.direction;
    player.isMoving = data.isMoving;
    socket.to(spaceId).emit("player:moved", {
      id: playerId,
      nickname: player.nickname,
      x: player.x,
      y: player.y,
      direction: player.direction,
      isMoving: player.isMoving,
    });
  });

  socket.on("leave:space", () => leaveCurrentSpace(socket));

  socket.on("disconnect", () => leaveCurrentSpace(socket));
});

httpServer.listen(PORT, HOST, () => {
  console.log(JSON.stringify({ level: "info", message: `peer listening on ${HOST}:${PORT}` }));
});

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
