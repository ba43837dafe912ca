// DomainSnapshot's validation and planning, without a host: what check reports
// and what create would run. The engine-path tests prove the same against the lab.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { DomainSnapshotSchema } from "../../provider/resources/domainSnapshot";
import { planSnapshot } from "../../provider/snapshot/plan";
import type { DomainProbe } from "../../provider/host/probe";
import { parseSnapshotXml, withMomentIdentity } from "../../provider/host/xml";
import { same } from "../../provider/resource";
import { fakeProbe } from "./fakeProbe";

describe("DomainSnapshot inputs", () => {
    const ok = (over: Record<string, unknown>) =>
        parseInputs(DomainSnapshotSchema, { domain: "web1", snapshotName: "s1", ...over }, { allowUnknowns: true });
    const reasons = (over: Record<string, unknown>) => {
        const r = ok(over);
        return r.ok ? "" : r.failures.map((f) => `${f.property}|${f.reason}`).join("\n");
    };
    it("refuses names libvirt accepts but breaks, naming the property", () => {
        assert.match(reasons({ snapshotName: 'a"b' }), /^snapshotName\|must not contain '"' or '\\'/);
        assert.match(reasons({ snapshotName: "a\\b" }), /snapshotName\|must not contain '"'/);
        assert.match(reasons({ snapshotName: "x".repeat(248) }), /at most 247 bytes/);
        assert.match(reasons({ snapshotName: "é".repeat(124) }), /at most 247 bytes/, "bytes, not characters");
        assert.equal(ok({ snapshotName: "x".repeat(247) }).ok, true);
        assert.match(reasons({ snapshotName: "a/b" }), /must not contain '\/'/);
        assert.match(reasons({ snapshotName: "" }), /must not be empty/);
        assert.match(reasons({ snapshotName: "-rf" }), /must not start with '-'/);
        assert.match(reasons({ snapshotName: "a\nb" }), /control characters/);
        assert.match(reasons({ domain: "--all" }), /^domain\|must not start with '-'/);
    });
    it("keeps any other text literally", () => {
        for (const name of ["with space", "it's", "$(touch x)", "a;b", "<&>", "ünïcødé ✓"])
            assert.equal(ok({ snapshotName: name }).ok, true, name);
        assert.equal(ok({ description: "quotes \" ' $(x) ; \n newline ✓ \u202e" }).ok, true);
    });
    it("refuses bad enums, relative or traversing paths and unknown properties", () => {
        assert.match(reasons({ kind: "both" }), /^kind\|must be 'internal' or 'external'/);
        assert.match(reasons({ memory: "external", memoryFile: "../../etc/passwd" }), /^memoryFile\|must be an absolute path/);
        assert.match(reasons({ memory: "external", memoryFile: "/var/lib/../../etc/passwd" }), /without '\.\.'/);
        assert.match(reasons({ memoryFile: "/a/b.mem" }), /memoryFile\|is only used with memory: 'external'/);
        assert.match(reasons({ disks: [{ name: "vda", snapshot: "internal", file: "/x" }] }), /^disks\[0\]\.file\|/);
        assert.match(reasons({ snapshotname: "typo" }), /unknown property 'snapshotname'/);
        assert.match(reasons({ timeoutSeconds: 0 }), /timeoutSeconds\|must be at least 1/);
    });
    it("tolerates unknown values at preview", () => {
        const r = ok({ domain: "04da6b54-80e4-46f7-96ec-b56ff0331ba9", atomic: "04da6b54-80e4-46f7-96ec-b56ff0331ba9" });
        assert.equal(r.hasUnknowns, true);
        assert.equal(r.ok, false);
        assert.deepEqual(r.ok ? [] : r.failures, []);
    });
});

describe("planSnapshot", () => {
    const probe = fakeProbe;
    const CREATE = ["snapshot-create", "--domain", "11111111-2222-3333-4444-555555555555", "--xmlfile", "/dev/stdin"];
    const plan = (inputs: Record<string, unknown>, p = probe()) => {
        const r = parseInputs(DomainSnapshotSchema, { domain: "web1", snapshotName: "s1", ...inputs }, { allowUnknowns: false });
        assert.ok(r.ok, JSON.stringify(r));
        return planSnapshot(r.value, p);
    };
    it("defaults to internal with memory on a running domain, disk-only offline; skips the cdrom", () => {
        const a = plan({});
        assert.deepEqual(a.plan!.argv, [...CREATE, "--atomic"], "the whole command, by the domain's UUID");
        assert.equal(a.plan!.memory, "internal");
        assert.deepEqual(a.plan!.spec.disks, [{ name: "vda", snapshot: "internal" }]);
        const b = plan({}, probe({ state: "shut off" }));
        assert.equal(b.plan!.memory, "none");
        assert.deepEqual(b.plan!.argv, [...CREATE, "--atomic"]);
    });
    it("puts external memory beside the disk by default, and uses --disk-only without memory", () => {
        const a = plan({ kind: "external" });
        assert.equal(a.plan!.spec.memory.file, "/var/lib/libvirt/images/web1.s1.mem");
        const b = plan({ kind: "external", memory: "none" });
        assert.deepEqual(b.plan!.argv, [...CREATE, "--disk-only", "--atomic"]);
    });
    it("refuses what libvirt 9.0 refuses, with the reason, at plan time", () => {
        const why = (inputs: Record<string, unknown>, p?: DomainProbe) =>
            plan(inputs, p)
                .failures.map((f) => `${f.property}: ${f.reason}`)
                .join("\n");
        assert.match(why({}, probe({ format: "raw" })), /^kind: an internal snapshot lives inside a qcow2 image, but disk vda .* is raw/);
        assert.match(
            why({ memory: "internal" }, probe({ state: "shut off" })),
            /^memory: domain 'web1' is shut off, so there is no memory state to save/,
        );
        assert.match(why({ memory: "none" }), /disk-only internal snapshot of a running domain/);
        assert.match(why({ memory: "external", memoryFile: "/m" }), /mixing internal and external targets/);
        assert.match(why({ kind: "external", memory: "internal" }), /can't save memory inside the disk image when the disks are external/);
        assert.match(why({ kind: "external", memory: "none", quiesce: true }), /^quiesce: domain 'web1' has no QEMU guest agent channel/);
        assert.match(
            why({ kind: "external", memory: "none", quiesce: true }, probe({ agent: "disconnected" })),
            /guest agent of domain 'web1' is not connected/,
        );
        assert.equal(plan({ kind: "external", memory: "none", quiesce: true }, probe({ agent: "connected" })).failures.length, 0);
        assert.match(why({ live: true }), /^live: live snapshots are only possible for full-system external snapshots/);
        assert.match(
            why({ disks: [{ name: "vdz", snapshot: "internal" }] }),
            /^disks\[0\]\.name: domain 'web1' has no disk 'vdz' \(its disks: vda, sda\)/,
        );
        assert.match(why({ disks: [{ name: "vda", snapshot: "no" }] }), /no disk of domain 'web1' would be snapshotted/);
        assert.match(why({ kind: "external" }, probe({ version: 8_000_000 })), /can't delete external snapshots/);
        assert.match(why({ halt: true }, probe({ state: "shut off" })), /^halt: domain 'web1' is already shut off/);
        // A shut-off domain with checkpoints: external refused on every version, internal below 11.3 (measured 9.0 and 11.3).
        const offWithCheckpoints = (version: number) => probe({ state: "shut off", checkpoints: ["c1", "c2"], version });
        assert.match(
            why({ kind: "internal" }, offWithCheckpoints(9_000_000)),
            /^domain: domain 'web1' is shut off and has checkpoints \(c1, c2\): libvirt 9\.0\.0 takes no snapshot of it then \('cannot perform block operations/,
        );
        assert.match(why({ kind: "internal" }, offWithCheckpoints(11_002_000)), /takes no snapshot of it then/);
        assert.equal(plan({ kind: "internal" }, offWithCheckpoints(11_003_000)).failures.length, 0);
        for (const version of [9_000_000, 11_003_000]) {
            assert.match(
                why({ kind: "external" }, offWithCheckpoints(version)),
                /has checkpoints \(c1, c2\): libvirt .* takes no external snapshot of it then/,
            );
        }
        // A running domain's internal snapshot is a qemu job from 10.9 on: its name must be a valid job ID.
        assert.match(
            why({ snapshotName: "before upgrade" }, probe({ version: 10_009_000 })),
            /^snapshotName: libvirt .* qemu refuses 'before upgrade' in a job ID/,
        );
        assert.equal(plan({ snapshotName: "before upgrade" }, probe({ version: 10_008_000 })).failures.length, 0);
        assert.equal(plan({ snapshotName: "before-upgrade.1" }, probe({ version: 11_003_000 })).failures.length, 0);
        assert.equal(plan({ snapshotName: "before upgrade", kind: "external" }, probe({ version: 11_003_000 })).failures.length, 0);
    });
});

describe("a lost snapshot record given back (--redefine)", () => {
    const kept =
        "<domainsnapshot>\n  <name>s2</name>\n  <description>a &amp; b</description>\n  <state>shutoff</state>\n" +
        "  <parent>\n    <name>s1</name>\n  </parent>\n  <creationTime>1764950000</creationTime>\n" +
        "  <memory snapshot='no'/>\n  <disks>\n    <disk name='vda' snapshot='internal'/>\n  </disks>\n" +
        "  <domain type='qemu'>\n    <name>web1</name>\n    <uuid>11111111-1111-1111-1111-111111111111</uuid>\n" +
        "    <devices>\n      <disk type='file' device='disk'><source file='/d/web1.qcow2'/><target dev='vda'/></disk>\n    </devices>\n  </domain>\n</domainsnapshot>\n";
    it("carries the domain's UUID now and the parent that exists; the rest as libvirt wrote it", () => {
        const fitted = withMomentIdentity(kept, "domainsnapshot", { parent: "s0", uuid: "22222222-2222-2222-2222-222222222222" });
        const s = parseSnapshotXml(fitted);
        assert.equal(s.domain?.uuid, "22222222-2222-2222-2222-222222222222");
        assert.equal(s.domain?.name, "web1");
        assert.equal(s.parent, "s0");
        assert.equal(s.description, "a & b");
        assert.equal(s.creationTime, 1764950000);
        assert.deepEqual(
            s.disks.map((d) => [d.name, d.snapshot]),
            [["vda", "internal"]],
        );
        const root = withMomentIdentity(kept, "domainsnapshot", { parent: undefined });
        assert.equal(parseSnapshotXml(root).parent, undefined);
        assert.equal(parseSnapshotXml(root).domain?.uuid, "11111111-1111-1111-1111-111111111111", "no uuid given: kept");
    });
    it("a running snapshot's persistent definition (<inactiveDomain>) carries the new UUID too", () => {
        const running = kept.replace(
            "</domainsnapshot>\n",
            "  <inactiveDomain type='qemu'>\n    <name>web1</name>\n    <uuid>11111111-1111-1111-1111-111111111111</uuid>\n  </inactiveDomain>\n</domainsnapshot>\n",
        );
        const fitted = withMomentIdentity(running, "domainsnapshot", { parent: undefined, uuid: "22222222-2222-2222-2222-222222222222" });
        assert.doesNotMatch(fitted, /11111111-1111-1111-1111-111111111111/, "no old UUID left anywhere");
        assert.equal(fitted.match(/22222222-2222-2222-2222-222222222222/g)?.length, 2);
    });
    it("diff compares declared values whatever the key order (the state comes back with sorted keys)", () => {
        assert.equal(same([{ name: "vda", snapshot: "external", file: "/o" }], [{ file: "/o", name: "vda", snapshot: "external" }]), true);
        assert.equal(same([{ name: "vda", snapshot: "external" }], [{ name: "vda", snapshot: "internal" }]), false);
    });
});
