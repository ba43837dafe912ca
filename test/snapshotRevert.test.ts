// SnapshotRevert through the engine path, against real lab domains: data written
// after the snapshot is gone after the revert (qemu-io patterns), the domain
// ends in the requested state, changing triggers reverts again, and every case
// libvirt 9.0 can't revert is refused at preview while the VM keeps running.
import * as assert from "node:assert/strict";
import * as path from "node:path";
import { DomainSnapshotProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import { UNKNOWN } from "./harness/engine";
import { observe } from "./support/compat";
import { engineSuite } from "./support/fixture";
import { MiB, defaultTarget, domstate, expectCallError, hostHasExternalSnapshot, re, sameHostConnection, shutOff } from "./support/helpers";
import { loadLab, qemuImgInfo, qemuIoRead, qemuIoWrite, virshLocal, virshOk } from "./support/lab";

const lab = loadLab();

const A = 0xaa,
    B = 0xbb;

describe("SnapshotRevert (engine path, real lab)", function () {
    this.timeout(180_000);
    const suite = engineSuite("labtmp-rev-");
    const { newDomain } = suite;

    const revert = (name: string, inputs: Record<string, unknown>) => suite.up(name, SnapshotRevertProvider, inputs);
    const failuresOf = (inputs: Record<string, unknown>, olds: Record<string, unknown> = {}) =>
        suite.failuresOf(SnapshotRevertProvider, inputs, olds);

    it("shut-off domain: data written after the snapshot is gone; triggers revert again, nothing else does", async () => {
        const dom = await newDomain();
        await qemuIoWrite(dom.disk, A, 0, MiB);
        const snap = await suite.engine.up("snap-a", DomainSnapshotProvider, { domain: dom.name, snapshotName: "before upgrade" });
        await qemuIoWrite(dom.disk, B, 0, MiB);

        const r = await revert("rollback", { domain: dom.name, snapshot: snap.outs.snapshotName, triggers: ["1"] });
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "A is back");
        assert.equal(r.outs.domainState, "shut off", "as-snapshotted: the snapshot was of a shut-off domain");
        assert.equal(r.outs.snapshotCreationTime, snap.outs.creationTime);
        assert.equal(r.outs.domainUuid, dom.uuid);
        assert.equal(r.outs.afterRevert, "as-snapshotted");
        assert.ok(Math.abs(Date.parse(r.outs.revertedAt as string) - Date.now()) < 60_000);
        assert.match(r.id, new RegExp(`^${dom.uuid}/before upgrade@`));

        // Nothing changed: no revert. New credentials for the same host: no revert either.
        await qemuIoWrite(dom.disk, B, 0, MiB);
        let ch = await suite.engine.change(r, SnapshotRevertProvider, { domain: dom.name, snapshot: "before upgrade", triggers: ["1"] });
        assert.equal(ch.op, "same");
        ch = await suite.engine.change(ch.state, SnapshotRevertProvider, {
            domain: dom.uuid,
            snapshot: "before upgrade",
            triggers: ["1"],
            connection: sameHostConnection(),
        });
        assert.equal(ch.op, "update");
        assert.deepEqual(ch.diff.replaces, []);
        assert.equal(ch.state.outs.revertedAt, r.outs.revertedAt);
        ch = await suite.engine.change(ch.state, SnapshotRevertProvider, {
            domain: dom.uuid,
            snapshot: "before upgrade",
            triggers: ["1"],
            connection: sameHostConnection(),
            force: true,
        });
        assert.equal(ch.op, "update", "force alone doesn't revert");
        assert.equal(await qemuIoRead(dom.disk, B, 0, MiB), true, "B stays: nothing reverted");

        // A new trigger value reverts again.
        ch = await suite.engine.change(ch.state, SnapshotRevertProvider, { domain: dom.name, snapshot: "before upgrade", triggers: ["2"] });
        assert.equal(ch.op, "replace");
        assert.deepEqual(ch.diff.replaces, ["triggers"]);
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "A is back again");
        assert.ok(Date.parse(ch.state.outs.revertedAt as string) > Date.parse(r.outs.revertedAt as string));

        // afterRevert: 'running' starts it.
        await qemuIoWrite(dom.disk, B, 0, MiB);
        ch = await suite.engine.change(ch.state, SnapshotRevertProvider, {
            domain: dom.name,
            snapshot: "before upgrade",
            triggers: ["2"],
            afterRevert: "running",
        });
        assert.equal(ch.op, "replace");
        assert.deepEqual(ch.diff.replaces, ["afterRevert"]);
        assert.equal(ch.state.outs.domainState, "running");
        assert.equal(await domstate(dom.name), "running");
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);

        // Refresh asks nothing and changes nothing; destroy leaves the VM alone.
        assert.deepEqual((await suite.engine.refresh(ch.state))!.outs, ch.state.outs);
        await suite.engine.destroy(ch.state);
        assert.equal(await domstate(dom.name), "running");
        await shutOff(dom);
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);
        await suite.engine.destroy(snap);
    });

    it("the maker's mark: a snapshot's copy of the domain carries it, and neither the create nor a revert leaves it in the domain", async () => {
        const MARK = /<(\w+):maker xmlns:\1="urn:pulumi-libvirt-snapshots:maker" resource="([^"]*)" name="([^"]*)"\/>/;
        const domainMarks = async (name: string) =>
            [await virshOk(["dumpxml", name]), await virshOk(["dumpxml", "--inactive", name])].map((x) => MARK.exec(x)?.[2] ?? "none");
        const dom = await newDomain();
        const urn = "urn:pulumi:dev::proj::pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot::marked";
        // Shut off (the persistent XML), then running (the live XML): a revert of each.
        await suite.engine.up("snap-off", DomainSnapshotProvider, { domain: dom.name, snapshotName: "off", __maker: `${urn}-off` });
        await virshOk(["start", dom.name]);
        await suite.engine.up("snap-on", DomainSnapshotProvider, { domain: dom.name, snapshotName: "on", __maker: `${urn}-on` });
        for (const [snap, owner] of [
            ["off", `${urn}-off`],
            ["on", `${urn}-on`],
        ]) {
            const copy = MARK.exec(await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", snap!]));
            assert.deepEqual([copy?.[2], copy?.[3]], [owner, snap], `snapshot ${snap}'s copy of the domain`);
        }
        assert.deepEqual(await domainMarks(dom.name), ["none", "none"], "a mark left in the domain by a create");
        await revert("to-on", { domain: dom.name, snapshot: "on", triggers: ["1"] });
        assert.deepEqual(await domainMarks(dom.name), ["none", "none"], "a mark left in the domain by a revert to a running snapshot");
        await revert("to-off", { domain: dom.name, snapshot: "off", triggers: ["1"] });
        assert.deepEqual(await domainMarks(dom.name), ["none", "none"], "a mark left in the domain by a revert to a shut-off snapshot");
    });

    it("running domain: reverting a running snapshot with afterRevert 'paused' restarts qemu and ends paused, with the snapshot's disk", async () => {
        const dom = await newDomain();
        await qemuIoWrite(dom.disk, A, 0, MiB);
        await virshOk(["start", "--domain", dom.name]);
        const snap = await suite.engine.up("run-snap", DomainSnapshotProvider, { domain: dom.name, snapshotName: "running-a" });
        assert.equal(snap.outs.state, "running");
        await shutOff(dom);
        await qemuIoWrite(dom.disk, B, 0, MiB);
        await virshOk(["start", "--domain", dom.name]);
        const idBefore = (await virshOk(["domid", "--domain", dom.name])).trim();

        const r = await revert("to-paused", { domain: dom.name, snapshot: "running-a", afterRevert: "paused" });
        assert.equal(r.outs.domainState, "paused");
        assert.equal(await domstate(dom.name), "paused");
        assert.notEqual((await virshOk(["domid", "--domain", dom.name])).trim(), idBefore, "qemu was restarted: the domain id changed");

        const ch = await suite.engine.change(r, SnapshotRevertProvider, {
            domain: dom.name,
            snapshot: "running-a",
            afterRevert: "as-snapshotted",
        });
        assert.equal(ch.op, "replace");
        assert.equal(ch.state.outs.domainState, "running", "as-snapshotted: it was running");
        await shutOff(dom);
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "the disk is the snapshot's");
        await suite.engine.destroy(ch.state);
        await suite.engine.destroy(snap);
    });

    it("refuses at preview, with the reason, what this libvirt can't revert; the VM keeps running", async () => {
        const ext = await newDomain({ running: true });
        const overlay = path.join(ext.dir, "ext.qcow2");
        await virshOk([
            "snapshot-create-as",
            "--domain",
            ext.name,
            "--name",
            "external-1",
            "--disk-only",
            "--diskspec",
            `vda,snapshot=external,file=${overlay}`,
        ]);
        if (await hostHasExternalSnapshot()) {
            // libvirt 9.9 and newer (11.3 here) revert external snapshots: preview lets it through, and it reverts.
            assert.equal(await failuresOf({ domain: ext.name, snapshot: "external-1" }), "");
            const r = await revert("ext-revert", { domain: ext.name, snapshot: "external-1", afterRevert: "running" });
            assert.equal(r.outs.domainState, "running");
            // A disk-only snapshot holds no memory: the domain boots from the snapshot's disk state.
            assert.match((await virshOk(["domstate", "--domain", ext.name, "--reason"])).trim(), /^running \((from snapshot|booted)\)$/);
            // libvirt 11.3 puts a new overlay on the snapshot's base and drops the one that was active.
            const active = /vda\s+(\S+)/.exec(await virshOk(["domblklist", "--domain", ext.name]))![1]!;
            assert.notEqual(active, overlay);
            assert.deepEqual((await qemuImgInfo(active, { backingChain: true })).map((c) => c.filename).slice(1), [ext.disk]);
            observe("external-revert", "works");
        } else {
            const direct = await virshLocal(["snapshot-revert", "--domain", ext.name, "--snapshotname", "external-1"]);
            assert.match(direct.stderr, /revert to external snapshot not supported yet/);
            observe("external-revert", "refused");
            assert.match(
                await failuresOf({ domain: ext.name, snapshot: "external-1" }),
                new RegExp(
                    `^snapshot: 'external-1' is an external snapshot, and libvirt ${re(lab.libvirtVersion)} can't revert to external snapshots \\('revert to external snapshot not supported yet'; its capabilities show no <externalSnapshot/>`,
                ),
            );
            await expectCallError(
                revert("refused-ext", { domain: ext.name, snapshot: "external-1" }),
                /check failed .*is an external snapshot/,
            );
        }
        assert.equal(await domstate(ext.name), "running");

        const dom = await newDomain({ running: true });
        await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", "internal-1"]);
        await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", "internal_2"]);
        assert.equal(
            await failuresOf({ domain: dom.name, snapshot: "nope" }),
            `snapshot: domain '${dom.name}' has no snapshot 'nope' (its snapshots: 'internal-1', 'internal_2'). ` +
                `If libvirt lost its record (the domain was undefined and defined again), the DomainSnapshot or RestorePoint that took it gives it back ` +
                `on the next pulumi up: pass its snapshotName output here, so the revert runs after it`,
        );
        assert.match(
            await failuresOf({ domain: "no-such-domain", snapshot: "x" }),
            new RegExp(`^domain: no domain 'no-such-domain' on ${re(defaultTarget())}`),
        );
        assert.match(
            await failuresOf({ domain: dom.name, snapshot: "x", afterRevert: "stopped" }),
            /^afterRevert: must be 'running', 'paused' or 'as-snapshotted'/,
        );
        // The snapshot is often a DomainSnapshot's output, unknown at the first preview.
        assert.equal(await failuresOf({ domain: dom.name, snapshot: UNKNOWN, triggers: [UNKNOWN] }), "");
        assert.equal(
            await failuresOf({ domain: dom.name, snapshot: "internal-1" }),
            "",
            "an internal snapshot of this domain can be reverted",
        );

        // A checkpoint: reverting would leave the domain 'shut off (failed)', so it is refused before trying.
        await virshOk(["checkpoint-create-as", "--domain", dom.name, "--name", "cp-1"]);
        const why = await failuresOf({ domain: dom.name, snapshot: "internal-1" });
        assert.match(
            why,
            new RegExp(
                `^domain: domain '.*' has checkpoints \\('cp-1'\\), and reverting a disk that carries dirty bitmaps fails \\('Device has active dirty bitmaps'\\): qemu refuses to load the snapshot, and on a running domain libvirt ${re(lab.libvirtVersion)} leaves it shut off \\(failed\\)\\. Nothing was changed\\. Delete the checkpoints first`,
            ),
        );
        await expectCallError(
            revert("refused", { domain: dom.name, snapshot: "internal-1", afterRevert: "running" }),
            /check failed .*has checkpoints/,
        );
        // A revert that already happened, with nothing changed, is no failure: it would not revert again.
        const olds = await suite.engine.programInputs(SnapshotRevertProvider, {
            domain: dom.name,
            snapshot: "internal-1",
            triggers: ["1"],
        });
        assert.equal(await failuresOf({ domain: dom.name, snapshot: "internal-1", triggers: ["1"], force: true }, olds), "");
        assert.match(await failuresOf({ domain: dom.name, snapshot: "internal-1", triggers: ["2"] }, olds), /has checkpoints/);

        assert.equal(await domstate(dom.name), "running");
        const reason = await virshLocal(["domstate", "--domain", dom.name, "--reason"]);
        assert.doesNotMatch(reason.stdout, /failed/);
        assert.deepEqual((await virshOk(["snapshot-list", "--domain", dom.name, "--name"])).split("\n").filter(Boolean), [
            "internal-1",
            "internal_2",
        ]);
    });
});
