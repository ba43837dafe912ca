// Faults (the slow suite): the connection dies in the middle of an operation,
// an operation outlives timeoutSeconds, a domain is destroyed while its
// snapshot is taken. After each: the error says what happened and what is
// known, the same operation run again converges (no duplicate, no orphan, no
// domain left paused), and the disk data checks out.
//
// A deterministic "middle" for the destroyed domain: an external memory
// snapshot whose memory file is a FIFO blocks inside libvirt until qemu dies.
// (A FIFO and a disconnecting client together can hang libvirtd 9.0, so the
// other faults use a real file and a kill timed by watching the host.)
import * as assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { EngineHarness, PACKAGE_ROOT, ProviderCallError, type ResourceState } from "./harness/engine";
import { loadLab, makeDomain, qemuImgInfo, qemuIoRead, qemuIoWrite, sleep, virshLocal, virshOk, type TestDomain } from "./support/lab";

const lab = loadLab();
const MiB = 1024 * 1024;
const ssh = () => ({ host: lab.host, port: lab.port, privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"), hostKey: lab.hostKey });

const snapshotNames = async (d: string) => (await virshOk(["snapshot-list", "--domain", d, "--name"])).split("\n").filter(Boolean);
const qcow2Snapshots = async (disk: string) => ((await qemuImgInfo(disk)) as unknown as { snapshots?: Array<{ name: string }> }).snapshots?.map((s) => s.name) ?? [];
const state = async (d: string) => (await virshOk(["domstate", "--domain", d])).trim();

/** Wait until a virsh process with this text in its command line runs on the host. */
async function waitForProcess(pattern: string, timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
        try { execFileSync("pgrep", ["-f", pattern], { stdio: "ignore" }); return; } catch { /* not yet */ }
        await sleep(5);
    }
    throw new Error(`no process matching ${pattern}`);
}

/** Kill the lab sshd's per-connection processes: every SSH connection drops, mid-command. */
function killSshSessions(): number {
    const pid = fs.readFileSync(path.join(lab.labDir, "sshd.pid"), "utf8").trim();
    const kids = execFileSync("pgrep", ["-P", pid], { encoding: "utf8" }).split("\n").filter(Boolean);
    for (const k of kids) { try { process.kill(Number(k), "SIGKILL"); } catch { /* gone */ } }
    return kids.length;
}

/** Read a FIFO to its end, letting the blocked memory save finish. */
function drain(fifo: string): Promise<number> {
    return new Promise((resolve) => {
        const cat = spawn("cat", [fifo], { stdio: ["ignore", "pipe", "ignore"] });
        let n = 0;
        cat.stdout.on("data", (d: Buffer) => { n += d.length; });
        cat.on("close", () => resolve(n));
    });
}

/** A TCP proxy in front of sshd that can hold back the host's replies: a slow network. */
async function delayingProxy(target: number): Promise<{ port: number; delayMs: number; close(): void }> {
    const state = { port: 0, delayMs: 0, close: () => server.close() };
    const server = net.createServer((client) => {
        const upstream = net.connect(target, "127.0.0.1");
        client.on("data", (d) => upstream.write(d));
        upstream.on("data", (d) => { const ms = state.delayMs; if (ms) setTimeout(() => client.write(d), ms); else client.write(d); });
        const end = () => { client.destroy(); upstream.destroy(); };
        client.on("error", end); upstream.on("error", end); client.on("close", end); upstream.on("close", end);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    state.port = (server.address() as net.AddressInfo).port;
    return state;
}

async function expectFailure(p: Promise<unknown>): Promise<ProviderCallError> {
    try { await p; } catch (e) { assert.ok(e instanceof ProviderCallError, String(e)); return e; }
    assert.fail("expected the operation to fail");
}

describe("faults (slow suite): nothing is lost, and the next pulumi up converges", function () {
    this.timeout(240_000);
    let engine: EngineHarness;
    const doms: TestDomain[] = [];
    const fifos: string[] = [];
    before(async () => { engine = await EngineHarness.start({ cwd: PACKAGE_ROOT }); });
    afterEach(async () => { for (const f of fifos.splice(0)) { const cat = spawn("cat", [f], { stdio: "ignore" }); setTimeout(() => cat.kill(), 5000); } });
    after(async () => {
        await engine?.close();
        for (const d of doms) await d.dispose().catch(() => undefined);
    });

    async function runningDomainWithData(): Promise<TestDomain> {
        const d = await makeDomain({ prefix: "labtmp-fault-" });
        doms.push(d);
        await qemuIoWrite(d.disk, 0xaa, 0, MiB);
        await virshOk(["start", d.name]);
        return d;
    }

    /** What the engine does on the next `pulumi up` for a resource whose create failed half-way (an init failure). */
    async function nextUp(st: ResourceState, inputs: Record<string, unknown>): Promise<ResourceState> {
        const news = await engine.programInputs(DomainSnapshotProvider, inputs);
        const d = await engine.diff(st.urn, st.id, st.outs, news);
        if (d.replaces.length) return (await engine.change(st, DomainSnapshotProvider, inputs)).state;
        // Init errors make the engine update even without changes, so the provider can finish the job.
        const { outs } = await engine.update(st.urn, st.id, st.outs, news);
        return { ...st, inputs: news, outs };
    }

    async function assertConverged(d: TestDomain, st: ResourceState, name: string) {
        assert.deepEqual(await snapshotNames(d.name), [name], "exactly one snapshot, no duplicate");
        assert.equal(st.outs.snapshotName, name);
        assert.ok(st.outs.creationTime, "outputs are complete again");
        assert.equal(await state(d.name), "running", "no domain left paused");
        await engine.destroy(st);
        assert.deepEqual(await snapshotNames(d.name), []);
        assert.deepEqual(await qcow2Snapshots(d.disk), [], "no orphan qcow2 snapshot");
        const blk = await virshOk(["domblklist", "--domain", d.name]);
        assert.ok(blk.includes(d.disk), `the domain is back on its base disk: ${blk}`);
        assert.deepEqual(fs.readdirSync(d.dir).filter((f) => /\.(fifo|mem)$|^disk\.(?!qcow2$)/.test(f)), [], "no overlay or memory file left");
        assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the data written before is intact");
    }

    it("sshd's connection killed in the middle of a create: the error says the outcome is unknown; the next up finishes it", async () => {
        const d = await runningDomainWithData();
        let converged = 0;
        for (let attempt = 0; attempt < 6 && converged === 0; attempt++) {
            const name = `mid-create-${attempt}`;
            const inputs = { connection: ssh(), domain: d.name, snapshotName: name, memory: "internal" };
            const urn = engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", name);
            const news = (await engine.check(urn, {}, await engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
            const pending = engine.create(urn, news).then((r) => ({ r }), (e: unknown) => ({ e: e as ProviderCallError }));
            await waitForProcess(`snapshot-create --domain ${d.uuid}`);
            killSshSessions();
            const res = await pending;
            if ("r" in res) { await engine.destroy({ urn, id: res.r.id, inputs: news, outs: res.r.outs }); continue; } // the kill came too late
            const e = res.e;
            assert.match(e.message, /SSH connection to root@127\.0\.0\.1:\d+ .* was lost while the command ran; whether it took effect is unknown/);
            assert.match(e.message, new RegExp(`whether snapshot '${name}' of domain '.*' exists now is unknown\\. Pulumi keeps it in the state: the next pulumi up checks`));
            assert.ok(e.initFailure, "the engine is told the resource may exist (ErrorResourceInitFailed)");
            assert.equal(e.initFailure.id, `${d.uuid}/${name}`);
            for (let i = 0; i < 100 && (await state(d.name)) !== "running"; i++) await sleep(100);
            const st = await nextUp({ urn, id: e.initFailure.id, inputs: news, outs: e.initFailure.properties }, inputs);
            await assertConverged(d, st, name);
            converged++;
        }
        assert.equal(converged, 1, "the kill landed while virsh snapshot-create ran, at least once in 6 tries");
    });

    it("an operation that outlives timeoutSeconds (a slow network): a timeout error, then the next up converges", async () => {
        const d = await runningDomainWithData();
        const proxy = await delayingProxy(lab.port);
        try {
            const inputs = { connection: { ...ssh(), port: proxy.port }, domain: d.name, snapshotName: "slow", timeoutSeconds: 2 };
            const urn = engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", "slow");
            const news = (await engine.check(urn, {}, await engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
            proxy.delayMs = 4000; // replies from the host now arrive 4 s late
            const t0 = Date.now();
            const e = await expectFailure(engine.create(urn, news));
            assert.ok(Date.now() - t0 < 30_000);
            assert.match(e.message, /timed out after 2 s on root@127\.0\.0\.1:\d+ .*; the command may still be running there/);
            assert.match(e.message, /whether snapshot 'slow' of domain '.*' exists now is unknown/);
            assert.ok(e.initFailure);
            proxy.delayMs = 0;
            await sleep(4500);
            const st = await nextUp({ urn, id: e.initFailure.id, inputs: news, outs: e.initFailure.properties }, inputs);
            await assertConverged(d, st, "slow");
        } finally { proxy.close(); }
    });

    it("the connection dropped between two operations: refresh and delete reconnect", async () => {
        const d = await runningDomainWithData();
        const st = await engine.up("between", DomainSnapshotProvider, { connection: ssh(), domain: d.name, snapshotName: "between" });
        assert.ok(killSshSessions() > 0);
        await sleep(100);
        const refreshed = await engine.refresh(st);
        assert.equal(refreshed?.outs.snapshotName, "between");
        await engine.destroy(st);
        assert.deepEqual(await snapshotNames(d.name), []);
        assert.deepEqual(await qcow2Snapshots(d.disk), []);
    });

    it("sshd's connection killed in the middle of a delete: the error says so; deleting again converges", async () => {
        const d = await runningDomainWithData();
        let killedMidway = false;
        for (let attempt = 0; attempt < 5 && !killedMidway; attempt++) {
            const name = `mid-delete-${attempt}`;
            const st = await engine.up(name, DomainSnapshotProvider, { connection: ssh(), domain: d.name, snapshotName: name, kind: "external", memory: "none" });
            const pending = engine.destroy(st).then(() => undefined, (e: unknown) => e as Error);
            await waitForProcess(`snapshot-delete --domain ${d.uuid}`);
            killSshSessions();
            const err = await pending;
            if (err) {
                killedMidway = true;
                assert.match(err.message, /was lost while the command ran; whether it took effect is unknown|cannot start a command/);
            }
            await engine.destroy(st); // the next destroy converges, whatever the first one did
            assert.deepEqual(await snapshotNames(d.name), []);
            const blk = await virshOk(["domblklist", "--domain", d.name]);
            assert.ok(blk.includes(d.disk), `back on the base disk: ${blk}`);
        }
        assert.ok(killedMidway, "the kill landed while virsh snapshot-delete ran, at least once in 5 tries");
        assert.equal(await state(d.name), "running");
        assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true);
    });

    it("a domain destroyed while its snapshot is taken: libvirt refuses, nothing half-made is left, and the next up converges", async () => {
        const d = await runningDomainWithData();
        const fifo = path.join(d.dir, "gone.fifo");
        execFileSync("mkfifo", [fifo]);
        fifos.push(fifo);
        const inputs = { domain: d.name, snapshotName: "gone", kind: "external", memory: "external", memoryFile: fifo };
        const urn = engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", "gone");
        const news = (await engine.check(urn, {}, await engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
        const pending = engine.create(urn, news).then(() => undefined, (e: unknown) => e as ProviderCallError);
        await waitForProcess(`snapshot-create --domain ${d.uuid}`);
        await sleep(200);
        // qemu dies under the blocked save; the FIFO reader then sees EOF.
        execFileSync("pkill", ["-KILL", "-f", `guest=${d.name},`]);
        void drain(fifo);
        const e = await pending;
        assert.ok(e, "the create failed");
        assert.match(e.message, /snapshot 'gone'|no snapshot 'gone' was left behind|domain is not running|monitor|qemu/i);
        for (let i = 0; i < 50 && (await state(d.name)) !== "shut off"; i++) await sleep(100);
        assert.equal(await state(d.name), "shut off");
        assert.deepEqual(await snapshotNames(d.name), [], "no half-made snapshot in libvirt");
        assert.deepEqual(await qcow2Snapshots(d.disk), []);
        assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the disk data is intact");
        // The next up: the domain is shut off now, so the declared memory snapshot is refused at preview...
        const again = await engine.check(urn, {}, news);
        assert.match(again.failures.map((f) => `${f.property}: ${f.reason}`).join(), /memory: domain '.*' is shut off/);
        // ...and a disk-only one is taken.
        const st = await engine.up("gone2", DomainSnapshotProvider, { domain: d.name, snapshotName: "gone" });
        assert.equal(st.outs.state, "shutoff");
        await engine.destroy(st);
        assert.equal((await virshLocal(["domstate", "--domain", d.name])).stdout.trim(), "shut off");
    });
});
