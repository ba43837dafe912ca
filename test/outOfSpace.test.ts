// Out of space, through the engine path, on the lab's small filesystem (test/support/smallfs.ts): check
// refuses a snapshot whose memory state or overlays don't fit, giving both figures, before anything touches
// the VM; a snapshot that passes check and then runs out part-way leaves nothing half-made behind, leaves the
// domain running (or as the user or the guest's I/O error left it), and fails as an OutOfSpaceError that says
// the domain's state. The lab's domains have 64 MiB of RAM; the filesystem has 160 MiB.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider, RestorePointProvider } from "pulumi-libvirt-snapshots";
import { DYNAMIC_TYPE, ProviderCallError, type Props } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import { MiB, domstate, expectCallError, qcow2Snapshots, snapshotNames } from "./support/helpers";
import { loadLab, qemuImgCheck, qemuIoRead, qemuIoWrite, sleep, virshOk, waitGuestCounter, readGuestCounter } from "./support/lab";
import { makeSmallFs, type SmallFs } from "./support/smallfs";

const lab = loadLab();
const snapshots = DomainSnapshotProvider;
const restorePoints = RestorePointProvider;
/** What the 9.0 and 11.3 hosts say when qemu can't write the vmstate of an internal snapshot (measured). */
const VMSTATE_FAILURE = lab.libvirtVersion.startsWith("9.")
    ? /Failed to take snapshot: [\s\S]*Error while writing VM state: Input\/output error/
    : /snapshot-save job failed: [\s\S]*Error while writing VM state: Input\/output error/;

/** The "needs X MiB ... Y MiB is free there" figures of a check failure, in MiB. */
function figures(text: string): { needs: number; free: number } {
    const m = /needs (\d+\.\d) MiB on the filesystem mounted on (\S+), and (\d+\.\d) MiB is free there/.exec(text);
    assert.ok(m, `no figures in: ${text}`);
    return { needs: Number(m[1]), free: Number(m[3]) };
}

/** The files in a domain's folder besides its disk and XML: what a snapshot left there. */
function leftovers(dir: string): string[] {
    return fs.readdirSync(dir).filter((f) => f !== "disk.qcow2" && f !== "domain.xml");
}

describe("Out of space (engine path, the lab's small filesystem)", function () {
    this.timeout(300_000);
    const suite = engineSuite("nospace-");
    let small: SmallFs;
    before(async () => {
        small = await makeSmallFs(`${lab.name}-${process.pid}`, 160);
    });
    afterEach(() => small?.unfill());
    after(async () => {
        await small?.dispose();
    });

    it("check refuses a memory state or overlays that don't fit, summed per filesystem, with both figures; nothing is touched", async () => {
        const dom = await small.newDomain({ running: true });
        await small.fill(100 * MiB);
        const free = small.free() / MiB;

        // The memory file (64 MiB of RAM) and the overlay (the 64 MiB default margin) each fit; on one filesystem they don't.
        const both = await suite.failuresOf(snapshots, { domain: dom.name, snapshotName: "full", kind: "external", memory: "external" });
        assert.match(both, new RegExp(`^memoryFile: domain '${dom.name}': the snapshot needs 128\\.0 MiB`));
        assert.match(
            both,
            /the memory state \(the guest's 64\.0 MiB of RAM\) in .*: 64\.0 MiB; the overlay .* \(spaceMarginMiB: 64\): 64\.0 MiB/,
        );
        assert.match(both, new RegExp(`mounted on ${small.dir}, `));
        assert.ok(
            Math.abs(figures(both).free - free) < 1,
            `free ${figures(both).free} MiB in the message, ${free.toFixed(1)} MiB measured`,
        );
        assert.equal(figures(both).needs, 128);
        // Elsewhere, the memory file no longer counts here; the overlay alone fits.
        const elsewhere = {
            domain: dom.name,
            snapshotName: "full",
            kind: "external",
            memory: "external",
            memoryFile: `${lab.tmpDiskDir}/x.mem`,
        };
        assert.equal(await suite.failuresOf(snapshots, elsewhere), "");

        await small.fill(40 * MiB);
        // An internal snapshot of a running domain grows the qcow2 image by the RAM.
        const internal = await suite.failuresOf(snapshots, { domain: dom.name, snapshotName: "int" });
        assert.match(
            internal,
            new RegExp(`^memory: domain '${dom.name}': the snapshot needs 64\\.0 MiB .* inside ${dom.disk} \\(disk vda\\)`),
        );
        assert.ok(figures(internal).free < 64);
        // An overlay over the margin, and the same with a margin that fits.
        const overlay = { domain: dom.name, snapshotName: "ovl", kind: "external", memory: "none" };
        assert.match(await suite.failuresOf(snapshots, overlay), /^spaceMarginMiB: .*needs 64\.0 MiB.*lower spaceMarginMiB/);
        assert.match(await suite.failuresOf(snapshots, { ...overlay, spaceMarginMiB: 200 }), /needs 200\.0 MiB/);
        assert.equal(await suite.failuresOf(snapshots, { ...overlay, spaceMarginMiB: 16 }), "");
        // A restore point's members are checked the same way.
        const rp = await suite.failuresOf(restorePoints, { domains: [dom.name], snapshotName: "rp" });
        assert.match(rp, new RegExp(`^domains\\[0\\]: domain '${dom.name}': memory: .*needs 64\\.0 MiB`));
        assert.match(
            await suite.failuresOf(restorePoints, { domains: [dom.name], snapshotName: "rp", kind: "external", memory: "none" }),
            /spaceMarginMiB: .*needs 64\.0 MiB/,
        );

        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(leftovers(path.dirname(dom.disk)), []);
        assert.equal(await domstate(dom.name), "running");
    });

    /** Check passes (room for the RAM), then someone else fills the filesystem before create runs. */
    async function passCheckThenFill(inputs: Props, leaveBytes: number) {
        const e = suite.engine;
        const urn = e.urn(DYNAMIC_TYPE, `nospace-${String(inputs.snapshotName)}`);
        const checked = await e.check(urn, {}, await e.programInputs(snapshots, inputs));
        assert.deepEqual(checked.failures, []);
        await small.fill(leaveBytes);
        const freeBefore = small.free();
        const error = await e.create(urn, checked.inputs).then(
            () => assert.fail("the snapshot should have run out of space"),
            (x: unknown) => x as ProviderCallError,
        );
        assert.ok(error instanceof ProviderCallError, String(error));
        return { urn, checked, error: error.message, freeBefore, retry: () => e.create(urn, checked.inputs) };
    }

    for (const variant of [
        { what: "internal with memory", inputs: (): Props => ({}) },
        { what: "external with memory and an overlay", inputs: (): Props => ({ kind: "external", memory: "external" }) },
        {
            what: "external, the memory file on another filesystem and the overlay on the full one",
            inputs: (): Props => ({
                kind: "external",
                memory: "external",
                memoryFile: path.join(lab.tmpDiskDir, `nospace-${process.pid}.mem`),
            }),
        },
    ]) {
        it(`${variant.what}: passes check, runs out part-way; nothing half-made is left, the domain runs, data is intact`, async () => {
            const dom = await small.newDomain();
            await qemuIoWrite(dom.disk, 0xa5, 0, MiB);
            await virshOk(["start", dom.name]);
            const inputs = variant.inputs();
            const memoryFile = inputs.memoryFile as string | undefined;
            const r = await passCheckThenFill({ domain: dom.name, snapshotName: "part", ...inputs }, 128 * 1024);

            assert.match(r.error, /out of space: snapshot 'part' of domain '[^']+' failed part-way/);
            assert.match(r.error, /domain state: running/);
            if (inputs.kind === "external") assert.match(r.error, /No space left on device/);
            else assert.match(r.error, VMSTATE_FAILURE);
            assert.match(r.error, /libvirt left no (memory file, overlay or )?snapshot record behind|removed what the snapshot had made/);
            assert.match(r.error, new RegExp(`is free now on the filesystem mounted on ${small.dir}`));

            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(dom.disk), [], "no orphan internal snapshot in the image");
            assert.deepEqual(leftovers(path.dirname(dom.disk)), [], "no memory file or overlay");
            if (memoryFile) assert.equal(fs.existsSync(memoryFile), false, "no memory file on the other filesystem");
            assert.equal(
                (await virshOk(["domblklist", "--domain", dom.name])).includes(dom.disk),
                true,
                "the domain still writes to its disk",
            );
            assert.equal(await domstate(dom.name), "running");
            assert.equal(await qemuIoRead(dom.disk, 0xa5, 0, MiB), true);
            assert.equal((await qemuImgCheck(dom.disk, { forceShare: true })).result?.corruptions ?? 0, 0);
            if (inputs.kind === "external") {
                // libvirt removed the partial memory file: the space is free again (less what the writer-less guest's disk took).
                assert.ok(small.free() >= r.freeBefore - 64 * 1024, `free ${small.free()} after, ${r.freeBefore} before`);
            } else {
                // qemu keeps the vmstate clusters it wrote inside the image (reused by its next internal snapshot): at most what was free.
                console.log(
                    `      (free before ${r.freeBefore} bytes, after ${small.free()} bytes: the image kept the vmstate qemu wrote)`,
                );
            }

            // Room again: the same create succeeds, and the snapshot is whole.
            small.unfill();
            const made = await r.retry();
            assert.equal(made.outs.snapshotName, "part");
            // Where check looked for room for the overlay is where libvirt put it.
            if (inputs.kind === "external") assert.deepEqual(made.outs.diskFiles, { vda: path.join(path.dirname(dom.disk), "disk.part") });
            assert.deepEqual(await snapshotNames(dom.name), ["part"]);
            await suite.engine.destroy({ urn: r.urn, id: made.id, inputs: r.checked.inputs, outs: made.outs });
            assert.deepEqual(await snapshotNames(dom.name), []);
        });
    }

    it("a domain the user paused stays paused", async () => {
        const dom = await small.newDomain({ running: true });
        await virshOk(["suspend", dom.name]);
        const r = await passCheckThenFill({ domain: dom.name, snapshotName: "paused" }, 128 * 1024);
        assert.match(r.error, /out of space[\s\S]*domain state: paused \(user\)/);
        assert.equal((await virshOk(["domstate", "--reason", dom.name])).trim(), "paused (user)");
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await qcow2Snapshots(dom.disk), []);
    });

    it("an overlay that passes check with spaceMarginMiB: 0 and can't be made: no file left, the chain unchanged (DomainSnapshot and RestorePoint)", async () => {
        const dom = await small.newDomain({ running: true });
        await small.fill(64 * 1024);
        const msg = await expectCallError(
            suite.up("ovl0", snapshots, { domain: dom.name, snapshotName: "ovl0", kind: "external", memory: "none", spaceMarginMiB: 0 }),
            /out of space: snapshot 'ovl0'/,
        );
        assert.match(msg, /No space left on device/);
        assert.match(msg, /domain state: running/);
        const rp = await expectCallError(
            suite.up("rp0", restorePoints, {
                domains: [dom.name],
                snapshotName: "rp0",
                kind: "external",
                memory: "none",
                spaceMarginMiB: 0,
            }),
            /restore point 'rp0' failed on domain .*out of space: snapshot 'rp0'/,
        );
        assert.match(rp, /paused by restore point 'rp0', which resumes it|domain state: running/);
        assert.match(rp, /every paused domain was resumed/);
        assert.deepEqual(leftovers(path.dirname(dom.disk)), []);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.match(await virshOk(["domblklist", "--domain", dom.name]), new RegExp(`vda\\s+${dom.disk}`));
        assert.equal(await domstate(dom.name), "running");
    });

    it("a guest whose own writes hit the full disk: the error says paused (I/O error); the provider doesn't resume it; nothing is lost", async () => {
        const dom = await small.newDomain({ running: true, writer: true });
        await waitGuestCounter(dom.disk, 2, 60_000);
        const e = suite.engine;
        const inputs = { domain: dom.name, snapshotName: "io" };
        const urn = e.urn(DYNAMIC_TYPE, "nospace-io");
        const checked = await e.check(urn, {}, await e.programInputs(snapshots, inputs));
        assert.deepEqual(checked.failures, []);
        await small.fill(0);
        // The writer takes a new cluster every half second: it stops at the full disk.
        for (let i = 0; (await virshOk(["domstate", "--reason", dom.name])).trim() !== "paused (I/O error)"; i++) {
            if (i > 100) assert.fail(`the guest was not paused by its I/O error: ${await virshOk(["domstate", "--reason", dom.name])}`);
            await sleep(200);
        }
        const counter = await readGuestCounter(dom.disk);
        const error = await e.create(urn, checked.inputs).then(
            () => assert.fail("the snapshot should have run out of space"),
            (x: unknown) => (x as Error).message,
        );
        assert.match(error, /out of space: snapshot 'io'/);
        assert.match(error, /domain state: paused \(I\/O error\): the guest's own writes hit the full disk \(vda: no space\)/);
        assert.equal((await virshOk(["domstate", "--reason", dom.name])).trim(), "paused (I/O error)", "left as the guest's error left it");
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        // Room again, resumed by hand: the guest goes on from where it stopped.
        small.unfill();
        await virshOk(["resume", dom.name]);
        assert.ok((await waitGuestCounter(dom.disk, counter + 1, 60_000)) > counter);
    });
});
