// One nginx hop in front of the origin (Debian's nginx): keepalive to the origin, streaming both
// ways (no buffering), WebSocket upgrades passed. The floor any reverse proxy pays.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Child, freePort } from "../test/_process.ts";

export interface Nginx {
  port: number;
  stop(): Promise<void>;
}

export async function startNginx(originPort: number): Promise<Nginx | undefined> {
  try {
    execFileSync("nginx", ["-v"], { stdio: "ignore" });
  } catch {
    console.warn("nginx is not installed: the nginx column is left out (apt-get install -y nginx-light)");
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), "burrow-nginx-"));
  mkdirSync(join(dir, "logs"));
  const port = await freePort();
  writeFileSync(
    join(dir, "nginx.conf"),
    `user root;
worker_processes auto;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  upstream origin { server 127.0.0.1:${originPort}; keepalive 128; }
  map $http_upgrade $connection_upgrade { default upgrade; "" ""; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`,
  );
  const child = new Child("nginx", "nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"]);
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/small`);
      return { port, stop: async () => void (await child.stop("SIGQUIT")) };
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`nginx did not start:\n${child.output}`);
}
