import { defineConfig } from "vitest/config";

// `npm run e2e`: the real engine against test hosts and OpenBao (test/e2e/README.md). Apart
// from the unit suites (vitest.config.ts): it needs root, `npm run engine` and minutes.
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.e2e.ts"],
    // One stack, one set of hosts: the steps run in order, in one process.
    pool: "forks",
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 15 * 60_000,
    hookTimeout: 10 * 60_000,
    reporters: ["default"],
  },
});
