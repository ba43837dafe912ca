// Version rules for deleting and reverting external snapshots that no lab host can
// show (libvirt 9.9 to 10.x), and the commands the provider runs per version, on a
// scripted host that records every command. The lab suites
// (test/externalSnapshots.test.ts) prove the 9.0 and 11.3 behaviour for real.
import * as assert from "node:assert/strict";
import { LibvirtError } from "../../provider/errors";
import type { Virsh } from "../../provider/host/virsh";
import { diskChainsOf } from "../../provider/host/xml";
import { deleteSnapshot } from "../../provider/snapshot/delete";
import type { SnapshotPlan } from "../../provider/snapshot/plan";
import { makeOverlaysPrivate } from "../../provider/snapshot/take";
import { revertNow } from "../../provider/resources/snapshotRevert";
import { expectCallError } from "../support/helpers";
import { fakeProbe } from "./fakeProbe";

const UUID = "11111111-2222-3333-4444-555555555555";
const DOMAIN_XML =
    `<domain type='kvm'><name>web1</name><uuid>${UUID}</uuid><devices>` +
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/images/web1.qcow2'/><target dev='vda'/></disk>" +
    "</devices></domain>";

interface Snap {
    parent?: string;
    external: boolean;
    memory?: string;
    children: number;
}

/** A host with these snapshots and this current one, answering as libvirt VERSION does; `ran` records virsh, `host` other commands. */
function scriptedHost(o: {
    version: number;
    externalSnapshot: boolean;
    snapshots: Record<string, Snap>;
    current?: string;
    state?: string;
}) {
    const ran: string[] = [];
    const host: string[] = [];
    const v = o.version;
    const text = `${Math.floor(v / 1e6)}.${Math.floor(v / 1e3) % 1000}.${v % 1000}`;
    const arg = (args: string[], flag: string) => args[args.indexOf(flag) + 1]!;
    const fail = (msg: string) => new LibvirtError("failed", msg);
    const virsh = {
        where: "kvm1 (qemu:///system)",
        connection: {},
        version: async () => ({ libvirt: text, number: v, hypervisor: "QEMU" }),
        capabilities: async () => ({ externalSnapshot: o.externalSnapshot }),
        async host(argv: string[]) {
            host.push(argv.join(" "));
            return { code: 0, stdout: "", stderr: "", command: argv.join(" ") };
        },
        async query(args: string[]) {
            return this.run(args);
        },
        async run(args: string[]): Promise<string> {
            ran.push(args.join(" "));
            const name = args.includes("--snapshotname") ? arg(args, "--snapshotname") : "";
            const s = o.snapshots[name];
            switch (args[0]) {
                case "dumpxml":
                    return DOMAIN_XML;
                case "domstate":
                    return `${o.state ?? "shut off"}\n`;
                case "domid":
                    return "-\n";
                case "checkpoint-list":
                    return "\n";
                case "snapshot-info":
                    return `Name: ${name}\nCurrent: ${name === o.current ? "yes" : "no"}\nChildren: ${s!.children}\n`;
                case "snapshot-dumpxml": {
                    const mode = s!.external ? "external" : "internal";
                    return (
                        `<domainsnapshot><name>${name}</name><state>shutoff</state><creationTime>1700000000</creationTime>` +
                        (s!.parent ? `<parent><name>${s!.parent}</name></parent>` : "") +
                        (s!.memory ? `<memory snapshot='external' file='${s!.memory}'/>` : "<memory snapshot='no'/>") +
                        `<disks><disk name='vda' snapshot='${mode}'>${s!.external ? `<source file='/images/web1.${name}'/>` : ""}</disk></disks></domainsnapshot>`
                    );
                }
                case "snapshot-current":
                    if (!o.current) throw fail("domain 'web1' has no current snapshot");
                    return `${o.current}\n`;
                case "snapshot-parent":
                    if (!s!.parent) throw fail(`snapshot '${name}' has no parent`);
                    return `${s!.parent}\n`;
                case "snapshot-list": {
                    // --from X --descendants --external --name
                    const from = arg(args, "--from");
                    const below = (p: string): string[] =>
                        Object.entries(o.snapshots)
                            .filter(([, x]) => x.parent === p)
                            .flatMap(([n]) => [n, ...below(n)]);
                    return below(from)
                        .filter((n) => o.snapshots[n]!.external)
                        .map((n) => `${n}\n`)
                        .join("");
                }
                case "snapshot-delete":
                    return "";
            }
            throw new Error(`unexpected virsh ${args.join(" ")}`);
        },
    };
    return { virsh: virsh as unknown as Virsh, ran, host };
}

const del = (virsh: Virsh, name: string) =>
    deleteSnapshot(virsh, { domain: UUID, domainName: "web1", snapshotName: name, deletion: "delete" });

describe("deleting external snapshots, per libvirt version", () => {
    const withMemory = { m: { external: true, memory: "/images/web1.m.mem", children: 0 } };

    it("libvirt 9.1 and newer remove the memory file themselves: the provider runs nothing but virsh, so never removes it twice", async () => {
        for (const version of [9_001_000, 11_003_000]) {
            const h = scriptedHost({ version, externalSnapshot: version >= 9_009_000, snapshots: withMemory, current: "m" });
            await del(h.virsh, "m");
            assert.ok(h.ran.includes(`snapshot-delete --domain ${UUID} --snapshotname m`));
            assert.deepEqual(h.host, [], `libvirt ${version}`);
        }
    });
    it("libvirt 9.0 leaves the memory file: the provider removes it, once", async () => {
        const h = scriptedHost({ version: 9_000_000, externalSnapshot: false, snapshots: withMemory, current: "m" });
        await del(h.virsh, "m");
        assert.deepEqual(h.host, ["rm -f -- /images/web1.m.mem"]);
    });

    // virt-manager #811: internal i1, external e1 on top, a revert to i1, then e1 deleted.
    const reverted = { i1: { external: false, children: 1 }, e1: { parent: "i1", external: true, children: 0 } };
    it("libvirt 9.9 to 10.x would delete the base image with an external snapshot left by a revert: refused, nothing run", async function () {
        this.timeout(30_000); // the delete looks again for 10 s before it refuses (another client's delete may be ending)
        const h = scriptedHost({ version: 10_000_000, externalSnapshot: true, snapshots: reverted, current: "i1" });
        await expectCallError(
            del(h.virsh, "e1"),
            /cannot delete external snapshot 'e1' of domain 'web1': its overlay \/images\/web1\.e1 \(vda\) is not in the domain's current disk chain: .*libvirt 10\.0\.0 would delete the base image with it \(a data loss fixed in 11\.0: libvirt #734, virt-manager #811\)\. Nothing was changed\. Set deletion: 'metadata'/,
        );
        assert.ok(!h.ran.some((c) => c.startsWith("snapshot-delete")));
    });
    it("libvirt 11.0 and newer delete it (11.3 measured keeps every file); on the current branch 10.x deletes too", async () => {
        const fixed = scriptedHost({ version: 11_000_000, externalSnapshot: true, snapshots: reverted, current: "i1" });
        await del(fixed.virsh, "e1");
        assert.ok(fixed.ran.includes(`snapshot-delete --domain ${UUID} --snapshotname e1`));
        const onBranch = scriptedHost({ version: 10_000_000, externalSnapshot: true, snapshots: reverted, current: "e1" });
        await del(onBranch.virsh, "e1");
        assert.ok(onBranch.ran.includes(`snapshot-delete --domain ${UUID} --snapshotname e1`));
    });
    it("an external snapshot with two children (a revert made a branch) is refused with the reason", async () => {
        const h = scriptedHost({
            version: 11_003_000,
            externalSnapshot: true,
            snapshots: { s1: { external: true, children: 2 }, s2: { parent: "s1", external: true, children: 0 } },
            current: "s2",
        });
        await expectCallError(
            del(h.virsh, "s1"),
            /it has 2 child snapshots \(a revert made a branch\), and libvirt 11\.3\.0 deletes an external snapshot with at most one child/,
        );
        assert.ok(!h.ran.some((c) => c.startsWith("snapshot-delete")));
    });
});

describe("reverting to an internal snapshot with external descendants", () => {
    const reverted = { i1: { external: false, children: 1 }, e1: { parent: "i1", external: true, children: 0 } };
    const inputs = { domain: "web1", snapshot: "i1", afterRevert: "as-snapshotted" as const, force: false };

    it("libvirt 9.9 to 10.x: refused before anything changes (a later delete of the external one would lose the base image)", async () => {
        const h = scriptedHost({ version: 10_000_000, externalSnapshot: true, snapshots: reverted, current: "e1" });
        await expectCallError(
            revertNow(h.virsh, inputs),
            /snapshot: 'i1' is an internal snapshot with external descendants \('e1'\), and libvirt 10\.0\.0 deletes the base image when one of them is deleted after this revert \(a data loss fixed in 11\.0: libvirt #734, virt-manager #811\)/,
        );
        assert.ok(!h.ran.some((c) => c.startsWith("snapshot-revert")));
    });
    it("9.0 and 11.0 and newer: no such refusal", async () => {
        for (const version of [9_000_000, 11_003_000]) {
            const h = scriptedHost({ version, externalSnapshot: version >= 9_009_000, snapshots: reverted, current: "e1" });
            await revertNow(h.virsh, inputs).catch(() => undefined);
            assert.ok(!h.ran.some((c) => c.startsWith("snapshot-list")), `libvirt ${version} is not asked`);
        }
    });
});

describe("a disk's chain from libvirt's domain XML", () => {
    const disk = (backing: string) =>
        `<domain><name>d</name><devices><disk type='file' device='disk'><source file='/i/top.qcow2'/>${backing}<target dev='vda'/></disk></devices></domain>`;
    it("a running domain's XML ends the chain with an empty <backingStore/>: complete, no host command needed", () => {
        const live = disk(
            "<backingStore type='file' index='1'><format type='qcow2'/><source file='/i/mid.qcow2'/>" +
                "<backingStore type='file'><source file='/i/base.qcow2'/><backingStore/></backingStore></backingStore>",
        );
        assert.deepEqual(diskChainsOf(live).get("vda"), { files: ["/i/top.qcow2", "/i/mid.qcow2", "/i/base.qcow2"], complete: true });
    });
    it("an inactive XML may stop short: not complete (qemu-img reads the rest)", () => {
        assert.deepEqual(diskChainsOf(disk("")).get("vda"), { files: ["/i/top.qcow2"], complete: false });
        const partial = disk("<backingStore type='file'><format type='qcow2'/><source file='/i/base.qcow2'/></backingStore>");
        assert.deepEqual(diskChainsOf(partial).get("vda"), { files: ["/i/top.qcow2", "/i/base.qcow2"], complete: false });
    });
});

describe("making an offline snapshot's overlays private (CVE-2025-13193)", () => {
    const plan = {
        kind: "external",
        memory: "none",
        domain: UUID,
        xml: "",
        argv: [],
        spec: { name: "s", memory: { snapshot: "no" }, disks: [{ name: "vda", snapshot: "external" }] },
    } as unknown as SnapshotPlan;
    const made = {
        name: "s",
        state: "shutoff",
        creationTime: 0,
        memory: { snapshot: "no" },
        disks: [{ name: "vda", snapshot: "external", file: "/images/web1.s" }],
    };

    /** stat answers `overlay` and `under` ("MODE UID GID") for the overlay and the image under it. */
    function statHost(overlay: string, under: string) {
        const host: string[] = [];
        const virsh = {
            async host(argv: string[]) {
                host.push(argv.join(" "));
                return { code: 0, stdout: argv[0] === "stat" ? `${overlay}\n${under}\n` : "", stderr: "", command: argv.join(" ") };
            },
        } as unknown as Virsh;
        return { virsh, host };
    }

    it("removes group and other access when the overlay has the owner and group of the image under it", async () => {
        const h = statHost("644 0 0", "644 0 0");
        assert.deepEqual(await makeOverlaysPrivate(h.virsh, fakeProbe({ state: "shut off" }), plan, made), ["/images/web1.s"]);
        assert.deepEqual(h.host, [
            "stat -c %a %u %g -- /images/web1.s /var/lib/libvirt/images/web1.qcow2",
            "chmod go-rwx -- /images/web1.s",
        ]);
    });
    it("leaves an overlay owned otherwise (qemu may open it through its group) and one that is private already", async () => {
        for (const [overlay, under] of [
            ["644 0 0", "660 64055 64055"],
            ["640 0 0", "640 0 994"],
            ["600 0 0", "600 0 0"],
        ] as const) {
            const h = statHost(overlay, under);
            assert.deepEqual(
                await makeOverlaysPrivate(h.virsh, fakeProbe({ state: "shut off" }), plan, made),
                [],
                `${overlay} on ${under}`,
            );
            assert.equal(h.host.length, 1, "only stat ran");
        }
    });
    it("runs nothing for a running domain or on libvirt 11.10 and newer (libvirt makes those overlays 0600)", async () => {
        for (const probe of [fakeProbe({ state: "running" }), fakeProbe({ state: "shut off", version: 11_010_000 })]) {
            const h = statHost("644 0 0", "644 0 0");
            assert.deepEqual(await makeOverlaysPrivate(h.virsh, probe, plan, made), []);
            assert.deepEqual(h.host, []);
        }
    });
});
