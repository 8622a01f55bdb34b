import { defineConfig } from "vitest/config";

/**
 * The end-to-end and relay files that run against the self-hosted relay too: every one in
 * test/e2e and test/edge but those about Cloudflare itself, those with no relay in them, and
 * those that name their relay (the "selfhost" files below).
 */
const SHARED = ["test/e2e/**/*.test.ts", "test/edge/**/*.test.ts"];

/** Files about Cloudflare itself (workerd, wrangler), or with no relay: the Cloudflare project only. */
const CLOUDFLARE_ONLY = [
  "test/edge/deploy.test.ts", // wrangler deploy --dry-run
  "test/edge/expect-continue.test.ts", // workerd's HTTP server has no 100 Continue
  "test/edge/workerd-bad-frame.test.ts", // workerd's own WebSocket implementation
  "test/e2e/dev.test.ts", // npm run dev and npm run relay are wrangler dev
  "test/e2e/quickstart.test.ts", // the README's quick start runs npm run dev
  "test/edge/shards.test.ts", // runtime-free, no relay
  "test/edge/shares.test.ts", // runtime-free, no relay
  "test/e2e/cli.test.ts", // no relay
  "test/e2e/config-errors.test.ts", // no relay
  "test/e2e/tcp-cli.test.ts", // a stand-in relay, no relay
  "test/e2e/services.test.ts", // sshd and redis-server reached directly: no relay
  // The package and the executable: their agent against one relay is enough, and they run
  // `agent relay` themselves; packing twice would cost a minute for nothing.
  "test/e2e/package.test.ts",
  // The corporate networks with workerd outside (they need it serving TLS on a namespace's
  // address); corp-selfhost.test.ts has them with the self-hosted relay on Bun and on Deno.
  "test/e2e/corp.test.ts",
  "test/e2e/corp-network.test.ts", // the simulated networks themselves, checked with curl
  "test/e2e/corp-negotiate.test.ts",
  "test/e2e/corp-pac.test.ts",
  "test/e2e/corp-windows.test.ts",
];

/**
 * Files that start the self-hosted relay by name, on each runtime: the behaviour suites on Bun
 * and Deno (relay-on-*), the corporate networks, and the self-hosted relay's own files.
 */
const SELFHOST_ONLY = [
  "test/e2e/relay-selfhosted.test.ts",
  // Public TCP ports (--tcp-ports) exist on the self-hosted relay only: Cloudflare has no ports.
  "test/e2e/relay-selfhosted-tcp.test.ts",
  "test/e2e/relay-nginx.test.ts",
  "test/e2e/relay-on-*.test.ts",
  "test/e2e/corp-selfhost.test.ts",
];

export default defineConfig({
  test: {
    globalSetup: ["test/_executable-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 90_000,
    // Each end-to-end file starts its own relay (workerd) and agents; two at a time suits 2 cores.
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: "cloudflare", include: ["test/**/*.test.ts"], exclude: SELFHOST_ONLY },
      },
      {
        extends: true,
        test: {
          name: "selfhost",
          include: [...SHARED, ...SELFHOST_ONLY],
          exclude: CLOUDFLARE_ONLY,
          // test/_relay.ts: the Cloudflare relay the shared files ask for is `agent relay` on Node.
          env: { TEST_RELAY: "selfhost-node" },
        },
      },
    ],
  },
});
