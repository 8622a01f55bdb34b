import { gzipSync } from "node:zlib";
import { FrameType, type HeaderList } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { BODY_LIMIT, KeptBody, Recorder } from "../../agent/src/inspector/recorder.ts";
import { parseInspect, parseKeep } from "../../agent/src/inspector/server.ts";
import { bodyView, curl, har } from "../../agent/src/inspector/views.ts";

const head = (method: string, path: string, headers: HeaderList = []) => ({
  type: FrameType.RequestHead,
  stream: 1,
  method,
  path,
  headers,
});

function body(text: string | Uint8Array, limit = BODY_LIMIT): KeptBody {
  const kept = new KeptBody(limit);
  kept.add(typeof text === "string" ? new TextEncoder().encode(text) : text);
  return kept;
}

describe("the inspector's records", () => {
  it("copies a body up to its limit and counts the rest", () => {
    const kept = new KeptBody(10);
    const source = new Uint8Array(8).fill(1);
    kept.add(source);
    kept.add(new Uint8Array(8).fill(2));
    source.fill(9);
    expect(kept).toMatchObject({ size: 16, kept: 10, truncated: true });
    expect([...kept.bytes()]).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 2, 2]);
  });

  it("keeps the newest `keep` entries and tells listeners of each one evicted", async () => {
    const recorder = new Recorder("app", 2);
    const evicted: number[] = [];
    recorder.subscribe((change) => typeof change === "number" && evicted.push(change));
    for (const path of ["/1", "/2", "/3"]) recorder.exchange(head("GET", path));
    expect(recorder.list().map((entry) => entry.path)).toEqual(["/3", "/2"]);
    expect(evicted).toEqual([1]);
  });

  it("puts a visitor's WebSocket message together from its pieces", () => {
    const recorder = new Recorder("app", 5);
    const watch = recorder.socket(head("GET", "/ws"));
    watch.message("visitor", new TextEncoder().encode("hel"), false, false);
    watch.message("origin", new TextEncoder().encode("hi"), false, true);
    watch.message("visitor", new TextEncoder().encode("lo"), false, true);
    const messages = recorder.list()[0]!.messages!;
    expect(messages.map((m) => `${m.from}:${new TextDecoder().decode(m.body.bytes())}`)).toEqual(["visitor:hello", "origin:hi"]);
  });
});

describe("the inspector's views", () => {
  it("pretty-prints JSON, lists form fields, shows text, and hex-dumps binary", () => {
    expect(bodyView(body('{"a":[1]}'), [["content-type", "application/json"]])).toMatchObject({
      kind: "json",
      text: '{\n  "a": [\n    1\n  ]\n}',
    });
    expect(bodyView(body("a=1&b=x+y"), [["Content-Type", "application/x-www-form-urlencoded"]])).toMatchObject({
      kind: "form",
      text: "a = 1\nb = x y",
    });
    expect(bodyView(body("plain words\n"), [])).toMatchObject({ kind: "text", text: "plain words\n" });
    expect(bodyView(body(new Uint8Array([0, 65, 255])), [])).toMatchObject({
      kind: "binary",
      size: 3,
      text: `00000000  00 41 ff${" ".repeat(39)}  .A.`,
    });
    expect(bodyView(body(gzipSync('{"z":true}')), [["content-encoding", "gzip"]])).toMatchObject({
      kind: "json",
      decoded: "gzip",
    });
  });

  it("shows a truncated JSON body as text, not as broken JSON", () => {
    const view = bodyView(body(`{"long":"${"x".repeat(100)}"}`, 20), [["content-type", "application/json"]]);
    expect(view).toMatchObject({ kind: "text", truncated: true, kept: 20, size: 111 });
  });

  it("exports curl with shell quoting, against the visitor's URL", () => {
    const recorder = new Recorder("app", 5);
    const watch = recorder.exchange(
      head("PUT", "/a?b=1", [
        ["x-forwarded-host", "app.tunnel.example"],
        ["x-forwarded-proto", "https"],
        ["x-note", "it's"],
        ["content-length", "3"],
      ]),
    );
    watch.requestData(new TextEncoder().encode("a'b"));
    expect(curl(recorder.list()[0]!)).toBe(
      `curl -X 'PUT' 'https://app.tunnel.example/a?b=1' -H 'x-forwarded-host: app.tunnel.example' -H 'x-forwarded-proto: https' -H 'x-note: it'\\''s' --data-binary 'a'\\''b'`,
    );
  });

  it("exports HAR 1.2 with non-negative timings, even for a request still waiting", () => {
    const recorder = new Recorder("app", 5);
    recorder.exchange(head("GET", "/pending", [["host", "app.localhost"]]));
    const [entry] = har(recorder.list(), "1.0.0").log.entries;
    expect(entry!.request.url).toBe("http://app.localhost/pending");
    expect(Object.values(entry!.timings).every((ms) => ms >= 0)).toBe(true);
  });
});

describe("--inspect and --inspect-keep", () => {
  it.each([
    ["false", undefined],
    ["4041", { host: "127.0.0.1", port: 4041, chosen: true }],
    ["0.0.0.0:4040", { host: "0.0.0.0", port: 4040, chosen: true }],
    ["[::1]:4040", { host: "::1", port: 4040, chosen: true }],
    ["localhost:80", { host: "localhost", port: 80, chosen: true }],
  ])("reads %s", (text, address) => {
    expect(parseInspect(text)).toEqual(address);
  });

  it("defaults to 127.0.0.1:4040, and refuses what is not an address", () => {
    expect(parseInspect(undefined)).toEqual({ host: "127.0.0.1", port: 4040, chosen: false });
    for (const bad of ["yes", "0", "70000", "example.com:4040", "1.2.3.4:", ":4040"]) {
      expect(() => parseInspect(bad)).toThrow("is not an address to listen on");
    }
    expect(parseKeep("5")).toBe(5);
    expect(() => parseKeep("0")).toThrow("--inspect-keep 0 is out of range");
  });
});
