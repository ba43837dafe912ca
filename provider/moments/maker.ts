// A snapshot or checkpoint a resource made itself, known again after a `pulumi up` that was cut off before the
// engine recorded it (Ctrl-C twice, a killed CLI): the engine drops the pending create, the next `pulumi up` creates
// it again and finds the name taken. libvirt keeps no application data in a snapshot's or checkpoint's own XML, but
// it keeps a copy of the domain's XML in it, <metadata> included. So the resource writes a mark (its URN and the
// name) into the domain's metadata just before the create and removes it right after: the copy keeps it, and
// the next create takes over one that carries its own mark without `adopt`.
import { isCutOff } from "../errors";
import type { Virsh } from "../host/virsh";
import { MAKER_NS, makerMarkXml, parseDomainXml, type MakerMark } from "../host/xml";

/** The prefix libvirt gives the mark's namespace in the domain XML. */
const MAKER_KEY = "plvs";

/**
 * Run `take` with the mark in the domain's metadata: in the live XML of a running domain (what its snapshot and
 * checkpoint copy), in the persistent one of a shut-off domain. Without a URN (inputs from before 0.2, or a
 * program that built them by hand) nothing is marked. The mark is removed afterwards, also when `take` failed,
 * unless it was cut off.
 */
export async function withMakerMark<T>(
    virsh: Virsh,
    domain: { uuid: string; active: boolean },
    mark: MakerMark | undefined,
    take: () => Promise<T>,
): Promise<T> {
    if (!mark) return take();
    const where = domain.active ? "--live" : "--config";
    const metadata = metadataOf(domain.uuid);
    await virsh.run([...metadata, "--key", MAKER_KEY, "--set", makerMarkXml(mark), where]);
    let cutOff = false;
    try {
        return await take();
    } catch (e) {
        // A create cut off by a lost connection or a timeout may still be running in libvirt: asking now could wait
        // on its job. The mark left names only this resource and this name, and the domain's next create replaces it.
        cutOff = isCutOff(e);
        throw e;
    } finally {
        // Nor does its removal turn a snapshot taken into a failure, or wait for a domain still busy.
        if (!cutOff) await virsh.run([...metadata, "--remove", where], { busyRetryMs: 0 }).catch(() => undefined);
    }
}

/**
 * A revert gives the domain the XML its snapshot copied, the mark included (libvirt 11.3 measured; 9.0 keeps the
 * domain's own metadata): it is removed again where it came back, from the XML in use and the persistent one.
 * Never a failure: the revert happened, and a revert reported as failed would be run again.
 */
export async function removeRevertedMark(virsh: Virsh, domain: string): Promise<void> {
    const xmls = [
        { where: "--current", dump: ["dumpxml", "--domain", domain] },
        { where: "--config", dump: ["dumpxml", "--inactive", "--domain", domain] },
    ];
    try {
        for (const x of xmls)
            if (parseDomainXml(await virsh.query(x.dump)).makerMark) await virsh.run([...metadataOf(domain), "--remove", x.where]);
    } catch {
        /* left for the domain's next create to replace; it names one resource and one name only */
    }
}

function metadataOf(domain: string): string[] {
    return ["metadata", "--domain", domain, "--uri", MAKER_NS];
}

/** Whether the mark in a snapshot's or checkpoint's copy of the domain says this resource made it under this name. */
export function madeBy(found: MakerMark | undefined, mark: MakerMark | undefined): boolean {
    return !!found && !!mark && found.resource === mark.resource && found.name === mark.name;
}
