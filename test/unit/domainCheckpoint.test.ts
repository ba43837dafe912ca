// DomainCheckpoint's validation, planning, XML and diff, without a host. The
// engine-path tests (domainCheckpoint.test.ts) prove the same against the lab.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { DomainCheckpointSchema, planCheckpoint, domainCheckpoint } from "../../provider/resources/domainCheckpoint";
import { buildCheckpointXml, parseCheckpointXml, withCheckpointParent, withDescription } from "../../provider/host/xml";
import type { DomainProbe } from "../../provider/host/probe";
import { fakeProbe } from "./fakeProbe";

const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

describe("DomainCheckpoint inputs", () => {
    const ok = (over: Record<string, unknown>) =>
        parseInputs(DomainCheckpointSchema, { domain: "web1", checkpointName: "c1", ...over }, { allowUnknowns: true });
    const reasons = (over: Record<string, unknown>) => {
        const r = ok(over);
        return r.ok ? "" : r.failures.map((f) => `${f.property}|${f.reason}`).join("\n");
    };

    it("takes only names libvirt's checkpoint schema takes, with one message per problem", () => {
        for (const name of ["c1", "before-upgrade", "v1.2_3", "_x", "2026-11-25"])
            assert.equal(ok({ checkpointName: name }).ok, true, name);
        assert.match(
            reasons({ checkpointName: "with space" }),
            /^checkpointName\|may contain only letters, digits, '_', '-' and '\.', and must not start with '\.'/,
        );
        assert.match(reasons({ checkpointName: ".hidden" }), /^checkpointName\|may contain only letters/);
        assert.match(reasons({ checkpointName: "ünï" }), /^checkpointName\|may contain only letters/);
        assert.equal(reasons({ checkpointName: 'a"b' }).split("\n").length, 1);
        assert.match(reasons({ checkpointName: 'a"b' }), /^checkpointName\|must not contain '"'/);
        assert.match(reasons({ checkpointName: "-rf" }), /^checkpointName\|must not start with '-': virsh would read it as an option$/);
        assert.match(reasons({ checkpointName: "a/b" }), /^checkpointName\|must not contain '\/'/);
        assert.match(reasons({ checkpointName: "" }), /^checkpointName\|must not be empty/);
        assert.match(reasons({ checkpointName: "x".repeat(248) }), /at most 247 bytes/);
    });
    it("refuses bad enums, misplaced bitmaps, duplicate disks and unknown properties", () => {
        assert.match(reasons({ deletion: "never" }), /^deletion\|must be 'delete' .* or 'metadata'/);
        assert.match(reasons({ disks: [{ name: "vda", checkpoint: "yes" }] }), /^disks\[0\]\.checkpoint\|must be 'bitmap' .* or 'no'/);
        assert.match(
            reasons({ disks: [{ name: "vda", checkpoint: "no", bitmap: "c1" }] }),
            /^disks\[0\]\.bitmap\|is only used with checkpoint: 'bitmap'/,
        );
        assert.match(
            reasons({
                disks: [
                    { name: "vda", checkpoint: "bitmap" },
                    { name: "vda", checkpoint: "no" },
                ],
            }),
            /^disks\[1\]\.name\|names disk 'vda' twice/,
        );
        assert.match(reasons({ disks: [{ name: "vda", checkpoint: "bitmap", size: 1 }] }), /unknown property 'size'/);
        assert.match(reasons({ checkpointname: "typo" }), /unknown property 'checkpointname'/);
        assert.match(reasons({ quiesce: "yes" }), /^quiesce\|must be true or false/);
        assert.match(reasons({ timeoutSeconds: 0 }), /^timeoutSeconds\|must be at least 1/);
    });
    it("applies defaults, and tolerates unknown values at preview", () => {
        const r = ok({});
        assert.ok(r.ok);
        assert.deepEqual([r.value.quiesce, r.value.deletion, r.value.adopt], [false, "delete", false]);
        const u = ok({ domain: UNKNOWN, description: UNKNOWN });
        assert.equal(u.hasUnknowns, true);
        assert.deepEqual(u.ok ? [] : u.failures, []);
    });
});

describe("planCheckpoint", () => {
    const probe = fakeProbe;
    const plan = (inputs: Record<string, unknown>, p = probe(), caps?: { backup: "yes" | "no" | "unknown" }) => {
        const r = parseInputs(DomainCheckpointSchema, { domain: "web1", checkpointName: "c1", ...inputs }, { allowUnknowns: false });
        assert.ok(r.ok, JSON.stringify(r));
        return planCheckpoint(r.value, p, caps);
    };
    const why = (inputs: Record<string, unknown>, p?: DomainProbe, caps?: { backup: "yes" | "no" | "unknown" }) =>
        plan(inputs, p, caps)
            .failures.map((f) => `${f.property}: ${f.reason}`)
            .join("\n");

    it("puts every writable disk in the checkpoint, with the bitmap named after it; skips the cdrom", () => {
        const a = plan({ description: "before <upgrade> & 'more'" });
        assert.deepEqual(a.plan!.spec.disks, [{ name: "vda", checkpoint: "bitmap", bitmap: "c1" }]);
        const parsed = parseCheckpointXml(a.plan!.xml);
        assert.equal(parsed.name, "c1");
        assert.equal(parsed.description, "before <upgrade> & 'more'");
        assert.deepEqual(parsed.disks, [{ name: "vda", checkpoint: "bitmap", bitmap: "c1" }]);
    });
    it("refuses what libvirt 9.0 refuses, with the reason", () => {
        assert.match(
            why({}, probe({ state: "shut off" })),
            /^domain: domain 'web1' is shut off: libvirt 9\.0\.0 creates checkpoints only while the domain runs/,
        );
        assert.match(
            why({}, probe({ format: "raw" })),
            /^disks: a checkpoint is a dirty bitmap kept inside a qcow2 image, but disk vda .* is raw\. Leave it out/,
        );
        assert.match(
            why({}, probe({ version: 5_005_000 })),
            /^domain: libvirt 5\.5\.0 has no checkpoints \(they arrived in libvirt 5\.6\)/,
        );
        assert.match(why({}, probe(), { backup: "no" }), /does not support incremental backup/);
        assert.equal(why({}, probe(), { backup: "yes" }), "");
        assert.match(why({ quiesce: true }), /^quiesce: .*can't quiesce a checkpoint/);
        assert.match(
            why({ disks: [{ name: "vda", checkpoint: "bitmap", bitmap: "other" }] }),
            /^disks\[0\]\.bitmap: libvirt's QEMU driver names every bitmap after its checkpoint/,
        );
        assert.equal(why({ disks: [{ name: "vda", checkpoint: "bitmap", bitmap: "c1" }] }), "");
        assert.match(why({ disks: [{ name: "vda", checkpoint: "no" }] }), /^disks: no disk of domain 'web1' would be in the checkpoint/);
        assert.match(
            why({ disks: [{ name: "vdz", checkpoint: "bitmap" }] }),
            /^disks\[0\]\.name: domain 'web1' has no disk 'vdz' \(its disks: vda, sda\)/,
        );
    });
    it("a raw disk can be left out, and a disk can be named by its source path", () => {
        const twoDisks = probe({
            disks: [
                { target: "vda", device: "disk", type: "file", format: "qcow2", source: "/img/a.qcow2", readonly: false },
                { target: "vdb", device: "disk", type: "file", format: "raw", source: "/img/b.raw", readonly: false },
            ],
        });
        assert.match(why({}, twoDisks), /disk vdb \(\/img\/b\.raw\) is raw/);
        const p = plan({ disks: [{ name: "/img/b.raw", checkpoint: "no" }] }, twoDisks);
        assert.deepEqual(p.plan!.spec.disks, [
            { name: "vda", checkpoint: "bitmap", bitmap: "c1" },
            { name: "vdb", checkpoint: "no" },
        ]);
    });
});

describe("checkpoint XML", () => {
    const libvirtXml = `<domaincheckpoint>
  <name>c2</name>
  <description>keep &amp; this</description>
  <parent>
    <name>c1</name>
  </parent>
  <creationTime>1795634606</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='c2' size='655360'/>
  </disks>
  <domain type='kvm'>
    <name>web1</name>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/img/a.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</domaincheckpoint>
`;
    it("parses libvirt's checkpoint XML, sizes and the embedded domain (one disk is still a list)", () => {
        const c = parseCheckpointXml(libvirtXml);
        assert.equal(c.name, "c2");
        assert.equal(c.description, "keep & this");
        assert.equal(c.parent, "c1");
        assert.equal(c.creationTime, 1795634606);
        assert.deepEqual(c.disks, [{ name: "vda", checkpoint: "bitmap", bitmap: "c2", size: 655360 }]);
        assert.equal(c.domain?.uuid, "11111111-2222-3333-4444-555555555555");
        assert.deepEqual(
            c.domain?.disks.map((d) => d.target),
            ["vda"],
        );
        assert.equal(
            parseCheckpointXml(
                "<domaincheckpoint><name>x</name><disks><disk name='vda' checkpoint='bitmap' bitmap='x'/></disks></domaincheckpoint>",
            ).disks[0]!.size,
            undefined,
            "no size attribute (libvirt couldn't measure it): no size",
        );
    });
    it("re-parents or un-parents a kept document and leaves the rest as libvirt wrote it", () => {
        const moved = parseCheckpointXml(withCheckpointParent(libvirtXml, "c0"));
        assert.equal(moved.parent, "c0");
        assert.equal(moved.description, "keep & this");
        assert.equal(moved.domain?.name, "web1");
        const root = withCheckpointParent(libvirtXml, undefined);
        assert.equal(parseCheckpointXml(root).parent, undefined);
        assert.doesNotMatch(root, /<parent>/);
        assert.equal(parseCheckpointXml(withCheckpointParent(root, "a&b")).parent, "a&b");
        assert.equal(parseCheckpointXml(withDescription(libvirtXml, "domaincheckpoint", "<new>")).description, "<new>");
    });
    it("builds XML with every value escaped", () => {
        const xml = buildCheckpointXml({
            name: "c1",
            description: "]]> <x/> &",
            disks: [
                { name: "vda", checkpoint: "bitmap", bitmap: "c1" },
                { name: "vdb", checkpoint: "no", bitmap: "ignored" },
            ],
        });
        const c = parseCheckpointXml(xml);
        assert.equal(c.description, "]]> <x/> &");
        assert.deepEqual(c.disks, [
            { name: "vda", checkpoint: "bitmap", bitmap: "c1" },
            { name: "vdb", checkpoint: "no" },
        ]);
    });
});

describe("DomainCheckpoint diff (replacements need no host)", () => {
    const olds = {
        domain: "web1",
        checkpointName: "c1",
        domainName: "web1",
        domainUuid: "11111111-2222-3333-4444-555555555555",
        declared: { domain: "web1", checkpointName: "c1", quiesce: false, deletion: "delete", adopt: false },
    } as unknown as Parameters<typeof domainCheckpoint.diff>[1];
    it("replaces on a new name, domain, disks or host; deleteBeforeReplace only when name and domain stay", async () => {
        let d = await domainCheckpoint.diff("id", olds, { domain: "web1", checkpointName: "c2" });
        assert.deepEqual([d.replaces, d.deleteBeforeReplace], [["checkpointName"], false]);
        d = await domainCheckpoint.diff("id", olds, {
            domain: "web1",
            checkpointName: "c1",
            disks: [{ name: "vda", checkpoint: "bitmap" }],
        });
        assert.deepEqual([d.replaces, d.deleteBeforeReplace], [["disks"], true]);
        d = await domainCheckpoint.diff("id", olds, { domain: "web2", checkpointName: "c1" });
        assert.deepEqual(d.replaces, ["domain"]);
        d = await domainCheckpoint.diff("id", olds, { domain: "web1", checkpointName: UNKNOWN });
        assert.deepEqual(d.replaces, ["checkpointName"], "an unknown name may be a new one");
        d = await domainCheckpoint.diff("id", olds, { domain: "web1", checkpointName: "c1", connection: { host: "kvm2" } });
        assert.ok(d.replaces!.includes("connection"));
    });
});
