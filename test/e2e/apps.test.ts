import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Server } from "socket.io";
import { io } from "socket.io-client";
import { createServer, type ViteDevServer } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Relay } from "../_relay.ts";
import { visit } from "../_visit.ts";

/** The tunnel URL as something to dial: 127.0.0.1 with the tunnel's Host (Node does not resolve *.localhost). */
function dial(url: string): { href: string; host: string } {
  const target = new URL(url);
  const host = target.host;
  target.hostname = "127.0.0.1";
  return { href: target.href, host };
}

describe("real apps through a tunnel (Node agent)", () => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start();
  }, 90_000);

  afterAll(async () => {
    await relay?.dispose();
  });

  describe("Vite's dev server", () => {
    let vite: ViteDevServer;
    let agent: AgentProcess;
    const root = mkdtempSync(join(tmpdir(), "burrow-vite-"));

    beforeAll(async () => {
      writeFileSync(join(root, "index.html"), '<!doctype html><script type="module" src="/main.js"></script><h1>hello</h1>\n');
      writeFileSync(join(root, "main.js"), 'document.querySelector("h1").textContent = "one";\n');
      vite = await createServer({ root, configFile: false, logLevel: "silent", server: { host: "127.0.0.1", port: 0 } });
      await vite.listen();
      const port = (vite.httpServer!.address() as AddressInfo).port;
      agent = await AgentProcess.start("node", tunnelArgs(port, relay, "vite-app"));
    }, 60_000);

    afterAll(async () => {
      await agent?.stop("SIGINT");
      await vite?.close();
      rmSync(root, { recursive: true, force: true });
    });

    it("serves the page, and pushes a reload over HMR's WebSocket when a file changes", async () => {
      const page = await visit(`${agent.url}/`);
      expect(page.status).toBe(200);
      expect(page.body.toString()).toContain("/@vite/client");
      expect((await visit(`${agent.url}/main.js`)).status).toBe(200);
      // As the browser does: the client script names the token the socket must present.
      const client = (await visit(`${agent.url}/@vite/client`)).body.toString();
      const token = /const wsToken = "([^"]+)"/.exec(client)?.[1];
      expect(token).toBeTruthy();
      const { href, host } = dial(`${agent.url.replace(/^http/, "ws")}/?token=${token}`);
      const ws = new WebSocket(href, "vite-hmr", { headers: { host } });
      const messages: { type: string }[] = [];
      const seen = (type: string) =>
        new Promise<void>((resolve, reject) => {
          const check = () => messages.some((m) => m.type === type) && resolve();
          ws.on("message", (data) => {
            messages.push(JSON.parse(data.toString()));
            check();
          });
          ws.on("close", (code) => reject(new Error(`HMR socket closed with ${code}`)));
          check();
        });
      await seen("connected");
      expect(ws.protocol).toBe("vite-hmr");
      writeFileSync(join(root, "main.js"), 'document.querySelector("h1").textContent = "two";\n');
      await Promise.race([seen("full-reload"), seen("update")]);
      ws.close();
    });
  });

  describe("socket.io", () => {
    let server: http.Server;
    let agent: AgentProcess;

    beforeAll(async () => {
      server = http.createServer();
      const sockets = new Server(server);
      sockets.on("connection", (socket) => {
        socket.on("ping", (text: string, answer: (reply: string) => void) => answer(`pong: ${text}`));
        socket.emit("hello", socket.conn.transport.name);
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as AddressInfo).port;
      agent = await AgentProcess.start("node", tunnelArgs(port, relay, "socketio-app"));
    }, 60_000);

    afterAll(async () => {
      await agent?.stop("SIGINT");
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
    });

    it.each([
      // By path: the XHR polyfill socket.io uses in Node cannot set a Host header.
      ["long-polling, then the upgrade to a WebSocket, by path", ["polling", "websocket"]],
      ["a WebSocket from the start, by subdomain", ["websocket"]],
    ])("connects with %s and exchanges events", async (_, transports) => {
      const byPath = transports.includes("polling");
      const { href, host } = byPath
        ? { href: `http://127.0.0.1:${relay.port}`, host: `127.0.0.1:${relay.port}` }
        : dial(agent.url);
      const socket = io(href, {
        transports,
        path: byPath ? "/t/socketio-app/socket.io/" : "/socket.io/",
        extraHeaders: { host },
        reconnection: false,
        forceNew: true,
      });
      try {
        await new Promise<void>((resolve, reject) => {
          socket.once("hello", () => resolve());
          socket.once("connect_error", reject);
        });
        const reply = await socket.timeout(10_000).emitWithAck("ping", "through the tunnel");
        expect(reply).toBe("pong: through the tunnel");
        if (transports.includes("polling")) {
          await new Promise<void>((resolve) => {
            if (socket.io.engine.transport.name === "websocket") resolve();
            else socket.io.engine.once("upgrade", () => resolve());
          });
        }
        expect(socket.io.engine.transport.name).toBe("websocket");
      } finally {
        socket.disconnect();
      }
    });
  });
});
