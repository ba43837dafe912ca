// Domains the lab's four don't cover (test/support/specialDomains.ts): UEFI firmware
// in pflash with a raw or a qcow2 NVRAM, a disk that is a block device (a loop
// device) holding raw or qcow2, and an emulated TPM. Through the engine path, on
// the host under test: what this libvirt takes is created and destroyed for real,
// the images checked with qemu-img; what it can't take is refused at check, naming
// the property and the reason, and nothing touched the domain. libvirt is then
// asked directly, so the refusal is proven to be libvirt's, and the README's
// compatibility table records what each host did.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider, RestorePointProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import { observe, type Feature } from "./support/compat";
import { engineSuite } from "./support/fixture";
import { MiB, domstate, expectCallError, qcow2Snapshots, re, snapshotNames } from "./support/helpers";
import { domState, loadLab, qemuImgInfo, qemuIoRead, qemuIoWrite, run, virshLocal, virshOk } from "./support/lab";
import { makeSpecialDomain, OVMF_CODE, type SpecialDomain, type SpecialKind } from "./support/specialDomains";

const lab = loadLab();
const [major, minor] = lab.libvirtVersion.split(".").map(Number) as [number, number];
/** VERSIONS.pflashInternalSnapshot: libvirt 10.9 and newer take internal snapshots of pflash domains (9.0 and 11.3 measured). */
const pflashInternal = major > 10 || (major === 10 && minor >= 9);
const PREFIX = "fw-";
const A = 0xaa,
    B = 0xbb;

interface Case {
    what: string;
    domain: SpecialKind;
    running: boolean;
    row: Feature;
    inputs: (d: SpecialDomain) => Record<string, unknown>;
    /** What this host does. */
    works: boolean;
    /** For a refusal: "property: reason" that check reports. */
    refusal?: (d: SpecialDomain) => RegExp;
    /** The same request as a direct virsh call, and what libvirt answers when it refuses it. */
    direct: (d: SpecialDomain) => string[];
    libvirtSays?: RegExp;
}

const pflashOf = (d: SpecialDomain) =>
    `domain '${re(d.name)}' boots UEFI firmware from pflash \\(<loader type='pflash'> ${re(OVMF_CODE)}\\), and `;
const before109 = `libvirt ${re(lab.libvirtVersion)} takes no internal snapshot of such a domain \\('internal snapshots of a VM with pflash based firmware are not supported'; 10\\.9 and newer can, with the NVRAM in qcow2\\)\\. Use kind: 'external'$`;
const internal = (d: SpecialDomain) => ["snapshot-create-as", "--domain", d.name, "--name", "direct"];

const CASES: Case[] = [
    {
        what: "UEFI, raw NVRAM, running: internal",
        domain: "uefi-raw-nvram",
        running: true,
        row: "uefi-internal-running-raw-nvram",
        inputs: () => ({}),
        works: false,
        refusal: (d) =>
            new RegExp(
                `^kind: ${pflashOf(d)}` +
                    (pflashInternal
                        ? `its UEFI variables \\(NVRAM ${re(d.nvram!)}\\) are raw: libvirt saves them inside an internal snapshot of a running domain, which needs a qcow2 NVRAM \\('require QCOW2 nvram format'\\)\\. Use kind: 'external'`
                        : before109),
            ),
        direct: internal,
        libvirtSays: pflashInternal
            ? /require QCOW2 nvram format/
            : /internal snapshots of a VM with pflash based firmware are not supported/,
    },
    {
        what: "UEFI, qcow2 NVRAM, running: internal (the NVRAM holds the snapshot too)",
        domain: "uefi-qcow2-nvram",
        running: true,
        row: "uefi-internal-running-qcow2-nvram",
        inputs: () => ({}),
        works: pflashInternal,
        refusal: (d) => new RegExp(`^kind: ${pflashOf(d)}${before109}`),
        direct: internal,
        libvirtSays: /internal snapshots of a VM with pflash based firmware are not supported/,
    },
    {
        what: "UEFI, raw NVRAM, shut off: internal (the NVRAM is left out)",
        domain: "uefi-raw-nvram",
        running: false,
        row: "uefi-internal-offline-raw-nvram",
        inputs: () => ({}),
        works: pflashInternal,
        refusal: (d) => new RegExp(`^kind: ${pflashOf(d)}${before109}`),
        direct: internal,
        libvirtSays: /internal snapshots of a VM with pflash based firmware are not supported/,
    },
    {
        what: "UEFI chosen by libvirt (<os firmware='efi'>), never started, shut off: internal",
        domain: "uefi-auto",
        running: false,
        row: "uefi-auto-internal-offline",
        inputs: () => ({}),
        // 9.0 chooses the loader only at start: its XML names no pflash loader, and it takes the snapshot. 11.3 chooses it
        // at define (a raw NVRAM) and takes a shut-off domain's internal snapshot anyway. Preview follows the XML.
        works: true,
        direct: () => [],
    },
    {
        what: "UEFI chosen by libvirt (<os firmware='efi'>), running: internal",
        domain: "uefi-auto",
        running: true,
        row: "uefi-internal-running-raw-nvram",
        inputs: () => ({}),
        works: false,
        refusal: (d) =>
            new RegExp(
                `^kind: ${pflashOf(d)}` +
                    (pflashInternal ? `its UEFI variables \\(NVRAM [^)]+\\) are raw: .*\\('require QCOW2 nvram format'\\)` : before109),
            ),
        direct: internal,
        libvirtSays: pflashInternal
            ? /require QCOW2 nvram format/
            : /internal snapshots of a VM with pflash based firmware are not supported/,
    },
    {
        what: "UEFI, raw NVRAM, running: external with memory",
        domain: "uefi-raw-nvram",
        running: true,
        row: "uefi-external",
        inputs: () => ({ kind: "external", memory: "external" }),
        works: true,
        direct: () => [],
    },
    {
        what: "block device, raw, shut off: internal",
        domain: "block-raw",
        running: false,
        row: "block-internal-raw",
        inputs: () => ({}),
        works: false,
        refusal: (d) =>
            new RegExp(
                `^kind: an internal snapshot lives inside a qcow2 image, but disk vda \\(${re(d.device!)}\\) is raw\\. Use kind: 'external' \\(which may leave the disk out`,
            ),
        direct: internal,
        libvirtSays: /internal snapshot for disk vda unsupported for storage type raw/,
    },
    {
        what: "block device, raw, running: external disk-only without an overlay path",
        domain: "block-raw",
        running: true,
        row: "block-external-unnamed",
        inputs: () => ({ kind: "external", memory: "none" }),
        works: false,
        refusal: (d) =>
            new RegExp(
                `^kind: disk vda is a block device \\(${re(d.device!)}\\), and libvirt names an external snapshot's overlay only beside a regular file\\. Give its overlay a path`,
            ),
        direct: (d) => ["snapshot-create-as", "--domain", d.name, "--name", "direct", "--disk-only", "--diskspec", "vda,snapshot=external"],
        libvirtSays: /source for disk 'vda' is not a regular file; refusing to generate external snapshot name/,
    },
    {
        what: "block device, raw, running: external disk-only with an overlay path",
        domain: "block-raw",
        running: true,
        row: "block-external",
        inputs: (d) => ({
            kind: "external",
            memory: "none",
            disks: [{ name: "vda", snapshot: "external", file: path.join(d.dir, "vda.overlay.qcow2") }],
        }),
        works: true,
        direct: () => [],
    },
    {
        what: "block device, raw, shut off: external with an overlay path",
        domain: "block-raw",
        running: false,
        row: "block-external",
        inputs: (d) => ({ kind: "external", disks: [{ name: "vda", snapshot: "external", file: path.join(d.dir, "vda.overlay.qcow2") }] }),
        works: true,
        direct: () => [],
    },
    {
        what: "block device, qcow2, running: internal",
        domain: "block-qcow2",
        running: true,
        row: "block-internal-qcow2",
        inputs: () => ({}),
        works: true,
        direct: () => [],
    },
    {
        what: "TPM, running: internal with memory",
        domain: "tpm",
        running: true,
        row: "tpm-internal",
        inputs: () => ({}),
        works: true,
        direct: () => [],
    },
    {
        what: "TPM, running: external with memory",
        domain: "tpm",
        running: true,
        row: "tpm-external-memory",
        inputs: () => ({ kind: "external", memory: "external" }),
        works: true,
        direct: () => [],
    },
    {
        what: "TPM, running: external disk-only",
        domain: "tpm",
        running: true,
        row: "tpm-external-disk-only",
        inputs: () => ({ kind: "external", memory: "none" }),
        works: true,
        direct: () => [],
    },
];

/** The image vda uses now (the top of its chain). */
async function activeDisk(domain: string): Promise<string> {
    const m = /^\s*vda\s+(\S+)\s*$/m.exec(await virshOk(["domblklist", "--domain", domain]));
    assert.ok(m, `domain ${domain} has no vda`);
    return m[1]!;
}

/** What a refused request must leave as it was. */
async function looks(d: SpecialDomain): Promise<Record<string, unknown>> {
    const disk = await qemuImgInfo(d.disk);
    return {
        state: await domstate(d.name),
        snapshots: await snapshotNames(d.name),
        top: await activeDisk(d.name),
        imageSnapshots: disk.format === "qcow2" ? await qcow2Snapshots(d.disk) : [],
        nvramSnapshots: d.nvram && (await qemuImgInfo(d.nvram)).format === "qcow2" ? await qcow2Snapshots(d.nvram) : [],
        files: fs.readdirSync(d.dir).sort(),
    };
}

describe(`Special domains: UEFI, block devices, TPM (engine path, ${lab.name}, libvirt ${lab.libvirtVersion})`, function () {
    this.timeout(300_000);
    const suite = engineSuite(PREFIX);
    const made: SpecialDomain[] = [];
    after(async () => {
        for (const d of made) await d.dispose().catch((e) => console.error(`dispose ${d.name}: ${(e as Error).message}`));
    });
    const newSpecial = async (kind: SpecialKind, running: boolean, before?: (d: SpecialDomain) => Promise<void>) => {
        const d = await makeSpecialDomain(kind, { prefix: PREFIX, running: false });
        made.push(d);
        await before?.(d);
        if (running) await virshOk(["start", "--domain", d.name]);
        return d;
    };

    it("the domains are what their XML says: pflash loader with its NVRAM's format, a block-device disk, a TPM; dispose removes them and the loop device", async () => {
        const [raw, q, blk, tpm] = [
            await newSpecial("uefi-raw-nvram", false),
            await newSpecial("uefi-qcow2-nvram", false),
            await newSpecial("block-raw", false),
            await newSpecial("tpm", false),
        ];
        const xml = (d: SpecialDomain) => virshOk(["dumpxml", "--inactive", "--domain", d.name]);
        assert.match(await xml(raw), new RegExp(`<loader readonly='yes' type='pflash'[^>]*>${re(OVMF_CODE)}</loader>`));
        // libvirt 9.0 drops <nvram format=...> (it doesn't know it): its NVRAM is then raw, whatever the file holds.
        const qNvram = /<nvram[^>]*>/.exec(await xml(q))![0];
        if (pflashInternal) assert.match(qNvram, / format='qcow2'/);
        else assert.doesNotMatch(qNvram, /format=/);
        assert.match(await xml(blk), new RegExp(`<disk type='block' device='disk'>[\\s\\S]*<source dev='${re(blk.device!)}'`));
        assert.match(await xml(tpm), /<tpm model='tpm-crb'>\s*<backend type='emulator' version='2\.0'/);
        // <os firmware='efi'>: 9.0 chooses the loader only when it starts the domain, 11.3 when it defines it.
        const auto = await newSpecial("uefi-auto", false);
        const autoXml = await xml(auto);
        if (pflashInternal) assert.match(autoXml, new RegExp(`<loader readonly='yes' type='pflash'[^>]*>${re(OVMF_CODE)}</loader>`));
        else assert.doesNotMatch(autoXml, /<loader/);
        await auto.dispose();
        for (const d of [raw, q, blk, tpm]) await d.dispose();
        assert.equal((await domState(blk.name)) ?? "gone", "gone");
        const shows = await run("/usr/sbin/losetup", ["--noheadings", "--output", "BACK-FILE", blk.device!]);
        assert.doesNotMatch(shows.stdout, new RegExp(re(blk.backingFile!)), "dispose detached the loop device");
    });

    for (const c of CASES) {
        it(`${c.what}: ${c.works ? "created and destroyed for real" : "refused at check with the reason, nothing touched"}`, async () => {
            // The data from before the snapshot: a pattern qemu-io writes while the domain is still shut off.
            const d = await newSpecial(c.domain, c.running, (x) => qemuIoWrite(x.disk, A, 0, MiB));
            const inputs = { domain: d.name, snapshotName: "s1", ...c.inputs(d) };
            const failures = await suite.failuresOf(DomainSnapshotProvider, inputs);
            if (!c.works) {
                assert.match(failures, c.refusal!(d));
                const before = await looks(d);
                await expectCallError(suite.up("refused", DomainSnapshotProvider, inputs), /check failed/);
                assert.deepEqual(await looks(d), before, "nothing touched the domain");
                // libvirt itself refuses the same request.
                const direct = await virshLocal(c.direct(d));
                if (direct.code === 0) await virshOk(["snapshot-delete", "--domain", d.name, "--snapshotname", "direct", "--metadata"]);
                assert.notEqual(direct.code, 0, `libvirt ${lab.libvirtVersion} took it when asked directly: check must not refuse it`);
                assert.match(direct.stderr, c.libvirtSays!);
                assert.deepEqual(await looks(d), before, "libvirt's refusal touched nothing either");
                observe(c.row, "refused");
                return;
            }
            assert.equal(failures, "", `libvirt ${lab.libvirtVersion} takes it`);
            const base = await activeDisk(d.name);
            const snap = await suite.up("s1", DomainSnapshotProvider, inputs);
            assert.deepEqual(await snapshotNames(d.name), ["s1"]);
            const external = snap.outs.kind === "external";
            let overlay: string | undefined;
            if (external) {
                overlay = (snap.outs.diskFiles as Record<string, string>).vda!;
                assert.equal(await activeDisk(d.name), overlay);
                const info = await qemuImgInfo(overlay);
                assert.equal(info.format, "qcow2");
                assert.equal(info["full-backing-filename"] ?? info["backing-filename"], base, "the overlay sits on the domain's own disk");
                if (snap.outs.memoryFile) assert.ok(fs.existsSync(snap.outs.memoryFile as string), "the memory file exists");
            } else {
                assert.deepEqual(await qcow2Snapshots(d.disk), ["s1"], `the qcow2 on ${d.disk} holds the snapshot`);
                if (d.kind === "uefi-qcow2-nvram") assert.deepEqual(await qcow2Snapshots(d.nvram!), ["s1"], "the qcow2 NVRAM holds it too");
                if (d.kind === "uefi-raw-nvram") {
                    const nv = await qemuImgInfo(d.nvram!);
                    assert.equal(nv.format, "raw", "a raw NVRAM holds no snapshot: it is left out");
                }
            }
            observe(c.row, "works");
            if (!external) {
                // Revert through the engine: the data written after the snapshot (shut off, so qemu-io can write) is gone.
                if (c.running) await virshOk(["destroy", "--domain", d.name]);
                await qemuIoWrite(d.disk, B, 0, MiB);
                const r = await suite.up("rev", SnapshotRevertProvider, { domain: d.name, snapshot: "s1" });
                assert.equal(await domstate(d.name), c.running ? "running" : "shut off", "back in the snapshot's state");
                assert.equal(await qemuIoRead(d.disk, A, 0, MiB), true, "the data from before the snapshot is back");
                await suite.engine.destroy(r);
            }
            await suite.engine.destroy(snap);
            assert.deepEqual(await snapshotNames(d.name), []);
            if (external) {
                // Running: libvirt merges the overlay into the disk; shut off: it drops the leaf overlay. Either way the disk is back on top.
                assert.equal(await activeDisk(d.name), base);
                assert.equal(fs.existsSync(overlay!), false, `the overlay ${overlay} is gone`);
                assert.equal(await qemuIoRead(base, A, 0, MiB), true, "the data from before the snapshot is in the disk");
                if (snap.outs.memoryFile) assert.equal(fs.existsSync(snap.outs.memoryFile as string), false, "the memory file is gone");
            } else {
                assert.deepEqual(await qcow2Snapshots(d.disk), []);
                assert.equal(await qemuIoRead(d.disk, A, 0, MiB), true, "deleting the snapshot keeps the data");
                if (d.kind === "uefi-qcow2-nvram") assert.deepEqual(await qcow2Snapshots(d.nvram!), []);
            }
            assert.equal(await domstate(d.name), c.running ? "running" : "shut off");
        });
    }

    it("RestorePoint members get the same rules: a UEFI domain with a raw NVRAM, a block device without overlay paths", async () => {
        const uefi = await newSpecial("uefi-raw-nvram", true);
        const blk = await newSpecial("block-raw", true);
        const failures = await suite.failuresOf(RestorePointProvider, { domains: [uefi.name], snapshotName: "rp" });
        assert.match(failures, new RegExp(`^domains\\[0\\]: domain '${re(uefi.name)}': kind: ${pflashOf(uefi)}`));
        assert.match(
            await suite.failuresOf(RestorePointProvider, { domains: [blk.name], snapshotName: "rp", kind: "external", memory: "none" }),
            new RegExp(`^domains\\[0\\]: domain '${re(blk.name)}': kind: disk vda is a block device \\(${re(blk.device!)}\\)`),
        );
        assert.deepEqual([...(await snapshotNames(uefi.name)), ...(await snapshotNames(blk.name))], []);
    });
});
