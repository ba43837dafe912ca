// Proves the engine harness against @pulumi/pulumi's real dynamic-provider
// server, using a self-contained fixture provider (no code from our package).

import * as assert from "node:assert/strict";
import * as childProcess from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import {
    DYNAMIC_TYPE,
    EngineHarness,
    PACKAGE_ROOT,
    PROVIDER_KEY,
    ProviderCallError,
    UNKNOWN,
    dynamicType,
    secret,
    serializeProvider,
} from "./harness/engine";
import { EchoOutputs, bareProvider, echoProvider, resolverProvider } from "./fixtures/echo-provider";

const CONFIG = { "libvirt-snapshots:host": "qemu.example", "snapshots-test:region": "eu-west" };

function tmpDir(): string {
    return fs.mkdtempSync(path.join(os.tmpdir(), "engine-harness-"));
}

async function rejects(p: Promise<unknown>): Promise<ProviderCallError> {
    try {
        await p;
    } catch (e) {
        assert.ok(e instanceof ProviderCallError, `expected ProviderCallError, got ${String(e)}`);
        return e;
    }
    assert.fail("expected the call to fail");
}

describe("engine harness", function () {
    let dir: string;
    let h: EngineHarness;
    let providerText: string;
    const timings: Record<string, number> = {};

    before(async function () {
        dir = tmpDir();
        let t = performance.now();
        require("@pulumi/pulumi");
        timings["require @pulumi/pulumi ms (0 if another test loaded it)"] = performance.now() - t;
        t = performance.now();
        providerText = await serializeProvider(echoProvider);
        timings["first serializeProvider ms"] = performance.now() - t;
        t = performance.now();
        // A scratch cwd: the fixture needs nothing from our package to load.
        h = await EngineHarness.start({ cwd: dir, config: CONFIG, secretConfig: { "libvirt-snapshots:token": "s3cret" } });
        timings["server cold start + Configure ms"] = performance.now() - t;
        timings["  of which spawn to port line ms"] = h.startup.portMs;
        timings["  of which Configure ms"] = h.startup.configureMs;
    });

    after(async function () {
        await h?.close();
        console.log(
            "      timings:",
            JSON.stringify(timings, (_k, v: unknown) => (typeof v === "number" ? Math.round(v * 10) / 10 : v)),
        );
        fs.rmSync(dir, { recursive: true, force: true });
    });

    const inputs = (extra: Record<string, unknown> = {}) => ({ name: "s1", size: 2, dir, ...extra, [PROVIDER_KEY]: providerText });

    describe("serializeProvider", function () {
        it("caches per provider object", async function () {
            assert.equal(serializeProvider(echoProvider), serializeProvider(echoProvider));
            assert.equal(await serializeProvider(echoProvider), providerText);
            assert.match(providerText, /^exports\.handler = __f0;/);
        });

        it("equals the __provider input that new pulumi.dynamic.Resource sends", async function () {
            const out = path.join(dir, "sdk.json");
            const script = path.join(__dirname, "fixtures", "sdk-serialize.js");
            childProcess.execFileSync(process.execPath, [script, out], { cwd: PACKAGE_ROOT, stdio: ["ignore", "ignore", "inherit"] });
            const seen = JSON.parse(fs.readFileSync(out, "utf8")) as { type: string; name: string; inputs: Record<string, unknown> };
            assert.equal(seen.type, DYNAMIC_TYPE);
            assert.equal(seen.inputs[PROVIDER_KEY], providerText);
            assert.deepEqual({ ...seen.inputs, [PROVIDER_KEY]: undefined }, { name: "s1", dir: "/nonexistent", [PROVIDER_KEY]: undefined });
        });
    });

    describe("server process", function () {
        it("is a separate process with its own memory", function () {
            assert.notEqual(h.pid, process.pid);
            assert.ok(fs.existsSync(`/proc/${h.pid}`));
            const rss = h.memoryRssKb();
            timings["server RSS after Configure kB"] = rss;
            assert.ok(rss > 10_000 && rss < 1_000_000, `implausible RSS ${rss} kB`);
        });

        it("reports the dynamic provider's capabilities from Configure", function () {
            // Secrets reach the provider as plaintext; the engine never sends preview creates.
            assert.deepEqual(h.capabilities, { acceptSecrets: false, acceptResources: false, supportsPreview: false });
        });

        it("builds realistic URNs", function () {
            assert.equal(h.urn(DYNAMIC_TYPE, "snap"), "urn:pulumi:dev::snapshots-test::pulumi-nodejs:dynamic:Resource::snap");
            assert.equal(dynamicType("libvirt", "Snapshot"), "pulumi-nodejs:dynamic/libvirt:Snapshot");
            assert.equal(dynamicType(), DYNAMIC_TYPE);
        });
    });

    describe("provider calls", function () {
        const urn = () => h.urn(DYNAMIC_TYPE, "s1");

        it("check returns failures for bad inputs and keeps __provider", async function () {
            const bad = await h.check(urn(), {}, inputs({ name: "a/b", size: -1 }));
            assert.deepEqual(bad.failures, [
                { property: "name", reason: 'invalid snapshot name "a/b"' },
                { property: "size", reason: "size must be a positive number" },
            ]);
            const good = await h.check(urn(), {}, inputs({ size: undefined }));
            assert.deepEqual(good.failures, []);
            // undefined was dropped by the JSON round trip; check filled the default.
            assert.deepEqual(good.inputs, { name: "s1", size: 1, dir, [PROVIDER_KEY]: providerText });
        });

        it("check sees preview unknowns as the sentinel string", async function () {
            const res = await h.check(urn(), {}, inputs({ name: UNKNOWN }));
            assert.deepEqual(res.failures, []);
            assert.equal(res.inputs.name, UNKNOWN);
        });

        it("a trivial call is fast", async function () {
            const n = 50;
            let t = performance.now();
            for (let i = 0; i < n; i++) {
                await h.diff(urn(), "snap-s1", inputs(), inputs());
            }
            timings["Diff, echo provider (6 kB __provider twice) avg ms"] = (performance.now() - t) / n;
            const bare = { a: 1, [PROVIDER_KEY]: await serializeProvider(bareProvider) };
            await h.check(urn(), {}, bare);
            t = performance.now();
            for (let i = 0; i < n; i++) {
                await h.check(urn(), {}, bare);
            }
            timings["Check, bare provider avg ms"] = (performance.now() - t) / n;
        });

        it("create runs in the server with the configured provider", async function () {
            const { id, outs } = await h.create(urn(), inputs());
            const o = outs as unknown as EchoOutputs & Record<string, unknown>;
            assert.equal(id, "snap-s1");
            assert.equal(o.sizeBytes, 2 * 1024 * 1024);
            assert.equal(o.serverPid, h.pid);
            // Configure → configure(): full key, project-relative key, secret config unwrapped.
            assert.equal(o.host, "qemu.example");
            assert.equal(o.region, "eu-west");
            assert.equal(o.token, "s3cret");
            assert.equal(o.configureCalls, 1);
            assert.equal(o[PROVIDER_KEY], providerText);
        });

        it("secret inputs arrive as plaintext", async function () {
            const { outs } = await h.create(urn(), inputs({ name: secret("hidden") }));
            assert.equal(outs.name, "hidden");
        });

        it("diff reports none, some, and replacement", async function () {
            const olds = (await h.create(urn(), inputs())).outs;
            assert.deepEqual(await h.diff(urn(), "snap-s1", olds, inputs()), { changes: "none", replaces: [], deleteBeforeReplace: false });
            assert.deepEqual(await h.diff(urn(), "snap-s1", olds, inputs({ size: 3 })), {
                changes: "some",
                replaces: [],
                deleteBeforeReplace: false,
            });
            assert.deepEqual(await h.diff(urn(), "snap-s1", olds, inputs({ name: "s2" })), {
                changes: "some",
                replaces: ["name"],
                deleteBeforeReplace: true,
            });
        });

        it("update returns new outputs", async function () {
            const olds = (await h.create(urn(), inputs())).outs;
            const { outs } = await h.update(urn(), "snap-s1", olds, inputs({ size: 5 }), { oldInputs: inputs() });
            assert.equal(outs.sizeBytes, 5 * 1024 * 1024);
            assert.equal(outs.updatedFrom, 2);
            assert.equal(outs[PROVIDER_KEY], providerText);
        });

        it("read returns the props, drifted inputs, or an empty id when gone", async function () {
            const { id, outs } = await h.create(urn(), inputs({ name: "r1" }));
            const same = await h.read(urn(), id, outs);
            assert.deepEqual(same, { id, props: outs });

            fs.writeFileSync(path.join(dir, `size-${id}`), "7");
            const drifted = await h.read(urn(), id, outs);
            assert.equal(drifted.props.size, 7);
            assert.deepEqual(drifted.inputs, { name: "r1", size: 7, dir, [PROVIDER_KEY]: providerText });

            fs.writeFileSync(path.join(dir, `gone-${id}`), "");
            const gone = await h.read(urn(), id, outs);
            assert.equal(gone.id, "");
            // The server still attaches __provider to the (empty) props.
            assert.deepEqual(gone.props, { [PROVIDER_KEY]: providerText });
        });

        it("delete runs in the server process", async function () {
            const { id, outs } = await h.create(urn(), inputs({ name: "d1" }));
            await h.delete(urn(), id, outs);
            const marker = JSON.parse(fs.readFileSync(path.join(dir, `deleted-${id}`), "utf8")) as { pid: number; host: string };
            assert.deepEqual(marker, { pid: h.pid, host: "qemu.example" });
        });

        it("logs() captures what the provider printed with console.error", function () {
            assert.match(h.logs(), /echo-provider: configured host=qemu\.example/);
            assert.match(h.logs(), /echo-provider: create s1/);
        });
    });

    describe("errors", function () {
        const urn = () => h.urn(DYNAMIC_TYPE, "e1");

        it("create: the thrown message is the gRPC details, code UNKNOWN", async function () {
            const e = await rejects(h.create(urn(), inputs({ failIn: "create", failMessage: "virsh: domain 'x' not found" })));
            assert.equal(e.message, "virsh: domain 'x' not found");
            assert.equal(e.codeName, "UNKNOWN");
            assert.equal(e.method, "Create");
            assert.equal(e.initFailure, undefined);
        });

        it("create: an error carrying id becomes ErrorResourceInitFailed", async function () {
            const e = await rejects(h.create(urn(), inputs({ failIn: "create", failKind: "init" })));
            assert.equal(e.message, "create failed on purpose");
            assert.deepEqual(e.initFailure, { id: "partial-s1", properties: { half: true }, reasons: ["not ready"] });
        });

        it("check/read/delete: the message reaches the client and the stack goes to stderr", async function () {
            const e = await rejects(h.check(urn(), {}, inputs({ failIn: "check", failMessage: "bad check" })));
            assert.equal(e.message, "bad check");
            assert.equal(e.codeName, "UNKNOWN");
            assert.match(h.logs(), /Error: bad check: Error: bad check\n\s+at /);
        });

        it("check/read/diff/delete: a numeric err.code becomes the gRPC status code", async function () {
            const e = await rejects(h.delete(urn(), "x", inputs({ failIn: "delete", failKind: "code", failCode: 5 })));
            assert.equal(e.codeName, "NOT_FOUND");
            assert.equal(e.message, "delete failed on purpose");
            // Create and Update always answer UNKNOWN.
            const c = await rejects(h.create(urn(), inputs({ failIn: "create", failKind: "code", failCode: 5 })));
            assert.equal(c.codeName, "UNKNOWN");
        });

        it("create/update: a thrown non-Error arrives as the text 'undefined'", async function () {
            const e = await rejects(h.create(urn(), inputs({ failIn: "create", failKind: "string" })));
            assert.equal(e.message, "undefined");
        });

        it("check/diff/read/delete: a thrown non-Error is never answered", async function () {
            const saved = h.callTimeoutMs;
            h.callTimeoutMs = 1_000;
            try {
                const e = await rejects(h.diff(urn(), "x", inputs(), inputs({ failIn: "diff", failKind: "string" })));
                assert.equal(e.codeName, "DEADLINE_EXCEEDED");
            } finally {
                h.callTimeoutMs = saved;
            }
            assert.match(h.logs(), /TypeError: Cannot use 'in' operator to search for 'message' in diff failed on purpose/);
        });

        it("state without __provider fails like pulumi import does", async function () {
            const e = await rejects(h.read(urn(), "x", {}));
            assert.equal(e.message, "code must be a string, not undefined");
        });
    });

    describe("defaults of a provider with only create", function () {
        let bareText: string;
        const urn = () => h.urn(DYNAMIC_TYPE, "bare");
        before(async function () {
            bareText = await serializeProvider(bareProvider);
        });

        it("check passes inputs through, diff says unknown, update wipes outputs, read echoes", async function () {
            const props = { a: 1, [PROVIDER_KEY]: bareText };
            assert.deepEqual(await h.check(urn(), {}, props), { inputs: props, failures: [] });
            assert.deepEqual(await h.diff(urn(), "bare-1", props, { ...props, a: 2 }), {
                changes: "unknown",
                replaces: [],
                deleteBeforeReplace: false,
            });
            assert.deepEqual(await h.update(urn(), "bare-1", props, { ...props, a: 2 }), { outs: { [PROVIDER_KEY]: bareText } });
            assert.deepEqual(await h.read(urn(), "bare-1", { ...props, made: true }), { id: "bare-1", props: { ...props, made: true } });
            await h.delete(urn(), "bare-1", props);
        });
    });

    describe("lifecycle helpers", function () {
        it("up → update → replace (delete first) → refresh → destroy", async function () {
            const s1 = await h.up("life", echoProvider, { name: "l1", size: 1, dir });
            assert.equal(s1.urn, h.urn(DYNAMIC_TYPE, "life"));
            assert.equal(s1.id, "snap-l1");
            assert.equal(s1.inputs[PROVIDER_KEY], providerText);
            assert.equal(s1.outs[PROVIDER_KEY], providerText);

            const same = await h.change(s1, echoProvider, { name: "l1", size: 1, dir });
            assert.equal(same.op, "same");

            const upd = await h.change(s1, echoProvider, { name: "l1", size: 4, dir });
            assert.equal(upd.op, "update");
            assert.equal(upd.state.outs.sizeBytes, 4 * 1024 * 1024);
            assert.equal(upd.state.id, "snap-l1");

            const rep = await h.change(upd.state, echoProvider, { name: "l2", size: 4, dir });
            assert.equal(rep.op, "replace");
            assert.equal(rep.state.id, "snap-l2");
            assert.ok(fs.existsSync(path.join(dir, "deleted-snap-l1")), "old resource deleted");

            const fresh = await h.refresh(rep.state);
            assert.deepEqual(fresh, rep.state);

            await h.destroy(rep.state);
            assert.ok(fs.existsSync(path.join(dir, "deleted-snap-l2")));

            fs.writeFileSync(path.join(dir, "gone-snap-l2"), "");
            assert.equal(await h.refresh(rep.state), undefined);
        });

        it("up throws on check failures before creating", async function () {
            await assert.rejects(
                h.up("bad", echoProvider, { name: "x/y", dir }),
                /check failed for .*::bad: name: invalid snapshot name "x\/y"/,
            );
            await assert.rejects(
                h.up("dup", echoProvider, { name: "x", dir, [PROVIDER_KEY]: "nope" }),
                /must not define the __provider key/,
            );
        });
    });
});

describe("engine harness: server cwd and configure failures", function () {
    it("resolves requires in the provider text from the server's cwd", async function () {
        const inputs = { module: "pulumi-libvirt-snapshots/package.json", [PROVIDER_KEY]: await serializeProvider(resolverProvider) };
        const inRepo = await EngineHarness.start({ cwd: PACKAGE_ROOT });
        const elsewhereDir = tmpDir();
        const elsewhere = await EngineHarness.start({ cwd: elsewhereDir });
        try {
            const urn = inRepo.urn(DYNAMIC_TYPE, "r");
            assert.deepEqual((await inRepo.create(urn, inputs)).outs.resolvedName, "pulumi-libvirt-snapshots");
            const e = await rejects(elsewhere.create(urn, inputs));
            assert.match(e.message, /^Cannot find module 'pulumi-libvirt-snapshots\/package.json'/);
        } finally {
            await Promise.all([inRepo.close(), elsewhere.close()]);
            fs.rmSync(elsewhereDir, { recursive: true, force: true });
        }
    });

    it("a throwing configure() fails only the first call; later calls run unconfigured", async function () {
        const dir = tmpDir();
        const h = await EngineHarness.start({ cwd: dir, config: CONFIG, env: { ECHO_FAIL_CONFIGURE: "1" } });
        try {
            const props = { name: "c1", dir, [PROVIDER_KEY]: await serializeProvider(echoProvider) };
            const urn = h.urn(DYNAMIC_TYPE, "c");
            // configure() runs lazily, on the first call that loads this __provider text.
            const e = await rejects(h.check(urn, {}, props));
            assert.equal(e.message, "configure failed on purpose");
            const { outs } = await h.create(urn, props);
            assert.equal(outs.configureCalls, 1);
        } finally {
            await h.close();
            fs.rmSync(dir, { recursive: true, force: true });
        }
        assert.deepEqual(h.exit, { code: null, signal: "SIGTERM" });
    });
});
