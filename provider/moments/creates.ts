// A snapshot's or checkpoint's create that failed, was cut off, or found the name taken: whether
// anything was left behind, the init failure that keeps a create of unknown outcome in the state,
// and adopting an existing one or refusing to.
import { LibvirtError, isKind, messageOf, isCutOff } from "../errors";
import { failureInsteadOf, initFailure, type InitFailure } from "../failures";
import type { Virsh } from "../host/virsh";
import { VIRSH, type MomentKind } from "./commands";
import type { MakerMark } from "../host/xml";
import { redefineDescription } from "./description";
import { madeBy } from "./maker";
import { createSays } from "./messages";

/** After a failed create, say whether anything was left behind. */
export async function explainFailedCreate(virsh: Virsh, kind: MomentKind, domain: string, name: string, e: unknown): Promise<unknown> {
    if (!(e instanceof LibvirtError) || e.kind === "invalid") return e;
    const cmd = VIRSH[kind];
    try {
        await virsh.query([cmd.info, "--domain", domain, cmd.nameFlag, name]);
        return new LibvirtError(e.kind, `${e.message}\n  ${createSays.stillListed(kind, name, cmd.del)}`);
    } catch (probe) {
        if (!isKind(probe, `${kind}-not-found`)) return e;
        const [first, ...rest] = e.message.split("\n");
        return new LibvirtError(e.kind, [first, `  no ${kind} '${name}' was left behind.`, ...rest].join("\n"));
    }
}

/**
 * A create cut off by a lost connection or a timeout may or may not have
 * happened: it becomes an init failure that carries the resource's id and
 * what is known, so Pulumi keeps it in the state, the next `pulumi up` checks
 * the host and finishes the job, and `pulumi destroy` removes it if it exists.
 * Undefined for any other error.
 */
export function unknownOutcome(
    e: unknown,
    o: { kind: MomentKind; name: string; domainName: string; id: string; what: string; partial: object },
): (LibvirtError & InitFailure) | undefined {
    if (!isCutOff(e)) return undefined;
    const message = `${messageOf(e)}\n  ${createSays.outcomeUnknown(o)}`;
    return initFailure(new LibvirtError(e.kind, message), { id: o.id, properties: o.partial });
}

/**
 * The declared name exists already (`error` says so): take it over when it carries this resource's own mark (a
 * create cut off before the engine recorded it: moments/maker.ts) or when `adopt` is set, and only when it matches
 * what is declared (`existing` reads it: its description, its mark, and how it differs); else say why not. One
 * taken over gets the declared description, where one is declared. Says whether it was this resource's own.
 */
export async function adoptOrRefuse(
    virsh: Virsh,
    o: {
        kind: MomentKind;
        name: string;
        /** The domain's UUID, and its name for messages. */
        domain: string;
        domainName: string;
        adopt: boolean;
        description: string | undefined;
        /** This resource's mark, where its URN is known. */
        mark: MakerMark | undefined;
        error: LibvirtError;
        existing: () => Promise<{ description?: string; differences: string[]; makerMark?: MakerMark }>;
    },
): Promise<{ own: boolean }> {
    const nameInput = `${o.kind}Name`;
    const refuse = () =>
        failureInsteadOf("already-exists", createSays.alreadyExists({ ...o, where: virsh.where }), o.error, { exitCode: false });
    if (!o.adopt && !o.mark) throw refuse();
    const existing = await o.existing();
    const own = madeBy(existing.makerMark, o.mark);
    if (!o.adopt && !own) throw refuse();
    const diffs = existing.differences;
    if (diffs.length) {
        throw new LibvirtError("already-exists", createSays.differs({ ...o, own, diffs, nameInput }));
    }
    if (o.description !== undefined && existing.description !== o.description)
        await redefineDescription(virsh, o.kind, o.domain, o.name, o.description);
    return { own };
}
