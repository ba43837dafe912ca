// Throwaway domains the lab's four don't cover, made on the host under test and
// removed by dispose(): UEFI firmware in pflash (Debian's ovmf) with a raw or a
// qcow2 NVRAM, or chosen by libvirt (<os firmware='efi'>), a disk that is a block device (a loop device) holding raw or qcow2,
// and an emulated TPM (swtpm). Same shape as every lab domain otherwise
// (scripts/lab/domain-xml.cjs), with no OS: a UEFI domain sits in its firmware.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { LOOP_RECORD, TMP_TITLE, domainXml, loadLab, ownerTag, run, runOk, throwawayFolder, virshOk, type TestDomain } from "./lab";

export type SpecialKind = "uefi-raw-nvram" | "uefi-qcow2-nvram" | "uefi-auto" | "block-raw" | "block-qcow2" | "tpm";

export interface SpecialDomain extends TestDomain {
    kind: SpecialKind;
    /** A UEFI domain's variable store. */
    nvram?: string;
    /** A block-device domain's loop device (also its `disk`), and the file behind it. */
    device?: string;
    backingFile?: string;
}

/** Debian's ovmf (both hosts): the non-SMM build, which boots on machine 'pc'. */
export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const LOSETUP = "/usr/sbin/losetup";

/** A file of the host under test, seen from here (a host in its own root has it under rootDir). */
function hostHas(file: string): boolean {
    const lab = loadLab();
    return fs.existsSync(path.join(lab.rootDir ?? "/", file));
}

export async function makeSpecialDomain(kind: SpecialKind, o: { prefix: string; running?: boolean }): Promise<SpecialDomain> {
    const lab = loadLab();
    if (kind.startsWith("uefi") && !hostHas(OVMF_CODE))
        throw new Error(`${lab.name} has no ${OVMF_CODE}: install ovmf (scripts/lab.sh PACKAGES)`);
    if (kind === "tpm" && !hostHas("/usr/bin/swtpm"))
        throw new Error(`${lab.name} has no swtpm: install swtpm swtpm-tools (scripts/lab.sh PACKAGES)`);
    const name = o.prefix + crypto.randomBytes(4).toString("hex");
    const folder = throwawayFolder(name, lab);
    const { dir } = folder;
    const format = kind === "block-raw" ? "raw" : "qcow2";
    let disk = path.join(dir, `disk.${format}`);
    let device: string | undefined;
    const backingFile = disk;
    let nvram: string | undefined;
    let disposed = false;
    // Once only; the folder's dispose detaches the loop device it records after the domain is gone.
    const dispose = async () => {
        if (disposed) return;
        disposed = true;
        await folder.dispose();
    };
    try {
        await runOk("/usr/bin/qemu-img", ["create", "-q", "-f", format, disk, "64M"]);
        if (kind.startsWith("block")) {
            // The loop device shows the file's own size: a fresh qcow2 is a few KiB, so grow the file to the disk's size.
            fs.truncateSync(disk, 64 * 1024 * 1024);
            // On this machine: a host in its own root shares /dev with it, so the device is the same there.
            const r = await run(LOSETUP, ["--find", "--show", disk]);
            if (r.code !== 0) throw new Error(`losetup --find --show ${disk}: ${r.stderr.trim()}`);
            device = r.stdout.trim();
            fs.writeFileSync(path.join(dir, LOOP_RECORD), `${device}\t${backingFile}\n`);
        }
        if (kind === "uefi-raw-nvram" || kind === "uefi-qcow2-nvram") {
            const nvramFormat = kind === "uefi-qcow2-nvram" ? "qcow2" : "raw";
            nvram = path.join(dir, `VARS.${nvramFormat}`);
            await runOk("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", nvramFormat, OVMF_VARS, nvram]);
        }
        const xmlPath = path.join(dir, "domain.xml");
        fs.writeFileSync(
            xmlPath,
            domainXml({
                name,
                title: `${TMP_TITLE} ${ownerTag()}`,
                // Under KVM (measured on a kvm-pvm host) Debian's OVMF stops at its first instructions ('emulation failure')
                // and qemu pauses the domain; the pflash and NVRAM rules under test don't depend on the accelerator.
                virtType: kind.startsWith("uefi") ? "qemu" : lab.virtType,
                disk: device ?? disk,
                format,
                ...(device ? { diskType: "block" as const } : {}),
                ...(nvram ? { uefi: { loader: OVMF_CODE, nvram, nvramFormat: kind === "uefi-qcow2-nvram" ? "qcow2" : "raw" } } : {}),
                ...(kind === "uefi-auto" ? { uefi: { auto: true as const } } : {}),
                ...(kind === "tpm" ? { tpm: true } : {}),
            }),
        );
        await virshOk(["define", xmlPath]);
        if (o.running) await virshOk(["start", name]);
        const uuid = (await virshOk(["domuuid", name])).trim();
        if (device) disk = device;
        return {
            name,
            uuid,
            disk,
            format,
            dir,
            dispose,
            kind,
            ...(nvram ? { nvram } : {}),
            ...(device ? { device, backingFile } : {}),
        };
    } catch (e) {
        await dispose().catch(() => undefined);
        throw e;
    }
}
