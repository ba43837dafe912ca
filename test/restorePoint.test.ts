// RestorePoint through the engine path, on real lab domains.
import * as assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { DomainSnapshotProvider, RestorePointProvider } from "pulumi-libvirt-snapshots";
import { engineSuite } from "./support/fixture";
import { MiB, defaultTarget, domstate, expectCallError, re, snapshotNames, sshConnection } from "./support/helpers";
import {
    allLabHosts,
    loadLab,
    onHost,
    type LabInfo,
    qemuIoRead,
    qemuIoWrite,
    readGuestCounter,
    sleep,
    virshOk,
    waitGuestCounter,
} from "./support/lab";

const lab = loadLab();

/** libvirt's own lifecycle events with timestamps, as `virsh event` prints them. */
class EventLog {
    private proc: ChildProcess;
    private text = "";
    constructor() {
        const [file, args] = onHost("virsh", ["-c", lab.libvirtUri, "event", "--loop", "--event", "lifecycle", "--timestamp"], lab);
        this.proc = spawn(file, args, {
            env: { ...process.env, LC_ALL: "C" },
        });
        this.proc.stdout!.on("data", (d: Buffer) => {
            this.text += d.toString();
        });
    }
    /** [time, event] per domain, e.g. "Suspended" / "Resumed". */
    events(domain: string): Array<{ t: number; what: string }> {
        const out: Array<{ t: number; what: string }> = [];
        for (const line of this.text.split("\n")) {
            // 2026-11-25 19:40:01.123+0000: event 'lifecycle' for domain 'x': Suspended Paused
            const m = /^(\S+ \S+?)(\+\d{4}): event 'lifecycle' for domain '([^']+)': (\w+)/.exec(line);
            if (m && m[3] === domain) out.push({ t: Date.parse(`${m[1]!.replace(" ", "T")}Z`), what: m[4]! });
        }
        return out;
    }
    async stop() {
        this.proc.kill();
        await sleep(50);
    }
}

describe("RestorePoint (engine path, real lab)", function () {
    this.timeout(180_000);
    const suite = engineSuite("labtmp-rp-");
    const { newDomains } = suite;

    it("simultaneous: three running guests are paused together, snapshotted, resumed; each snapshot reverts correctly", async () => {
        const ds = await newDomains(3, { running: true, writer: true });
        await Promise.all(ds.map((d) => waitGuestCounter(d.disk, 2, 60_000)));
        const events = new EventLog();
        await sleep(300);
        let rp;
        try {
            rp = await suite.engine.up("pg17", RestorePointProvider, {
                domains: ds.map((d) => d.name),
                snapshotName: "pg17",
                memory: "internal",
                description: "before PostgreSQL 17",
            });
            await sleep(300);
        } finally {
            await events.stop();
        }
        const snaps = rp.outs.snapshots as Array<Record<string, unknown>>;
        assert.deepEqual(
            snaps.map((s) => s.domainName),
            ds.map((d) => d.name),
        );
        assert.ok(
            snaps.every((s) => s.snapshotName === "pg17" && s.memory === "internal" && s.state === "paused"),
            JSON.stringify(snaps),
        );
        assert.ok((rp.outs.pausedMilliseconds as number) > 0);
        for (const d of ds) assert.equal(await domstate(d.name), "running", "no VM is left paused");

        // There was one instant when all three were paused: the last pause came before the first resume.
        const pauses = ds.map((d) => events.events(d.name).find((e) => e.what === "Suspended")!);
        const resumes = ds.map((d) => [...events.events(d.name)].reverse().find((e) => e.what === "Resumed")!);
        assert.ok(pauses.every(Boolean) && resumes.every(Boolean), "libvirt reported a pause and a resume for each domain");
        assert.ok(
            Math.max(...pauses.map((e) => e.t)) <= Math.min(...resumes.map((e) => e.t)),
            `all paused at once: pauses ${pauses.map((e) => e.t)}, resumes ${resumes.map((e) => e.t)}`,
        );

        // Revert each (paused, so its disk holds the snapshot's counter), and the guest's counter goes back.
        for (const d of ds) {
            const before = await readGuestCounter(d.disk);
            await waitGuestCounter(d.disk, before + 3, 30_000);
            await virshOk(["snapshot-revert", "--domain", d.name, "--snapshotname", "pg17", "--paused"]);
            const reverted = await readGuestCounter(d.disk);
            assert.ok(reverted <= before, `${d.name}: counter after revert ${reverted} ≤ at snapshot time ${before}`);
            await virshOk(["resume", "--domain", d.name]);
            await waitGuestCounter(d.disk, reverted, 30_000);
        }
        await suite.engine.destroy(rp);
        for (const d of ds) assert.deepEqual(await snapshotNames(d.name), []);
    });

    it("a failure midway: the others are resumed, their snapshots rolled back, and the error names the domain", async () => {
        const ds = await newDomains(3, { running: true });
        await virshOk(["snapshot-create-as", "--domain", ds[2]!.name, "--name", "midway"]);
        let message = "";
        try {
            await suite.engine.up("midway", RestorePointProvider, { domains: ds.map((d) => d.name), snapshotName: "midway" });
        } catch (e) {
            message = (e as Error).message;
        }
        assert.match(
            message,
            new RegExp(
                `restore point 'midway' failed on domain '${ds[2]!.name}' \\(domains\\[2\\]\\) on ${re(defaultTarget())}.*already exists`,
            ),
        );
        assert.match(message, new RegExp(`rolled back: (${ds[0]!.name}, ${ds[1]!.name}|${ds[1]!.name}, ${ds[0]!.name})`));
        assert.match(message, /every paused domain was resumed/);
        for (const d of ds) assert.equal(await domstate(d.name), "running");
        assert.deepEqual(await snapshotNames(ds[0]!.name), []);
        assert.deepEqual(await snapshotNames(ds[1]!.name), []);
        assert.deepEqual(await snapshotNames(ds[2]!.name), ["midway"], "the pre-existing snapshot is untouched");
    });

    it("a create that finds every member's snapshot made by itself in a run cut off takes the restore point over; only some: the error names the commands", async () => {
        const ds = await newDomains(2, { running: true });
        const inputs = { domains: ds.map((d) => d.name), snapshotName: "cut", __maker: "urn:pulumi:dev::proj::rp::cut" };
        const first = await suite.engine.up("cut", RestorePointProvider, inputs);
        // The engine lost that create: the same resource creates again, and takes over what it made.
        const again = await suite.engine.up("cut", RestorePointProvider, inputs);
        const times = (st: typeof first) => (st.outs.snapshots as Array<{ creationTime: string }>).map((x) => x.creationTime);
        assert.deepEqual(times(again), times(first), "taken over, not taken again");
        for (const d of ds) assert.deepEqual(await snapshotNames(d.name), ["cut"]);
        // Another resource's restore point of that name is not this one's.
        await expectCallError(
            suite.engine.up("other", RestorePointProvider, { ...inputs, __maker: "urn:pulumi:dev::proj::rp::other" }),
            /restore point 'cut' failed on domain .*already exists/,
        );
        // Only one member left from the cut-off run: not one restore point; the other member's new snapshot is rolled back.
        await virshOk(["snapshot-delete", "--domain", ds[1]!.name, "--snapshotname", "cut"]);
        let message = "";
        try {
            await suite.engine.up("cut", RestorePointProvider, inputs);
        } catch (e) {
            message = (e as Error).message;
        }
        assert.match(
            message,
            new RegExp(`snapshot 'cut' of domain '${ds[0]!.name}' was made by this restore point in a run that was cut off`),
        );
        const command = new RegExp(`virsh -c \\S+ snapshot-delete --domain ${ds[0]!.uuid} --snapshotname cut`).exec(message);
        assert.ok(command, message);
        assert.match(message, new RegExp(`rolled back: ${ds[1]!.name}`));
        assert.deepEqual(await snapshotNames(ds[1]!.name), []);
        // The command it names, run; then the restore point is taken anew.
        await virshOk(command[0].split(" ").slice(3));
        const retaken = await suite.engine.up("cut", RestorePointProvider, inputs);
        for (const d of ds) assert.deepEqual(await snapshotNames(d.name), ["cut"]);
        await suite.engine.destroy(retaken);
        for (const d of ds) assert.deepEqual(await snapshotNames(d.name), []);
    });

    it("refuses a missing domain or a raw disk at preview; a domain that vanished after preview fails before anything is paused", async () => {
        const [ok] = await newDomains(1, { running: true });
        const [raw] = await newDomains(1, { format: "raw" });
        const news = await suite.engine.programInputs(RestorePointProvider, {
            domains: [ok!.name, "no-such-domain", raw!.name],
            snapshotName: "pre",
        });
        const r = await suite.engine.check(suite.engine.urn("pulumi-nodejs:dynamic:Resource", "pre"), {}, news);
        const failures = r.failures.map((f) => `${f.property}: ${f.reason}`);
        assert.equal(failures.length, 2, failures.join("\n"));
        assert.match(failures[0]!, new RegExp(`^domains\\[1\\]: no domain 'no-such-domain' on ${re(defaultTarget())}`));
        assert.match(failures[1]!, /^domains\[2\]: domain '.*': kind: an internal snapshot lives inside a qcow2 image/);
        await assert.rejects(
            suite.engine.create(suite.engine.urn("pulumi-nodejs:dynamic:Resource", "pre"), news),
            /domains\[1\]: no domain 'no-such-domain'/,
        );
        assert.equal(await domstate(ok!.name), "running");
        assert.deepEqual(await snapshotNames(ok!.name), []);
        const both = await suite.engine.check(
            suite.engine.urn("pulumi-nodejs:dynamic:Resource", "x"),
            {},
            await suite.engine.programInputs(RestorePointProvider, {
                domains: [ok!.name],
                targets: [{ domains: [ok!.name] }],
                snapshotName: "x",
            }),
        );
        assert.match(both.failures.map((f) => `${f.property}: ${f.reason}`).join(), /give either domains .* or targets/);
    });

    it("adding and removing a domain changes only those domains' snapshots", async () => {
        const [a, b, c] = await newDomains(3);
        const rp = await suite.engine.up("members", RestorePointProvider, { domains: [a!.name, b!.name], snapshotName: "members" });
        const createdA = (rp.outs.snapshots as Array<Record<string, unknown>>)[0]!.creationTime;
        await sleep(1100); // creation times have one-second resolution
        const ch = await suite.engine.change(rp, RestorePointProvider, { domains: [a!.name, c!.name], snapshotName: "members" });
        assert.equal(ch.op, "update");
        assert.deepEqual(await snapshotNames(a!.name), ["members"]);
        assert.deepEqual(await snapshotNames(b!.name), []);
        assert.deepEqual(await snapshotNames(c!.name), ["members"]);
        const snaps = ch.state.outs.snapshots as Array<Record<string, unknown>>;
        assert.deepEqual(
            snaps.map((s) => s.domainName),
            [a!.name, c!.name],
        );
        assert.equal(snaps[0]!.creationTime, createdA, "the kept domain's snapshot is the same one");
        await suite.engine.destroy(ch.state);
        for (const d of [a!, b!, c!]) assert.deepEqual(await snapshotNames(d.name), []);
    });

    it("deleting a restore point while a later DomainSnapshot exists keeps the later one's data", async () => {
        const [a, b] = await newDomains(2);
        await qemuIoWrite(a!.disk, 0xaa, 0, MiB);
        const rp = await suite.engine.up("rp-first", RestorePointProvider, {
            domains: [a!.name, b!.name],
            snapshotName: "rp-first",
            consistency: "independent",
        });
        assert.equal(rp.outs.pausedMilliseconds, 0);
        await qemuIoWrite(a!.disk, 0xbb, MiB, MiB);
        const later = await suite.engine.up("later", DomainSnapshotProvider, { domain: a!.name, snapshotName: "later" });
        assert.equal(later.outs.parent, "rp-first");
        await suite.engine.destroy(rp);
        assert.deepEqual(await snapshotNames(a!.name), ["later"]);
        await qemuIoWrite(a!.disk, 0xcc, 0, 2 * MiB);
        await virshOk(["snapshot-revert", "--domain", a!.name, "--snapshotname", "later"]);
        assert.equal(await qemuIoRead(a!.disk, 0xaa, 0, MiB), true, "data from before the restore point");
        assert.equal(await qemuIoRead(a!.disk, 0xbb, MiB, MiB), true, "data from after it");
        assert.equal((await suite.engine.refresh(later))!.outs.parent, null);
        await suite.engine.destroy(later);
    });

    it("spans the two lab hosts, libvirt 9.0 and 11.3, with targets: one snapshot on each, removed from each", async () => {
        const [h12, h13] = allLabHosts();
        const a = await suite.newDomain({ running: true, lab: h12 });
        const b = await suite.newDomain({ running: true, lab: h13 });
        const rp = await suite.engine.up("multi", RestorePointProvider, {
            targets: [
                { connection: sshConnection(h12), domains: [a.name] },
                { connection: sshConnection(h13), domains: [b.name] },
            ],
            snapshotName: "multi",
        });
        const snaps = rp.outs.snapshots as Array<Record<string, unknown>>;
        assert.deepEqual(
            snaps.map((x) => [x.host, x.domainName]),
            [
                [`root@${h12!.host}:${h12!.port} (qemu:///system)`, a.name],
                [`root@${h13!.host}:${h13!.port} (qemu:///system)`, b.name],
            ],
        );
        const names = async (d: { name: string }, h: LabInfo) =>
            (await virshOk(["snapshot-list", "--domain", d.name, "--name"], { lab: h })).split("\n").filter(Boolean);
        assert.deepEqual(await names(a, h12!), ["multi"]);
        assert.deepEqual(await names(b, h13!), ["multi"]);
        assert.equal((await virshOk(["domstate", "--domain", a.name], { lab: h12 })).trim(), "running");
        assert.equal((await virshOk(["domstate", "--domain", b.name], { lab: h13 })).trim(), "running");
        await suite.engine.destroy(rp);
        assert.deepEqual(await names(a, h12!), []);
        assert.deepEqual(await names(b, h13!), []);
    });
});
