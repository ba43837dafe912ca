// Faults (the slow suite): the connection dies in the middle of an operation
// (create, delete, revert), an operation outlives timeoutSeconds, libvirtd is
// killed and restarted in the middle of a create, a domain is destroyed while
// its snapshot is taken. After each: the error says what happened and what is
// known, the same operation run again converges (no duplicate, no orphan, no
// domain left paused, a revert done exactly once), and the disk data checks out.
//
// Restarting libvirtd disturbs every other test run on this host: it runs
// under the host-wide lock of test/support/libvirtd.ts, is timed to the
// moment qemu writes the snapshot into the image, and libvirtd is always
// started again (finally).
//
// A deterministic "middle" for the destroyed domain: an external memory
// snapshot whose memory file is a FIFO blocks inside libvirt until qemu dies.
// (A FIFO and a disconnecting client together can hang libvirtd 9.0, so the
// other faults use a real file and a kill timed by watching the host.)
import * as assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import { ProviderCallError, type ResourceState } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import { MiB, domstate, qcow2Snapshots, qemuPid, snapshotNames, waitForXmlFile } from "./support/helpers";
import { loadLab, qemuIoRead, qemuIoWrite, repoRoot, run, sleep, virshLocal, virshOk, type TestDomain } from "./support/lab";
import { stopWhenStarted } from "./support/stopWhenStarted";
import { tcpProxy } from "./support/tcpProxy";
import { killConnection, killSessionsOfClient } from "./support/sshSessions";
import { libvirtdAnswers, libvirtdPid, pidAlive, recoverHungLibvirtd, startLibvirtd, withRestartLock } from "./support/libvirtd";

const lab = loadLab();
const HOST_RE = lab.host.replace(/\./g, "\\.");
const ssh = () => ({ host: lab.host, port: lab.port, privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"), hostKey: lab.hostKey });

/**
 * Wait until a virsh process with this text in its command line runs on the host.
 * Gives up quietly once `over` says the operation has already finished (a busy host
 * may run the whole command between two looks); the caller then sees a success.
 */
async function waitForProcess(pattern: string, timeoutMs = 20_000, over: () => boolean = () => false): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
        try {
            execFileSync("pgrep", ["-f", pattern], { stdio: "ignore" });
            return;
        } catch {
            /* not yet */
        }
        if (over()) return;
        await sleep(5);
    }
    throw new Error(`no process matching ${pattern}`);
}

/** A promise's outcome as a value, and whether it has settled yet. */
function settle<T>(p: Promise<T>): { result: Promise<{ r: T } | { e: ProviderCallError }>; done: () => boolean } {
    let settled = false;
    const result = p.then(
        (r) => ({ r }),
        (e: unknown) => ({ e: e as ProviderCallError }),
    );
    void result.then(() => {
        settled = true;
    });
    return { result, done: () => settled };
}

function ppidOf(pid: number): number | undefined {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
        return undefined;
    }
}

/**
 * Kill only the SSH connection that runs the host process matching pattern (its
 * sshd session, under the lab host's sshd listener): our connection drops,
 * mid-command, and other test runs on the same sshd keep theirs. Returns how many it killed.
 */
function killSessionOf(pattern: string): number {
    const listener = Number(fs.readFileSync(lab.sshdPidPath, "utf8").trim());
    let pids: number[] = [];
    try {
        pids = execFileSync("pgrep", ["-f", pattern], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
    } catch {
        /* gone already */
    }
    let killed = 0;
    for (const p of pids) {
        for (let x = p, i = 0; x > 1 && i < 20; i++) {
            const pp = ppidOf(x);
            if (pp === undefined) break;
            if (pp === listener) {
                killConnection(x);
                killed++;
                break;
            }
            x = pp;
        }
    }
    return killed;
}

/**
 * Read a FIFO to its end, letting a memory save blocked on it finish, and give up
 * after timeoutMs (nothing ever opened it for writing). Resolves with the bytes read.
 */
function drain(fifo: string, timeoutMs = 15_000): Promise<number> {
    return new Promise((resolve) => {
        const cat = spawn("cat", [fifo], { stdio: ["ignore", "pipe", "ignore"] });
        let n = 0;
        const timer = setTimeout(() => cat.kill("SIGKILL"), timeoutMs);
        cat.stdout.on("data", (d: Buffer) => {
            n += d.length;
        });
        cat.on("close", () => {
            clearTimeout(timer);
            resolve(n);
        });
        cat.on("error", () => {
            clearTimeout(timer);
            resolve(n);
        });
    });
}

/**
 * Kill libvirtd while qemu runs `savevm` for it, deterministically. Busy-reads the
 * image (synchronously, so nothing gets between seeing and acting): qemu writes the
 * VM state into newly allocated clusters first, so the file grows; then libvirtd,
 * which only waits for qemu's reply now, is frozen (SIGSTOP) so it can never handle
 * that reply, resume the CPUs or write its metadata. Once qemu has put the snapshot
 * into the header (nb_snapshots, offset 60), libvirtd is killed. "late": the
 * snapshot was in the header before the growth was seen (a busy host), and libvirtd
 * was killed at once, so libvirt may have finished more.
 */
function killLibvirtdDuringSavevm(disk: string, libvirtd: number, before: number, timeoutMs: number): "in-savevm" | "late" | "timeout" {
    const fd = fs.openSync(disk, "r");
    const b = Buffer.alloc(4);
    const nb = () => {
        fs.readSync(fd, b, 0, 4, 60);
        return b.readUInt32BE(0);
    };
    try {
        const size0 = fs.fstatSync(fd).size;
        for (const until = Date.now() + timeoutMs; Date.now() < until;) {
            if (nb() > before) {
                process.kill(libvirtd, "SIGKILL");
                return "late";
            }
            if (fs.fstatSync(fd).size > size0) {
                process.kill(libvirtd, "SIGSTOP");
                try {
                    for (const done = Date.now() + 30_000; nb() <= before && Date.now() < done;) {
                        /* qemu finishes savevm on its own */
                    }
                } finally {
                    process.kill(libvirtd, "SIGKILL");
                }
                return "in-savevm";
            }
        }
        return "timeout";
    } finally {
        fs.closeSync(fd);
    }
}

async function expectFailure(p: Promise<unknown>): Promise<ProviderCallError> {
    try {
        await p;
    } catch (e) {
        assert.ok(e instanceof ProviderCallError, String(e));
        return e;
    }
    assert.fail("expected the operation to fail");
}

describe("faults (slow suite): nothing is lost, and the next pulumi up converges", function () {
    this.timeout(240_000);
    const suite = engineSuite("labtmp-fault-");
    // A test that fails with libvirtd down must not fail every test after it.
    afterEach(async function () {
        this.timeout(300_000);
        await startLibvirtd();
    });
    // Killing libvirtd can leave libvirt holding the lab guest's agent as broken until the guest
    // restarts: give the suites after this one the lab as they expect it.
    after(async function () {
        this.timeout(120_000);
        const r = await run("bash", [
            path.join(repoRoot(), "scripts", "lab", "guest", "ensure.sh"),
            lab.local ? "base" : "host13",
            lab.labDir,
        ]);
        assert.equal(r.code, 0, `lab-guest could not be brought back: ${r.stderr}`);
    });

    async function runningDomainWithData(): Promise<TestDomain> {
        const d = await suite.newDomain();
        await qemuIoWrite(d.disk, 0xaa, 0, MiB);
        await virshOk(["start", d.name]);
        return d;
    }

    /** What the engine does on the next `pulumi up` for a resource whose create failed half-way (an init failure). */
    /** A running domain with an external snapshot whose overlay holds 300 MiB: deleting it commits long enough to be cut. */
    async function runningWithBigOverlay(name: string): Promise<{ d: TestDomain; st: ResourceState; overlay: string; baseSize: number }> {
        const d = await suite.newDomain({ sizeMB: 512 });
        await qemuIoWrite(d.disk, 0xaa, 0, MiB);
        const st = await suite.engine.up(name, DomainSnapshotProvider, {
            connection: ssh(),
            domain: d.name,
            snapshotName: name,
            kind: "external",
            memory: "none",
        });
        const overlay = (st.outs.diskFiles as Record<string, string>).vda!;
        await qemuIoWrite(overlay, 0xcd, MiB, 300 * MiB);
        await virshOk(["start", d.name]);
        return { d, st, overlay, baseSize: fs.statSync(d.disk).size };
    }

    async function nextUp(st: ResourceState, inputs: Record<string, unknown>, provider = DomainSnapshotProvider): Promise<ResourceState> {
        const news = await suite.engine.programInputs(provider, inputs);
        const d = await suite.engine.diff(st.urn, st.id, st.outs, news);
        if (d.replaces.length) return (await suite.engine.change(st, provider, inputs)).state;
        // Init errors make the engine update even without changes, so the provider can finish the job.
        const { outs } = await suite.engine.update(st.urn, st.id, st.outs, news);
        return { ...st, inputs: news, outs };
    }

    async function assertConverged(d: TestDomain, st: ResourceState, name: string) {
        assert.deepEqual(await snapshotNames(d.name), [name], "exactly one snapshot, no duplicate");
        assert.equal(st.outs.snapshotName, name);
        assert.ok(st.outs.creationTime, "outputs are complete again");
        assert.equal(await domstate(d.name), "running", "no domain left paused");
        await suite.engine.destroy(st);
        assert.deepEqual(await snapshotNames(d.name), []);
        assert.deepEqual(await qcow2Snapshots(d.disk), [], "no orphan qcow2 snapshot");
        const blk = await virshOk(["domblklist", "--domain", d.name]);
        assert.ok(blk.includes(d.disk), `the domain is back on its base disk: ${blk}`);
        assert.deepEqual(
            fs.readdirSync(d.dir).filter((f) => /\.(fifo|mem)$|^disk\.(?!qcow2$)/.test(f)),
            [],
            "no overlay or memory file left",
        );
        assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the data written before is intact");
    }

    it("sshd's connection killed in the middle of a create: the error says the outcome is unknown; the next up finishes it", async () => {
        const d = await runningDomainWithData();
        let converged = 0;
        for (let attempt = 0; attempt < 6 && converged === 0; attempt++) {
            const name = `mid-create-${attempt}`;
            const inputs = { connection: ssh(), domain: d.name, snapshotName: name, memory: "internal" };
            const urn = suite.engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", name);
            const news = (await suite.engine.check(urn, {}, await suite.engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
            // The create runs in the provider's virsh shell, so no host process names it: the cut comes once the
            // provider has written the create's XML file on the host, as the command goes to libvirt.
            const startedAt = Date.now();
            const pending = settle(suite.engine.create(urn, news));
            await waitForXmlFile(lab, startedAt, 20_000, pending.done);
            // qemu is frozen from here, so libvirt can't finish the snapshot before the cut (with KVM it takes a few
            // milliseconds); it goes on once the cut is made.
            const qemu = qemuPid(d.name);
            if (qemu) process.kill(qemu, "SIGSTOP");
            let cut = 0;
            try {
                // Cut at once, the provider may not have its file's path yet: it then runs the create as a process after
                // all (nothing had reached virsh), and the create succeeds. So each attempt waits a little longer.
                await sleep([10, 40, 80, 120, 200, 300][attempt]!);
                cut = pending.done() ? 0 : killSessionsOfClient(suite.engine.pid);
                await sleep(200);
            } finally {
                if (qemu) process.kill(qemu, "SIGCONT");
            }
            const res = await pending.result;
            console.log(`      (attempt ${attempt}: ${cut} connection(s) cut; the create ${"r" in res ? "finished first" : "failed"})`);
            if ("r" in res) {
                await suite.engine.destroy({ urn, id: res.r.id, inputs: news, outs: res.r.outs });
                continue;
            } // the kill came too late
            const e = res.e;
            assert.match(
                e.message,
                new RegExp(`SSH connection to root@${HOST_RE}:\\d+ .* was lost while the command ran; whether it took effect is unknown`),
            );
            assert.match(
                e.message,
                new RegExp(
                    `whether snapshot '${name}' of domain '.*' exists now is unknown\\. Pulumi keeps it in the state: the next pulumi up checks`,
                ),
            );
            assert.ok(e.initFailure, "the engine is told the resource may exist (ErrorResourceInitFailed)");
            assert.equal(e.initFailure.id, `${d.uuid}/${name}`);
            for (let i = 0; i < 100 && (await domstate(d.name)) !== "running"; i++) await sleep(100);
            const st = await nextUp({ urn, id: e.initFailure.id, inputs: news, outs: e.initFailure.properties }, inputs);
            await assertConverged(d, st, name);
            converged++;
        }
        assert.equal(converged, 1, "the cut landed while libvirt took the snapshot, at least once in 6 tries");
    });

    it("an operation that outlives timeoutSeconds (a slow network): a timeout error, then the next up converges", async () => {
        const d = await runningDomainWithData();
        const proxy = await tcpProxy(lab.host, lab.port);
        try {
            const inputs = {
                connection: { ...ssh(), host: "127.0.0.1", port: proxy.port },
                domain: d.name,
                snapshotName: "slow",
                timeoutSeconds: 2,
            };
            const urn = suite.engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", "slow");
            const news = (await suite.engine.check(urn, {}, await suite.engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
            proxy.delayMs = 4000; // replies from the host now arrive 4 s late
            const t0 = Date.now();
            const e = await expectFailure(suite.engine.create(urn, news));
            assert.ok(Date.now() - t0 < 30_000);
            assert.match(e.message, /timed out after 2 s on root@127\.0\.0\.1:\d+ .*; the command may still be running there/);
            assert.match(e.message, /whether snapshot 'slow' of domain '.*' exists now is unknown/);
            assert.ok(e.initFailure);
            proxy.delayMs = 0;
            await sleep(4500);
            const st = await nextUp({ urn, id: e.initFailure.id, inputs: news, outs: e.initFailure.properties }, inputs);
            await assertConverged(d, st, "slow");
        } finally {
            proxy.close();
        }
    });

    it("the connection dropped between two operations: refresh and delete reconnect", async () => {
        const d = await runningDomainWithData();
        const st = await suite.engine.up("between", DomainSnapshotProvider, { connection: ssh(), domain: d.name, snapshotName: "between" });
        assert.ok(killSessionsOfClient(suite.engine.pid) > 0, "the provider's SSH connection was killed");
        await sleep(100);
        const refreshed = await suite.engine.refresh(st);
        assert.equal(refreshed?.outs.snapshotName, "between");
        await suite.engine.destroy(st);
        assert.deepEqual(await snapshotNames(d.name), []);
        assert.deepEqual(await qcow2Snapshots(d.disk), []);
    });

    it("sshd's connection killed in the middle of a delete: the error says so; deleting again converges", async () => {
        // The delete runs in the provider's virsh shell (provider/host/virshSessions.ts), so no host process names it:
        // 300 MiB in the overlay make the commit into the base image last, and the cut comes once the base image grows.
        const { d, st, baseSize } = await runningWithBigOverlay("mid-delete");
        const pending = settle(suite.engine.destroy(st));
        let cut = 0;
        for (const until = Date.now() + 60_000; Date.now() < until && !pending.done();) {
            if (fs.statSync(d.disk).size > baseSize + 20 * MiB) {
                cut = killSessionsOfClient(suite.engine.pid);
                break;
            }
            await sleep(2);
        }
        const res = await pending.result;
        assert.ok(cut > 0, "the provider's SSH connection was cut while qemu committed the overlay");
        assert.ok("e" in res, "the delete failed: its connection was cut before it answered");
        assert.match(res.e.message, /was lost while the command ran; whether it took effect is unknown/);
        // The next destroy converges, whatever the first one did (libvirt may still be committing: it waits for the job).
        await suite.engine.destroy(st);
        assert.deepEqual(await snapshotNames(d.name), []);
        const blk = await virshOk(["domblklist", "--domain", d.name]);
        assert.ok(blk.includes(d.disk), `back on the base disk: ${blk}`);
        assert.equal(await domstate(d.name), "running");
        assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true);
        assert.equal(await qemuIoRead(d.disk, 0xcd, MiB, 300 * MiB), true, "the data written after the snapshot is merged into the base");
    });

    it("libvirtd killed in the middle of deleting an external snapshot (a block commit): destroying again converges, the data merged", async () => {
        // 300 MiB in the overlay, so the commit into the base image takes long enough to be cut.
        const { d, st, overlay, baseSize } = await runningWithBigOverlay("mid-commit");
        let how = "none";
        let res: { r: void } | { e: ProviderCallError } | undefined;
        await withRestartLock(async () => {
            const pid = libvirtdPid();
            assert.ok(pid, "libvirtd runs, and it is the only one on this host");
            const pending = settle(suite.engine.destroy(st));
            try {
                // The commit has started once the base image grows: freeze libvirtd there (so it can't pivot), then kill it.
                for (const until = Date.now() + 30_000; Date.now() < until && !pending.done();) {
                    if (fs.statSync(d.disk).size > baseSize + 20 * MiB) {
                        process.kill(pid, "SIGSTOP");
                        process.kill(pid, "SIGKILL");
                        how = "mid-commit";
                        break;
                    }
                    await sleep(2);
                }
                for (let i = 0; i < 200 && pidAlive(pid); i++) await sleep(10);
            } finally {
                await startLibvirtd();
            }
            res = await pending.result;
        });
        assert.equal(how, "mid-commit", "libvirtd was killed while qemu committed the overlay");
        assert.ok(res && "e" in res, "the delete failed: libvirtd died before it answered");
        assert.match(res.e.message, /End of file while reading data|Disconnected from qemu:\/\/system/);
        // What libvirt 9.0 and 11.3 leave: the snapshot still recorded, the domain still on the overlay.
        assert.deepEqual(await snapshotNames(d.name), ["mid-commit"]);
        // pulumi destroy again: the delete runs again and finishes.
        await suite.engine.destroy(st);
        assert.deepEqual(await snapshotNames(d.name), []);
        const blk = await virshOk(["domblklist", "--domain", d.name]);
        assert.ok(blk.includes(d.disk), `back on the base disk: ${blk}`);
        assert.equal(fs.existsSync(overlay), false, "the overlay is merged and removed");
        assert.equal(await domstate(d.name), "running");
        assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the data before the snapshot is intact");
        assert.equal(await qemuIoRead(d.disk, 0xcd, MiB, 300 * MiB), true, "the data written after the snapshot is merged into the base");
    });

    it("a domain destroyed while its snapshot is taken: libvirt refuses, nothing half-made is left, and the next up converges", async () => {
        const d = await runningDomainWithData();
        const fifo = path.join(d.dir, "gone.fifo");
        execFileSync("mkfifo", [fifo]);
        // A FIFO nobody reads, plus a client that goes away, can hang libvirtd 9.0 for every
        // user of this host. So the FIFO is always drained and removed (also when an assertion
        // fails), and libvirtd is checked, and recovered if it hangs, before the test ends.
        let draining: Promise<number> | undefined;
        try {
            const inputs = { domain: d.name, snapshotName: "gone", kind: "external", memory: "external", memoryFile: fifo };
            const urn = suite.engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", "gone");
            const news = (await suite.engine.check(urn, {}, await suite.engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
            const startedAt = Date.now();
            let over = false;
            const pending = suite.engine.create(urn, news).then(
                () => undefined,
                (e: unknown) => e as ProviderCallError,
            );
            void pending.then(() => (over = true));
            // The create's XML file is on the host as the command goes to libvirt (it runs in the provider's virsh shell).
            await waitForXmlFile(lab, startedAt, 20_000, () => over);
            await sleep(200);
            // qemu dies under the blocked save; the FIFO reader then sees EOF.
            execFileSync("pkill", ["-KILL", "-f", `guest=${d.name},`]);
            draining = drain(fifo);
            const e = await pending;
            assert.ok(e, "the create failed");
            assert.match(e.message, /snapshot 'gone'|no snapshot 'gone' was left behind|domain is not running|monitor|qemu/i);
            for (let i = 0; i < 50 && (await domstate(d.name)) !== "shut off"; i++) await sleep(100);
            assert.equal(await domstate(d.name), "shut off");
            assert.deepEqual(await snapshotNames(d.name), [], "no half-made snapshot in libvirt");
            assert.deepEqual(await qcow2Snapshots(d.disk), []);
            assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the disk data is intact");
            // The next up: the domain is shut off now, so the declared memory snapshot is refused at preview...
            const again = await suite.engine.check(urn, {}, news);
            assert.match(again.failures.map((f) => `${f.property}: ${f.reason}`).join(), /memory: domain '.*' is shut off/);
            // ...and a disk-only one is taken.
            const st = await suite.engine.up("gone2", DomainSnapshotProvider, { domain: d.name, snapshotName: "gone" });
            assert.equal(st.outs.state, "shutoff");
            await suite.engine.destroy(st);
            assert.equal((await virshLocal(["domstate", "--domain", d.name])).stdout.trim(), "shut off");
        } finally {
            // Whatever failed: qemu (the FIFO's writer) is gone, and the FIFO is read to its end.
            try {
                execFileSync("pkill", ["-KILL", "-f", `guest=${d.name},`]);
            } catch {
                /* already gone */
            }
            await (draining ?? drain(fifo));
            fs.rmSync(fifo, { force: true });
            await recoverHungLibvirtd();
        }
    });

    it("sshd's connection killed in the middle of a revert: the error says what is known; the next up reverts exactly once", async () => {
        const d = await runningDomainWithData();
        // The snapshot holds 0xaa; the disk then gets 0xbb, which the revert must throw away.
        await virshOk(["snapshot-create-as", "--domain", d.name, "--name", "base"]);
        const outcomes = new Set<string>();
        // Two ways to cut: freeze the host's virsh as soon as it starts, then drop the connection
        // (libvirt never gets the request), or drop it while virsh runs (libvirt reverts without its client).
        const cuts: Array<"freeze" | number> = ["freeze", 0, "freeze", 80, "freeze", 200];
        for (
            let attempt = 0;
            attempt < cuts.length && !(outcomes.has("not reverted") && outcomes.has("reverted without its client"));
            attempt++
        ) {
            const cut = cuts[attempt]!;
            await virshOk(["destroy", d.name]);
            await qemuIoWrite(d.disk, 0xbb, 0, MiB);
            await virshOk(["start", d.name]);
            assert.equal(await qemuIoRead(d.disk, 0xbb, 0, MiB), true);
            const pidBefore = qemuPid(d.name);
            const name = `mid-revert-${attempt}`;
            const inputs = { connection: ssh(), domain: d.name, snapshot: "base", triggers: [attempt] };
            const urn = suite.engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:SnapshotRevert", name);
            const news = (await suite.engine.check(urn, {}, await suite.engine.programInputs(SnapshotRevertProvider, inputs))).inputs;
            const pending = settle(suite.engine.create(urn, news));
            const pattern = `snapshot-revert --domain ${d.uuid}`;
            if (cut === "freeze") {
                await sleep(10); // the Create request is on its way; the provider inspects the domain first
                const frozen = stopWhenStarted(pattern, 20_000);
                assert.ok(frozen, "the revert command started on the host");
                killSessionOf(pattern);
                process.kill(frozen, "SIGKILL");
            } else {
                await waitForProcess(pattern, 20_000, pending.done);
                await sleep(cut);
                killSessionOf(pattern);
            }
            const res = await pending.result;
            // Let whatever libvirt still does without its client finish.
            for (let i = 0; i < 100 && (await domstate(d.name)) !== "running"; i++) await sleep(100);
            await sleep(500);
            const pidAfterCut = qemuPid(d.name);
            let st: ResourceState;
            if ("r" in res) {
                outcomes.add("too late"); // the revert finished before the kill; it still must have reverted
                st = { urn, id: res.r.id, inputs: news, outs: res.r.outs };
            } else {
                const e = res.e;
                assert.match(
                    e.message,
                    new RegExp(
                        `reverting domain '.*' to snapshot 'base' failed: the SSH connection to root@${HOST_RE}:\\d+ .* was lost while the command ran; whether it took effect is unknown`,
                    ),
                );
                assert.match(e.message, /the domain was running \(id \d+\) before and is .+ \(id (\d+|-|unknown)\) now\./);
                assert.match(
                    e.message,
                    /whether libvirt reverted it is unknown\. Pulumi keeps the revert in the state: the next pulumi up checks the host and reverts only if this revert did not happen/,
                );
                assert.ok(e.initFailure, "the engine is told the revert may have happened (ErrorResourceInitFailed)");
                assert.match(e.initFailure.id, new RegExp(`^${d.uuid}/base@`));
                const happened = pidAfterCut !== pidBefore;
                outcomes.add(happened ? "reverted without its client" : "not reverted");
                // The next pulumi up: the same program, the same triggers.
                st = await nextUp(
                    { urn, id: e.initFailure.id, inputs: news, outs: e.initFailure.properties },
                    inputs,
                    SnapshotRevertProvider,
                );
                const pidFinal = qemuPid(d.name);
                if (happened) assert.equal(pidFinal, pidAfterCut, "libvirt had reverted it: the next up does not revert a second time");
                else assert.notEqual(pidFinal, pidBefore, "libvirt had not reverted it: the next up reverts");
                assert.equal(st.outs.pending, undefined, "the state is complete again");
                assert.ok(st.outs.revertedAt, "revertedAt is recorded");
            }
            assert.notEqual(qemuPid(d.name), pidBefore, "reverted (a revert of a running domain starts a new qemu)");
            assert.equal(st.outs.snapshot, "base");
            assert.equal(st.outs.domainState, "running");
            assert.equal(await domstate(d.name), "running", "not left paused");
            assert.match((await virshOk(["domstate", "--domain", d.name, "--reason"])).trim(), /^running \(from snapshot\)$/);
            assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the disk holds the snapshot's data again");
            assert.deepEqual(await snapshotNames(d.name), ["base"]);
            await suite.engine.destroy(st); // a revert's delete leaves the VM alone
            assert.equal(await domstate(d.name), "running");
        }
        assert.ok(
            outcomes.has("reverted without its client") && outcomes.has("not reverted"),
            `both cut-offs were seen: libvirt reverted without its client, and it never got the request (outcomes: ${[...outcomes].join(", ")})`,
        );
        console.log(`      (revert cut-off outcomes seen: ${[...outcomes].join(", ")})`);
    });

    /**
     * libvirtd killed while qemu runs savevm for a create, then the user's next step:
     * `pulumi up` again, or `pulumi destroy`. Up to 3 tries to hit that moment.
     */
    async function libvirtdKilledMidCreate(then: "up" | "destroy"): Promise<void> {
        const d = await runningDomainWithData();
        let done = false;
        for (let attempt = 0; attempt < 3 && !done; attempt++) {
            const name = `restart-${attempt}`;
            const inputs = { connection: ssh(), domain: d.name, snapshotName: name, memory: "internal" };
            const urn = suite.engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot", name);
            const news = (await suite.engine.check(urn, {}, await suite.engine.programInputs(DomainSnapshotProvider, inputs))).inputs;
            const before = (await qcow2Snapshots(d.disk)).length;
            const qemu = qemuPid(d.name);
            let res: { r: { id: string; outs: Record<string, unknown> } } | { e: ProviderCallError } | undefined;
            let how = "none" as "in-savevm" | "late" | "timeout" | "none";
            let downMs = 0;
            await withRestartLock(async () => {
                const oldPid = libvirtdPid();
                assert.ok(oldPid, "libvirtd runs, and it is the only one on this host");
                const startedAt = Date.now();
                const pending = settle(suite.engine.create(urn, news));
                let killedAt = 0;
                try {
                    // The create runs in the provider's virsh shell, its XML in a file the provider writes on the host just before.
                    await waitForXmlFile(lab, startedAt, 20_000, pending.done);
                    if (!pending.done()) {
                        how = killLibvirtdDuringSavevm(d.disk, oldPid, before, 20_000);
                        killedAt = Date.now();
                        for (let i = 0; i < 200 && pidAlive(oldPid); i++) await sleep(10);
                    }
                } finally {
                    await startLibvirtd(); // does nothing when libvirtd still answers
                    if (killedAt) downMs = Date.now() - killedAt;
                }
                res = await pending.result;
            });
            assert.notEqual(how, "timeout", "qemu wrote the snapshot into the image");
            console.log(`      (attempt ${attempt}: libvirtd killed ${how}, back after ${downMs} ms)`);
            assert.ok(res);
            if (how !== "in-savevm") {
                // Too late for the case under test. Whatever libvirt finished, the next up still converges.
                const st =
                    "r" in res
                        ? { urn, id: res.r.id, inputs: news, outs: res.r.outs }
                        : await nextUp({ urn, id: res.e.initFailure!.id, inputs: news, outs: res.e.initFailure!.properties }, inputs);
                await assertConverged(d, st, name);
                continue;
            }
            assert.ok(await libvirtdAnswers(), "libvirtd is back");
            assert.equal(qemuPid(d.name), qemu, "the running domain survived the restart: the same qemu process");
            assert.ok(res);
            assert.ok("e" in res, "the create failed: libvirtd died before it answered");
            done = true;
            const e = res.e;
            assert.match(e.message, /End of file while reading data|Disconnected from qemu:\/\/system/);
            assert.match(
                e.message,
                new RegExp(`whether snapshot '${name}' of domain '.*' exists now is unknown\\. Pulumi keeps it in the state`),
            );
            assert.ok(e.initFailure, "the engine is told the snapshot may exist (ErrorResourceInitFailed)");
            // What libvirt 9.0 + qemu 7.2 and 11.3 + qemu 10.0 leave behind: the snapshot inside the qcow2 image, no libvirt
            // metadata, and the domain paused by the unfinished job (libvirt does not resume it).
            assert.deepEqual(await snapshotNames(d.name), [], "libvirt has no metadata for it");
            assert.deepEqual(await qcow2Snapshots(d.disk), [name], "qemu finished savevm: an orphan qcow2 snapshot");
            assert.equal((await virshOk(["domstate", "--domain", d.name, "--reason"])).trim(), "paused (saving)");
            const cutOff: ResourceState = { urn, id: e.initFailure.id, inputs: news, outs: e.initFailure.properties };
            if (then === "destroy") {
                // pulumi destroy of that state: the domain is resumed and the orphan removed from the image.
                await suite.engine.destroy(cutOff);
                assert.deepEqual(await snapshotNames(d.name), [], "no libvirt snapshot left");
                assert.deepEqual(await qcow2Snapshots(d.disk), [], "no orphan qcow2 snapshot left");
                assert.equal(
                    (await virshOk(["domstate", "--domain", d.name, "--reason"])).trim().split(" ")[0],
                    "running",
                    "not left paused",
                );
                assert.equal(await qemuIoRead(d.disk, 0xaa, 0, MiB), true, "the data written before is intact");
                continue;
            }
            // The next pulumi up converges: the domain is resumed, the snapshot is taken again under
            // the same name (qemu replaces the orphan), exactly one snapshot, of a running domain.
            const st = await nextUp(cutOff, inputs);
            assert.equal(st.outs.state, "running", "the snapshot records a running domain, not the leftover pause");
            assert.deepEqual(await qcow2Snapshots(d.disk), [name], "exactly one qcow2 snapshot: no orphan beside it");
            await assertConverged(d, st, name);
        }
        assert.ok(done, "libvirtd was killed while qemu ran savevm for it, at least once in 3 tries");
    }

    it("libvirtd killed and restarted in the middle of a create: an orphan qcow2 snapshot and a paused domain; the next up converges", async () => {
        await libvirtdKilledMidCreate("up");
    });

    it("libvirtd killed in the middle of a create, then pulumi destroy: the domain is resumed and the orphan qcow2 snapshot removed", async () => {
        await libvirtdKilledMidCreate("destroy");
    });
});
