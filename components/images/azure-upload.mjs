#!/usr/bin/env node
// Uploads a fixed VHD to a managed disk's upload SAS as pages: `node azure-upload.mjs FILE`, the
// SAS URL on standard input (AZURE_UPLOAD_SCRIPT pipes it from `az disk grant-access`), so the
// credential is never an argument or in an environment, where every local user could read it
// (/proc/<pid>/cmdline, and azcopy takes a SAS only as an argument).
//
// What azcopy did for such a disk, kept: the disk's size must equal the file's; 512-byte pages;
// at most 4 MiB per Put Page; ranges that are all zeros are not sent (the disk reads zeros where
// nothing was written), except where the disk already holds data (an earlier attempt), which is
// overwritten; requests in parallel, bounded; the SDK's retry policy. Progress goes to stderr in
// 10% steps, a failure is one line `FILE: what went wrong` (never the URL), exit 1.
// Plain Node (no TypeScript) so the deploy's node runs it as it is, from the project directory.
import * as fs from "node:fs/promises";

const PAGE = 512;
/** Put Page takes at most 4 MiB (docs/upstream.md). Reads are this size, aligned to it. */
const MAX_PUT = 4 * 1024 * 1024;
/** Requests in flight at once: holds at most PARALLEL + 1 chunks in memory. */
const PARALLEL = 8;
/** Zero gaps shorter than this inside a chunk are sent with the data around them: fewer requests. */
const MERGE_GAP = 64 * 1024;
/** One try of one request; the SDK retries timeouts, 500, 503 and network errors. */
const TRY_TIMEOUT_MS = 5 * 60_000;
const MAX_TRIES = 8;

const file = process.argv[2] ?? "azure-upload";
let sas = "";

/** One line, without the SAS URL, its query or any other URL. */
function describe(err) {
  const status = err?.statusCode ? `${err.statusCode} ` : "";
  // A HEAD (Get Blob Properties) has no body: the service's error code comes in a header only.
  const errorCode = err?.details?.errorCode ?? err?.code;
  const code = errorCode && !String(err.message ?? "").includes(errorCode) ? `${errorCode}: ` : "";
  let text = String(err?.message ?? err).split("\n")[0].trim();
  if (sas) text = text.split(sas).join("<SAS URL>");
  const query = sas.includes("?") ? sas.slice(sas.indexOf("?") + 1) : "";
  if (query) text = text.split(query).join("<SAS>");
  text = text.replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, "<URL>").replace(/\bsig=[^&\s]+/gi, "sig=<redacted>");
  return `${status}${code}${text}`.trim().replace(/:$/, "");
}

function fail(message) {
  process.stderr.write(`${file}: ${message}\n`);
  process.exit(1);
}

function progress(message) {
  process.stderr.write(`${file}: ${message}\n`);
}

const mib = (n) => (n / (1024 * 1024)).toFixed(1);

async function readSas() {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return Buffer.concat(parts).toString("utf8").trim();
}

/** https only; http only to loopback (the emulator in tests): a SAS is a bearer credential. */
function checkSas(text) {
  if (!text) fail("no SAS URL on standard input");
  if (/\s/.test(text)) fail("standard input holds more than one line: expected one SAS URL");
  let url;
  try {
    url = new URL(text);
  } catch {
    fail("standard input is not a URL");
  }
  const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) fail(`the SAS URL must be https (got ${url.protocol})`);
  if (!url.searchParams.get("sig")) fail("the URL on standard input carries no SAS signature (sig)");
}

/** Page-aligned [start, end) ranges of `buf` to send: pages with data, or where the disk has data. */
function rangesToSend(buf, base, existing) {
  const zero = Buffer.alloc(PAGE);
  const pages = [];
  for (let at = 0; at < buf.length; at += PAGE) {
    const end = at + PAGE; // buf.length is a multiple of PAGE: the file's size is
    const hasData = !buf.subarray(at, end).equals(zero);
    const overDisk = existing.some(([s, e]) => s < base + end && base + at < e);
    if (hasData || overDisk) pages.push([at, end]);
  }
  const ranges = [];
  for (const [s, e] of pages) {
    const last = ranges.at(-1);
    if (last && s - last[1] < MERGE_GAP) last[1] = e;
    else ranges.push([s, e]);
  }
  return ranges;
}

async function main() {
  process.on("SIGTERM", () => fail("stopped (SIGTERM): the upload did not finish within its timeout"));
  if (!process.argv[2] || process.argv.length > 3) {
    process.stderr.write("usage: node azure-upload.mjs FILE < SAS-URL\n");
    process.exit(2);
  }
  let handle;
  try {
    handle = await fs.open(file, "r");
  } catch (err) {
    fail(`cannot open: ${err.code ?? describe(err)}`);
  }
  const size = (await handle.stat()).size;
  if (size === 0 || size % PAGE !== 0) fail(`size ${size} is not a positive multiple of ${PAGE} bytes (a fixed VHD is)`);

  sas = await readSas();
  checkSas(sas);
  // The SDK's logger reads AZURE_LOG_LEVEL when it loads: no request logging from here.
  delete process.env.AZURE_LOG_LEVEL;
  const { AnonymousCredential, PageBlobClient } = await import("@azure/storage-blob");
  const client = new PageBlobClient(sas, new AnonymousCredential(), {
    retryOptions: { maxTries: MAX_TRIES, tryTimeoutInMs: TRY_TIMEOUT_MS },
  });
  const abort = new AbortController();
  const abortSignal = abort.signal;

  let diskSize;
  try {
    diskSize = (await client.getProperties({ abortSignal })).contentLength;
  } catch (err) {
    fail(`reading the disk's size failed: ${describe(err)}`);
  }
  if (diskSize !== size) fail(`the disk holds ${diskSize} bytes, the file ${size}: the disk must be created with exactly the file's size`);

  /** [start, end) ranges that already hold data on the disk (empty on a new upload disk). */
  const existing = [];
  try {
    for await (const page of client.listPageRanges(0, size, { abortSignal }).byPage()) {
      for (const r of page.pageRange ?? []) existing.push([r.start, r.end + 1]);
    }
  } catch (err) {
    fail(`reading the disk's page ranges failed: ${describe(err)}`);
  }

  progress(`uploading ${mib(size)} MiB as pages (all-zero ranges skipped, ${PARALLEL} requests at a time)`);
  const inFlight = new Set();
  let firstError;
  let written = 0;
  let requests = 0;
  let nextStep = 10;
  const send = (buf, offset) => {
    const p = client.uploadPages(buf, offset, buf.length, { abortSignal })
      .then(() => { written += buf.length; requests += 1; })
      .catch((err) => {
        if (!firstError) firstError = `Put Page of ${buf.length} bytes at offset ${offset} failed: ${describe(err)}`;
        abort.abort();
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };
  for (let base = 0; base < size && !firstError; base += MAX_PUT) {
    const buf = Buffer.alloc(Math.min(MAX_PUT, size - base));
    const { bytesRead } = await handle.read(buf, 0, buf.length, base);
    if (bytesRead !== buf.length) fail(`short read at offset ${base}: the file changed during the upload`);
    for (const [s, e] of rangesToSend(buf, base, existing)) {
      while (inFlight.size >= PARALLEL) await Promise.race(inFlight);
      if (firstError) break;
      send(buf.subarray(s, e), base + s);
    }
    const done = Math.floor(((base + buf.length) / size) * 100);
    if (done >= nextStep && done < 100) {
      progress(`${done}% read, ${mib(written)} MiB written`);
      nextStep = Math.floor(done / 10) * 10 + 10;
    }
  }
  await Promise.all(inFlight);
  await handle.close();
  if (firstError) fail(firstError);
  progress(`uploaded: ${mib(written)} MiB written in ${requests} Put Page requests, ${mib(size - written)} MiB of zeros skipped`);
}

main().catch((err) => fail(describe(err)));
