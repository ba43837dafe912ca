// A new description for a snapshot or checkpoint, in place.
import type { Virsh } from "../host/virsh";
import { withDescription } from "../host/xml";
import { VIRSH, type MomentKind } from "./commands";

/** A new description, in place: libvirt's own record of the moment, redefined with the text changed. */
export async function redefineDescription(
    virsh: Virsh,
    kind: MomentKind,
    domain: string,
    name: string,
    text: string | undefined,
): Promise<void> {
    const cmd = VIRSH[kind];
    // --security-info: the record libvirt keeps is the secure one; don't strip it by redefining.
    const [xml, info] = await Promise.all([
        virsh.run([cmd.dump, "--domain", domain, cmd.nameFlag, name, "--security-info"]),
        kind === "snapshot" ? virsh.run([cmd.info, "--domain", domain, cmd.nameFlag, name]) : Promise.resolve(""),
    ]);
    // A snapshot redefined without --current stops being the current one.
    const current = /^Current:\s+yes/m.test(info);
    await virsh.run([cmd.create, "--domain", domain, "--xmlfile", "/dev/stdin", "--redefine", ...(current ? ["--current"] : [])], {
        stdin: withDescription(xml, cmd.root, text),
    });
}
