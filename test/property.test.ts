// The data-safety guarantee, tested on random sequences (fast-check, model
// based). A shut-off throwaway domain gets random steps: write a pattern to a
// region of its disk (qemu-io, offline), take a DomainSnapshot, delete one,
// revert to one with SnapshotRevert; snapshots are taken and deleted through
// the engine path. A model keeps what each region of the disk holds now and,
// per snapshot, what the disk held when it was taken. After every step:
//   - every region of the disk reads back as the model says (qemu-io read -P);
//   - libvirt's snapshots and the qcow2 image's internal snapshots are exactly the model's;
//   - after a create or a delete, every snapshot's own content (qemu-img convert -l)
//     is what it was when taken: deleting a snapshot never changes what another
//     reverts to. Reverts then prove it on the live disk.
// Replay a failure with PROPERTY_SEED=<seed> (printed, and in fast-check's report).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { DomainSnapshotProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import { dynamicType, type EngineHarness, type ResourceState } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import { qemuImgCheck, qemuImgInfo, qemuIoRead, qemuIoWrite, run, virshOk, type TestDomain } from "./support/lab";

const REGION = 256 * 1024;
const REGIONS = 4;
const NAMES = ["a", "before upgrade", "it's ok", "\u00fc-\u00f1", "x;y|z"] as const;
const SEED = Number(process.env.PROPERTY_SEED ?? 20261125);
const RUNS = Number(process.env.PROPERTY_RUNS ?? 25);
const MAX_STEPS = 8;

interface Model {
    current: number[];
    snaps: Map<string, number[]>;
}
interface Real {
    dom: TestDomain;
    engine: EngineHarness;
    states: Map<string, ResourceState>;
}

const stats = { runs: 0, steps: 0, skipped: 0, write: 0, create: 0, delete: 0, revert: 0, snapshotReads: 0 };
let serial = 0;

async function libvirtSnapshots(dom: TestDomain): Promise<string[]> {
    return (await virshOk(["snapshot-list", "--domain", dom.uuid, "--name"]))
        .split("\n")
        .filter((l) => l !== "")
        .sort();
}

/** Each region's byte pattern inside an internal snapshot, read without touching the domain. */
async function snapshotContent(dom: TestDomain, name: string): Promise<number[]> {
    const snap = ((await qemuImgInfo(dom.disk)).snapshots ?? []).find((s) => s.name === name);
    assert.ok(snap, `qcow2 has no snapshot ${JSON.stringify(name)}`);
    const raw = path.join(dom.dir, "snapshot.raw");
    const r = await run("/usr/bin/qemu-img", ["convert", "-U", "-f", "qcow2", "-O", "raw", "-l", `snapshot.id=${snap.id}`, dom.disk, raw]);
    assert.equal(r.code, 0, r.stderr);
    stats.snapshotReads++;
    const fd = fs.openSync(raw, "r");
    try {
        const buf = Buffer.alloc(REGION);
        return Array.from({ length: REGIONS }, (_, i) => {
            fs.readSync(fd, buf, 0, REGION, i * REGION);
            const first = buf[0]!;
            return buf.every((b) => b === first) ? first : -1;
        });
    } finally {
        fs.closeSync(fd);
        fs.rmSync(raw, { force: true });
    }
}

async function verify(m: Model, r: Real, what: string, snapshotsToRead: string[]): Promise<void> {
    const reads = await Promise.all(m.current.map((p, i) => qemuIoRead(r.dom.disk, p, i * REGION, REGION)));
    reads.forEach((ok, i) =>
        assert.equal(
            ok,
            true,
            `after ${what}: region ${i} should hold 0x${m.current[i]!.toString(16)} (model ${JSON.stringify(m.current)})`,
        ),
    );
    const want = [...m.snaps.keys()].sort();
    assert.deepEqual(await libvirtSnapshots(r.dom), want, `after ${what}: libvirt's snapshots`);
    assert.deepEqual(
        ((await qemuImgInfo(r.dom.disk)).snapshots ?? []).map((s) => s.name).sort(),
        want,
        `after ${what}: qcow2's internal snapshots (no orphan, none lost)`,
    );
    for (const name of snapshotsToRead) {
        assert.deepEqual(
            await snapshotContent(r.dom, name),
            m.snaps.get(name),
            `after ${what}: snapshot ${JSON.stringify(name)} holds what the disk held when it was taken`,
        );
    }
}

type Step =
    | { op: "write"; region: number; pattern: number }
    | { op: "create"; pick: number }
    | { op: "delete"; pick: number }
    | { op: "revert"; pick: number };

/** Run one step against the lab and the model; false when it could not apply (all names taken). A delete or revert with no snapshot to act on creates one instead. */
async function apply(step: Step, m: Model, r: Real, log: string[]): Promise<boolean> {
    const existing = [...m.snaps.keys()];
    if ((step.op === "delete" || step.op === "revert") && !existing.length) step = { op: "create", pick: step.pick };
    switch (step.op) {
        case "write": {
            await qemuIoWrite(r.dom.disk, step.pattern, step.region * REGION, REGION);
            m.current[step.region] = step.pattern;
            log.push(`write(region ${step.region}, 0x${step.pattern.toString(16)})`);
            stats.write++;
            await verify(m, r, log.at(-1)!, []);
            return true;
        }
        case "create": {
            const free = NAMES.filter((n) => !m.snaps.has(n));
            if (!free.length) return false;
            const name = free[step.pick % free.length]!;
            log.push(`create(${JSON.stringify(name)})`);
            const s = await r.engine.up(
                `snap-${++serial}`,
                DomainSnapshotProvider,
                { domain: r.dom.name, snapshotName: name },
                { type: dynamicType("libvirt-snapshots", "DomainSnapshot") },
            );
            assert.equal(s.outs.snapshotName, name);
            r.states.set(name, s);
            m.snaps.set(name, [...m.current]);
            stats.create++;
            await verify(m, r, log.at(-1)!, [name]);
            return true;
        }
        case "delete": {
            if (!existing.length) return false;
            const name = existing[step.pick % existing.length]!;
            log.push(`delete(${JSON.stringify(name)})`);
            await r.engine.destroy(r.states.get(name)!);
            r.states.delete(name);
            m.snaps.delete(name);
            stats.delete++;
            // The guarantee: every remaining snapshot still holds exactly what it held.
            await verify(m, r, log.at(-1)!, [...m.snaps.keys()]);
            return true;
        }
        case "revert": {
            if (!existing.length) return false;
            const name = existing[step.pick % existing.length]!;
            log.push(`revert(${JSON.stringify(name)})`);
            const s = await r.engine.up(
                `revert-${++serial}`,
                SnapshotRevertProvider,
                { domain: r.dom.name, snapshot: name },
                { type: dynamicType("libvirt-snapshots", "SnapshotRevert") },
            );
            assert.equal(s.outs.snapshot, name);
            assert.equal(s.outs.domainState, "shut off");
            m.current = [...m.snaps.get(name)!];
            stats.revert++;
            await verify(m, r, log.at(-1)!, []);
            return true;
        }
    }
}

const pick = fc.nat({ max: 1000 });
const step: fc.Arbitrary<Step> = fc.oneof(
    {
        weight: 3,
        arbitrary: fc.record({
            op: fc.constant("write" as const),
            region: fc.integer({ min: 0, max: REGIONS - 1 }),
            pattern: fc.integer({ min: 1, max: 255 }),
        }),
    },
    { weight: 3, arbitrary: fc.record({ op: fc.constant("create" as const), pick }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant("delete" as const), pick }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("revert" as const), pick }) },
);

describe("data safety: random write/snapshot/delete/revert sequences against a model (fast-check, engine path)", function () {
    this.timeout(600_000);
    const suite = engineSuite("labtmp-prop-");

    it(`${RUNS} random sequences of up to ${MAX_STEPS} steps: the disk and every snapshot always match the model`, async () => {
        const t0 = Date.now();
        console.log(`      fast-check seed ${SEED} (replay: PROPERTY_SEED=${SEED}), ${RUNS} runs, up to ${MAX_STEPS} steps each`);
        await fc.assert(
            fc.asyncProperty(fc.array(step, { minLength: 3, maxLength: MAX_STEPS }), async (steps) => {
                const dom = await suite.newDomain();
                const real: Real = { dom, engine: suite.engine, states: new Map() };
                const model: Model = { current: Array<number>(REGIONS).fill(0), snaps: new Map() };
                const log: string[] = [];
                try {
                    for (const s of steps) {
                        if (await apply(s, model, real, log)) stats.steps++;
                        else stats.skipped++;
                    }
                    // Whatever the sequence, the image stays consistent, and destroying what is left leaves nothing behind.
                    const check = await qemuImgCheck(dom.disk);
                    assert.equal(check.ok, true, `qemu-img check: ${check.stderr}`);
                    for (const s of real.states.values()) await suite.engine.destroy(s);
                    assert.deepEqual(await libvirtSnapshots(dom), []);
                    assert.deepEqual((await qemuImgInfo(dom.disk)).snapshots ?? [], []);
                } catch (e) {
                    (e as Error).message = `after the steps ${log.join(" → ")}:\n${(e as Error).message}`;
                    throw e;
                }
                stats.runs++;
                await suite.dispose(dom);
            }),
            { seed: SEED, numRuns: RUNS, endOnFailure: true },
        );
        console.log(
            `      ${stats.runs} sequences, ${stats.steps} steps (${stats.write} writes, ${stats.create} creates, ${stats.delete} deletes, ` +
                `${stats.revert} reverts; ${stats.skipped} generated creates found every name taken), ${stats.snapshotReads} snapshot contents read, ${((Date.now() - t0) / 1000).toFixed(1)} s`,
        );
        assert.equal(stats.runs, RUNS);
        assert.ok(stats.delete > 0 && stats.revert > 0, "the sequences deleted and reverted");
    });
});
