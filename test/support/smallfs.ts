// The lab's small filesystem: a loop-mounted ext4 image under the lab dir (.lab/smallfs-TAG), made by a
// suite and removed in its after(), with throwaway domains whose disks live on it. It is how the tests run a
// snapshot out of space on purpose without filling the lab's own disk.
//
// Both hosts see it at the same path. The Debian 13 host is a chroot whose view of the lab dir is a private
// bind mount (scripts/lab/host13.sh), so a mount made under the lab dir afterwards does not show up in it
// (measured: no propagation); the filesystem is therefore bind-mounted a second time at the root's own path.
// libvirtd and qemu of both hosts run in this machine's mount namespace, so they see both mounts.
// Tests run as root: mount, losetup (through mount -o loop) and mkfs need it.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { TMP_TITLE, domainXml, hostRun, loadLab, ownerTag, run, virshLocal, virshOk, type LabInfo, type TestDomain } from "./lab";

export interface SmallFs {
    /** Where it is mounted, on both hosts. */
    dir: string;
    /** Bytes free for unprivileged writers (df's Avail), measured here. */
    free(): number;
    /** Fill it with a new file until only `leaveBytes` are free; returns the file. */
    fill(leaveBytes: number): Promise<string>;
    /** Remove every file fill() made. */
    unfill(): void;
    /** A throwaway domain named PREFIX… whose qcow2 disk is on this filesystem (the lab's domain shape: 64 MiB RAM). */
    newDomain(o?: { prefix?: string; running?: boolean; writer?: boolean; sizeMB?: number }): Promise<TestDomain>;
    /** Remove its domains, unmount it and delete the image. */
    dispose(): Promise<void>;
}

async function ok(file: string, args: readonly string[]): Promise<string> {
    const r = await run(file, args);
    if (r.code !== 0) throw new Error(`${file} ${args.join(" ")} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
    return r.stdout;
}

async function hostOk(file: string, args: readonly string[], lab: LabInfo): Promise<string> {
    const r = await hostRun(file, args, { lab });
    if (r.code !== 0) throw new Error(`${file} ${args.join(" ")} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
    return r.stdout;
}

/** Make and mount a SIZE MiB ext4 (no blocks reserved for root, so df's figure is what qemu, as root, can use too). */
export async function makeSmallFs(tag: string, sizeMiB: number, lab: LabInfo = loadLab()): Promise<SmallFs> {
    if (!/^[A-Za-z0-9_-]+$/.test(tag)) throw new Error(`makeSmallFs: unsafe tag ${JSON.stringify(tag)}`);
    const dir = path.join(lab.labDir, `smallfs-${tag}`);
    const image = `${dir}.img`;
    const inRoot = lab.rootDir ? path.join(lab.rootDir, dir) : undefined;
    const fills: string[] = [];
    const domains: TestDomain[] = [];
    const unmount = async (p: string) => {
        if (
            fs
                .readFileSync("/proc/self/mountinfo", "utf8")
                .split("\n")
                .some((l) => l.split(" ")[4] === p)
        )
            await ok("/usr/bin/umount", [p]);
    };
    const dispose = async () => {
        for (const d of domains.splice(0)) await d.dispose().catch(() => undefined);
        if (inRoot) await unmount(inRoot);
        await unmount(dir);
        fs.rmSync(dir, { recursive: true, force: true });
        fs.rmSync(image, { force: true });
    };
    try {
        await dispose(); // what a crashed run of the same tag left
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(image, "");
        fs.truncateSync(image, sizeMiB * 1024 * 1024);
        await ok("/usr/sbin/mkfs.ext4", ["-q", "-F", "-m", "0", image]);
        await ok("/usr/bin/mount", ["-o", "loop", image, dir]);
        if (inRoot) await ok("/usr/bin/mount", ["--bind", dir, inRoot]);
    } catch (e) {
        await dispose().catch(() => undefined);
        throw e;
    }
    const free = () => {
        const s = fs.statfsSync(dir);
        return s.bavail * s.bsize;
    };
    return {
        dir,
        free,
        async fill(leaveBytes) {
            const file = path.join(dir, `fill-${fills.length}`);
            // ext4 needs a few blocks for the file's own extents: fallocate can't take the very last ones.
            const bytes = free() - Math.max(leaveBytes, 256 * 1024);
            if (bytes <= 0) throw new Error(`fill: only ${free()} bytes are free in ${dir}, fewer than ${leaveBytes}`);
            await ok("/usr/bin/fallocate", ["-l", String(bytes), file]);
            fills.push(file);
            // The rest, written until it is taken (or the filesystem says no more).
            const fd = fs.openSync(file, "a");
            const chunk = Buffer.alloc(4096);
            try {
                while (free() > leaveBytes) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, free() - leaveBytes));
                fs.fsyncSync(fd);
            } catch (e) {
                if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
            } finally {
                fs.closeSync(fd);
            }
            return file;
        },
        unfill() {
            for (const f of fills.splice(0)) fs.rmSync(f, { force: true });
        },
        async newDomain(o = {}) {
            const name = (o.prefix ?? "nospace-") + crypto.randomBytes(4).toString("hex");
            const folder = path.join(dir, name);
            fs.mkdirSync(folder);
            const disk = path.join(folder, "disk.qcow2");
            const d: TestDomain = {
                name,
                uuid: "",
                disk,
                format: "qcow2",
                dir: folder,
                async dispose() {
                    await virshLocal(["destroy", name], { lab });
                    await virshLocal(["undefine", name, "--snapshots-metadata", "--checkpoints-metadata"], { lab });
                    fs.rmSync(folder, { recursive: true, force: true });
                },
            };
            domains.push(d);
            await hostOk("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", disk, `${o.sizeMB ?? 64}M`], lab);
            if (o.writer) await hostOk("/usr/bin/qemu-io", ["-f", "qcow2", "-c", `write -q -s ${lab.bootSectorPath} 0 512`, disk], lab);
            const xmlPath = path.join(folder, "domain.xml");
            fs.writeFileSync(
                xmlPath,
                domainXml({ name, title: `${TMP_TITLE} ${ownerTag()}`, virtType: lab.virtType, disk, format: "qcow2" }),
            );
            await virshOk(["define", xmlPath], { lab });
            if (o.running) await virshOk(["start", name], { lab });
            d.uuid = (await virshOk(["domuuid", name], { lab })).trim();
            return d;
        },
        dispose,
    };
}
