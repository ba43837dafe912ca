// The one reader of `qemu-img info` among the resources and engines: one image on the libvirt host, read with
// -U (never through qemu's monitor, also while qemu holds it). host/probe.ts's imageChain reads a whole chain
// (--backing-chain) and stays with the host code.
import type { ImageInfo } from "./host/probe";
import type { HostResult, Virsh } from "./host/virsh";

/**
 * The options in the order the README's sudoers rules name them: a rule matches its arguments exactly, so each
 * reader keeps the order its rule was written for. `image`: a domain's disk image (after a snapshot ran out of
 * space); `backupFile`: a DomainBackup's file.
 */
const INFO_OPTIONS = {
    image: ["--output=json", "-U"],
    backupFile: ["-U", "--output=json"],
} as const;

/** `qemu-img info` of one file: what ran, and the image it describes, parsed when asked for (undefined unless exit code 0). */
export async function imageInfo(
    virsh: Virsh,
    file: string,
    rule: keyof typeof INFO_OPTIONS,
): Promise<{ result: HostResult; image: () => ImageInfo | undefined }> {
    const result = await virsh.host(["qemu-img", "info", ...INFO_OPTIONS[rule], "--", file]);
    return { result, image: () => (result.code === 0 ? (JSON.parse(result.stdout) as ImageInfo) : undefined) };
}
