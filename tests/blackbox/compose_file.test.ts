/**
 * compose.yaml and docker/Dockerfile, checked without a Docker engine: the
 * compose file against the node's own flags (NODE_FLAGS, parseNodeConfig)
 * and the partition layout the local cluster uses (ringLayout); the
 * Dockerfile's stages, user, entry point and healthcheck against the repo,
 * the build output and .dockerignore. The healthcheck command itself runs
 * against a real node.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import fs from "node:fs";
import path from "node:path";
import { builtinModules } from "node:module";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { parse } from "yaml";
import { NODE_FLAGS, parseNodeConfig } from "../../src/cli/config.ts";
import { ringLayout } from "../../src/node/local_cluster.ts";
import { startNode } from "../support/node_process.ts";

/** The repository root: the first directory above this (compiled) file holding compose.yaml and package.json. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, "compose.yaml")) && fs.existsSync(path.join(dir, "package.json"))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("no repository root (compose.yaml + package.json) above this test");
    dir = parent;
  }
}

const ROOT = repoRoot();
const IMAGE = "node:20-bookworm-slim";
const NODE_PORT = 9001;

// ---------------------------------------------------------------------------
// compose.yaml
// ---------------------------------------------------------------------------

interface Service {
  image?: string;
  build?: { context?: string; dockerfile?: string } | string;
  environment?: Record<string, string | number | boolean> | string[];
  ports?: Array<string | { target: number; published: string | number }>;
  volumes?: Array<string | { type?: string; source?: string; target: string }>;
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: { test?: string | string[]; interval?: string; retries?: number };
  restart?: string;
}

const composeText = fs.readFileSync(path.join(ROOT, "compose.yaml"), "utf8");
// merge: true resolves `<<: *anchor` the way docker compose does.
const compose = parse(composeText, { merge: true }) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const services = compose.services;
const nodeNames = Object.keys(services).filter((name) => services[name].build !== undefined);
const layout = ringLayout(nodeNames, nodeNames.length, 3);

/** A service's environment as a map (compose allows a list of NAME=value too). */
function env(service: Service): Record<string, string> {
  const out: Record<string, string> = {};
  const raw = service.environment ?? {};
  if (Array.isArray(raw)) {
    for (const item of raw) {
      const eq = item.indexOf("=");
      out[eq < 0 ? item : item.slice(0, eq)] = eq < 0 ? "" : item.slice(eq + 1);
    }
  } else {
    for (const [name, value] of Object.entries(raw)) out[name] = String(value);
  }
  return out;
}

/** `${NAME:-default}` as compose interpolates it with NAME unset. */
function interpolateUnset(value: string): string {
  return value.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}/g, "$1");
}

test("ZooKeeper: the official 3.8 image, a healthcheck that asks ruok, 4lw commands allowed, short ticks", () => {
  const zk = services.zookeeper;
  assert.ok(zk, "a zookeeper service");
  assert.is(zk.image, "zookeeper:3.8");
  const check = zk.healthcheck?.test;
  assert.ok(check !== undefined && check.length > 0, "zookeeper has a healthcheck");
  const text = Array.isArray(check) ? check.join(" ") : check;
  assert.match(text, /ruok/);
  assert.match(text, /imok/);
  const zkEnv = env(zk);
  assert.ok(zkEnv.ZOO_4LW_COMMANDS_WHITELIST.split(",").includes("ruok"), "ruok is whitelisted, or the healthcheck can never pass");
  // ZooKeeper grants sessions of 2..20 ticks: the nodes' default 2000 ms session must fit.
  const tick = Number(zkEnv.ZOO_TICK_TIME);
  const session = Number(NODE_FLAGS["session-timeout"].default);
  assert.ok(tick * 2 <= session && session <= tick * 20, `tickTime ${tick} grants sessions of ${tick * 2}-${tick * 20} ms; the nodes ask for ${session}`);
});

test("five node services, all built from docker/Dockerfile at the repo root", () => {
  assert.equal(nodeNames, ["n1", "n2", "n3", "n4", "n5"]);
  for (const name of nodeNames) {
    const build = services[name].build;
    assert.ok(typeof build === "object", `${name}: build has a context and a dockerfile`);
    assert.is(path.resolve(ROOT, build.context ?? "."), ROOT, `${name}: the build context is the repo root`);
    assert.ok(fs.existsSync(path.join(ROOT, build.context ?? ".", build.dockerfile ?? "Dockerfile")), `${name}: its Dockerfile exists`);
    assert.is(build.dockerfile, "docker/Dockerfile");
  }
  assert.match(composeText, /^x-ringkv-node: &ringkv-node$/m, "one shared node definition (an extension field with an anchor)");
});

test("every node variable is one of the node's flags (NODE_FLAGS), and each node's config parses", () => {
  const known = new Set(Object.values(NODE_FLAGS).map((flag) => flag.env));
  const required = ["id", "host", "port", "advertise", "partitions", "zk", "data-dir", "expect-nodes", "secret"].map((f) => NODE_FLAGS[f].env);
  for (const name of nodeNames) {
    const vars = env(services[name]);
    for (const variable of Object.keys(vars)) assert.ok(known.has(variable), `${name}: ${variable} is not a variable of NODE_FLAGS (src/cli/config.ts)`);
    for (const variable of required) assert.ok(variable in vars, `${name}: sets ${variable}`);
    // What the node itself makes of it: the same parser `ringkv node` runs in the container.
    const resolved = Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, interpolateUnset(v)]));
    const config = parseNodeConfig([], resolved);
    assert.is(config.id, name, "RINGKV_ID is the service name (the drill's docker compose stop <id> relies on it)");
    assert.is(config.host, "0.0.0.0");
    assert.is(config.port, NODE_PORT);
    assert.is(config.advertise, `${name}:${NODE_PORT}`, "peers reach the node by its service name");
    assert.is(config.zk, "zookeeper:2181");
    assert.is(config.dataDir, "/data");
    assert.is(config.expectNodes, nodeNames.length);
    assert.is(config.defaultSecret, false, "the secret is set, not the built-in development one");
  }
  const shared = Object.keys(env(services.n1)).sort();
  for (const name of nodeNames) assert.equal(Object.keys(env(services[name])).sort(), shared, `${name} sets the same variables as n1`);
});

test("the secret comes from the environment, with a placeholder fallback", () => {
  for (const name of nodeNames) assert.is(env(services[name]).RINGKV_SECRET, "${RINGKV_SECRET:-change-me}");
});

test("partitions are exactly ringLayout's: 3 replicas each, any single node may die", () => {
  const held: Record<string, string[]> = {};
  for (const name of nodeNames) {
    const listed = env(services[name]).RINGKV_PARTITIONS.split(",");
    const expected = Object.entries(layout).filter(([, members]) => members.includes(name)).map(([p]) => p);
    assert.equal(listed, expected, `${name} replicates what ringLayout gives it`);
    for (const p of listed) (held[p] ??= []).push(name);
  }
  assert.equal(Object.keys(held).sort(), Object.keys(layout).sort(), "every partition is held");
  for (const [p, members] of Object.entries(held)) {
    assert.is(new Set(members).size, 3, `${p} has 3 distinct replicas`);
    for (const dead of nodeNames) {
      const alive = members.filter((m) => m !== dead).length;
      assert.ok(alive * 2 > members.length, `without ${dead}, ${p} keeps a majority (${alive} of ${members.length})`);
    }
  }
});

test("ports: 9001-9005 on the host, each to the node's port in its container", () => {
  const published: number[] = [];
  for (const name of nodeNames) {
    const ports = services[name].ports ?? [];
    assert.is(ports.length, 1, `${name} publishes one port`);
    const spec = ports[0];
    const [host, container] = typeof spec === "string" ? spec.split(":").slice(-2).map(Number) : [Number(spec.published), spec.target];
    assert.is(container, Number(env(services[name]).RINGKV_PORT), `${name}: the container side is RINGKV_PORT`);
    published.push(host);
  }
  assert.equal(published, [9001, 9002, 9003, 9004, 9005]);
  assert.is(new Set(published).size, published.length, "host ports are unique");
});

test("volumes: one named volume per node at RINGKV_DATA_DIR, all declared", () => {
  const declared = Object.keys(compose.volumes ?? {});
  const used = new Set<string>();
  for (const name of nodeNames) {
    const volumes = services[name].volumes ?? [];
    const data = volumes.map((v) => typeof v === "string" ? { source: v.split(":")[0], target: v.split(":")[1] } : v)
      .filter((v) => v.target === env(services[name]).RINGKV_DATA_DIR);
    assert.is(data.length, 1, `${name} mounts a volume at its data dir`);
    const source = data[0].source ?? "";
    assert.ok(declared.includes(source), `${name}: volume ${source} is declared under volumes:`);
    assert.not.ok(used.has(source), `${name}: volume ${source} is not shared with another node`);
    used.add(source);
  }
});

test("nodes wait for a healthy ZooKeeper and restart unless stopped", () => {
  for (const name of nodeNames) {
    const deps = services[name].depends_on;
    assert.ok(deps !== undefined && !Array.isArray(deps), `${name}: depends_on with conditions`);
    assert.is(deps.zookeeper?.condition, "service_healthy");
    assert.is(services[name].restart, "unless-stopped");
  }
});

// ---------------------------------------------------------------------------
// docker/Dockerfile
// ---------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

/** Instructions with line continuations joined and comments dropped; `stage` counts FROMs from 0. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue; // a comment inside a continued instruction
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    const full = (pending + line).trim();
    pending = "";
    const space = full.search(/\s/);
    const op = full.slice(0, space).toUpperCase();
    if (op === "FROM") stage++;
    out.push({ op, args: full.slice(space + 1).trim(), stage });
  }
  assert.is(pending, "", "no dangling line continuation");
  return out;
}

const dockerfileText = fs.readFileSync(path.join(ROOT, "docker", "Dockerfile"), "utf8");
const instructions = parseDockerfile(dockerfileText);
const lastStage = Math.max(...instructions.map((i) => i.stage));
const runtime = instructions.filter((i) => i.stage === lastStage);

/** Exec-form arguments (JSON array) of an instruction, after its --options. */
function execForm(args: string): string[] {
  const json = args.replace(/^(--\S+\s+)*/, "").replace(/^CMD\s+/, "");
  assert.ok(json.startsWith("["), `exec form (a JSON array), got: ${json.slice(0, 60)}`);
  return JSON.parse(json) as string[];
}

test("Dockerfile: a build stage on node:20-bookworm-slim that runs npm ci and tsc, then a runtime stage", () => {
  const froms = instructions.filter((i) => i.op === "FROM");
  assert.is(froms.length, 2, "two stages");
  assert.match(froms[0].args, new RegExp(`^${IMAGE.replace(/[.]/g, "\\.")} AS build$`, "i"));
  assert.is(froms[1].args.split(/\s+/)[0], IMAGE);
  const buildRuns = instructions.filter((i) => i.stage === 0 && i.op === "RUN").map((i) => i.args);
  assert.ok(buildRuns.some((r) => /\bnpm ci\b/.test(r)), "the build stage installs with npm ci");
  assert.ok(buildRuns.some((r) => /\btsc\b/.test(r)), "the build stage compiles with tsc");
  const runtimeRuns = runtime.filter((i) => i.op === "RUN").map((i) => i.args);
  const install = runtimeRuns.find((r) => /\bnpm ci\b/.test(r));
  assert.ok(install !== undefined && /--omit=dev/.test(install), "the runtime stage installs production dependencies only");
  // package.json's "prepare" runs tsc, which --omit=dev does not install: the scripts must not run.
  assert.match(install!, /--ignore-scripts/);
  const fromBuild = runtime.filter((i) => i.op === "COPY" && /--from=build\b/.test(i.args));
  assert.ok(fromBuild.some((i) => /\/app\/dist\/?\s+\.\/dist\/?$/.test(i.args)), "the runtime copies the compiled dist/ from the build stage");
  assert.ok(runtime.some((i) => i.op === "COPY" && /package-lock\.json|package\*\.json/.test(i.args)), "npm ci needs package-lock.json");
});

test("Dockerfile: the runtime runs as a non-root user, exposes 9001, keeps /data in a volume", () => {
  const users = runtime.filter((i) => i.op === "USER");
  assert.ok(users.length > 0, "a USER in the runtime stage");
  const user = users[users.length - 1].args.split(":")[0];
  assert.not.ok(user === "root" || user === "0", `runs as ${user}, not root`);
  assert.ok(runtime.some((i) => i.op === "EXPOSE" && i.args.split(/\s+/).includes(String(NODE_PORT))));
  assert.ok(runtime.some((i) => i.op === "VOLUME" && /\/data\b/.test(i.args)));
  assert.ok(runtime.some((i) => i.op === "RUN" && /chown\s+node:node\s+\/data/.test(i.args)), "the non-root user owns /data");
});

test("Dockerfile: ENTRYPOINT is the compiled CLI, CMD runs a node", () => {
  const entry = execForm(runtime.find((i) => i.op === "ENTRYPOINT")!.args);
  assert.equal(entry, ["node", "dist/src/cli/main.js"]);
  assert.equal(execForm(runtime.find((i) => i.op === "CMD")!.args), ["node"]);
  // The entry point is where tsc puts src/cli/main.ts, by tsconfig.json's outDir and rootDir.
  const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, "tsconfig.json"), "utf8")) as { compilerOptions: { outDir: string; rootDir: string } };
  const compiled = path.join(tsconfig.compilerOptions.outDir, path.relative(tsconfig.compilerOptions.rootDir, "src/cli/main.ts")).replace(/\.ts$/, ".js");
  assert.is(compiled, entry[1]);
  assert.ok(fs.existsSync(path.join(ROOT, "src", "cli", "main.ts")));
  // And this build (the one running this test) has it, next to this file's own tests/ folder.
  assert.ok(fs.existsSync(fileURLToPath(new URL("../../src/cli/main.js", import.meta.url))), "the compiled CLI exists in this build");
  assert.ok(fs.existsSync(path.join(ROOT, "package.json")), "version.ts reads ../../../package.json from dist/src/cli");
});

/** Docker's .dockerignore semantics: last matching line wins; a pattern matching a parent directory matches its files. */
function dockerIgnored(relPath: string, patterns: string[]): boolean {
  let ignored = false;
  const parts = relPath.split("/");
  for (const rawPattern of patterns) {
    const negate = rawPattern.startsWith("!");
    const pattern = (negate ? rawPattern.slice(1) : rawPattern).replace(/^\/+|\/+$/g, "");
    const regex = new RegExp("^" + pattern.split("**").map((piece) => piece.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]")).join(".*") + "$");
    for (let i = 1; i <= parts.length; i++) {
      if (regex.test(parts.slice(0, i).join("/"))) {
        ignored = !negate;
        break;
      }
    }
  }
  return ignored;
}

test("Dockerfile: every file it COPYs from the context exists and is not excluded by .dockerignore", () => {
  const ignore = fs.readFileSync(path.join(ROOT, ".dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  const copies = instructions.filter((i) => i.op === "COPY" && !/--from=/.test(i.args));
  assert.ok(copies.length >= 3);
  for (const copy of copies) {
    const words = copy.args.replace(/^(--\S+\s+)*/, "").split(/\s+/);
    for (const source of words.slice(0, -1)) {
      const matches = source.includes("*")
        ? fs.readdirSync(path.join(ROOT, path.dirname(source))).filter((f) => new RegExp("^" + path.basename(source).replace(/[.]/g, "\\.").replace(/\*/g, ".*") + "$").test(f))
        : fs.existsSync(path.join(ROOT, source)) ? [source] : [];
      assert.ok(matches.length > 0, `COPY ${source}: exists in the repo`);
      for (const match of matches) {
        const rel = path.join(path.dirname(source), path.basename(match)).replace(/^\.\//, "");
        assert.not.ok(dockerIgnored(rel, ignore), `COPY ${rel}: not excluded by .dockerignore`);
      }
    }
  }
  // The sources tsc compiles in the image are in the context; what must stay out stays out.
  assert.not.ok(dockerIgnored("src/cli/main.ts", ignore));
  for (const secret of ["node_modules/yaml/package.json", "dist/src/cli/main.js", ".git/HEAD", ".env", "data/n1/LOCK"]) {
    assert.ok(dockerIgnored(secret, ignore), `${secret} is not sent to the builder`);
  }
});

test("Dockerfile: the runtime code imports only production dependencies (it runs after npm ci --omit=dev)", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
  const production = new Set(Object.keys(pkg.dependencies ?? {}));
  // Every module reachable from src/ by relative imports (src/cli/sim.ts reaches into tests/).
  const pending = listTs(path.join(ROOT, "src"));
  const seen = new Set<string>();
  const bad: string[] = [];
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = fs.readFileSync(file, "utf8");
    for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^"';]*?from\s+"([^"]+)"|import\(\s*"([^"]+)"\s*\)/g)) {
      const specifier = match[1] ?? match[2];
      if (specifier.startsWith(".")) {
        const target = path.resolve(path.dirname(file), specifier);
        if (fs.existsSync(target)) pending.push(target);
        continue;
      }
      if (specifier.startsWith("node:") || builtinModules.includes(specifier)) continue;
      const name = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0];
      // Type-only imports vanish from the compiled code.
      if (new RegExp(`import\\s+type\\s[^;]*"${specifier.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}"`).test(text)) continue;
      if (!production.has(name)) bad.push(`${path.relative(ROOT, file)} imports ${specifier}`);
    }
  }
  assert.ok(seen.size > 10, "walked the source tree");
  assert.equal(bad, [], "a devDependency imported at run time would be missing from the image");
});

/** Every .ts file under `dir`. */
function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listTs(full));
    else if (entry.name.endsWith(".ts")) out.push(full);
  }
  return out;
}

test("Dockerfile: the HEALTHCHECK one-liner passes against a live node and fails against a closed port", async () => {
  const health = runtime.find((i) => i.op === "HEALTHCHECK");
  assert.ok(health, "a HEALTHCHECK in the runtime stage");
  const argv = execForm(health.args.replace(/^(--\S+\s+)*/, "").replace(/^CMD\s+/, ""));
  assert.is(argv[0], "node", "it needs nothing but node");
  assert.match(argv.join(" "), /PING/);
  assert.match(argv.join(" "), /PONG/);
  const node = await startNode();
  try {
    // Run as the image would: RINGKV_HOST=0.0.0.0 and the node's port.
    const ok = await execa(process.execPath, argv.slice(1), { reject: false, timeout: 10_000, env: { RINGKV_HOST: "0.0.0.0", RINGKV_PORT: String(node.port) } });
    assert.is(ok.exitCode, 0, `healthy node: ${ok.stderr}`);
  } finally {
    await node.stop();
  }
  const down = await execa(process.execPath, argv.slice(1), { reject: false, timeout: 10_000, env: { RINGKV_HOST: "0.0.0.0", RINGKV_PORT: String(node.port) } });
  assert.is(down.exitCode, 1, "a stopped node is unhealthy");
});

test.run();
